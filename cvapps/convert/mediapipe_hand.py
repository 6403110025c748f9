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
