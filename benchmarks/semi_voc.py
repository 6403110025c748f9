"""Semi-supervised detection on real photos: voc-detection's 100 images split as every 5th held
out (20, scored), 20 of the other 80 labelled (a seeded draw) and the remaining 60 unlabelled.
The same recipe on the 20 labels alone, on them with the weights' EMA (the mean teacher is an
EMA: this arm separates its effect from the unlabelled images'), and with the mean teacher on
the 60 (`train detect --unlabelled`); AP50 of the last epoch's model (COCO AP50 on the 20).

    CVAPPS_HOME=... .venv/bin/python benchmarks/semi_voc.py [--weights ssd_mobilenet_v2.coco]
        [--weights mobilenet_v2.imagenet1k --epochs 60]
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
from _common import data_root, require
from cvapps.data.detection import read_coco, write_coco
from cvapps.tasks.spec import split_every_kth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/semi-voc")
    ap.add_argument("--weights", default="ssd_mobilenet_v2.coco")
    ap.add_argument("--labelled", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=None, help="default: the weights' fine-tuning recipe, else 2e-3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default="labels,labels_ema,mean_teacher")
    args = ap.parse_args()
    root = require(data_root() / "voc-detection", "voc-detection")
    work = Path(args.work) / args.weights.replace(".", "_")
    images = root / "images"
    train, val = split_every_kth(read_coco(root / "annotations" / "instances_coco.json", images), 0.2)
    pick = np.random.default_rng(args.seed).permutation(len(train))
    labelled = train.subset(sorted(pick[: args.labelled].tolist()))
    pool = work / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for i in pick[args.labelled:]:
        dst = pool / train.records[i].path.name
        if not dst.exists():
            dst.symlink_to(train.records[i].path)
    write_coco(labelled, work / "labelled.json")
    write_coco(val, work / "val.json")
    common = dict(images=str(images), weights=args.weights, epochs=args.epochs, batch_size=args.batch_size,
                  seed=args.seed, overwrite=True, console=Console(file=io.StringIO()))
    if not args.weights.endswith(".coco"):
        common.update(img_size=320, lr=args.lr or 2e-3)
    elif args.lr:
        common["lr"] = args.lr
    report = {"weights": args.weights, "labelled": len(labelled), "unlabelled": len(pick) - args.labelled,
              "scored": len(val), "epochs": args.epochs, "batch_size": args.batch_size}
    if args.weights.endswith(".coco"):  # before training: the COCO detector's own rows for VOC's names
        before = cvapps.evaluate(cvapps.create_model("detect", weights=args.weights, labels=val.labels,
                                                     category_ids=val.category_ids), val_data=val)
        report["AP50_before_training"] = round(before["AP50"], 4)
    arms = {"labels": {}, "labels_ema": {"ema": 0.99}, "mean_teacher": {"unlabelled": [str(pool)]}}
    for arm in args.arms.split(","):
        t = time.perf_counter()
        out = work / arm
        cvapps.train("detect", str(work / "labelled.json"), out=str(out), val=str(work / "val.json"),
                     val_images=str(images), **common, **arms[arm])
        m = cvapps.evaluate(str(out / "last.safetensors"), val_data=val)
        recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        report[arm] = {"AP50": round(m["AP50"], 4), "AP": round(m["AP"], 4),
                       "minutes": round((time.perf_counter() - t) / 60, 1),
                       "AP50_per_epoch": [round(r["AP50"], 3) for r in recs if r["epoch"] > 0]}
        if "pseudo_boxes" in recs[-1]:
            report[arm]["pseudo_boxes_per_image"] = [round(r["pseudo_boxes"], 2) for r in recs if "pseudo_boxes" in r]
        print(arm, report[arm], flush=True)
    if "labels" in report and "mean_teacher" in report:
        report["AP50_change_points"] = round(100 * (report["mean_teacher"]["AP50"] - report["labels"]["AP50"]), 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
