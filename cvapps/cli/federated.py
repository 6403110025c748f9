"""`cvapps federated setup | simulate | server | client` (thin: the work is in cvapps.federated)."""

from __future__ import annotations

from typing import Optional

import typer

from ..options import split_list
from . import DATA, DEVICE, PRECISION, TRAIN, WORKERS, _json, _size, app, err

fed_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="Federated learning on Flower: the images stay at their sites, only weights travel.")
app.add_typer(fed_app, name="federated")

TASK = typer.Argument(..., help="classify | detect | segment | landmarks | pose")
ROUND = dict(
    rounds=typer.Option(5, help="federated rounds"),
    local_epochs=typer.Option(1, help="epochs each site trains on its own data per round"),
    lr=typer.Option(1e-3, help="learning rate of round 1 (cosine over the rounds, constant within one)"),
    strategy=typer.Option("fedavg", help="fedavg | fedprox (Flower's strategies)"),
    mu=typer.Option(0.01, help="fedprox: weight of the proximal term mu/2 ||w - w_global||^2"),
    norm=typer.Option("average", help="BatchNorm: average (FedAvg: with every weight) | local (FedBN: each site "
                                      "keeps its own after round 1)"),
    fraction=typer.Option(1.0, help="the share of the clients trained each round (Flower samples them)"),
    dp_noise=typer.Option(None, help="central differential privacy (Flower's server-side fixed clipping): noise "
                                     "multiplier of the Gaussian noise added to the clipped updates' sum"),
    dp_clip=typer.Option(1.0, help="with --dp-noise: the L2 norm each site's update is clipped to"),
)


def _site(batch_size, workers, device, precision, freeze) -> dict:
    return {k: v for k, v in dict(batch_size=batch_size, workers=workers, device=device, precision=precision,
                                  freeze=freeze).items() if v is not None}


@fed_app.command()
def setup(venv: Optional[str] = typer.Option(None, help="where (default: $CVAPPS_HOME/flower)")) -> None:
    """Install Flower (flwr[simulation], pinned) into its own virtual environment: its pins
    cannot join cvapps's, and cvapps talks to it over a local socket."""
    from ..federated import setup as run

    print(run(venv, console=err))


@fed_app.command()
def simulate(
    task: str = TASK, data: str = typer.Argument(..., help="the data, as `cvapps train TASK` reads it; its "
                                                         "validation part stays with the server"),
    images: Optional[str] = DATA["images"][1], fmt: Optional[str] = DATA["fmt"][1],
    val_data: Optional[str] = TRAIN["val_data"][1], val_fraction: float = TRAIN["val_fraction"][1],
    clients: int = typer.Option(5, help="simulated sites"),
    partition: str = typer.Option("iid", help="iid | dirichlet:ALPHA (classes spread over sites by Dir(ALPHA); "
                                              "0.3: most sites see few classes)"),
    secure_aggregation: bool = typer.Option(False, help="Flower's SecAgg+: the server sees only the sum of the "
                                                        "sites' (quantised) updates"),
    rounds: int = ROUND["rounds"], local_epochs: int = ROUND["local_epochs"], lr: float = ROUND["lr"],
    strategy: str = ROUND["strategy"], mu: float = ROUND["mu"], norm: str = ROUND["norm"],
    fraction: float = ROUND["fraction"], dp_noise: Optional[float] = ROUND["dp_noise"],
    dp_clip: float = ROUND["dp_clip"],
    backbone: Optional[str] = TRAIN["backbone"][1], weights: Optional[str] = TRAIN["weights"][1],
    img_size: Optional[str] = TRAIN["img_size"][1], out_dir: str = typer.Option("runs/federated", "--out"),
    overwrite: bool = typer.Option(False, help="replace a federated model already in --out"),
    batch_size: Optional[int] = TRAIN["batch_size"][1], freeze: Optional[str] = TRAIN["freeze"][1],
    seed: int = typer.Option(0, help="the partition's and the sites' seed"),
    workers: Optional[int] = WORKERS["workers"][1], device: str = DEVICE["device"][1],
    precision: str = PRECISION["precision"][1],
) -> None:
    """Simulate sites on one machine (Flower's simulation engine): DATA split over --clients,
    trained for --rounds; OUT/model.safetensors is the global model."""
    from ..federated import simulate as run

    opts = {k: v for k, v in dict(images=images, fmt=fmt, val=val_data, val_fraction=val_fraction or None).items()
            if v is not None}
    print(_json(run(task, data, clients=clients, partition=partition, rounds=rounds, local_epochs=local_epochs,
                    lr=lr, strategy=strategy, mu=mu, norm=norm, fraction=fraction, dp_noise=dp_noise, dp_clip=dp_clip,
                    secure_aggregation=secure_aggregation, backbone=backbone, weights=weights,
                    img_size=_size(img_size), out=out_dir, overwrite=overwrite, seed=seed, console=err,
                    **_site(batch_size, workers, device, precision, freeze), **opts)["records"][-1]))


