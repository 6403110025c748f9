"""EfficientNet-Lite from a TFLite file (TF Hub's full-integer Lite3, dequantised by
cvapps.convert.tflite_file) -> the ``efficientnet_lite*`` backbone and a classification head.
Ops by position: CONV_2D = the stem, each block's expand (when it has one) and project 1x1s,
the head 1x1; DEPTHWISE_CONV_2D = each block's depthwise conv; FULLY_CONNECTED = the
classifier. BatchNorm was folded into the convs: each conv's bias goes into an identity
BatchNorm (epsilon 1e-3, the backbone's), which the config keeps fixed (``fixed_norms``)."""

from __future__ import annotations

import numpy as np
import torch

from . import MAPPINGS
from .state import by_position, complete_state


@MAPPINGS.decorator("efficientnet_lite_tflite")
def convert(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    blocks = sorted({k.split(".")[2] for k in state if k.startswith("backbone.body.b")}, key=lambda b: int(b[1:]))
    convs = ["backbone.body.stem.0"]
    for b in blocks:
        if f"backbone.body.{b}.expand.0.weight" in state:
            convs.append(f"backbone.body.{b}.expand.0")
        convs.append(f"backbone.body.{b}.project.0")
    convs.append("backbone.body.head.0")
    order = {"CONV_2D": convs, "DEPTHWISE_CONV_2D": [f"backbone.body.{b}.dw.0" for b in blocks],
             "FULLY_CONNECTED": ["head.fc"]}
    return complete_state(by_position(c, state, order, bn_eps=1e-3), state)
