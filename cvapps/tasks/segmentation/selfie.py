"""The decoder of MediaPipe's selfie segmentation (head kind "selfie"), on the
``selfie_encoder`` backbone: person / background at the input's resolution.

Stride 16: an LR-ASPP-style gate (1x1 conv + ReLU times a sigmoid of the pooled features'
1x1 conv) -> 1x1 to the stride-8 width. Then per level (strides 8, 4, 2): bilinear x2 (half-
pixel centres) + 1x1 conv, a skip fusion — skip x SE-gate(skip + up) + up — and a residual
1x1 + ReLU / depthwise 3x3 + ReLU pair. Finally a 2x2 stride-2 transposed conv to one
logit. The task sees two-class logits (0, z): softmax gives sigmoid(z) for "person"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones.selfie import SqueezeExcite
from ...errors import ConfigError


class Fuse(nn.Module):
    """(skip, up) at one level -> skip * gate(skip + up) + up -> x + dw(x), x = relu(1x1)."""

    def __init__(self, c: int):
        super().__init__()
        self.se = SqueezeExcite(c, c)
        self.pw = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU())

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        x = self.pw(skip * self.se.gate(skip + up) + up)
        return x + self.dw(x)


class SelfieDecoder(nn.Module):
    """feats: the backbone's maps; the last one at each of strides 2, 4, 8, 16 is used ->
    logits (B, 2, H, W) at ``size``."""

    def __init__(self, feature_info, num_classes: int = 2, width: int = 128):
        super().__init__()
        if num_classes != 2:
            raise ConfigError(f"the selfie decoder segments person / background (2 classes), not {num_classes}")
        strides = [f.stride for f in feature_info]
        missing = [s for s in (2, 4, 8, 16) if s not in strides]
        if missing:
            raise ConfigError(f"the selfie decoder needs backbone features at strides 2, 4, 8 and 16; the backbone "
                              f"has none at {missing}", hint="use the selfie_encoder backbone")
        self.index = [max(i for i, t in enumerate(strides) if t == s) for s in (2, 4, 8, 16)]
        c2, c4, c8, c16 = (feature_info[i].channels for i in self.index)
        self.aspp = nn.Sequential(nn.Conv2d(c16, width, 1), nn.ReLU())
        self.aspp_gate = nn.Conv2d(c16, width, 1)
        self.up = nn.ModuleList([nn.Conv2d(width, c8, 1), nn.Conv2d(c8, c4, 1), nn.Conv2d(c4, c2, 1)])
        self.fuse = nn.ModuleList([Fuse(c8), Fuse(c4), Fuse(c2)])
        self.out = nn.ConvTranspose2d(c2, 1, 2, 2)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        f2, f4, f8, f16 = (feats[i] for i in self.index)
        x = self.aspp(f16) * self.aspp_gate(f16.mean((2, 3), keepdim=True)).sigmoid()
        for skip, up, fuse in zip((f8, f4, f2), self.up, self.fuse):
            x = fuse(skip, up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)))
        z = self.out(x)
        if tuple(z.shape[-2:]) != tuple(size):
            z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
        return torch.cat([torch.zeros_like(z), z], 1)
