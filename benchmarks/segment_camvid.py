"""Train a segmentation model on ../shared/data/camvid train (367 images, 480x360, 11 classes,
void = 11), evaluate on val (101). Default: FCN-8s on ImageNet MobileNetV2 at full resolution,
bf16 autocast, within a wall-clock budget. ``--model segnet_basic`` trains SegNet-Basic from
scratch instead. Prints one JSON object (mIoU, per-class IoU, pixel acc, wall time)."""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from rich.console import Console

import cvapps

from _common import data_root, require


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default="fcn8s", choices=["fcn8s", "segnet_basic"])
    ap.add_argument("--out", default=None, help="default runs/camvid-fcn8s or runs/camvid-segnet-basic")
    ap.add_argument("--epochs", type=int, default=42)
    ap.add_argument("--minutes", type=float, default=58.0, help="training wall-clock budget")
    ap.add_argument("--size", default="360x480")
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    root = require(Path(args.data) if args.data else data_root() / "camvid", "camvid")
    size = [int(v) for v in args.size.split("x")]
    if args.model == "fcn8s":
        kw = dict(backbone="mobilenet_v2", weights="mobilenet_v2.imagenet1k", head={"kind": "fcn8s"},
                  lr=2e-3, backbone_lr_ratio=0.2)
        out = args.out or "runs/camvid-fcn8s"
    else:
        kw = dict(backbone="segnet_basic", kind="segnet", median_frequency=True, lr=5e-3,
                  backbone_lr_ratio=1.0)
        out = args.out or "runs/camvid-segnet-basic"
    log = io.StringIO()
    t0 = time.perf_counter()
    r = cvapps.train("segment", str(root), img_size=size, epochs=args.epochs, batch_size=8, out=out,
                     precision=args.precision, time_limit_min=args.minutes, console=Console(file=log), **kw)
    wall = time.perf_counter() - t0
    v = r["val"]
    print(json.dumps({"model": args.model, "size": size, "epochs_run": r["epochs_run"], "wall_s": round(wall, 1),
                      "mIoU": round(v["mIoU"], 4), "pixel_acc": round(v["pixel_acc"], 4),
                      "mean_class_acc": round(v["mean_class_acc"], 4),
                      "per_class_iou": {k: (round(x, 4) if x is not None else None) for k, x in v["per_class_iou"].items()},
                      "model_file": str(Path(out) / "best.safetensors")}))


if __name__ == "__main__":
    main()
