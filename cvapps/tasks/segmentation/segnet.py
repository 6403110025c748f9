"""SegNet (Badrinarayanan et al.): the decoder upsamples with the encoder's max-pool indices
(MaxUnpool2d) — on backbones exposing pool indices (vgg16_bn, segnet_basic)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones import Backbone, backbones_with
from ...errors import ConfigError


def _block(cin: int, cout: int, n: int, k: int = 3, relu: bool = True) -> nn.Sequential:
    layers = []
    for j in range(n):
        layers += [nn.Conv2d(cin if j == 0 else cout, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SegNetDecoder(nn.Module):
    """Mirror of the encoder: per pool (deepest first) MaxUnpool2d with its indices, then
    conv blocks down to the channel count of the next shallower stage; 1x1 classifier."""

    def __init__(self, backbone: Backbone, num_classes: int, kernel: int = 3, relu: bool = True):
        super().__init__()
        if not getattr(backbone, "pool_indices", False):
            works = ", ".join(backbones_with("pool_indices"))
            raise ConfigError(f"SegNet needs a backbone that exposes max-pool indices ({works}); "
                              f"{backbone.name} does not", hint=f"use --backbone one of: {works}, or an FCN head")
        chans = [f.channels for f in backbone.feature_info]  # after each pool, shallow -> deep
        outs = chans[-2::-1] + [chans[0]]
        convs = [3 if c >= 256 else 2 for c in chans[::-1]] if kernel == 3 else [1] * len(chans)
        self.blocks = nn.ModuleList(_block(cin, cout, n, kernel, relu) for cin, cout, n in zip(chans[::-1], outs, convs))
        self.classifier = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, feats: list[torch.Tensor], pools: list[tuple[torch.Tensor, torch.Size]], size) -> torch.Tensor:
        x = feats[-1]
        for block, (idx, pre_size) in zip(self.blocks, reversed(pools)):
            x = unpool(x, idx, (int(pre_size[-2]), int(pre_size[-1])))
            x = block(x)
        x = self.classifier(x)
        return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear")


def unpool(x: torch.Tensor, idx: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """MaxUnpool2d as a scatter: x, idx (B, C, h, w) -> (B, C, H, W), each value put back at
    its max-pool position, zeros elsewhere. Identical to F.max_unpool2d, and exportable to
    ONNX (ScatterElements), which aten::max_unpool2d is not."""
    b, c = x.shape[:2]
    out = x.new_zeros(b, c, hw[0] * hw[1])  # (B, C, H*W)
    return out.scatter(2, idx.flatten(2), x.flatten(2)).view(b, c, hw[0], hw[1])
