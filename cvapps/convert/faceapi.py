"""face-api's TF.js weights (read by cvapps.convert.tfjs_file) -> the ``faceapi_*`` backbones
and a keypoint or classification head. Weights are named, so names map to modules:

- a plain conv ``{filters, bias}`` (HWIO -> OIHW); a separable conv ``{depthwise_filter,
  pointwise_filter, bias}`` ([kh, kw, C, 1] -> [C, 1, kh, kw], [1, 1, C, O] -> [O, C, 1, 1],
  the bias after the pointwise conv); a dense layer ``{weights, bias}`` ([in, out] -> [out, in]);
- FaceRecognitionNet's ``convX/conv/{filters, bias}`` + ``convX/scale/{weights, biases}``
  (dlib's folded BatchNorm) and a bias-free ``fc`` [256, 128].

face-api's landmark net outputs the points as fractions of the crop; cvapps's regression
head adds 0.5 to its linear layer (it starts at the crop's centre), so 0.5 comes off the bias.
AgeGenderNet holds two heads on one body: a regression model takes ``fc/age``, a classifier
``fc/gender`` (male, female)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import WeightsError
from . import MAPPINGS
from .state import complete_state


def _conv(c: dict, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.weight"] = c[f"{src}/filters"].transpose(3, 2, 0, 1)
    out[f"{dst}.bias"] = c[f"{src}/bias"]


def _separable(c: dict, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.dw.weight"] = c[f"{src}/depthwise_filter"].transpose(2, 3, 0, 1)
    out[f"{dst}.pw.weight"] = c[f"{src}/pointwise_filter"].transpose(3, 2, 0, 1)
    out[f"{dst}.pw.bias"] = c[f"{src}/bias"]


def _dense_blocks(c: dict, out: dict) -> None:
    for block in range(4):
        for m in range(4):
            src, dst = f"dense{block}/conv{m}", f"backbone.body.{block}.conv{m}"
            (_conv if f"{src}/filters" in c else _separable)(c, src, dst, out)


def _fc(c: dict, src: str, out: dict, dst: str = "head.fc") -> None:
    out[f"{dst}.weight"] = c[f"{src}/weights"].T
    out[f"{dst}.bias"] = c[f"{src}/bias"]


def _finish(c: dict, out: dict, state: dict, used: set[str]) -> dict[str, torch.Tensor]:
    if used != set(c):
        raise WeightsError(f"face-api weights the model has no place for: {sorted(set(c) - used)[:3]}")
    return complete_state(out, state)


@MAPPINGS.decorator("faceapi_landmarks")
def landmarks(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out: dict[str, np.ndarray] = {}
    _dense_blocks(c, out)
    _fc(c, "fc", out, "head.main.fc")
    out["head.main.fc.bias"] = out["head.main.fc.bias"] - 0.5
    return _finish(c, out, state, {k for k in c if k.startswith(("dense", "fc/"))})


@MAPPINGS.decorator("faceapi_expression")
def expression(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out: dict[str, np.ndarray] = {}
    _dense_blocks(c, out)
    _fc(c, "fc", out)
    return _finish(c, out, state, {k for k in c if k.startswith(("dense", "fc/"))})


@MAPPINGS.decorator("faceapi_age_gender")
def age_gender(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out: dict[str, np.ndarray] = {}
    _conv(c, "entry_flow/conv_in", "backbone.body.conv_in.0", out)
    blocks = {"entry_flow/reduction_block_0": "reduction_block_0", "entry_flow/reduction_block_1": "reduction_block_1",
              "middle_flow/main_block_0": "main_block_0", "middle_flow/main_block_1": "main_block_1",
              "exit_flow/reduction_block": "exit_reduction"}
    for src, dst in blocks.items():
        for i in range(3):
            if f"{src}/separable_conv{i}/bias" in c:
                _separable(c, f"{src}/separable_conv{i}", f"backbone.body.{dst}.separable_conv{i}", out)
        if f"{src}/expansion_conv/bias" in c:
            _conv(c, f"{src}/expansion_conv", f"backbone.body.{dst}.expansion_conv", out)
    _separable(c, "exit_flow/separable_conv", "backbone.body.exit_separable.0", out)
    head = "fc/age" if config["head"].get("kind") == "regression" else "fc/gender"
    _fc(c, head, out)
    both = {f"fc/{h}/{w}" for h in ("age", "gender") for w in ("weights", "bias")}  # the other head: not this model's
    return _finish(c, out, state, {k for k in c if not k.startswith("fc/")} | both)


@MAPPINGS.decorator("faceapi_descriptor")
def descriptor(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out: dict[str, np.ndarray] = {}
    for key in c:
        if key.endswith("/conv/filters"):
            layer = key[: -len("/conv/filters")]
            dst = "backbone.body." + layer.replace("/", ".")
            _conv(c, f"{layer}/conv", f"{dst}.conv", out)
            out[f"{dst}.scale"], out[f"{dst}.shift"] = c[f"{layer}/scale/weights"], c[f"{layer}/scale/biases"]
    out["head.fc.weight"] = c["fc"].T
    out["head.fc.bias"] = np.zeros(c["fc"].shape[1], np.float32)  # dlib's projection has no bias
    used = {k for k in c if k.rsplit("/", 2)[-2:][0] in ("conv", "scale")} | {"fc"}
    return _finish(c, out, state, used)
