"""EfficientNet-Lite0/2/3 (Tan & Le; the mobile variant without squeeze-excitation, ReLU6,
fixed stem/head; Lite2 and Lite3 scale Lite0's widths by 1.1 / 1.2 and its middle stages'
depths by 1.2 / 1.4, as the TF reference does). torchvision has no Lite definition, so it is assembled here from
torchvision's Conv2dNormActivation. Pretrained keys (``_conv_stem``/``_blocks.N``/``_fc``
style) are mapped onto these names by the manifest's key map."""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

from torch import nn
from torchvision.ops import Conv2dNormActivation

from .base import Backbone, stages_at
from .layers import Conv2dSame
from .registry import register_backbone

_BN = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)  # TF-trained statistics


def _CBA(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, activation_layer=nn.ReLU6):
    block = Conv2dNormActivation(cin, cout, k, s, groups=groups, norm_layer=_BN, activation_layer=activation_layer)
    if s > 1:
        block[0] = Conv2dSame(cin, cout, k, s, groups=groups, bias=False)
    return block

# (expand ratio, kernel, stride, out channels, repeats) per stage
LITE0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class LiteMBConv(nn.Module):
    """Inverted residual without SE: (B,Cin,H,W) -> (B,Cout,H/s,W/s)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self.expand = _CBA(cin, hidden, 1)
        self.dw = _CBA(hidden, hidden, kernel, stride, groups=hidden)
        self.project = _CBA(hidden, cout, 1, activation_layer=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if hasattr(self, "expand") else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel scaling: to a multiple of 8, never more than 10% below."""
    c = channels * width
    out = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * c else out


def _lite(name: str, width: float = 1.0, depth: float = 1.0) -> Backbone:
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=_CBA(3, 32, 3, 2))
    cin, i, stage_ends = 32, 0, []
    for n, (expand, k, s, cout, reps) in enumerate(LITE0_STAGES):
        cout = round_filters(cout, width)
        if 0 < n < len(LITE0_STAGES) - 1:  # Lite keeps the first and last stages' single block
            reps = int(math.ceil(reps * depth))
        for r in range(reps):
            layers[f"b{i}"] = LiteMBConv(cin, cout, expand, k, s if r == 0 else 1)
            cin, i = cout, i + 1
        stage_ends.append(i - 1)
    layers["head"] = _CBA(cin, 1280, 1)
    body = nn.Sequential(layers)
    # taps at the last block of each stride: 2, 4, 8, 16, 32
    taps = [f"b{stage_ends[0]}", f"b{stage_ends[1]}", f"b{stage_ends[2]}", f"b{stage_ends[4]}", "head"]
    return Backbone(name, body, taps, stages_at(list(layers), taps))


@register_backbone("efficientnet_lite0")
def efficientnet_lite0() -> Backbone:
    return _lite("efficientnet_lite0")


@register_backbone("efficientnet_lite2")
def efficientnet_lite2() -> Backbone:
    return _lite("efficientnet_lite2", 1.1, 1.2)


@register_backbone("efficientnet_lite3")
def efficientnet_lite3() -> Backbone:
    return _lite("efficientnet_lite3", 1.2, 1.4)
