"""Federated learning on Flower (``cvapps federated server | client | simulate``): the images
stay at their sites, each site trains the round's global model with cvapps's Trainer on its
own data, and only weights travel; Flower (flwr, Apache-2.0) aggregates them (FedAvg, FedProx
or FedAvgM), samples clients, tolerates failures, and simulates many sites on one machine (Ray).

A round's recipe is the server's: ``local_epochs`` (whole epochs, or a share below 1 — the next
part of a seeded pass over a site's images, cvapps.federated.sites.Site), the round's rate
(``lr``, cosine over the rounds), ``local_optimizer`` (``keep``: a site's AdamW moments carry
over between its rounds; ``reset``), the strategy (``mu`` for fedprox; ``server_lr`` and
``server_momentum`` for fedavgm). ``eval_every``: the server scores every N rounds and the last.

BatchNorm: ``norm="average"`` (default) averages its parameters and running statistics with
every other weight (FedAvg as McMahan et al. 2017); ``norm="local"`` is FedBN (Li et al. 2021):
each site keeps its own BatchNorm layers after the first round (for sites whose images differ
in kind — scanners, cameras), and its own model is CLIENT_OUT/local.safetensors; the server's
file then holds the averaged BatchNorm. The final model is an ordinary model file,
OUT/model.safetensors, written after every round."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console

from ..api import check_outputs
from ..data.remote import staged
from ..errors import ConfigError
from ..loading import create_model
from ..options import DataOptions, split_options
from ..tasks import TASKS
from ..training.trainer import TrainConfig, seed_everything
from .engine import Link, flower_python, setup
from .sites import Coordinator, Site, get_arrays, partition
from .sites import partition as split_sites  # inside simulate its `partition` argument hides the function

STRATEGIES = ("fedavg", "fedprox", "fedavgm")
NORMS = ("average", "local")
LOCAL_OPTIMIZERS = ("keep", "reset")
SITE_OPTIONS = ("batch_size", "workers", "device", "precision", "freeze", "weight_decay", "backbone_lr_ratio",
                "clip_grad", "augment", "norm_stats")
__all__ = ["client", "flower_python", "partition", "server", "setup", "simulate"]


def _round_config(model, rounds: int, local_epochs: float, lr: float, norm: str, local_optimizer: str) -> dict:
    return {"rounds": rounds, "local_epochs": local_epochs, "lr": lr, "norm": norm, "local_optimizer": local_optimizer,
            "model": json.dumps(model.config)}


def round_lr(lr: float, rnd: int, rounds: int) -> float:
    """The learning rate of round ``rnd`` (1-based): cosine over the rounds, constant within one."""
    return lr * 0.5 * (1 + math.cos(math.pi * (rnd - 1) / max(1, rounds)))


def _check(rounds: int, local_epochs: float, strategy: str, norm: str, fraction: float, local_optimizer: str,
           eval_every: int, server_lr: float, server_momentum: float) -> None:
    """The run's options and Flower's environment, before any data is read or folder made."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if norm not in NORMS:
        raise ConfigError(f"--norm {norm!r}: expected one of {', '.join(NORMS)}")
    if rounds < 1 or eval_every < 1:
        raise ConfigError("--rounds and --eval-every must be at least 1")
    if not (0 < local_epochs < 1 or (local_epochs >= 1 and float(local_epochs).is_integer())):
        raise ConfigError(f"--local-epochs {local_epochs}: whole epochs (1, 2, ...) or a share of one below 1 "
                          "(0.2: each round trains on the next fifth of a site's images)")
    if local_optimizer not in LOCAL_OPTIMIZERS:
        raise ConfigError(f"--local-optimizer {local_optimizer!r}: expected one of {', '.join(LOCAL_OPTIMIZERS)}")
    if not 0 <= server_momentum < 1 or not server_lr > 0:
        raise ConfigError(f"--server-lr {server_lr} / --server-momentum {server_momentum}: a rate above 0 and a "
                          "momentum in [0, 1)")
    if not 0 < fraction <= 1:
        raise ConfigError(f"--fraction {fraction}: the share of clients trained each round, in (0, 1]")
    flower_python()


def _job(rounds, strategy, mu, min_clients, clients, dp_noise, dp_clip, fit_config, fraction=1.0, server_lr=1.0,
         server_momentum=0.9, **more) -> dict:
    sampled = max(min_clients, int(clients * fraction))
    return {"rounds": rounds, "strategy": strategy, "mu": mu, "min_clients": min_clients, "clients": clients,
            "server_lr": server_lr, "server_momentum": server_momentum,
            "dp_noise": dp_noise, "dp_clip": dp_clip, "sampled_clients": sampled, "fraction_fit": fraction,
            "fit_config": fit_config, **more}


