"""Self-training: write the model's confident predictions on unlabelled images in the task's
training format — classification CSV (``path,label``), detection COCO JSON, segmentation
label-map PNGs (low-confidence pixels set to the ignore label)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from ..inference.runner import run_batch
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
    elif model.task in ("landmarks", "pose"):
        target = out_dir / "pseudo_labels_keypoints.json"
        sch = model.config["schema"]
        coco = {"images": [], "annotations": [], "categories": [
            {"id": 1, "name": "face" if model.task == "landmarks" else "person", "keypoints": sch["keypoints"],
             "skeleton": [[a + 1, b + 1] for a, b in sch["skeleton"]]}]}
    else:
        target = out_dir / "pseudo_masks"
        target.mkdir(exist_ok=True)
    try:
        frames = prefetch(iter_frames(paths), pre)
        for batch in batched(frames, batch_size):
            good = [fr for fr in batch if fr.error is None]
            if not good:
                continue
            metas = [fr.payload[1] for fr in good]
            kw = {"conf": threshold} if model.task == "detect" else {}
            preds = run_batch(model, [fr.payload[0] for fr in good], metas, pre=pre, **kw)
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
                elif model.task in ("landmarks", "pose"):
                    keep = [r for r in p.to_dict() if r["score"] >= threshold]
                    if not keep:
                        continue
                    img_id = len(coco["images"]) + 1
                    coco["images"].append({"id": img_id, "file_name": Path(fr.source).name,
                                           "width": meta["width"], "height": meta["height"]})
                    for r in keep:
                        kp = np.asarray(r["keypoints"]).reshape(-1, 3)
                        inside = (kp[:, 0] >= 0) & (kp[:, 0] <= meta["width"]) & (kp[:, 1] >= 0) & \
                            (kp[:, 1] <= meta["height"])
                        # confident points inside the image become labelled, the rest unlabelled
                        kp[:, 2] = np.where((kp[:, 2] > 0.2) & inside, 2, 0)
                        kp[kp[:, 2] == 0, :2] = 0
                        coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": img_id,
                                                    "category_id": 1, "bbox": r["bbox"], "iscrowd": 0,
                                                    "area": r["bbox"][2] * r["bbox"][3], "score": r["score"],
                                                    "keypoints": kp.reshape(-1).tolist(),
                                                    "num_keypoints": int((kp[:, 2] > 0).sum())})
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
    if model.task in ("detect", "landmarks", "pose"):
        atomic_write(target, lambda tmp: tmp.write_text(json.dumps(coco)))
    return {"written": n, "file": str(target)}
