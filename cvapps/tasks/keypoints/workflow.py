"""Keypoint data plumbing: instance crops for training and evaluation (augmented with
albumentations, flips swap left/right points), the collector that maps predictions back to
image pixels, and reading / matching results files."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from ...data.dataset import TaskDataset
from ...data.coco import check_results
from ...data.io import read_image, read_jsonl
from ...data.keypoints import KeypointData
from ...data.transforms import colour_shift
from ...errors import DataError
from ...ops.keypoints import apply_affine, box_from_points, invert_affine
from .topdown import TopDown


def augment(rotate: float = 30.0) -> A.Compose:
    """Crop-space augmentation; keypoints as (x, y) in albumentations' pixel-index convention.
    save_applied_params tells the dataset whether to swap left/right points."""
    return A.Compose([
        A.Affine(scale=(0.75, 1.25), rotate=(-rotate, rotate), translate_percent=(-0.05, 0.05), p=0.8,
                 border_mode=cv2.BORDER_CONSTANT, fill=0),
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(p=0.5),
        colour_shift(hue=0.03, saturation=0.2, p=0.3),
    ], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), save_applied_params=True)


class KeypointDataset(TaskDataset):
    """One item per labelled instance: (x (3, H, W) uint8, target {"keypoints"
    (K, 2) crop pixels, "weights" (K,) 1 labelled / 0 not (or pushed out of the crop),
    "gt" (K, 3) image pixels, "inv" (2, 3) crop -> image, "box" (4,), "image_id", "area"}).
    ``perm``: the left/right flip permutation (default: the data's schema's)."""

    def __init__(self, data: KeypointData, topdown: TopDown, augment: A.Compose | None = None,
                 perm: list[int] | None = None, skip_bad: bool = False):
        super().__init__(data, skip_bad)
        self.td, self.augment = topdown, augment
        self.normalizer = topdown
        self.items = data.instances()
        self.perm = perm if perm is not None else data.schema.flip_perm

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int):
        r_idx, k_idx = self.items[i]
        rec = self.data.records[r_idx]
        inst = rec.instances[k_idx]
        img = read_image(rec.path)
        if img.shape[:2] != (rec.height, rec.width):
            raise DataError(f"image is {img.shape[1]}x{img.shape[0]}, the annotations say {rec.width}x{rec.height}",
                            path=str(rec.path))
        crop, m = self.td.crop(img, inst.box)
        pts = apply_affine(inst.keypoints[:, :2], m)  # (K, 2) crop pixels
        w = (inst.keypoints[:, 2] > 0).astype(np.float32)
        if self.augment is not None:
            out = self.augment(image=crop, keypoints=pts - 0.5)
            crop, pts = out["image"], np.asarray(out["keypoints"], np.float64)[:, :2] + 0.5
            if any(name == "HorizontalFlip" for name, _ in out.get("applied_transforms", [])):
                pts, w = pts[self.perm], w[self.perm]
            h, wd = self.td.hw
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < wd) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            w = w * inside
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)  # (3, H, W) uint8
        target = {"keypoints": torch.from_numpy(pts).float(), "weights": torch.from_numpy(w).float(),
                  "gt": torch.from_numpy(inst.keypoints).float(), "inv": torch.from_numpy(invert_affine(m)),
                  "box": torch.from_numpy(inst.box), "image_id": rec.image_id, "area": inst.area, "index": i}
        return x, target


class KeypointCollector:
    """Accumulates predictions mapped back to image pixels with their ground truth."""

    def __init__(self):
        self.pred, self.scores, self.gt, self.boxes, self.image_ids, self.areas = [], [], [], [], [], []

    def add(self, raw, targets: list[dict]) -> None:
        pts = raw.points.float().cpu().numpy()
        sc = raw.scores.float().cpu().numpy()
        for p, s, t in zip(pts, sc, targets):
            self.pred.append(apply_affine(p, t["inv"].numpy()))
            self.scores.append(s)
            self.gt.append(t["gt"].numpy().astype(np.float64))
            self.boxes.append(t["box"].numpy())
            self.image_ids.append(int(t["image_id"]))
            self.areas.append(float(t["area"]))


def load_results(path: str | Path, gt: KeypointData) -> dict[str, list[dict]]:
    """Predictions per image file name from a COCO keypoint-results JSON (a list with
    image_id) or a predict JSON Lines file (records with "source" and "predictions")."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such results file", path=str(path))
    text = path.read_text()
    by_name: dict[str, list[dict]] = {}
    if text.lstrip().startswith("["):
        names = {r.image_id: r.path.name for r in gt.records}
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e}", path=str(path)) from None
        for d in check_results(rows, str(path), set(names), keypoints=gt.num_keypoints, gt=Path(gt.source).name):
            by_name.setdefault(names[d["image_id"]], []).append(d)
        return by_name
    for r in read_jsonl(path):
        by_name.setdefault(Path(str(r.get("source", ""))).name, []).extend(r.get("predictions") or [])
    return by_name