def _site_options(options: dict) -> tuple[dict, dict]:
    data_kw, train_kw = split_options(options, DataOptions, TrainConfig)
    wrong = sorted(set(train_kw) - set(SITE_OPTIONS))
    if wrong:
        raise ConfigError(f"--{wrong[0].replace('_', '-')} is the server's (the round's recipe) or not for "
                          f"federated training", hint=f"a site sets: {', '.join(SITE_OPTIONS)}")
    return data_kw, train_kw


def _handlers(coord: Coordinator | None, sites: dict[int, Site]) -> dict:
    def fit(h, arrays):
        cfg = dict(h["config"])
        cfg["lr"] = round_lr(float(cfg["lr"]), int(cfg["round"]), int(cfg["rounds"]))
        out, n, metrics = sites[h["client"]].fit(arrays, cfg)
        return {"num_examples": n, "metrics": metrics}, out

    handlers = {"fit": fit}
    if coord is not None:
        def global_round(h, arrays):
            loss, metrics = coord.global_round(h["round"], arrays)
            return {"loss": loss, "metrics": metrics}, None

        def aggregated(h, arrays):
            coord.aggregated(h)
            return {}, None

        handlers.update(init=lambda h, a: ({}, get_arrays(coord.model)), aggregated=aggregated,
                        **{"global": global_round})
    return handlers


def _start_model(task, data_opts: DataOptions, ref, classes, backbone, weights, kind, img_size, head, console,
                 seed: int = 0):
    """The global model's first weights (seeded: a new head starts the same in every run): the
    classes of ``ref`` (labelled data) or ``classes``."""
    spec = TASKS.get(task)
    if ref is not None:
        args = spec.model_args(ref, data_opts, console)
        kind = args.pop("kind", kind)
    elif classes:
        args = {"labels": list(classes)}
    else:
        raise ConfigError("the server needs the classes: --val DATA (also scored after every round) or --classes")
    seed_everything(seed)
    return create_model(task, backbone, weights, kind=kind, img_size=img_size, **args, **(head or {}))


def simulate(task: str = "classify", data: str | None = None, *, clients: int = 5, partition: str = "iid",
             rounds: int = 5, local_epochs: float = 1, lr: float = 1e-3, strategy: str = "fedavg", mu: float = 0.01,
             server_lr: float = 1.0, server_momentum: float = 0.9, norm: str = "average",
             local_optimizer: str = "reset", eval_every: int = 1, min_clients: int | None = None, fraction: float = 1.0,
             dp_noise: float | None = None,
             dp_clip: float = 1.0, secure_aggregation: bool = False, backbone: str | None = None,
             weights: str | None = None, kind: str | None = None, img_size=None, head: dict | None = None,
             out: str = "runs/federated", seed: int = 0, overwrite: bool = False, console: Console | None = None,
             **options) -> dict:
    """Federated training of ``clients`` simulated sites on Flower's simulation engine: ``data``
    (as ``train`` reads it) is split by ``partition`` (iid | dirichlet:ALPHA, cvapps.federated.
    sites.partition); its validation part stays with the server and scores every round.
    ``fraction``: the share of sites trained each round (Flower samples them).
    ``options``: data options and the sites' TrainConfig options (SITE_OPTIONS). Writes
    OUT/model.safetensors, OUT/metrics.jsonl, OUT/curves.png, OUT/clients/K/local.safetensors."""
    console = console or Console(stderr=True, markup=False)
    _check(rounds, local_epochs, strategy, norm, fraction, local_optimizer, eval_every, server_lr, server_momentum)
    out_dir = _out(out, overwrite)
    data_kw, site_kw = _site_options(options)
    opts = staged(DataOptions.parse(data_kw, data=data))
    spec = TASKS.get(task)
    tr, va = spec.read_train(opts, kind)
    model = _start_model(task, opts, tr, None, backbone, weights, kind, img_size, head, console, seed)
    parts = split_sites(tr, clients, partition, seed)
    sites = {k: Site(task, tr.subset(p), out_dir / "clients" / str(k), site_kw, console, seed * 100 + k,
                     opts.skip_bad) for k, p in enumerate(parts)}
    console.print(f"{clients} simulated sites ({partition}): " + ", ".join(str(len(p)) for p in parts)
                  + f" images; {len(va) if va else 0} validation images stay with the server", highlight=False)
    coord = Coordinator(model, out_dir, va, console, int(site_kw.get("batch_size", 32)), opts.skip_bad,
                        eval_every, rounds)
    job = _job(rounds, strategy, mu, min_clients or max(1, int(clients * fraction)), clients, dp_noise, dp_clip,
               _round_config(model, rounds, local_epochs, lr, norm, local_optimizer), fraction, server_lr,
               server_momentum, secure_aggregation=secure_aggregation, secagg_range=8.0)
    Link(_handlers(coord, sites), console).run("simulate", job)
    return {**_summary(coord, out_dir), "sites": [len(p) for p in parts]}


