"""Self-supervised pretraining on Fashion-MNIST: `cvapps pretrain` learns a backbone from the
training images without their labels, then a classifier is fine-tuned on 100 labels (10 per
class, the seeded draw of semi_fashion_mnist.py) from (a) random initialisation, (b) the
self-supervised backbone, (c) ImageNet weights — the same recipe for all three; accuracy on
the 10,000 test images (the last epoch's model).

    .venv/bin/python benchmarks/ssl_fashion_mnist.py [--method simclr] [--pool 20000] [--ssl-epochs 10]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from rich.console import Console

import cvapps

from semi_fashion_mnist import prepare

WEIGHTS = {"mobilenet_v3_small": "mobilenet_v3_small.imagenet1k", "mobilenet_v2": "mobilenet_v2.imagenet1k"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/semi-fmnist")
    ap.add_argument("--method", default="simclr", choices=["simclr", "byol", "dino"])
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--pool", type=int, default=20000)
    ap.add_argument("--ssl-epochs", type=int, default=10)
    ap.add_argument("--ssl-minutes", type=float, default=None, help="(informational) expected budget")
    ap.add_argument("--epochs", type=int, default=100, help="fine-tuning epochs on the 100 labels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(args.work)
    _, pool = prepare(work, 10, args.pool, args.seed)
    quiet = Console(file=io.StringIO())
    t = time.perf_counter()
    ssl = cvapps.pretrain([str(work / "pool")], backbone=args.backbone, method=args.method, img_size=32,
                          epochs=args.ssl_epochs, batch_size=128, out=str(work / f"ssl-{args.method}"), overwrite=True,
                          console=quiet)
    report = {"method": args.method, "backbone": args.backbone, "pool": int(len(pool)), "ssl_epochs": args.ssl_epochs,
              "ssl_minutes": round((time.perf_counter() - t) / 60, 1), "ssl_final_loss": round(ssl["loss"], 4)}
    for arm, weights in (("random", None), (f"{args.method}", ssl["backbone_file"]),
                         ("imagenet", WEIGHTS.get(args.backbone))):
        t = time.perf_counter()
        out = work / f"finetune-{arm}"
        cvapps.train("classify", train=str(work / "labelled" / "train"), backbone=args.backbone, weights=weights,
                     img_size=32, epochs=args.epochs, batch_size=32, lr=3e-3, backbone_lr_ratio=1.0,
                     seed=args.seed, overwrite=True, out=str(out), console=quiet)
        m = cvapps.evaluate(str(out / "last.safetensors"), str(work / "test"), task="classify")
        report[arm] = {"test_accuracy": round(float(m["top1"]), 4), "minutes": round((time.perf_counter() - t) / 60, 1)}
        print(arm, report[arm], flush=True)
    report["gain_over_random_points"] = round(100 * (report[args.method]["test_accuracy"]
                                                     - report["random"]["test_accuracy"]), 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
