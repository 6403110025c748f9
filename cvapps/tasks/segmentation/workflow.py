"""Segmentation data plumbing for cvapps.api: which reader, datasets, results folders."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from ...data.segmentation import SegData, SegDataset, read_camvid, read_coco_semantic, read_mask_folder
from ...data.transforms import Letterbox
from ...errors import ConfigError, DataError
from .metrics import confusion, seg_metrics


def load(data: str | None, images: str | None = None, masks: str | None = None, split: str = "train",
         classes: list[str] | None = None, palette: str | None = None, ignore_index: int = 255) -> SegData:
    """A CamVid-style root (``data/split`` + ``data/splitannot``), a COCO JSON (+ ``images``),
    or ``images`` + ``masks`` folders (classes from ``classes`` or a ``palette`` table)."""
    if data and Path(data).suffix.lower() == ".json":
        if not images:
            raise ConfigError("COCO segmentation needs --images DIR")
        return read_coco_semantic(data, images)
    if data and not masks:
        root = Path(data)
        if not (root / split).is_dir():
            raise DataError(f"no {split}/ folder (CamVid layout: {split}/ and {split}annot/)", path=str(root))
        if classes or palette:  # the CamVid layout with other classes
            return read_mask_folder(root / split, root / f"{split}annot", classes, palette, ignore_index)
        return read_camvid(root, split)
    if images and masks:
        return read_mask_folder(images, masks, classes, palette, ignore_index)
    raise ConfigError("no segmentation data", hint="pass --data ROOT (CamVid layout), --data ANN.json --images DIR, "
                      "or --images DIR --masks DIR")


def augment() -> A.Compose:
    """Image + mask augmentation (labels resampled nearest-neighbour by albumentations)."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.75, 1.5), p=0.7, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255),
        A.RandomBrightnessContrast(p=0.5),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=15, val_shift_limit=10, p=0.3),
    ])


def datasets(model, train: SegData, val: SegData | None, skip_bad: bool):
    box = Letterbox.from_config(model.config["preprocessing"])
    ignore = int(model.config["head"]["ignore_index"])
    for d in (train, val):
        if d is not None:
            d.ignore_index = ignore

    def make_train(aug: bool):
        a = augment() if aug else None
        if a is not None:  # padding from scaling must be void, not class 0
            a.transforms[1].fill_mask = ignore
        return SegDataset(train, box, a, skip_bad)

    return make_train, SegDataset(val, box, None, skip_bad) if val is not None else None


def evaluate_results_dir(results: str | Path, gt: SegData) -> dict:
    """Predicted label-map PNGs named like the images (``<stem>.png``) vs ground truth."""
    res = Path(results)
    if not res.is_dir():
        raise DataError("no such results folder", path=str(res))
    k = len(gt.labels)
    cm = np.zeros((k, k), np.int64)
    for i, img in enumerate(gt.images):
        cands = sorted(res.glob(img.stem + ".*")) + sorted(res.glob(img.stem + "_mask.*"))
        if not cands:
            raise DataError(f"no prediction for {img.name}", path=str(res), hint=f"expected {img.stem}.png")
        pred = cv2.imread(str(cands[0]), cv2.IMREAD_UNCHANGED)
        truth = gt.load_mask(i)
        if pred is None or pred.shape[:2] != truth.shape:
            raise DataError(f"prediction must be a {truth.shape[1]}x{truth.shape[0]} label map", path=str(cands[0]))
        cm += confusion(pred.astype(np.int64), truth, k, gt.ignore_index)
    return seg_metrics(cm, gt.labels)
