"""Anchor <-> ground-truth matching by IoU."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

BACKGROUND = -1  # anchor is a negative
IGNORE = -2  # anchor's IoU is between the thresholds: no loss


def match_anchors(gt: torch.Tensor, anchors: torch.Tensor, low: float = 0.4, high: float = 0.5,
                  force_best: bool = True) -> torch.Tensor:
    """gt (G, 4), anchors (A, 4), both xyxy -> (A,) int64: the matched gt index, BACKGROUND
    where max IoU < low, IGNORE where low <= IoU < high. With ``force_best`` each gt also
    claims the anchor(s) it overlaps most, so no object goes unmatched."""
    n = anchors.shape[0]
    if gt.numel() == 0:
        return torch.full((n,), BACKGROUND, dtype=torch.int64, device=anchors.device)
    iou = box_iou(gt, anchors)  # (G, A)
    best_iou, best_gt = iou.max(dim=0)  # (A,)
    matched = best_gt.clone()
    matched[best_iou < high] = IGNORE
    matched[best_iou < low] = BACKGROUND
    if force_best:
        per_gt = iou.max(dim=1, keepdim=True).values  # (G, 1)
        g, a = torch.nonzero((iou == per_gt) & (per_gt > 0), as_tuple=True)
        matched[a] = g
    return matched
