"""face-api's TF.js weights (read by cvapps.convert.tfjs_file) -> the ``faceapi_dense``
backbone and a ``regression`` keypoint head. Weights are named, so names map to modules:
``denseN/convM/{filters, bias}`` (a plain conv, HWIO -> OIHW) or ``{depthwise_filter,
pointwise_filter, bias}`` (separable: [kh, kw, C, 1] -> [C, 1, kh, kw], [1, 1, C, O] ->
[O, C, 1, 1], the bias after the pointwise conv); ``fc/{weights, bias}`` ([in, out] ->
[out, in]). face-api's head outputs the points as fractions of the crop; cvapps's regression
head adds 0.5 to its linear layer (it starts at the crop's centre), so 0.5 comes off the bias."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import WeightsError
from . import MAPPINGS
from .state import complete_state


def _dense(c: dict[str, np.ndarray], block: int, out: dict) -> None:
    for m in range(4):
        src, dst = f"dense{block}/conv{m}", f"backbone.body.{block}.conv{m}"
        if f"{src}/filters" in c:  # the first block's plain conv
            out[f"{dst}.weight"] = c[f"{src}/filters"].transpose(3, 2, 0, 1)
            out[f"{dst}.bias"] = c[f"{src}/bias"]
        else:
            out[f"{dst}.dw.weight"] = c[f"{src}/depthwise_filter"].transpose(2, 3, 0, 1)
            out[f"{dst}.pw.weight"] = c[f"{src}/pointwise_filter"].transpose(3, 2, 0, 1)
            out[f"{dst}.pw.bias"] = c[f"{src}/bias"]


@MAPPINGS.decorator("faceapi_landmarks")
def convert(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out: dict[str, np.ndarray] = {}
    for block in range(4):
        _dense(c, block, out)
    out["head.main.fc.weight"] = c["fc/weights"].T
    out["head.main.fc.bias"] = c["fc/bias"] - 0.5
    used = {k for k in c if k.startswith(("dense", "fc/"))}
    if used != set(c):
        raise WeightsError(f"face-api weights the model has no place for: {sorted(set(c) - used)[:3]}")
    return complete_state(out, state)
