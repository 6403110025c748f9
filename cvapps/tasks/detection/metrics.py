"""Detection metrics: COCO through pycocotools' COCOeval (never re-implemented), and
PASCAL VOC AP at one IoU with 11-point or all-point interpolation."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from torchvision.ops import box_iou

from ...data.io import coco_index
from ...errors import DataError

COCO_KEYS = ["AP", "AP50", "AP75", "APsmall", "APmedium", "APlarge",
             "AR1", "AR10", "AR100", "ARsmall", "ARmedium", "ARlarge"]


def coco_metrics(gt: dict, results: list[dict]) -> dict:
    """gt: a COCO dict; results: COCO-results list ({"image_id", "category_id", "bbox": xywh,
    "score"}). Returns the 12 COCO stats under COCO_KEYS plus ``per_class`` AP@[.5:.95] of
    the classes that have ground truth (the others have no AP: they are left out, not NaN)."""
    from pycocotools.cocoeval import COCOeval

    names = {c["id"]: c["name"] for c in gt["categories"]}
    present = {a["category_id"] for a in gt.get("annotations", []) if not a.get("iscrowd", 0)}
    if not present:
        raise DataError("the ground truth has no boxes: there is nothing to evaluate against")
    if not results:
        return {**{k: 0.0 for k in COCO_KEYS}, "per_class": {names[c]: 0.0 for c in sorted(present)}}
    coco_gt = coco_index(gt)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {k: float(v) for k, v in zip(COCO_KEYS, ev.stats)}
    precision = ev.eval["precision"]  # (T IoU, R recall, K classes, A areas, M maxDets)
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            per_class[names[cat]] = float(p.mean())
    out["per_class"] = per_class
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray, eleven_point: bool = False) -> float:
    """AP from a precision/recall curve: VOC2007 11-point, or all-point (VOC2010+) area."""
    if eleven_point:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    i = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[i + 1] - r[i]) * p[i + 1]))


def voc_metrics(gt: dict, results: list[dict], iou: float = 0.5, eleven_point: bool = False) -> dict:
    """PASCAL VOC mAP at ``iou``. Crowd/difficult ground truth is ignored: matching it is
    neither a true nor a false positive. Returns {"mAP", "per_class", "iou", "interpolation"}."""
    per_class = {}
    for cat in gt["categories"]:
        cid = cat["id"]
        gts: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
        for a in gt["annotations"]:
            if a["category_id"] == cid:
                x, y, w, h = a["bbox"]
                gts.setdefault(a["image_id"], ([], []))
                gts[a["image_id"]][0].append([x, y, x + w, y + h])
                gts[a["image_id"]][1].append(bool(a.get("iscrowd", 0)))
        n_gt = sum(len(c) - sum(c) for _, c in gts.values())
        dets = sorted((r for r in results if r["category_id"] == cid), key=lambda r: -r["score"])
        used = {k: np.zeros(len(v[0]), bool) for k, v in gts.items()}
        tp, fp = [], []
        for d in dets:
            x, y, w, h = d["bbox"]
            g = gts.get(d["image_id"])
            if g is None:
                tp.append(0), fp.append(1)
                continue
            ious = box_iou(torch.tensor([[x, y, x + w, y + h]]), torch.tensor(g[0], dtype=torch.float32))[0].numpy()
            j = int(ious.argmax())
            if ious[j] >= iou:
                if g[1][j]:
                    continue  # difficult / crowd: ignored
                if not used[d["image_id"]][j]:
                    used[d["image_id"]][j] = True
                    tp.append(1), fp.append(0)
                    continue
            tp.append(0), fp.append(1)
        if n_gt == 0:
            continue
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        recall = tp_c / n_gt if len(tp) else np.zeros(0)
        precision = tp_c / np.maximum(tp_c + fp_c, 1e-9) if len(tp) else np.zeros(0)
        per_class[cat["name"]] = voc_ap(recall, precision, eleven_point)
    return {"mAP": float(np.mean(list(per_class.values()))) if per_class else 0.0, "per_class": per_class,
            "iou": iou, "interpolation": "11point" if eleven_point else "all"}


def results_from(dets, image_ids: list[int]) -> list[dict]:
    """Detections (original pixels) -> COCO results rows."""
    rows = []
    for d, img in zip(dets, image_ids):
        for r in d.to_dict():
            rows.append({"image_id": img, "category_id": r["category_id"], "bbox": r["bbox"], "score": r["score"]})
    return rows
