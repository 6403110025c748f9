"""Self-training: write the model's confident predictions on unlabelled images in the task's
training format — classification CSV (``path,label``), detection COCO JSON, segmentation
label-map PNGs (low-confidence pixels set to the ignore label)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from ..inference.sources import batched, iter_frames, prefetch
from ..modelfile import atomic_write


@torch.inference_mode()
def write_pseudo_labels(model, paths: list[Path], threshold: float, out_dir: Path, batch_size: int = 16) -> dict:
    """Streams ``paths`` through ``model``; returns {"written": n images, "file": path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pre = model.preprocessor()
    model.eval()
    n = 0
    if model.task == "classify":
        target = out_dir / "pseudo_labels.csv"
        f = open(target, "w", newline="")
        w = csv.writer(f)
        w.writerow(["path", "label"])
    elif model.task == "detect":
        target = out_dir / "pseudo_labels_coco.json"
        coco = {"images": [], "annotations": [],
                "categories": [{"id": c, "name": n} for c, n in zip(model.config.get("category_ids") or
                                                                     range(1, len(model.labels) + 1), model.labels)]}
    else:
        target = out_dir / "pseudo_masks"
        target.mkdir(exist_ok=True)
    try:
        for batch in batched(prefetch(iter_frames(paths), hook=pre.prepare), batch_size):
            good = [fr for fr in batch if fr.error is None]
            if not good:
                continue
            x = pre.normalize(torch.stack([fr.payload[0] for fr in good]).to(model.device))
            metas = [fr.payload[1] for fr in good]
            kw = {"conf": threshold} if model.task == "detect" else {}
            preds = model.postprocess(model(x), metas, **kw)
            for fr, p, meta in zip(good, preds, metas):
                if model.task == "classify":
                    if p.topk and p.topk[0][2] >= threshold:
                        w.writerow([fr.source, p.topk[0][1]])
                        n += 1
                elif model.task == "detect":
                    img_id = len(coco["images"]) + 1
                    coco["images"].append({"id": img_id, "file_name": Path(fr.source).name,
                                           "width": meta["width"], "height": meta["height"]})
                    for r in p.to_dict():
                        x0, y0, bw, bh = r["bbox"]
                        coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": img_id,
                                                    "category_id": r["category_id"], "bbox": r["bbox"],
                                                    "area": bw * bh, "iscrowd": 0, "score": r["score"]})
                    n += 1
                else:
                    mask = p.mask.copy()
                    mask[p.scores < threshold] = int(model.config["head"]["ignore_index"])
                    import cv2

                    cv2.imwrite(str(target / (Path(fr.source).stem + ".png")), mask.astype(np.uint8))
                    n += 1
    finally:
        if model.task == "classify":
            f.close()
    if model.task == "detect":
        atomic_write(target, lambda tmp: tmp.write_text(json.dumps(coco)))
    return {"written": n, "file": str(target)}
