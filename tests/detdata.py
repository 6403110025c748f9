"""Tiny synthetic detection sets: coloured rectangles on noise, written as COCO, VOC and YOLO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import write_image

CLASSES = ["red", "blue"]
RGB = {"red": (230, 30, 30), "blue": (30, 30, 230)}

# per image: list of (class, x1, y1, x2, y2); image 3 has no objects (a valid sample)
LAYOUT = [
    [("red", 10, 12, 60, 50), ("blue", 70, 60, 120, 118)],
    [("blue", 20, 20, 90, 70)],
    [("red", 40, 50, 110, 110), ("red", 5, 5, 30, 40)],
    [],
]


def make_detection_set(root: Path, size: int = 128, layout=LAYOUT) -> dict:
    rng = np.random.default_rng(0)
    images = root / "images"
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}
    for k, objs in enumerate(layout):
        img = rng.integers(90, 160, (size, size, 3)).astype(np.uint8)
        for c, x1, y1, x2, y2 in objs:
            img[y1:y2, x1:x2] = RGB[c]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": k + 1,
                                        "category_id": CLASSES.index(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                        "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        name = f"img{k}.png"
        write_image(images / name, img)
        coco["images"].append({"id": k + 1, "file_name": name, "width": size, "height": size})
    (root / "coco.json").write_text(json.dumps(coco))
    voc, yolo = root / "voc", root / "yolo"
    voc.mkdir(parents=True, exist_ok=True)
    yolo.mkdir(parents=True, exist_ok=True)
    (yolo / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for k, objs in enumerate(layout):
        xml = [f"<annotation><filename>img{k}.png</filename><size><width>{size}</width><height>{size}</height>"
               "<depth>3</depth></size>"]
        lines = []
        for c, x1, y1, x2, y2 in objs:
            xml.append(f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                       f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
            lines.append(f"{CLASSES.index(c)} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                         f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}")
        (voc / f"img{k}.xml").write_text("".join(xml) + "</annotation>")
        (yolo / f"img{k}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return coco


def repeated_set(root: Path, coco: dict, times: int = 6) -> tuple[Path, Path]:
    """``coco``'s images ``times`` over (more steps per evaluated epoch): copies under their own
    names in ROOT/repeated/ (a COCO file lists each image file once) -> (annotations, images)."""
    import shutil

    folder = root / "repeated"
    folder.mkdir(exist_ok=True)
    rep = {"images": [], "annotations": [], "categories": coco["categories"]}
    for k in range(times):
        for img in coco["images"]:
            new_id, name = k * 10 + img["id"], f"rep{k}_{img['file_name']}"
            shutil.copy(root / "images" / img["file_name"], folder / name)
            rep["images"].append({**img, "id": new_id, "file_name": name})
            for a in coco["annotations"]:
                if a["image_id"] == img["id"]:
                    rep["annotations"].append({**a, "id": len(rep["annotations"]) + 1, "image_id": new_id})
    (root / "train.json").write_text(json.dumps(rep))
    return root / "train.json", folder
