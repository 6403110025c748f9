"""BlazeBlocks (Bazarevsky et al. 2019, BlazeFace / MediaPipe FaceMesh): depthwise 3x3 ->
pointwise 1x1 with a residual, PReLU after the sum; a strided block's shortcut is a 2x2
max-pool with its channels zero-padded. ``blazemesh``: the FaceMesh encoder (192x192 face
crop -> 6x6x128 at stride 32); the two output branches are the ``facemesh`` keypoint head.
``blazepalm``: MediaPipe's palm detector encoder (full): 5x5 depthwise kernels, 192 -> 24, 12
and 6 cells at strides 8, 16, 32 (128, 256, 256 channels) for the ``blazepalm`` head's FPN.
Convs have biases and no BatchNorm (the TFLite models are trained that way); stride-2 convs
use TensorFlow "SAME" padding."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone
from .layers import Conv2dSame
from .registry import register_backbone


def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return (Conv2dSame(cin, cout, k, stride, 0, groups=groups) if stride > 1
            else nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups))


class BlazeBlock(nn.Module):
    """x (B, cin, H, W) -> (B, cout, H/s, W/s): PReLU(shortcut + pw(dw(x)))."""

    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3):
        super().__init__()
        self.dw = conv(cin, cin, k, stride, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.max_pool2d(x, 2, ceil_mode=True) if self.stride > 1 else x  # odd sizes: as the SAME conv
        if self.pad:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.pad))
        return self.act(skip + self.pw(self.dw(x)))


def stem(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, k, 2), nn.PReLU(cout))


def blaze_stage(cin: int, cout: int, residual: int = 2, k: int = 3) -> list[nn.Module]:
    """A strided block to ``cout``, then ``residual`` blocks."""
    return [BlazeBlock(cin, cout, 2, k)] + [BlazeBlock(cout, cout, 1, k) for _ in range(residual)]


@register_backbone("blazemesh")
def blazemesh() -> Backbone:
    blocks = [stem(3, 16), BlazeBlock(16, 16), BlazeBlock(16, 16)]
    for cin, cout in ((16, 32), (32, 64), (64, 128), (128, 128)):
        blocks += blaze_stage(cin, cout)
    body = nn.Sequential(OrderedDict((str(i), b) for i, b in enumerate(blocks)))
    return Backbone("blazemesh", body, ["14"], [["0", "1", "2"], ["3", "4", "5"], ["6", "7", "8"], ["9", "10", "11"],
                                               ["12", "13", "14"]])


@register_backbone("blazepalm")
def blazepalm() -> Backbone:
    blocks = [stem(3, 32, 5)] + [BlazeBlock(32, 32, 1, 5) for _ in range(4)]
    for cin, cout in ((32, 64), (64, 128), (128, 256), (256, 256)):
        blocks += blaze_stage(cin, cout, 4, 5)
    names = [str(i) for i in range(len(blocks))]
    body = nn.Sequential(OrderedDict(zip(names, blocks)))
    taps = ["14", "19", "24"]  # strides 8, 16, 32
    return Backbone("blazepalm", body, taps, [names[:10], names[10:15], names[15:20], names[20:]])
