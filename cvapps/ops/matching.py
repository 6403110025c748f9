"""Anchor <-> ground-truth matching by IoU: torchvision's Matcher for the two thresholds, plus
SSD's rule that every ground-truth box claims the anchor(s) it overlaps most.

torchvision's own low-quality rule (``allow_low_quality_matches``) gives such an anchor its
*own* best ground truth, and its SSDMatcher takes a single threshold; SSD with separate
low / high thresholds needs the forced step below."""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

BACKGROUND = Matcher.BELOW_LOW_THRESHOLD  # -1: anchor is a negative
IGNORE = Matcher.BETWEEN_THRESHOLDS  # -2: anchor's IoU is between the thresholds: no loss


def match_anchors(gt: torch.Tensor, anchors: torch.Tensor, low: float = 0.4, high: float = 0.5,
                  force_best: bool = True) -> torch.Tensor:
    """gt (G, 4), anchors (A, 4), both xyxy -> (A,) int64: the matched gt index, BACKGROUND
    where max IoU < low, IGNORE where low <= IoU < high. With ``force_best`` each gt also
    claims the anchor(s) it overlaps most, so no object goes unmatched."""
    n = anchors.shape[0]
    if gt.numel() == 0:
        return torch.full((n,), BACKGROUND, dtype=torch.int64, device=anchors.device)
    iou = box_iou(gt, anchors)  # (G, A)
    matched = Matcher(high, low, allow_low_quality_matches=False)(iou)
    if force_best:
        per_gt = iou.max(dim=1, keepdim=True).values  # (G, 1)
        g, a = torch.nonzero((iou == per_gt) & (per_gt > 0), as_tuple=True)
        matched[a] = g
    return matched
