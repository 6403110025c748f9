"""Box <-> delta coding relative to anchors (Faster R-CNN / SSD parameterisation)."""

from __future__ import annotations

import math

import torch

# SSD's "variances" (0.1, 0.2) written as weights: deltas are divided by them
DEFAULT_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_CLAMP = math.log(1000.0 / 16)


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor, weights=DEFAULT_WEIGHTS) -> torch.Tensor:
    """boxes, anchors: (N, 4) xyxy -> deltas (N, 4) = (dx, dy, dw, dh) * weights."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    bx, by = boxes[:, 0] + 0.5 * bw, boxes[:, 1] + 0.5 * bh
    wx, wy, ww, wh = weights
    return torch.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah,
                        ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=1)


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor, weights=DEFAULT_WEIGHTS) -> torch.Tensor:
    """deltas (..., N, 4), anchors (N, 4) xyxy -> boxes (..., N, 4) xyxy. Inverse of encode."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    wx, wy, ww, wh = weights
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw, dh = (deltas[..., 2] / ww).clamp(max=_CLAMP), (deltas[..., 3] / wh).clamp(max=_CLAMP)
    cx, cy = dx * aw + ax, dy * ah + ay
    w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