def server(task: str = "classify", *, listen: str = "127.0.0.1:8080", clients: int = 2, min_clients: int = 1,
           fraction: float = 1.0, rounds: int = 5, local_epochs: float = 1, lr: float = 1e-3, strategy: str = "fedavg",
           mu: float = 0.01, server_lr: float = 1.0, server_momentum: float = 0.9, norm: str = "average",
           local_optimizer: str = "reset", eval_every: int = 1, val: str | None = None, classes=None,
           dp_noise: float | None = None,
           dp_clip: float = 1.0, round_timeout: float | None = None, wait_s: float = 600.0, certificates=None,
           backbone: str | None = None, weights: str | None = None, kind: str | None = None, img_size=None,
           head: dict | None = None, out: str = "runs/federated", overwrite: bool = False, batch_size: int = 32,
           seed: int = 0, console: Console | None = None, **options) -> dict:
    """A Flower server on ``listen`` (gRPC): round 1 starts when ``clients`` sites are in (up to
    ``wait_s``); a round goes on with the sites that finish (dropped ones are failures) while
    ``min_clients`` remain. ``val``: labelled data kept by the server, scored after each round
    (and the classes come from it, else ``classes``). ``certificates``: (CA, certificate, key)
    files — gRPC over TLS (else plain: for a trusted network only). ``options``: data options
    for ``val``."""
    console = console or Console(stderr=True, markup=False)
    _check(rounds, local_epochs, strategy, norm, fraction, local_optimizer, eval_every, server_lr, server_momentum)
    tls = _files(certificates, 3, "--certificates CA,CERT,KEY")
    out_dir = _out(out, overwrite)
    opts = staged(DataOptions.parse(split_options(options, DataOptions)[0], data=val, classes=classes))
    va = TASKS.get(task).read_labelled(opts) if val else None
    model = _start_model(task, opts, va, classes, backbone, weights, kind, img_size, head, console, seed)
    coord = Coordinator(model, out_dir, va, console, batch_size, opts.skip_bad, eval_every, rounds)
    job = _job(rounds, strategy, mu, min_clients, clients, dp_noise, dp_clip,
               _round_config(model, rounds, local_epochs, lr, norm, local_optimizer), fraction, server_lr,
               server_momentum, listen=listen,
               round_timeout=round_timeout, wait_s=wait_s, certificates=tls)
    console.print(f"federated server on {listen}: {rounds} rounds of {strategy}, waiting for {clients} clients",
                  highlight=False)
    Link(_handlers(coord, {}), console).run("server", job)
    return _summary(coord, out_dir)


def client(task: str = "classify", data: str | None = None, *, server_address: str = "127.0.0.1:8080",
           out: str = "runs/federated-client", retries: int | None = None, wait_s: float | None = 60.0,
           root_certificate: str | None = None, seed: int = 0, console: Console | None = None, **options) -> dict:
    """A Flower client: trains the server's model on ``data`` (read as ``train`` reads labelled
    data; it never leaves this process) each round it is asked. ``options``: data options and
    this site's TrainConfig options (SITE_OPTIONS). Writes OUT/local.safetensors (its last
    local model) and OUT/round/ (the last round's training log). ``root_certificate``: the CA
    file that signed the server's certificate (TLS)."""
    console = console or Console(stderr=True, markup=False)
    flower_python()  # Flower missing is said before the data is read
    data_kw, site_kw = _site_options(options)
    opts = staged(DataOptions.parse(data_kw, data=data))
    tr = TASKS.get(task).read_labelled(opts)
    check_outputs({"--out": out})
    site = Site(task, tr, Path(out), site_kw, console, seed, opts.skip_bad)
    console.print(f"federated client of {server_address}: {len(tr)} local images", highlight=False)
    ca = _files([root_certificate], 1, "--root-cert")[0] if root_certificate else None
    Link(_handlers(None, {0: site}), console).run("client", {"server": server_address, "retries": retries,
                                                              "wait_s": wait_s, "root_certificate": ca})
    return {"rounds_trained": site.rounds, "out_dir": str(out), "images": len(tr)}


def _files(files, n: int, what: str) -> list[str] | None:
    if not files:
        return None
    files = [str(Path(f).resolve()) for f in files]
    if len(files) != n:
        raise ConfigError(f"{what}: expected {n} files, got {len(files)}")
    for f in files:
        if not Path(f).is_file():
            raise ConfigError(f"{what}: no such file", path=f)
    return files


def _out(out: str, overwrite: bool) -> Path:
    check_outputs({"--out": out})
    out_dir = Path(out)
    if (out_dir / "model.safetensors").exists() and not overwrite:
        raise ConfigError(f"{out_dir} already holds a federated model", path=str(out_dir / "model.safetensors"),
                          hint="pass --overwrite to replace it, or another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _summary(coord: Coordinator, out_dir: Path) -> dict:
    last = coord.records[-1] if coord.records else {}
    return {"rounds": max((r["epoch"] for r in coord.records), default=0), "metric": coord.metric,
            "final": last.get(coord.metric), "records": coord.records, "model": str(out_dir / "model.safetensors"),
            "out_dir": str(out_dir)}
