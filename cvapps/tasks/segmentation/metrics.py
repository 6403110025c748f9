"""Segmentation metrics from one confusion matrix (void/ignore pixels never counted)."""

from __future__ import annotations

import numpy as np


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """pred, gt: label maps of one shape -> (C, C) counts, rows = ground truth."""
    valid = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    idx = gt[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def seg_metrics(cm: np.ndarray, labels: list[str]) -> dict:
    """pixel_acc, mean_class_acc and mIoU over classes present in the ground truth or the
    predictions (a class absent from both is left out); per_class_iou for every class (NaN
    when absent)."""
    cm = cm.astype(np.float64)
    tp, gt, pred = np.diag(cm), cm.sum(1), cm.sum(0)
    union = gt + pred - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    acc = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
    return {"mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
            "pixel_acc": float(tp.sum() / cm.sum()) if cm.sum() else 0.0,
            "mean_class_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.0,
            "per_class_iou": {lab: (None if np.isnan(v) else float(v)) for lab, v in zip(labels, iou)},
            "confusion_matrix": cm.astype(np.int64).tolist()}
