"""face-api's three CNNs (the npm package @vladmandic/face-api; TF-trained, so strided convs
use TensorFlow "SAME" padding as the weights expect).

``faceapi_dense`` — the small CNN of FaceLandmark68Net and FaceExpressionNet (its
"FaceFeatureExtractor"): four dense blocks of depthwise-separable convolutions, each halving
the size (112 -> 7 for the face crop) — 32, 64, 128, 256 channels. In a block, out1 =
relu(conv0(x)) (a plain 3x3 conv in the first block), then each separable conv reads the
relu of the sum of all outputs before it, and the block returns relu(out1 + out2 + out3 +
out4). Convs have biases, no BatchNorm;
strided convs use TensorFlow "SAME" padding, as the TF.js weights were trained.

``faceapi_xception`` — AgeGenderNet's "TinyXception": a strided conv, two reduction blocks
(separable convs, a SAME max pool, a strided 1x1 shortcut), two residual main blocks, an
exit reduction block and a separable conv to 512 channels (112 -> 7).

``faceapi_resnet`` — FaceRecognitionNet, face-api's port of dlib's ResNet-34-like face
descriptor network: convs with bias followed by a per-channel scale (dlib's BatchNorm,
folded), "valid" strided convs, residual blocks whose down-sampling shortcut is a 2x2
average pool zero-padded in channels (and the branch zero-padded bottom/right where the
valid conv came out one pixel smaller). 150 -> 2 at 256 channels."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone
from .blaze import conv
from .layers import _same
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


class ReductionBlock(nn.Module):
    """x (B, cin, H, W) -> (B, cout, H/2, W/2): sep -> relu -> sep -> SAME 3x3/2 max pool,
    plus a strided 1x1 conv of x (the input is activated first except in the first block)."""

    def __init__(self, cin: int, cout: int, activate_input: bool = True):
        super().__init__()
        self.separable_conv0, self.separable_conv1 = SeparableConv(cin, cout), SeparableConv(cout, cout)
        self.expansion_conv = nn.Conv2d(cin, cout, 1, 2)
        self.activate_input = activate_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.relu() if self.activate_input else x
        out = self.separable_conv1(self.separable_conv0(out).relu())
        (top, bottom), (left, right) = (_same(int(v), 3, 2) for v in out.shape[-2:])
        out = F.max_pool2d(F.pad(out, (left, right, top, bottom), value=float("-inf")), 3, 2)
        return out + self.expansion_conv(x)


class MainBlock(nn.Module):
    """x (B, C, H, W) -> same shape: x + three relu -> separable conv steps."""

    def __init__(self, c: int):
        super().__init__()
        self.separable_conv0, self.separable_conv1, self.separable_conv2 = (SeparableConv(c, c) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.separable_conv0(x.relu())
        out = self.separable_conv1(out.relu())
        return self.separable_conv2(out.relu()) + x


@register_backbone("faceapi_xception")
def faceapi_xception() -> Backbone:
    body = nn.Sequential(OrderedDict([
        ("conv_in", nn.Sequential(conv(3, 32, 3, 2), nn.ReLU())),
        ("reduction_block_0", ReductionBlock(32, 64, activate_input=False)),
        ("reduction_block_1", ReductionBlock(64, 128)),
        ("main_block_0", MainBlock(128)),
        ("main_block_1", MainBlock(128)),
        ("exit_reduction", ReductionBlock(128, 256)),
        ("exit_separable", nn.Sequential(SeparableConv(256, 512), nn.ReLU())),
    ]))
    return Backbone("faceapi_xception", body, ["reduction_block_0", "main_block_1", "exit_separable"],
                    [["conv_in", "reduction_block_0"], ["reduction_block_1", "main_block_0", "main_block_1"],
                     ["exit_reduction", "exit_separable"]])


class ScaledConv(nn.Module):
    """conv (with bias) -> per-channel scale and shift (dlib's folded BatchNorm) [-> relu]."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, 0 if stride > 1 else k // 2)  # strided: "valid"
        self.scale = nn.Parameter(torch.ones(cout))
        self.shift = nn.Parameter(torch.zeros(cout))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv.stride[0] > 1:  # valid: a window needs kernel-size input
            x = _at_least(x, self.conv.kernel_size[0])
        out = self.conv(x) * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)
        return out.relu() if self.relu else out


def _at_least(x: torch.Tensor, k: int) -> torch.Tensor:
    """x zero-padded bottom/right to k x k when smaller (a valid k x k window needs that much;
    at the 150 px the network was made for it never is)."""
    dh, dw = max(k - x.shape[-2], 0), max(k - x.shape[-1], 0)
    return F.pad(x, (0, dw, 0, dh)) if dh or dw else x


class Residual(nn.Module):
    """x (B, cin, H, W) -> (B, cout, H', W'): relu(conv2(conv1(x)) + shortcut); ``down``:
    conv1 is valid and strided and the shortcut a 2x2 average pool, zero-padded to cout
    channels (the branch zero-padded bottom/right to the pool's size)."""

    def __init__(self, cin: int, cout: int, down: bool = False):
        super().__init__()
        self.conv1 = ScaledConv(cin, cout, 3, 2 if down else 1)
        self.conv2 = ScaledConv(cout, cout, 3, relu=False)
        self.down, self.extra = down, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        if not self.down:
            return (out + x).relu()
        pooled = F.avg_pool2d(_at_least(x, 2), 2, 2)
        dh, dw = pooled.shape[-2] - out.shape[-2], pooled.shape[-1] - out.shape[-1]
        if dh or dw:  # negative on inputs smaller than any face: cut to the pool's size
            out = F.pad(out, (0, dw, 0, dh))
        if self.extra:
            pooled = F.pad(pooled, (0, 0, 0, 0, 0, self.extra))
        return (out + pooled).relu()


@register_backbone("faceapi_resnet")
def faceapi_resnet() -> Backbone:
    blocks: list[tuple[str, nn.Module]] = [("conv32_down", ScaledConv(3, 32, 7, 2)), ("pool", nn.MaxPool2d(3, 2))]
    for c, n, cin in ((32, 3, 32), (64, 3, 32), (128, 2, 64), (256, 2, 128)):
        if c > 32:
            blocks.append((f"conv{c}_down", Residual(cin, c, down=True)))
        blocks += [(f"conv{c}_{i}", Residual(c, c)) for i in range(1, n + 1)]
    blocks.append(("conv256_down_out", Residual(256, 256, down=True)))
    body = nn.Sequential(OrderedDict(blocks))
    return Backbone("faceapi_resnet", body, ["conv32_3", "conv64_3", "conv128_2", "conv256_down_out"],
                           [["conv32_down", "pool", "conv32_1", "conv32_2", "conv32_3"],
                            ["conv64_down", "conv64_1", "conv64_2", "conv64_3"],
                            ["conv128_down", "conv128_1", "conv128_2"],
                            ["conv256_down", "conv256_1", "conv256_2", "conv256_down_out"]])
