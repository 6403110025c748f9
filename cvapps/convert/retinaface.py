"""RetinaFace MobileNet-0.25 (biubug6/Pytorch_Retinaface, exported to ONNX with BatchNorm
folded into the convs) -> cvapps's face detector (cvapps.tasks.landmarks.retinaface).

Our convs keep their BatchNorm (so the model stays a normal, fine-tunable module layout):
a folded conv's weight goes to the conv, its bias to an identity BatchNorm
(cvapps.convert.state.conv_bias). The first conv's input channels are
reversed: the original takes BGR, cvapps feeds RGB."""

from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import WeightsError
from . import MAPPINGS
from .state import complete_state, conv_bias

HEADS = {"cls": "class_head.class_head", "box": "bbox_head.bbox_head", "points": "landmark_head.landmark_head"}


def source_name(ours: str) -> str:
    """Our module path (a conv) -> the exported model's: backbone.body.stage1.0.0 ->
    fx.stage1.0.0, head.ssh.0.conv3X3.0 -> ssh1.conv3X3.0, head.cls.2 -> class_head.class_head.2."""
    if ours.startswith("backbone.body."):
        return "fx." + ours[len("backbone.body."):]
    m = re.fullmatch(r"head\.ssh\.(\d+)\.(.+)", ours)
    if m:
        return f"ssh{int(m[1]) + 1}.{m[2]}"
    m = re.fullmatch(r"head\.(cls|box|points)\.(\d+)", ours)
    if m:
        return f"{HEADS[m[1]]}.{m[2]}"
    return ours[len("head."):]


@MAPPINGS.decorator("retinaface_mnet025")
def convert(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    convs = sorted({k[: -len(".weight")] for k in state if k.endswith(".weight") and state[k].dim() == 4})
    for conv in convs:
        src = source_name(conv)
        if f"{src}.weight" not in c:
            raise WeightsError(f"the model file has no weights for {src} (our {conv})")
        w = c[f"{src}.weight"].astype(np.float32)
        if conv == "backbone.body.stage1.0.0":
            w = w[:, ::-1]  # BGR -> RGB input
        out[f"{conv}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        out.update(conv_bias(conv, c[f"{src}.bias"].astype(np.float32), state))
    return complete_state(out, state)
