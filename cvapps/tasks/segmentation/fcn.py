"""FCN-32s / 16s / 8s (Long et al.) on any backbone: 1x1 score layers on the stride-32/16/8
features, skip fusion, learned (transposed conv, bilinear-initialised) or fixed bilinear
upsampling back to the exact input size (odd sizes included)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones import Backbone
from ...errors import ConfigError

_SKIPS = {"fcn32s": [32], "fcn16s": [32, 16], "fcn8s": [32, 16, 8]}


def bilinear_kernel(channels: int, k: int) -> torch.Tensor:
    """(C, 1, k, k) weights making a per-channel ConvTranspose2d a bilinear upsampler."""
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt = 1 - (og - centre).abs() / factor
    return (filt[:, None] * filt[None, :]).expand(channels, 1, k, k).clone()


class Upsample(nn.Module):
    """(B, C, h, w) -> (B, C, H, W) for a given size: a depthwise transposed conv by
    ``factor`` initialised bilinear (learned), or fixed bilinear interpolation."""

    def __init__(self, channels: int, factor: int, learned: bool):
        super().__init__()
        self.factor = factor
        if learned:
            self.deconv = nn.ConvTranspose2d(channels, channels, 2 * factor, factor, factor // 2, groups=channels,
                                             bias=False)
            with torch.no_grad():
                self.deconv.weight.copy_(bilinear_kernel(channels, 2 * factor))

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        if hasattr(self, "deconv"):
            x = self.deconv(x)
            if tuple(x.shape[-2:]) == tuple(size):
                return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FCNHead(nn.Module):
    """features -> logits (B, C, H, W) at the input size given to forward."""

    def __init__(self, backbone: Backbone, num_classes: int, variant: str = "fcn8s", learned: bool = True,
                 dropout: float = 0.1):
        super().__init__()
        if variant not in _SKIPS:
            raise ConfigError(f"unknown FCN variant {variant!r}", hint=f"one of {sorted(_SKIPS)}")
        by_stride = {f.stride: i for i, f in enumerate(backbone.feature_info)}
        missing = [s for s in _SKIPS[variant] if s not in by_stride]
        if missing:
            raise ConfigError(f"{variant} needs backbone features at strides {missing}; {backbone.name} has "
                              f"{sorted(by_stride)}")
        self.strides = _SKIPS[variant]
        self.sources = [by_stride[s] for s in self.strides]
        chans = [backbone.feature_info[i].channels for i in self.sources]
        self.drop = nn.Dropout2d(dropout)
        self.score = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in chans)
        for s in self.score[1:]:  # skip scores start at zero: training begins as FCN-32s
            nn.init.zeros_(s.weight), nn.init.zeros_(s.bias)
        self.up2 = nn.ModuleList(Upsample(num_classes, 2, learned) for _ in chans[1:])
        self.final = Upsample(num_classes, self.strides[-1], learned)

    def forward(self, feats: list[torch.Tensor], size) -> torch.Tensor:
        x = self.score[0](self.drop(feats[self.sources[0]]))  # (B, C, H/32, W/32)
        for score, up, i in zip(self.score[1:], self.up2, self.sources[1:]):
            skip = score(feats[i])
            x = up(x, skip.shape[-2:]) + skip  # fuse at the finer stride
        return self.final(x, size)
