"""Default (anchor) boxes: one set per feature map, SSD/RetinaNet style."""

from __future__ import annotations

import math
from typing import Sequence

import torch


def default_boxes(sizes: Sequence[tuple[int, int]], strides: Sequence[int], base: float = 4.0,
                  scales: Sequence[float] = (1.0, math.sqrt(2)), ratios: Sequence[float] = (0.5, 1.0, 2.0),
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Anchors for feature maps of ``sizes`` [(h_l, w_l)] at ``strides`` [s_l].

    Each cell centre ((j + 0.5) s, (i + 0.5) s) gets A = len(scales) * len(ratios) boxes of
    side base * s * scale, aspect w/h = ratio (area preserved). Returns (sum_l h_l w_l A, 4)
    xyxy in input pixels, ordered level, row i, column j, anchor a — the order of a head's
    (B, A*K, h, w) output permuted to (B, h, w, A, K).
    """
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


def num_anchors(scales: Sequence[float], ratios: Sequence[float]) -> int:
    return len(scales) * len(ratios)
