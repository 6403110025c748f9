"""MoveNet (Google, 2021): a CenterNet-style single-person keypoint head on a MobileNetV2,
as a top-down keypoint head (head kind "movenet"); the converted MoveNet Lightning is the
default pose model.

Backbone features at strides 4/8/16/32 -> FPN (1x1 laterals, bilinear x2 upsampling with
half-pixel centres, depthwise-separable merges with ReLU) -> one stride-4 map -> four heads
(depthwise 3x3, 1x1 + ReLU, 1x1): person centre (1), keypoint regression from the centre
(2K), keypoint heatmaps (K), keypoint offsets (2K). Decoding (MoveNet's own, in torch): the
centre is the argmax of the centre heatmap weighted towards the crop centre; each keypoint is
the argmax of its heatmap divided by the distance to the point regressed from that centre
(+1.8 cells), refined by the offset at that cell (cvapps.ops.keypoints.decode_movenet).
Channel pairs are (y, x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def separable(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 (bias, no activation) -> pointwise 1x1 (bias) -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))


class MoveNetHead(nn.Module):
    """feats: 4 maps (B, C_i, H/s, W/s), s = 4, 8, 16, 32 -> (centre (B, 1, H/4, W/4),
    regress (B, 2K, ..), heatmaps (B, K, ..), offsets (B, 2K, ..)), all logits / raw values."""

    def __init__(self, cins: list[int], k: int, fpn: tuple[int, ...] = (64, 32, 24), hidden: int = 96):
        super().__init__()
        if len(cins) != 4:
            raise ValueError(f"the MoveNet head takes 4 feature maps (strides 4..32), got {len(cins)}")
        c4, c8, c16, c32 = cins
        self.lateral = nn.ModuleList([nn.Conv2d(c4, fpn[2], 1), nn.Conv2d(c8, fpn[1], 1), nn.Conv2d(c16, fpn[0], 1),
                                      nn.Conv2d(c32, fpn[0], 1)])
        self.fpn = nn.ModuleList([separable(fpn[0], fpn[1]), separable(fpn[1], fpn[2]), separable(fpn[2], fpn[2])])
        self.k = k
        self.heads = nn.ModuleDict({name: nn.Sequential(*separable(fpn[2], hidden), nn.Conv2d(hidden, n, 1))
                                    for name, n in (("centre", 1), ("heatmap", k), ("offset", 2 * k),
                                                    ("regress", 2 * k))})

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        f4, f8, f16, f32 = feats
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)  # noqa: E731
        x = self.fpn[0](up(self.lateral[3](f32)) + self.lateral[2](f16))
        x = self.fpn[1](up(x) + self.lateral[1](f8))
        x = self.fpn[2](up(x) + self.lateral[0](f4))
        return tuple(self.heads[n](x) for n in ("centre", "regress", "heatmap", "offset"))
