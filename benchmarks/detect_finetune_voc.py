"""Fine-tune a detector on ../shared/data/voc-detection with a fixed 80/20 split (every 5th
image held out); print mAP@.5 (COCO AP50 and VOC all-point), COCO AP and wall time as one
JSON object. ``--weights mobilenet_v2.imagenet1k`` (default): SSDLite head on an ImageNet
backbone. ``--weights ssd_mobilenet_v2.coco``: the converted COCO detector, whose classes that
VOC shares by name (all 20) start from its rows; its AP50 before any training is reported too."""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from _common import data_root, require
from rich.console import Console

import cvapps
from cvapps.data.detection import read_coco
from cvapps.weights import get_spec
from cvapps.tasks.spec import split_every_kth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None, help="voc-detection folder")
    ap.add_argument("--out", default=None)
    ap.add_argument("--weights", default="mobilenet_v2.imagenet1k")
    ap.add_argument("--epochs", type=int, default=None, help="default: 40 (ImageNet backbone), 15 (COCO detector)")
    ap.add_argument("--lr", type=float, default=None, help="default: 2e-3 (ImageNet backbone), the detector's fine-tuning recipe")
    ap.add_argument("--img-size", type=int, default=None, help="default: 320, or the detector's own (300)")
    ap.add_argument("--head", default=None)
    ap.add_argument("--freeze", default=None)
    ap.add_argument("--ema", type=float, default=None, help="EMA of the weights with this decay per step")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up epochs (default 1)")
    ap.add_argument("--backbone-lr-ratio", type=float, default=None)
    ap.add_argument("--norm-stats", default=None, help="update | fixed")
    args = ap.parse_args()
    root = require(Path(args.data) if args.data else data_root() / "voc-detection", "voc-detection")
    coco = args.weights.endswith(".coco")
    out = args.out or ("runs/bench-voc-ssd-coco" if coco else "runs/bench-voc-ssd")
    ann, images = root / "annotations" / "instances_coco.json", root / "images"
    _, val = split_every_kth(read_coco(ann, images), 0.2)
    result = {"weights": args.weights}
    if coco:  # before any training: the COCO detector with VOC names mapped, on the same 20 images
        before = cvapps.evaluate(cvapps.create_model("detect", weights=args.weights, labels=val.labels,
                                                     category_ids=val.category_ids), val_data=val)
        result["AP50_before_training"] = round(before["AP50"], 4)
    kw = {"kind": args.head} if args.head else {}
    if args.img_size or not coco:
        kw["img_size"] = args.img_size or 320
    for name in ("ema", "backbone_lr_ratio", "norm_stats", "freeze"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.warmup is not None:
        kw["warmup_epochs"] = args.warmup
    if args.lr is not None or not coco:
        kw["lr"] = args.lr or 2e-3
    t0 = time.perf_counter()
    r = cvapps.train("detect", str(ann), images=str(images), val_fraction=0.2, weights=args.weights,
                     epochs=args.epochs or (15 if coco else 40), batch_size=16,
                     out=out, overwrite=True, console=Console(file=io.StringIO()), **kw)
    wall = time.perf_counter() - t0
    best = cvapps.load(Path(out) / "best.safetensors")
    voc = cvapps.evaluate(best, val_data=val, metric="voc")
    epochs = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    trained = [e["AP50"] for e in epochs if e["epoch"] > 0]
    recipe = {k: v for k, v in kw.items() if k != "img_size"}
    result.update({"recipe": recipe or {"weights' fine_tune": get_spec(args.weights).fine_tune}, "best_epoch": r.get("best_epoch"),
                   "AP50_per_epoch": [round(v, 4) for v in trained], "AP50_best_trained_epoch": round(max(trained), 4),
                   "AP50_last_epoch": round(trained[-1], 4)})
    result.update({"img_size": best.config["preprocessing"]["input_size"], "epochs": r["epochs_run"],
                   "train_images": 80, "val_images": len(val), "mAP50_coco": round(r["val"]["AP50"], 4),
                   "mAP50_voc_allpoint": round(voc["mAP"], 4), "AP": round(r["val"]["AP"], 4),
                   "wall_s": round(wall, 1), "dropped_boxes": r.get("dropped_boxes", 0),
                   "model": str(Path(out) / "best.safetensors")})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
