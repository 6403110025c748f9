"""Backbones built from torchvision's own model definitions (random init; weights come
from cvapps.weights). Child names are torchvision's, so its state-dict keys map 1:1."""

from __future__ import annotations

from types import SimpleNamespace

from torch import nn
from torchvision import models as tvm
from torchvision.models import vgg
from torchvision.ops import Conv2dNormActivation

from .base import Backbone, named_sequential
from .registry import register_backbone

_RESNET_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
_RESNET_STAGES = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]


def _resnet(name: str, ctor) -> Backbone:
    body = named_sequential(ctor(weights=None), _RESNET_CHILDREN)
    return Backbone(name, body, ["relu", "layer1", "layer2", "layer3", "layer4"], _RESNET_STAGES)


@register_backbone("resnet18")
def resnet18() -> Backbone:
    return _resnet("resnet18", tvm.resnet18)


@register_backbone("resnet34")
def resnet34() -> Backbone:
    return _resnet("resnet34", tvm.resnet34)


@register_backbone("resnet50")
def resnet50() -> Backbone:
    return _resnet("resnet50", tvm.resnet50)


def _features(name: str, model, taps: list[int]) -> Backbone:
    """Flat ``model.features`` Sequential; one stage ends at each tap."""
    body = model.features
    stages, start = [], 0
    for t in taps:
        stages.append([str(i) for i in range(start, t + 1)])
        start = t + 1
    return Backbone(name, body, [str(t) for t in taps], stages)


@register_backbone("mobilenet_v2")
def mobilenet_v2() -> Backbone:
    return _features("mobilenet_v2", tvm.mobilenet_v2(weights=None), [1, 3, 6, 13, 18])


def _wide_mobilenet_v2(name: str, width: float) -> Backbone:
    """MobileNetV2 wider than 1 as MoveNet's feature extractors have it: torchvision's blocks,
    but the last 1x1 conv keeps 1280 channels (torchvision widens it by the width too)."""
    model = tvm.mobilenet_v2(weights=None, width_mult=width)
    last = model.features[18][0]
    model.features[18] = Conv2dNormActivation(last.in_channels, 1280, 1, activation_layer=nn.ReLU6)
    return _features(name, model, [1, 3, 6, 13, 18])


@register_backbone("mobilenet_v2_150")
def mobilenet_v2_150() -> Backbone:
    return _wide_mobilenet_v2("mobilenet_v2_150", 1.5)  # MoveNet MultiPose's


@register_backbone("mobilenet_v2_175")
def mobilenet_v2_175() -> Backbone:
    return _wide_mobilenet_v2("mobilenet_v2_175", 1.75)  # MoveNet Thunder's


@register_backbone("mobilenet_v3_small")
def mobilenet_v3_small() -> Backbone:
    return _features("mobilenet_v3_small", tvm.mobilenet_v3_small(weights=None), [0, 1, 3, 8, 12])


@register_backbone("mobilenet_v3_large")
def mobilenet_v3_large() -> Backbone:
    return _features("mobilenet_v3_large", tvm.mobilenet_v3_large(weights=None), [1, 3, 6, 12, 16])


@register_backbone("efficientnet_b0")
def efficientnet_b0() -> Backbone:
    return _features("efficientnet_b0", tvm.efficientnet_b0(weights=None), [1, 2, 3, 5, 8])


@register_backbone("vgg16_bn", pool_indices=True)
def vgg16_bn() -> Backbone:
    """torchvision's VGG-16-BN feature layers (``make_layers`` with its "D" config and VGG's
    initialisation), without building the 120M-parameter classifier the backbone never uses."""
    features = vgg.make_layers(vgg.cfgs["D"], batch_norm=True)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    # taps are the five max-pool layers (strides 2..32); forward_with_pool_indices returns their indices
    return _features("vgg16_bn", SimpleNamespace(features=features), [6, 13, 23, 33, 43])
