"""Sliced detection (--tiles 2x2) on the 100 voc-detection photos with the COCO detector:
COCO AP with and without tiles (VOC names mapped), and how many of the final boxes end on a
tile's inner edge (a cut through an object that survived the merge), image by image.

    .venv/bin/python benchmarks/tiles_voc.py [--out runs/tiles]   # prints one JSON object

Looked at: 2007_000793.jpg (a man: whole without tiles) and 2007_000042.jpg (a train), the
two photos where the old merge split one object into parts; their annotated images are
written to --out for both runs."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps.data.io import image_size  # noqa: E402
from cvapps.tasks.detection.slicing import cut_by_tile, windows  # noqa: E402

LOOK = ("2007_000793.jpg", "2007_000042.jpg")


def on_inner_edge(box: np.ndarray, w: int, h: int, rows: int = 2, cols: int = 2) -> bool:
    """The box lies inside one of the tiles and ends on that tile's inner edge."""
    for win in windows(h, w, rows, cols):
        x0, y0, x1, y1 = win
        mx, my = 0.01 * (x1 - x0), 0.01 * (y1 - y0)
        inside = box[0] >= x0 - mx and box[1] >= y0 - my and box[2] <= x1 + mx and box[3] <= y1 + my
        if inside and cut_by_tile(box[None], win, w, h)[0]:
            return True
    return False


def run(images: Path, ann: Path, tiles: str | None, tmp: Path, out: Path | None) -> dict:
    """AP from a results file at score >= 0.01 (as `cvapps eval` ranks); the boxes a user sees
    (predict's default threshold) counted on tile edges."""
    res = tmp / f"res_{tiles or 'none'}.json"
    jsonl = tmp / f"p_{tiles or 'none'}.jsonl"
    files = [str(f) for f in sorted(images.glob("*.jpg"))]
    opts = {"tiles": tiles} if tiles else {}
    cvapps.predict(None, files, task="detect", save_coco=str(res), coco_gt=str(ann), conf=0.01, progress=False, **opts)
    metrics = cvapps.evaluate_results(str(res), str(ann), task="detect")
    cvapps.predict(None, files, task="detect", save_json=str(jsonl), progress=False, **opts)
    edge, per_image = 0, {}
    for line in jsonl.read_text().splitlines():
        r = json.loads(line)
        w, h = r["width"], r["height"]
        n = 0
        for p in r["predictions"]:
            x, y, bw, bh = p["bbox"]
            n += on_inner_edge(np.array([x, y, x + bw, y + bh]), w, h)
        edge += n
        if n:
            per_image[Path(r["source"]).name] = n
    if out is not None:
        look = [str(images / name) for name in LOOK if (images / name).exists()]
        cvapps.predict(None, look, task="detect", out_dir=str(out / (tiles or "whole")), progress=False, **opts)
    boxes = {Path(json.loads(ln)["source"]).name: [(p["label"], round(p["score"], 2), [round(v) for v in p["bbox"]])
                                                  for p in json.loads(ln)["predictions"]]
             for ln in jsonl.read_text().splitlines() if Path(json.loads(ln)["source"]).name in LOOK}
    return {"AP": round(metrics["AP"], 4), "AP50": round(metrics["AP50"], 4),
            "APsmall": round(metrics["APsmall"], 4), "APmedium": round(metrics["APmedium"], 4),
            "APlarge": round(metrics["APlarge"], 4), "ARsmall": round(metrics["ARsmall"], 4),
            "boxes": sum(len(json.loads(ln)["predictions"]) for ln in jsonl.read_text().splitlines()),
            "boxes_on_inner_tile_edges": edge if tiles else None, "images_with_such_boxes": len(per_image) if tiles
            else None, "looked_at": boxes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="write the looked-at photos annotated here")
    args = ap.parse_args()
    root = require(data_root() / "voc-detection", "voc-detection")
    images, ann = root / "images", root / "annotations" / "instances_coco.json"
    assert all(image_size(p) for p in images.glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else None
        result = {"whole": run(images, ann, None, Path(tmp), out), "tiles_2x2": run(images, ann, "2x2", Path(tmp), out)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
