"""`cvapps federated setup | simulate | server | client` (thin: the work is in cvapps.federated)."""

from __future__ import annotations

from typing import Optional

import typer

from ..options import split_list
from . import DATA, DEVICE, PRECISION, TRAIN, WORKERS, _json, _size, app, command, err

fed_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="Federated learning on Flower: the images stay at their sites, only weights travel.")
app.add_typer(fed_app, name="federated")

TASK = {"task": (str, typer.Argument(..., help="classify | detect | segment | landmarks | pose"))}
# the round's recipe and the global model: the server's (and simulate's)
ROUND = {
    "rounds": (int, typer.Option(5, help="federated rounds")),
    "local_epochs": (float, typer.Option(1.0, help="epochs each site trains on its own data per round: whole "
                                                   "ones, or a share below 1 (0.2: the next fifth of its images)")),
    "local_optimizer": (str, typer.Option("reset", help="a site's AdamW moments: reset (new each round) | keep "
                                                        "(carried over from its last round)")),
    "eval_every": (int, typer.Option(1, help="score the global model on the server's data every N rounds (and "
                                             "after the last)")),
    "lr": (float, typer.Option(1e-3, help="learning rate of round 1 (cosine over the rounds, constant within one)")),
    "strategy": (str, typer.Option("fedavg", help="fedavg | fedprox | fedavgm (Flower's strategies)")),
    "server_lr": (float, typer.Option(1.0, help="fedavgm: the server's rate on the averaged update (the effective "
                                                "rate is server-lr / (1 - server-momentum))")),
    "server_momentum": (float, typer.Option(0.9, help="fedavgm: the server's momentum over rounds")),
    "mu": (float, typer.Option(0.01, help="fedprox: weight of the proximal term mu/2 ||w - w_global||^2")),
    "norm": (str, typer.Option("average", help="BatchNorm: average (FedAvg: with every weight) | local (FedBN: "
                                               "each site keeps its own after round 1)")),
    "fraction": (float, typer.Option(1.0, help="the share of the clients trained each round (Flower samples them)")),
    "dp_noise": (Optional[float], typer.Option(None, help="central differential privacy (Flower's server-side fixed "
                                                          "clipping): noise multiplier of the Gaussian noise added "
                                                          "to the clipped updates' sum")),
    "dp_clip": (float, typer.Option(1.0, help="with --dp-noise: the L2 norm each site's update is clipped to")),
    "backbone": TRAIN["backbone"], "weights": TRAIN["weights"], "img_size": TRAIN["img_size"],
    "out_dir": (str, typer.Option("runs/federated", "--out")),
    "overwrite": (bool, typer.Option(False, help="replace a federated model already in --out")),
    "seed": (int, typer.Option(0, help="the new head's initialisation (and simulate's partition and sites)")),
}
SITE = {"batch_size": TRAIN["batch_size"], "freeze": TRAIN["freeze"], **WORKERS, **DEVICE, **PRECISION}


def _site(kw: dict) -> dict:
    return {k: kw.pop(k) for k in list(SITE) if kw.get(k) is not None}


def _round(kw: dict) -> dict:
    kw["img_size"] = _size(kw["img_size"])
    kw["out"] = kw.pop("out_dir")
    return kw


@fed_app.command()
def setup(venv: Optional[str] = typer.Option(None, help="where (default: $CVAPPS_HOME/flower)")) -> None:
    """Install Flower (flwr[simulation], pinned) into its own virtual environment: its pins
    cannot join cvapps's, and cvapps talks to it over a local socket."""
    from ..federated import setup as run

    print(run(venv, console=err))


@command(fed_app, "simulate", TASK, {
    "data": (str, typer.Argument(..., help="the data, as `cvapps train TASK` reads it; its validation part stays "
                                           "with the server")),
    "images": DATA["images"], "fmt": DATA["fmt"], "val_data": TRAIN["val_data"], "val_fraction": TRAIN["val_fraction"],
    "clients": (int, typer.Option(5, help="simulated sites")),
    "partition": (str, typer.Option("iid", help="iid | dirichlet:ALPHA (classes spread over sites by Dir(ALPHA); "
                                                "0.3: most sites see few classes)")),
    "secure_aggregation": (bool, typer.Option(False, help="Flower's SecAgg+: the server sees only the sum of the "
                                                          "sites' (quantised) weights")),
}, ROUND, SITE, help="Simulate sites on one machine (Flower's simulation engine): DATA split over --clients, "
                     "trained for --rounds; OUT/model.safetensors is the global model.")
def simulate(task, data, images, fmt, val_data, val_fraction, **kw) -> None:
    from ..federated import simulate as run

    opts = {k: v for k, v in dict(images=images, fmt=fmt, val=val_data, val_fraction=val_fraction or None).items()
            if v is not None}
    site = _site(kw)
    print(_json(run(task, data, console=err, **_round(kw), **site, **opts)["records"][-1]))


@command(fed_app, "server", TASK, {
    "listen": (str, typer.Option("127.0.0.1:8080", help="HOST:PORT the Flower server listens on (0.0.0.0:PORT "
                                                        "for other machines)")),
    "clients": (int, typer.Option(2, help="round 1 starts when this many clients are connected")),
    "min_clients": (int, typer.Option(1, help="rounds go on while this many clients remain (dropped ones count as "
                                              "failures)")),
    "val_data": (Optional[str], typer.Option(None, "--val", help="labelled data the server keeps: scored after "
                                                                 "every round; the model's classes come from it")),
    "images": DATA["images"],
    "classes": (Optional[str], typer.Option(None, help="without --val: the model's classes, comma-separated")),
    "round_timeout": (Optional[float], typer.Option(None, help="seconds a round waits for its clients")),
    "wait": (float, typer.Option(600.0, help="seconds to wait for --clients before round 1")),
    "certificates": (Optional[str], typer.Option(None, help="CA,CERT,KEY files: gRPC over TLS (without: plain "
                                                            "gRPC, for a trusted network only)")),
}, ROUND, help="A Flower server (gRPC): sends the global model to the clients each round and averages what they "
               "send back; OUT/model.safetensors is written after every round.")
def server(task, val_data, images, classes, wait, certificates, **kw) -> None:
    from ..federated import server as run

    print(_json(run(task, val=val_data, classes=split_list(classes) if classes else None, wait_s=wait,
                    certificates=split_list(certificates) if certificates else None, console=err, **_round(kw),
                    **({"images": images} if images else {}))["records"][-1]))


@command(fed_app, "client", TASK, {
    "data": (str, typer.Argument(..., help="this site's labelled data (as `cvapps train TASK` reads it); it never "
                                           "leaves this process")),
    "server_address": (str, typer.Option("127.0.0.1:8080", "--server", help="the Flower server's HOST:PORT")),
    "images": DATA["images"], "fmt": DATA["fmt"],
    "out_dir": (str, typer.Option("runs/federated-client", "--out", help="this site's last local model and log")),
    "root_cert": (Optional[str], typer.Option(None, help="the CA file that signed the server's certificate (TLS)")),
    "seed": (int, typer.Option(0)),
}, SITE, help="A Flower client: each round, trains the server's model on DATA with cvapps's Trainer and sends back "
              "the weights (never the images).")
def client(task, data, server_address, images, fmt, out_dir, root_cert, seed, **kw) -> None:
    from ..federated import client as run

    opts = {k: v for k, v in dict(images=images, fmt=fmt).items() if v is not None}
    print(_json(run(task, data, server_address=server_address, out=out_dir, root_certificate=root_cert, seed=seed,
                    console=err, **_site(kw), **opts)))
