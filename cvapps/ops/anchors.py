"""Anchor (default box) generators, registered by name: a detection head's ``anchors``
option picks one. A generator says how many anchors each level has (``per_level``) and makes
them for given feature-map sizes: (sum_l h_l w_l A_l, 4) xyxy input pixels, ordered level,
row i, column j, anchor a — the order of a head's (B, A*K, h, w) output permuted to
(B, h, w, A, K).

torchvision's generators do not fit: its AnchorGenerator centres boxes on cell corners
(shift j * stride) and rounds base sizes; DefaultBoxGenerator fixes the SSD paper's
ordering of boxes per cell, which neither cvapps's stored models nor TF's SSD use."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..registry import Registry

ANCHORS: Registry[type] = Registry("anchor generator")


def default_boxes(sizes: Sequence[tuple[int, int]], strides: Sequence[int], base: float = 4.0,
                  scales: Sequence[float] = (1.0, math.sqrt(2)), ratios: Sequence[float] = (0.5, 1.0, 2.0),
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Anchors for feature maps of ``sizes`` [(h_l, w_l)] at ``strides`` [s_l]: each cell
    centre ((j + 0.5) s, (i + 0.5) s) gets A = len(scales) * len(ratios) boxes of side
    base * s * scale, aspect w/h = ratio (area preserved)."""
    out = []
    for (h, w), s in zip(sizes, strides):
        wh = torch.tensor([[base * s * sc * math.sqrt(r), base * s * sc / math.sqrt(r)]
                           for sc in scales for r in ratios], dtype=torch.float32, device=device)  # (A, 2)
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * s
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * s
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)  # (h*w, 1, 2)
        boxes = torch.cat([centres - wh / 2, centres + wh / 2], -1)  # (h*w, A, 4)
        out.append(boxes.reshape(-1, 4))
    return torch.cat(out)


@ANCHORS.decorator("grid")
class GridAnchors:
    """cvapps's SSD/RetinaNet-style boxes at stride multiples (``default_boxes``)."""

    def __init__(self, base: float = 4.0, scales: Sequence[float] = (1.0, math.sqrt(2)),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0)):
        self.base, self.scales, self.ratios = float(base), list(scales), list(ratios)

    def per_level(self, levels: int) -> list[int]:
        return [len(self.scales) * len(self.ratios)] * levels

    def __call__(self, sizes, strides, input_hw: tuple[int, int], device) -> torch.Tensor:
        return default_boxes(sizes, strides, self.base, self.scales, self.ratios, device)
