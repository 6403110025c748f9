"""The small CNN of face-api's FaceLandmark68Net (its "FaceFeatureExtractor"): four dense
blocks of depthwise-separable convolutions, each halving the size (112 -> 7 for the face
crop) — 32, 64, 128, 256 channels. In a block, out1 = relu(conv0(x)) (a plain 3x3 conv in the
first block), then each separable conv reads the relu of the sum of all outputs before it,
and the block returns relu(out1 + out2 + out3 + out4). Convs have biases, no BatchNorm;
strided convs use TensorFlow "SAME" padding, as the TF.js weights were trained."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .base import Backbone
from .blaze import conv
from .registry import register_backbone


class SeparableConv(nn.Module):
    """3x3 depthwise (stride, no bias) -> 1x1 pointwise + bias: TF's separable_conv2d."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.dw = conv(cin, cin, 3, stride, groups=cin)
        self.dw.bias = None
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class DenseBlock4(nn.Module):
    """x (B, cin, H, W) -> (B, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int, first: bool = False):
        super().__init__()
        self.conv0 = conv(cin, cout, 3, 2) if first else SeparableConv(cin, cout, 2)
        self.conv1, self.conv2, self.conv3 = (SeparableConv(cout, cout) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv0(x).relu()
        o2 = self.conv1(o1)
        o3 = self.conv2((o1 + o2).relu())
        o4 = self.conv3((o1 + (o2 + o3)).relu())
        return (o1 + (o2 + (o3 + o4))).relu()


@register_backbone("faceapi_dense")
def faceapi_dense() -> Backbone:
    chans = [3, 32, 64, 128, 256]
    body = nn.Sequential(OrderedDict((str(i), DenseBlock4(chans[i], chans[i + 1], first=i == 0)) for i in range(4)))
    return Backbone("faceapi_dense", body, ["0", "1", "2", "3"], [["0"], ["1"], ["2"], ["3"]])