@fed_app.command()
def server(
    task: str = TASK,
    listen: str = typer.Option("127.0.0.1:8080", help="HOST:PORT the Flower server listens on (0.0.0.0:PORT for "
                                                     "other machines)"),
    clients: int = typer.Option(2, help="round 1 starts when this many clients are connected"),
    min_clients: int = typer.Option(1, help="rounds go on while this many clients remain (dropped ones count "
                                            "as failures)"),
    val_data: Optional[str] = typer.Option(None, "--val", help="labelled data the server keeps: scored after "
                                                               "every round; the model's classes come from it"),
    images: Optional[str] = DATA["images"][1],
    classes: Optional[str] = typer.Option(None, help="without --val: the model's classes, comma-separated"),
    round_timeout: Optional[float] = typer.Option(None, help="seconds a round waits for its clients"),
    wait: float = typer.Option(600.0, help="seconds to wait for --clients before round 1"),
    certificates: Optional[str] = typer.Option(None, help="CA,CERT,KEY files: gRPC over TLS (without: plain "
                                                          "gRPC, for a trusted network only)"),
    rounds: int = ROUND["rounds"], local_epochs: int = ROUND["local_epochs"], lr: float = ROUND["lr"],
    strategy: str = ROUND["strategy"], mu: float = ROUND["mu"], norm: str = ROUND["norm"],
    fraction: float = ROUND["fraction"], dp_noise: Optional[float] = ROUND["dp_noise"],
    dp_clip: float = ROUND["dp_clip"],
    backbone: Optional[str] = TRAIN["backbone"][1], weights: Optional[str] = TRAIN["weights"][1],
    img_size: Optional[str] = TRAIN["img_size"][1], out_dir: str = typer.Option("runs/federated", "--out"),
    overwrite: bool = typer.Option(False, help="replace a federated model already in --out"),
) -> None:
    """A Flower server (gRPC): sends the global model to the clients each round and averages what
    they send back; OUT/model.safetensors is written after every round."""
    from ..federated import server as run

    print(_json(run(task, listen=listen, clients=clients, min_clients=min_clients, val=val_data,
                    classes=split_list(classes) if classes else None, round_timeout=round_timeout, wait_s=wait,
                    rounds=rounds, local_epochs=local_epochs, lr=lr, strategy=strategy, mu=mu, norm=norm,
                    fraction=fraction, dp_noise=dp_noise, dp_clip=dp_clip, backbone=backbone, weights=weights,
                    img_size=_size(img_size),
                    out=out_dir, overwrite=overwrite, console=err,
                    certificates=split_list(certificates) if certificates else None,
                    **({"images": images} if images else {}))["records"][-1]))


@fed_app.command()
def client(
    task: str = TASK, data: str = typer.Argument(..., help="this site's labelled data (as `cvapps train TASK` "
                                                         "reads it); it never leaves this process"),
    server_address: str = typer.Option("127.0.0.1:8080", "--server", help="the Flower server's HOST:PORT"),
    images: Optional[str] = DATA["images"][1], fmt: Optional[str] = DATA["fmt"][1],
    out_dir: str = typer.Option("runs/federated-client", "--out", help="this site's last local model and log"),
    root_cert: Optional[str] = typer.Option(None, help="the CA file that signed the server's certificate (TLS)"),
    batch_size: Optional[int] = TRAIN["batch_size"][1], freeze: Optional[str] = TRAIN["freeze"][1],
    seed: int = typer.Option(0), workers: Optional[int] = WORKERS["workers"][1], device: str = DEVICE["device"][1],
    precision: str = PRECISION["precision"][1],
) -> None:
    """A Flower client: each round, trains the server's model on DATA with cvapps's Trainer and
    sends back the weights (never the images)."""
    from ..federated import client as run

    opts = {k: v for k, v in dict(images=images, fmt=fmt).items() if v is not None}
    print(_json(run(task, data, server_address=server_address, out=out_dir, root_certificate=root_cert, seed=seed,
                    console=err,
                    **_site(batch_size, workers, device, precision, freeze), **opts)))
