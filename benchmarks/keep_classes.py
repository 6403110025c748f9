"""New classes without forgetting (``--keep-classes``), on ../shared/data/voc-detection with
the fixed 80/20 split of detect_finetune_voc.py (every 5th image held out).

The 80 training images are labelled with only 5 of the 20 VOC classes — the 5 non-person
classes with the most held-out instances (ties: more training boxes), so their gain can be
measured — and the COCO detector (ssd_mobilenet_v2.coco, which knows all 20 under COCO names)
is fine-tuned on them three ways:
- plain: `cvapps train detect --weights ssd_mobilenet_v2.coco` on the 5-class data: a
  5-class model (the other classes are gone);
- labels only, all classes: the same data declaring all 80 COCO classes, so the head keeps
  every row, but the 15 unlabelled VOC classes in these images are background to the loss;
- keep-classes: `--keep-classes` (learning without forgetting).
Per-class AP50 (VOC all-point, IoU 0.5) on the 20 held-out images; "old" = the 15 other VOC
classes present there. Prints one JSON object (also used by distill.py).

    python benchmarks/keep_classes.py [--epochs 15] [--lr 5e-4]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps.data.detection import read_coco  # noqa: E402
from cvapps.tasks.detection.classes import class_mapping, remap  # noqa: E402
from cvapps.tasks.spec import split_every_kth  # noqa: E402
from cvapps.weights import get_spec  # noqa: E402

WEIGHTS = "ssd_mobilenet_v2.coco"


def per_class_ap50(model, val) -> dict[str, float]:
    """VOC-name -> AP50 of ``model`` on ``val`` (VOC classes with held-out instances)."""
    mapped, _ = remap(val, model.labels, model.config["category_ids"])
    voc = cvapps.evaluate(model, val_data=mapped, metric="voc")["per_class"]
    mapping, _ = class_mapping(val.labels, model.labels)
    present = {val.labels[i] for r in val.records for i in r.labels}
    return {name: round(voc.get(model.labels[mapping[i]], 0.0), 4) if i in mapping else 0.0
            for i, name in enumerate(val.labels) if name in present}


def write_subset(data, keep: list[str], path: Path, declare: list[str] | None = None) -> None:
    """A COCO file of ``data``'s images with only the boxes of ``keep``; categories: ``keep``,
    or ``declare`` (more classes than are labelled)."""
    cats = declare or keep
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(cats)]}
    for r in data.records:
        coco["images"].append({"id": r.image_id, "file_name": r.path.name, "width": r.width, "height": r.height})
        for b, lab in zip(r.boxes, r.labels):
            name = data.labels[lab]
            if name in keep:
                x1, y1, x2, y2 = (float(v) for v in b)
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": r.image_id,
                                            "category_id": cats.index(name) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                            "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    path.write_text(json.dumps(coco))


def run(epochs: int = 15, lr: float = 5e-4) -> dict:
    root = require(data_root() / "voc-detection", "voc-detection")
    images = root / "images"
    data = read_coco(root / "annotations" / "instances_coco.json", images)
    train, val = split_every_kth(data, 0.2)
    held = Counter(val.labels[i] for r in val.records for i in r.labels)
    seen = Counter(train.labels[i] for r in train.records for i in r.labels)
    new = sorted((n for n in held if n != "person"), key=lambda n: (-held[n], -seen[n], n))[:5]
    coco_names = list(get_spec(WEIGHTS).config["labels"])
    # the 5 classes under their COCO names, so "labels only, all classes" declares each once
    to_coco, _ = class_mapping(new, coco_names)
    as_coco = {n: coco_names[to_coco[i]] for i, n in enumerate(new)}
    quiet = Console(file=io.StringIO())
    before = per_class_ap50(cvapps.load(WEIGHTS), val)
    out = {"trained_classes": new, "epochs": epochs, "lr": lr, "held_out_images": len(val),
           "held_out_instances": {"trained": sum(held[n] for n in new),
                                  "old": sum(v for n, v in held.items() if n not in new)}}
    runs = {"before": before}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_subset(train, new, d / "five.json")
        renamed = read_coco(d / "five.json", images)
        renamed.labels = [as_coco[n] for n in renamed.labels]
        write_subset(renamed, list(as_coco.values()), d / "all80.json", declare=coco_names)
        recipe = dict(images=str(images), weights=WEIGHTS, epochs=epochs, batch_size=16, lr=lr, overwrite=True,
                      console=quiet)
        for name, ann, extra in (("plain", "five.json", {}), ("labels_only_all_classes", "all80.json", {}),
                                 ("keep_classes", "five.json", {"keep_classes": True})):
            cvapps.train("detect", str(d / ann), out=str(d / name), **recipe, **extra)
            runs[name] = per_class_ap50(cvapps.load(d / name / "last.safetensors"), val)
    old = [n for n in before if n not in new]
    for name, ap in runs.items():
        out[name] = {"AP50_trained_5": round(float(np.mean([ap.get(n, 0.0) for n in new])), 4),
                     "AP50_old": round(float(np.mean([ap.get(n, 0.0) for n in old])), 4), "per_class": ap}
    out["old_classes"] = old
    b = out["before"]
    for name in ("plain", "labels_only_all_classes", "keep_classes"):
        out[name]["old_change_points"] = round(100 * (out[name]["AP50_old"] - b["AP50_old"]), 2)
        out[name]["trained_change_points"] = round(100 * (out[name]["AP50_trained_5"] - b["AP50_trained_5"]), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=5e-4)
    args = ap.parse_args()
    print(json.dumps(run(args.epochs, args.lr)))


if __name__ == "__main__":
    main()
