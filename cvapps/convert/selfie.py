"""MediaPipe selfie segmentation (selfie_segmentation.tflite, fp16) -> the ``selfie_encoder``
backbone + the ``selfie`` segmentation decoder (cvapps.backbones.selfie,
cvapps.tasks.segmentation.selfie). No BatchNorm in the original; ops are matched by position
in the file's execution order (fixed by its sha256), every shape checked."""

from __future__ import annotations

import numpy as np
import torch

from . import MAPPINGS
from .state import by_position, complete_state


def op_order() -> dict[str, list[str]]:
    b = "backbone.body"
    convs = [f"{b}.0.0"]
    for i in range(1, 9):
        se = [f"{b}.{i}.se.reduce", f"{b}.{i}.se.expand"] if i in (1, 4, 5, 6, 7, 8) else []
        convs += [f"{b}.{i}.expand.0", *se, f"{b}.{i}.project"]
    convs += ["head.aspp.0", "head.aspp_gate"]
    for level in range(3):
        f = f"head.fuse.{level}"
        convs += [f"head.up.{level}", f"{f}.se.reduce", f"{f}.se.expand", f"{f}.pw.0"]
    return {"CONV_2D": convs,
            "DEPTHWISE_CONV_2D": [f"{b}.{i}.dw.0" for i in range(1, 9)] + [f"head.fuse.{i}.dw.0" for i in range(3)],
            "Convolution2DTransposeBias": ["head.out"]}


@MAPPINGS.decorator("selfie_segmentation")
def convert(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    return complete_state(by_position(c, state, op_order()), state)
