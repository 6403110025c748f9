"""Federated vs centralised training on Fashion-MNIST: the same model and number of epochs
over the data — centralised (`cvapps train`), and split over 5 simulated sites (`cvapps
federated simulate`, Flower's simulation engine) IID and Dirichlet(0.3) non-IID, in rounds of
--local-epochs (1, or a share such as 0.2: 5 rounds an epoch). Top-1 on the 10,000 test
images, which stay with the server. The figures in docs/federated.md:

    .venv/bin/python benchmarks/federated_fmnist.py --train 10000 --epochs 5 --weights mobilenet_v2.imagenet1k \
        --arms central --lr 6.7e-3
    .venv/bin/python benchmarks/federated_fmnist.py --train 10000 --epochs 5 --weights mobilenet_v2.imagenet1k \
        --arms iid,dirichlet:0.3 --local-epochs 0.2 --local-optimizer keep --eval-every 5 --lr 1.5e-2
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console

import cvapps
import cvapps.federated as fed

from semi_fashion_mnist import read_idx, write
from _common import data_root, require


def prepare(work: Path, n_train: int, seed: int) -> None:
    """WORK/train/<class>/ (``n_train`` seeded training images, balanced) and WORK/val/<class>/
    (the 10,000 test images)."""
    root = require(data_root() / "fashion-mnist", "fashion-mnist")
    xtr, ytr = read_idx(next(root.glob("train-images*"))), read_idx(next(root.glob("train-labels*")))
    xte, yte = read_idx(next(root.glob("t10k-images*"))), read_idx(next(root.glob("t10k-labels*")))
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.choice(np.flatnonzero(ytr == c), n_train // 10, replace=False) for c in range(10)])
    write(work / "train", xtr[picked], ytr[picked], [f"tr{i}.png" for i in picked])
    write(work / "val", xte, yte, [f"te{i}.png" for i in range(len(yte))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/fed-fmnist")
    ap.add_argument("--train", type=int, default=20000, help="training images (balanced seeded draw of the 60,000)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs over the data (= rounds x local epochs)")
    ap.add_argument("--local-epochs", type=float, default=1.0, help="per round: 1, or a share (0.2: 5 rounds an epoch)")
    ap.add_argument("--local-optimizer", default="reset", help="reset | keep (a site's AdamW moments)")
    ap.add_argument("--eval-every", type=int, default=1, help="rounds between the server's evaluations")
    ap.add_argument("--strategy", default="fedavg", help="fedavg | fedprox | fedavgm")
    ap.add_argument("--server-lr", type=float, default=1.0, help="fedavgm's server rate")
    ap.add_argument("--server-momentum", type=float, default=0.9, help="fedavgm's server momentum")
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--arms", default="central,iid,dirichlet:0.3")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weights", default=None, help="e.g. mobilenet_v2.imagenet1k (default: random init)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(args.work)
    prepare(work, args.train, args.seed)
    common = dict(backbone="mobilenet_v2", weights=args.weights, img_size=32, batch_size=32,
                  backbone_lr_ratio=0.1 if args.weights else 1.0)
    tag = "pretrained-" if args.weights else ""
    quiet = Console(file=io.StringIO())
    report = {"train_images": args.train, "test_images": 10000, "epochs": args.epochs, "clients": args.clients,
              "model": f"mobilenet_v2 ({args.weights or 'random init'}) at 32 px, batch 32, AdamW lr {args.lr:g} "
                       f"(backbone x{common['backbone_lr_ratio']}), cosine",
              "local_epochs": args.local_epochs, "local_optimizer": args.local_optimizer, "strategy": args.strategy,
              "server_lr": args.server_lr, "server_momentum": args.server_momentum}
    for arm in args.arms.split(","):
        t = time.perf_counter()
        if arm == "central":
            cvapps.train("classify", str(work), out=str(work / f"{tag}central"), epochs=args.epochs, lr=args.lr,
                         warmup_epochs=0.0, seed=args.seed, overwrite=True, console=quiet, **common)
            rec = [json.loads(x) for x in (work / f"{tag}central" / "metrics.jsonl").read_text().splitlines()][-1]
            top1, parts = rec["top1"], None
        else:
            rounds = round(args.epochs / args.local_epochs)
            name = f"{tag}{arm.replace(':', '-')}-local{args.local_epochs:g}-{args.local_optimizer}-{args.strategy}"
            r = fed.simulate("classify", str(work), clients=args.clients, partition=arm, rounds=rounds,
                             local_epochs=args.local_epochs, local_optimizer=args.local_optimizer,
                             eval_every=args.eval_every, strategy=args.strategy, server_lr=args.server_lr,
                             server_momentum=args.server_momentum, lr=args.lr, out=str(work / name), seed=args.seed,
                             overwrite=True, console=quiet, **common)
            top1, parts = r["final"], r["sites"]
        report[arm] = {"top1": round(float(top1), 4), "minutes": round((time.perf_counter() - t) / 60, 1)}
        if parts:
            report[arm]["sites"] = parts
        print(arm, report[arm], flush=True)
    if "central" in report:
        for arm in args.arms.split(","):
            if arm != "central":
                report[arm]["vs_central_points"] = round(100 * (report[arm]["top1"] - report["central"]["top1"]), 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
