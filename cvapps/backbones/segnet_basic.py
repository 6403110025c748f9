"""SegNet-Basic's encoder (Badrinarayanan et al.): four 7x7 conv(64)-BN-ReLU-maxpool levels,
trained from scratch. Exposes max-pool indices like vgg16_bn; strides 2, 4, 8, 16."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import Backbone
from .registry import register_backbone


@register_backbone("segnet_basic", pool_indices=True)
def segnet_basic() -> Backbone:
    blocks, cin = OrderedDict(), 3
    for i in range(4):
        blocks[f"block{i}"] = nn.Sequential(nn.Conv2d(cin, 64, 7, padding=3, bias=False), nn.BatchNorm2d(64),
                                            nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        cin = 64
    names = list(blocks)
    return Backbone("segnet_basic", nn.Sequential(blocks), names, [[n] for n in names])
