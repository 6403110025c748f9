"""MediaPipe's hand landmark model (TFLite, fp16 behind DEQUANTIZE, BatchNorm folded) -> the
``mediapipe_hand`` encoder + the ``mediapipe_hand`` keypoint head. Ops by position: CONV_2D =
the stem, each block's expand (when it has one) and project 1x1s, the last block's expand;
DEPTHWISE_CONV_2D = each block's depthwise conv and the last block's; FULLY_CONNECTED, in the
file's order = handedness, hand presence, the 21 points, the metric "world" points (not kept).
Folded biases go into identity BatchNorms (epsilon 1e-3), kept fixed (``fixed_norms``)."""

from __future__ import annotations

import numpy as np
import torch

from . import MAPPINGS
from .state import by_position, complete_state


@MAPPINGS.decorator("mediapipe_hand")
def convert(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    blocks = sorted({k.split(".")[2] for k in state if k.startswith("backbone.body.b")}, key=lambda b: int(b[1:]))
    convs, dws = ["backbone.body.stem.0"], []
    for b in blocks:
        if f"backbone.body.{b}.expand.0.weight" in state:
            convs.append(f"backbone.body.{b}.expand.0")
        dws.append(f"backbone.body.{b}.dw.0")
        convs.append(f"backbone.body.{b}.project.0")
    convs.append("backbone.body.head.0.0")
    dws.append("backbone.body.head.1.0")
    dense = ["head.main.handedness", "head.main.presence", "head.main.points"]
    order = {"CONV_2D": convs, "DEPTHWISE_CONV_2D": dws, "FULLY_CONNECTED": dense}
    return complete_state(by_position(c, state, order, bn_eps=1e-3, more={"FULLY_CONNECTED": 1}), state)  # world


@MAPPINGS.decorator("mediapipe_palm")
def convert_palm(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """MediaPipe's palm detector (palm_detection_full.tflite, fp16, no BatchNorm) -> the
    ``blazepalm`` encoder + the ``blazepalm`` head: stem, each block's depthwise / pointwise /
    PReLU in order, then the head's stride-16 level (up 1x1, two blocks, classifier,
    regressor), then its stride-8 level."""
    n = len({k.split(".")[2] for k in state if k.startswith("backbone.body.")})
    body = [f"backbone.body.{i}" for i in range(1, n)]
    lv = [(f"head.main.up{s}", [f"head.main.blocks{s}.{j}" for j in (0, 1)], f"head.main.cls{s}", f"head.main.reg{s}")
          for s in (16, 8)]
    order = {"CONV_2D": ["backbone.body.0.0"] + [f"{b}.pw" for b in body]
             + [m for up, bl, cls, reg in lv for m in [f"{up}.0"] + [f"{b}.pw" for b in bl] + [cls, reg]],
             "DEPTHWISE_CONV_2D": [f"{b}.dw" for b in body] + [f"{b}.dw" for _, bl, _, _ in lv for b in bl],
             "PRELU": ["backbone.body.0.1"] + [f"{b}.act" for b in body]
             + [m for up, bl, _, _ in lv for m in [f"{up}.1"] + [f"{b}.act" for b in bl]]}
    return complete_state(by_position(c, state, order), state)
