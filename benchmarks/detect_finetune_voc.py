"""Fine-tune SSD-MobileNetV2 (ImageNet backbone) on ../shared/data/voc-detection with a fixed
80/20 split (every 5th image held out); print mAP@.5 (COCO AP50 and VOC all-point), COCO AP
and wall time as one JSON object."""

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
    ap.add_argument("--data", default=None, help="voc-detection folder")
    ap.add_argument("--out", default="runs/bench-voc-ssd")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--img-size", type=int, default=320)
    ap.add_argument("--head", default="ssd")
    args = ap.parse_args()
    root = require(Path(args.data) if args.data else data_root() / "voc-detection", "voc-detection")
    t0 = time.perf_counter()
    r = cvapps.train("detect", str(root / "annotations" / "instances_coco.json"), images=str(root / "images"),
                     val_fraction=0.2, backbone="mobilenet_v2", weights="mobilenet_v2.imagenet1k",
                     head={"kind": args.head}, img_size=args.img_size, epochs=args.epochs, batch_size=16,
                     lr=2e-3, out=args.out, console=Console(file=io.StringIO()))
    wall = time.perf_counter() - t0
    best = cvapps.load(Path(args.out) / "best.safetensors")
    from cvapps.data.detection import read_coco
    from cvapps.tasks.spec import split_every_kth as split

    _, val = split(read_coco(root / "annotations" / "instances_coco.json", root / "images"), 0.2)
    voc = cvapps.evaluate(best, val_data=val, metric="voc")
    print(json.dumps({"head": args.head, "img_size": args.img_size, "epochs": r["epochs_run"],
                      "train_images": 80, "val_images": len(val), "mAP50_coco": round(r["val"]["AP50"], 4),
                      "mAP50_voc_allpoint": round(voc["mAP"], 4), "AP": round(r["val"]["AP"], 4),
                      "wall_s": round(wall, 1), "dropped_boxes": r.get("dropped_boxes", 0),
                      "model": str(Path(args.out) / "best.safetensors")}))


if __name__ == "__main__":
    main()