def match_results(by_name: dict[str, list[dict]], gt: KeypointData, min_iou: float = 0.3):
    """Each ground-truth instance takes the unused prediction of its image with the highest
    box IoU (>= ``min_iou``; predictions without a box get the box of their points).
    -> (pairs of (pred (K, 2), gt (K, 3), box xyxy), number of instances left unmatched)."""
    k = gt.num_keypoints
    pairs, missed = [], 0
    for rec in gt.records:
        preds = by_name.get(rec.path.name, [])
        kps = []
        for p in preds:
            kp = np.asarray(p["keypoints"], np.float64).reshape(-1, 3)
            if len(kp) != k:
                raise DataError(f"{rec.path.name}: a prediction has {len(kp)} points, the ground truth {k}")
            kps.append(kp)
        has_box = [bool(p.get("bbox")) for p in preds]
        pboxes = [np.array([p["bbox"][0], p["bbox"][1], p["bbox"][0] + p["bbox"][2], p["bbox"][1] + p["bbox"][3]])
                  if hb else box_from_points(kp[:, :2], kp[:, 2] > 0) for p, kp, hb in zip(preds, kps, has_box)]
        insts = [i for i in rec.instances if not i.iscrowd and (i.keypoints[:, 2] > 0).any()]
        if not insts or not preds:
            missed += len(insts)
            continue
        # a box-less prediction is compared with the box of the labelled points; (G, P), 0 for empty boxes
        pb = torch.from_numpy(np.stack(pboxes))
        gt_boxes = torch.from_numpy(np.stack([i.box for i in insts]))
        pt_boxes = torch.from_numpy(np.stack([box_from_points(i.keypoints[:, :2], i.keypoints[:, 2] > 0)
                                              for i in insts]))
        iou = torch.where(torch.tensor(has_box)[None], box_iou(gt_boxes, pb), box_iou(pt_boxes, pb)).nan_to_num(0.0)
        for g, inst in enumerate(insts):
            j = int(iou[g].argmax())
            if iou[g, j] < min_iou:
                missed += 1
                continue
            iou[:, j] = -1  # each prediction matches once
            pairs.append((kps[j][:, :2], inst.keypoints, inst.box))
    return pairs, missed


def coco_keypoint_results(by_name: dict[str, list[dict]], gt: KeypointData) -> list[dict]:
    """Results per file name -> a COCO keypoint-results list with the ground truth's image ids."""
    ids = {r.path.name: r.image_id for r in gt.records}
    out = []
    for name, preds in by_name.items():
        for p in preds:
            kp = np.asarray(p["keypoints"], np.float64).reshape(-1, 3)
            out.append({"image_id": ids[name], "category_id": 1, "keypoints": kp.reshape(-1).tolist(),
                        "score": float(p.get("score", 1.0))})
    return out

