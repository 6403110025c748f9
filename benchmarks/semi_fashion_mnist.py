"""Semi-supervised classification on Fashion-MNIST: 10 labels per class (100 images, a seeded
draw from the training set), the rest of the training set unlabelled. The same model and
recipe trained on the 100 labels alone vs with FixMatch on the unlabelled images
(`train --unlabelled`), both for the same labelled epochs; accuracy on the 10,000 test images
(the last epoch's model: no labelled validation set picks an epoch).

    .venv/bin/python benchmarks/semi_fashion_mnist.py [--epochs 200] [--pool 20000]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import time
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console

import cvapps

from _common import data_root, require

CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write(folder: Path, images: np.ndarray, labels: np.ndarray | None, names: list[str]) -> None:
    for i, img in enumerate(images):
        d = folder / CLASSES[labels[i]] if labels is not None else folder
        d.mkdir(parents=True, exist_ok=True)
        if not (d / names[i]).exists():
            cv2.imwrite(str(d / names[i]), img)


def prepare(work: Path, per_class: int, pool_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """WORK/labelled/train/<class>/ (``per_class`` seeded training images per class), WORK/pool/
    (``pool_size`` other training images, no labels), WORK/test/<class>/ (the 10,000 test
    images) -> (labelled indices, pool indices)."""
    root = require(data_root() / "fashion-mnist", "fashion-mnist")
    xtr, ytr = read_idx(next(root.glob("train-images*"))), read_idx(next(root.glob("train-labels*")))
    xte, yte = read_idx(next(root.glob("t10k-images*"))), read_idx(next(root.glob("t10k-labels*")))
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.choice(np.flatnonzero(ytr == c), per_class, replace=False) for c in range(10)])
    rest = np.setdiff1d(np.arange(len(ytr)), picked)
    pool = rng.choice(rest, min(pool_size, len(rest)), replace=False)
    write(work / "labelled" / "train", xtr[picked], ytr[picked], [f"tr{i}.png" for i in picked])
    write(work / "pool", xtr[pool], None, [f"tr{i}.png" for i in pool])
    write(work / "test", xte, yte, [f"te{i}.png" for i in range(len(yte))])
    return picked, pool


def labels_vs_fixmatch(work: Path, labelled: Path, pool: Path, scored: Path, key: str, common: dict) -> dict:
    """The same recipe on the labels alone and with FixMatch on ``pool``; the last epoch's
    model scored (top-1) on the class folders of ``scored``."""
    report = {}
    for arm, extra in (("supervised", {}), ("fixmatch", {"unlabelled": [str(pool)]})):
        t = time.perf_counter()
        cvapps.train("classify", train=str(labelled), out=str(work / arm), **common, **extra)
        m = cvapps.evaluate(str(work / arm / "last.safetensors"), str(scored), task="classify")
        report[arm] = {key: round(float(m["top1"]), 4), "minutes": round((time.perf_counter() - t) / 60, 1)}
        last = json.loads((work / arm / "metrics.jsonl").read_text().splitlines()[-1])
        if "mask_rate" in last:
            report[arm]["last_epoch_mask_rate"] = round(last["mask_rate"], 3)
        print(arm, report[arm], flush=True)
    report["gain_points"] = round(100 * (report["fixmatch"][key] - report["supervised"][key]), 1)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/semi-fmnist")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--pool", type=int, default=20000, help="unlabelled images (of the other training images)")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(args.work)
    picked, pool = prepare(work, args.per_class, args.pool, args.seed)
    common = dict(backbone=args.backbone, weights=args.weights, img_size=32, epochs=args.epochs, batch_size=32,
                  lr=3e-3, backbone_lr_ratio=1.0 if not args.weights else 0.1, seed=args.seed, overwrite=True,
                  console=Console(file=io.StringIO()))
    report = {"labels": int(len(picked)), "unlabelled": int(len(pool)), "epochs": args.epochs,
              "backbone": args.backbone, "weights": args.weights}
    report.update(labels_vs_fixmatch(work, work / "labelled" / "train", work / "pool", work / "test", "test_accuracy",
                                     common))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
