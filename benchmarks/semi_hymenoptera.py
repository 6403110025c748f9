"""Semi-supervised classification on real photos: hymenoptera (ants vs bees) with 10 labels per
class (a seeded draw from train/), the other training images unlabelled; ImageNet MobileNetV2
fine-tuned on the 20 labels alone vs with FixMatch on the rest (`train --unlabelled`), the same
recipe and labelled epochs; accuracy on the 153 val photos (the last epoch's model).

    CVAPPS_HOME=... .venv/bin/python benchmarks/semi_hymenoptera.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from rich.console import Console

from _common import data_root, require
from semi_fashion_mnist import labels_vs_fixmatch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/semi-hymenoptera")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = require(data_root() / "hymenoptera", "hymenoptera")
    work = Path(args.work)
    rng = np.random.default_rng(args.seed)
    labelled, pool = work / "labelled", work / "pool"
    for cls in sorted(p.name for p in (root / "train").iterdir() if p.is_dir()):
        files = sorted((root / "train" / cls).glob("*.jpg"))
        pick = set(rng.choice(len(files), args.per_class, replace=False).tolist())
        for i, f in enumerate(files):
            dst = (labelled / cls if i in pick else pool) / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(f)
    common = dict(weights="mobilenet_v2.imagenet1k", img_size=args.size, epochs=args.epochs, batch_size=10,
                  lr=1e-3, seed=args.seed, overwrite=True, console=Console(file=io.StringIO()))
    report = {"labels": sum(1 for _ in labelled.rglob("*.jpg")), "unlabelled": sum(1 for _ in pool.glob("*.jpg")),
              "epochs": args.epochs, "size": args.size}
    report.update(labels_vs_fixmatch(work, labelled, pool, root / "val", "val_accuracy", common))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
