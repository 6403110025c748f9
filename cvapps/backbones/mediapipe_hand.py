"""The encoder of MediaPipe's hand landmark model (full): an EfficientNet-Lite-like stack —
a strided 3x3 stem to 24 channels, inverted residual blocks without squeeze-excitation
(ReLU6, TF "SAME" padding when strided), and a last block cut after its depthwise conv
(1152 channels at stride 32; the model pools it for its four dense heads). 224 -> 7."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import Backbone, stages_at
from .efficientnet_lite import _CBA, LiteMBConv
from .registry import register_backbone

# (cin, cout, expand ratio, kernel, stride) per block, as the TFLite file has them
BLOCKS = [(24, 16, 1, 3, 1), (16, 24, 4, 3, 2), (24, 24, 6, 3, 1), (24, 40, 6, 5, 2), (40, 40, 6, 5, 1),
          (40, 80, 6, 3, 2), (80, 80, 6, 3, 1), (80, 80, 6, 3, 1), (80, 112, 6, 5, 1), (112, 112, 6, 5, 1),
          (112, 112, 6, 5, 1), (112, 192, 6, 5, 2), (192, 192, 6, 5, 1), (192, 192, 6, 5, 1), (192, 192, 6, 5, 1)]


@register_backbone("mediapipe_hand")
def mediapipe_hand() -> Backbone:
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=_CBA(3, 24, 3, 2))
    for i, (cin, cout, e, k, s) in enumerate(BLOCKS):
        layers[f"b{i}"] = LiteMBConv(cin, cout, e, k, s)
    layers["head"] = nn.Sequential(_CBA(192, 1152, 1), _CBA(1152, 1152, 3, groups=1152))  # the cut last block
    body = nn.Sequential(layers)
    taps = ["b0", "b2", "b4", "b10", "head"]  # strides 2, 4, 8, 16, 32
    return Backbone("mediapipe_hand", body, taps, stages_at(list(layers), taps))
