"""MediaPipe FaceMesh (face_landmark.tflite, fp16) -> the ``blazemesh`` encoder + the
``facemesh`` keypoint head (cvapps.backbones.blaze, cvapps.tasks.keypoints.facemesh).

No BatchNorm in the original: convs keep their biases, PReLU slopes are per channel. Ops are
matched by position in the file's execution order (fixed by the file's sha256; the two head
branches interleave there), and every shape is checked."""

from __future__ import annotations

import numpy as np
import torch

from . import MAPPINGS
from .state import by_position, complete_state


def op_order() -> dict[str, list[str]]:
    body = [f"backbone.body.{i}" for i in range(1, 15)]
    m, p = "head.main.mesh", "head.main.presence"
    return {
        "CONV_2D": ["backbone.body.0.0"] + [f"{b}.pw" for b in body] + [
            f"{m}.0.pw", f"{m}.1.pw", f"{p}.0.pw", f"{m}.2.pw", f"{p}.1.0", f"{m}.3.0", f"{p}.2.pw", f"{m}.4.pw",
            "head.main.presence_out", "head.main.mesh_out"],
        "DEPTHWISE_CONV_2D": [f"{b}.dw" for b in body] + [f"{m}.0.dw", f"{m}.1.dw", f"{p}.0.dw", f"{m}.2.dw",
                                                           f"{p}.2.dw", f"{m}.4.dw"],
        "PRELU": ["backbone.body.0.1"] + [f"{b}.act" for b in body] + [
            f"{m}.0.act", f"{m}.1.act", f"{p}.0.act", f"{m}.2.act", f"{p}.1.1", f"{m}.3.1", f"{p}.2.act", f"{m}.4.act"],
    }


@MAPPINGS.decorator("facemesh")
def convert(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    return complete_state(by_position(c, state, op_order()), state)
