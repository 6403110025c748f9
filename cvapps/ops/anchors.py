"""Anchor (default box) generators, registered by name: a detection head's ``anchors``
option picks one (``grid``: cvapps's own; ``tf_ssd``: TensorFlow SSD's, for converted models). A generator says how many anchors each level has (``per_level``) and makes
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

    @classmethod
    def from_options(cls, h) -> "GridAnchors":
        return cls(h.anchor_base, h.anchor_scales, h.aspect_ratios)

    def per_level(self, levels: int) -> list[int]:
        return [len(self.scales) * len(self.ratios)] * levels

    def __call__(self, sizes, strides, input_hw: tuple[int, int], device) -> torch.Tensor:
        return default_boxes(sizes, strides, self.base, self.scales, self.ratios, device)


@ANCHORS.decorator("tf_ssd")
class TFSSDAnchors:
    """TensorFlow Object Detection's ``ssd_anchor_generator``: per level l of L, scale
    s_l = min + (max - min) l / (L - 1); boxes of scale s_l for each aspect ratio a (height
    s/sqrt(a), width s sqrt(a), as fractions of the input) plus one of scale sqrt(s_l s_l+1)
    and aspect 1; with ``reduce_lowest`` the first level has only (0.1, 1), (s_0, 2), (s_0, 1/2).
    Centres at ((j + 0.5) / w_l, (i + 0.5) / h_l) of the input (not stride multiples)."""

    def __init__(self, min_scale: float = 0.2, max_scale: float = 0.95,
                 ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1 / 3), reduce_lowest: bool = True):
        self.min, self.max, self.ratios, self.reduce = float(min_scale), float(max_scale), list(ratios), reduce_lowest

    @classmethod
    def from_options(cls, h) -> "TFSSDAnchors":
        return cls(h.min_scale, h.max_scale, h.aspect_ratios, h.reduce_lowest)

    def specs(self, levels: int) -> list[list[tuple[float, float]]]:
        """Per level, the (scale, aspect) of each anchor, in output order."""
        scales = [self.min + (self.max - self.min) * i / max(levels - 1, 1) for i in range(levels)] + [1.0]
        out = []
        for i in range(levels):
            if i == 0 and self.reduce:
                out.append([(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)])
            else:
                out.append([(scales[i], a) for a in self.ratios] + [(math.sqrt(scales[i] * scales[i + 1]), 1.0)])
        return out

    def per_level(self, levels: int) -> list[int]:
        return [len(s) for s in self.specs(levels)]

    def __call__(self, sizes, strides, input_hw: tuple[int, int], device) -> torch.Tensor:
        H, W = input_hw
        out = []
        for (h, w), spec in zip(sizes, self.specs(len(sizes))):
            hw = torch.tensor([[s / math.sqrt(a) * H, s * math.sqrt(a) * W] for s, a in spec],
                              dtype=torch.float32, device=device)  # (A, 2) height, width in pixels
            ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h * H
            xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w * W
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)  # (h*w, 1, 2)
            wh = hw.flip(-1)[None]  # (1, A, 2) width, height
            out.append(torch.cat([centres - wh / 2, centres + wh / 2], -1).reshape(-1, 4))
        return torch.cat(out)
