"""SSD-style head: per-level predictors (SSDLite depthwise-separable convs) on the
backbone's features at the chosen strides, with extra down-sampling blocks beyond 32."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from ...backbones import Backbone
from ...errors import ConfigError

_CBA = partial(Conv2dNormActivation, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6)


def _extra_block(cin: int, cout: int) -> nn.Sequential:
    """(B, cin, h, w) -> (B, cout, ceil(h/2), ceil(w/2)): 1x1 squeeze, 3x3/2 depthwise, 1x1."""
    mid = cout // 2
    return nn.Sequential(_CBA(cin, mid, 1), _CBA(mid, mid, 3, 2, groups=mid), _CBA(mid, cout, 1))


def _predictor(cin: int, cout: int) -> nn.Sequential:
    """3x3 depthwise + BN + ReLU6, then a 1x1 conv to ``cout`` outputs (with bias)."""
    return nn.Sequential(_CBA(cin, cin, 3, groups=cin), nn.Conv2d(cin, cout, 1))


class SSDHead(nn.Module):
    """features (strides increasing) -> cls (B, N, C_out), deltas (B, N, 4), level sizes.

    N = sum over levels of h_l * w_l * A. ``C_out`` = num_classes + 1 (softmax with a
    background column 0) or num_classes (sigmoid/focal).
    """

    def __init__(self, backbone: Backbone, levels: list[int], num_anchors: int, num_outputs: int,
                 extra_channels: int = 256):
        super().__init__()
        by_stride = {f.stride: (i, f.channels) for i, f in enumerate(backbone.feature_info)}
        top = backbone.feature_info[-1]
        self.sources: list[int] = []
        chans: list[int] = []
        for s in levels:
            if s in by_stride:
                self.sources.append(by_stride[s][0])
                chans.append(by_stride[s][1])
            elif s <= top.stride:
                raise ConfigError(f"detection level stride {s} is not a feature stride of {backbone.name}",
                                  hint=f"strides: {[f.stride for f in backbone.feature_info]}")
        self.extras = nn.ModuleList()
        cin, stride = top.channels, top.stride
        for s in sorted(x for x in levels if x > top.stride):
            while stride < s:
                self.extras.append(_extra_block(cin, extra_channels))
                cin, stride = extra_channels, stride * 2
            chans.append(extra_channels)
        if stride != max(levels) and max(levels) > top.stride:
            raise ConfigError(f"detection levels {levels} must be powers of two of the backbone strides")
        self.A, self.K = num_anchors, num_outputs
        self.cls = nn.ModuleList(_predictor(c, num_anchors * num_outputs) for c in chans)
        self.reg = nn.ModuleList(_predictor(c, num_anchors * 4) for c in chans)
        for m in self.cls:  # background-leaning start: stable early training (RetinaNet prior)
            nn.init.constant_(m[-1].bias, -2.0)

    def forward(self, feats: list[torch.Tensor]):
        maps = [feats[i] for i in self.sources]
        x = feats[-1]
        for block in self.extras:
            x = block(x)
            maps.append(x)
        # keep only extra maps that are prediction levels (every extra block is one here)
        cls, reg, sizes = [], [], []
        for f, c, r in zip(maps, self.cls, self.reg):
            b, _, h, w = f.shape
            sizes.append((h, w))
            cls.append(c(f).permute(0, 2, 3, 1).reshape(b, h * w * self.A, self.K))  # (B, hwA, K)
            reg.append(r(f).permute(0, 2, 3, 1).reshape(b, h * w * self.A, 4))  # (B, hwA, 4)
        return torch.cat(cls, 1), torch.cat(reg, 1), sizes
