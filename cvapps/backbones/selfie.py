"""The encoder of MediaPipe's selfie segmentation model: a MobileNetV3-small-style stack
(hard-swish / ReLU inverted residuals, squeeze-and-excitation with a sigmoid gate) whose
convs have biases and no BatchNorm, as the TFLite model is trained. Features at strides
2, 4, 8, 16 (16, 16, 24, 32 channels) feed the ``selfie`` segmentation decoder. Stride-2
convs use TensorFlow "SAME" padding."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .base import Backbone
from .blaze import conv
from .registry import register_backbone


class SqueezeExcite(nn.Module):
    """x * sigmoid(conv(relu(conv(mean over H, W))))."""

    def __init__(self, c: int, mid: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(x.mean((2, 3), keepdim=True)).relu()).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """1x1 expand + act -> k x k depthwise (stride) + act -> [SE] -> 1x1 project; the input
    is added when shapes allow."""

    def __init__(self, cin: int, exp: int, cout: int, k: int, stride: int, act: type, se: int | None):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, exp, 1), act())
        self.dw = nn.Sequential(conv(exp, exp, k, stride, groups=exp), act())
        self.se = SqueezeExcite(exp, se) if se else nn.Identity()
        self.project = nn.Conv2d(exp, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


# (in, expanded, out, kernel, stride, activation, SE width)
BLOCKS = [(16, 16, 16, 3, 2, nn.ReLU, 8), (16, 72, 24, 3, 2, nn.ReLU, None), (24, 88, 24, 3, 1, nn.ReLU, None),
          (24, 96, 32, 5, 2, nn.Hardswish, 24), (32, 128, 32, 5, 1, nn.Hardswish, 32),
          (32, 128, 32, 5, 1, nn.Hardswish, 32), (32, 96, 32, 5, 1, nn.Hardswish, 24),
          (32, 96, 32, 5, 1, nn.Hardswish, 24)]


@register_backbone("selfie_encoder")
def selfie_encoder() -> Backbone:
    layers = [nn.Sequential(conv(3, 16, 3, 2), nn.Hardswish())] + [InvertedResidual(*b) for b in BLOCKS]
    body = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(layers)))
    return Backbone("selfie_encoder", body, ["0", "1", "3", "8"], [["0", "1"], ["2", "3"], ["4", "5", "6", "7", "8"]])
