"""MobileNetV1 at width 0.25 (Howard et al.) as RetinaFace uses it: conv-BN-LeakyReLU(0.1)
blocks in three stages with outputs at strides 8, 16, 32 (64, 128, 256 channels)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import Backbone
from .registry import register_backbone

LEAK = 0.1


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """conv (no bias) -> BN -> LeakyReLU(0.1) (indices 0, 1, 2: the layout the converted
    weights are named by)."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.LeakyReLU(LEAK, inplace=True)] if act else []))


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1))


@register_backbone("mobilenet_v1_025")
def mobilenet_v1_025() -> Backbone:
    stages = OrderedDict(
        stage1=nn.Sequential(conv_bn(3, 8, 3, 2), conv_dw(8, 16, 1), conv_dw(16, 32, 2), conv_dw(32, 32, 1),
                             conv_dw(32, 64, 2), conv_dw(64, 64, 1)),
        stage2=nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)]),
        stage3=nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1)))
    names = list(stages)
    return Backbone("mobilenet_v1_025", nn.Sequential(stages), names, [[n] for n in names])
