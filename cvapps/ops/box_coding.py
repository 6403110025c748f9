"""Box <-> delta coding relative to anchors (Faster R-CNN / SSD parameterisation): torchvision's
own BoxCoder, with SSD's "variances" (0.1, 0.2) written as weights (deltas are divided by them)."""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import BoxCoder  # torchvision's detection models use it too

DEFAULT_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_CODER = BoxCoder(DEFAULT_WEIGHTS)  # clamps dw, dh at log(1000 / 16) like torchvision's detectors


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """boxes, anchors: (N, 4) xyxy -> deltas (N, 4) = (dx, dy, dw, dh) * weights."""
    return _CODER.encode_single(boxes, anchors)


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """deltas (..., N, 4), anchors (N, 4) xyxy -> boxes (..., N, 4) xyxy. Inverse of encode."""
    n = anchors.shape[0]
    lead = deltas.shape[:-2]
    flat = deltas.reshape(-1, n, 4)
    out = _CODER.decode_single(flat.reshape(-1, 4), anchors.to(deltas.dtype).repeat(flat.shape[0], 1))
    return out.reshape(*lead, n, 4)
