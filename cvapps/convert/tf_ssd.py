"""TensorFlow Object Detection's SSD-MobileNetV2 (COCO, 2018_03_29) -> cvapps's detection
model: torchvision's MobileNetV2 (taps inside block 14 and at block 18, TF "SAME" padding,
BatchNorm eps 1e-3), four extra blocks, plain 3x3 box predictors, TF's SSD anchors.

Kernel layouts: conv HWIO -> OIHW ``transpose(3, 2, 0, 1)``; depthwise (kh, kw, C, 1) ->
(C, 1, kh, kw) ``transpose(2, 3, 0, 1)``. Class predictors keep, per anchor, the background
column and the columns of the model's category ids (TF outputs 91: background + ids 1..90,
ten of them unused); box predictors reorder each anchor's (ty, tx, th, tw) to cvapps's
(dx, dy, dw, dh)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import WeightsError
from . import MAPPINGS
from .state import complete_state

TF = "FeatureExtractor/MobilenetV2"


def _conv(w: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """TF kernel -> torch: HWIO -> OIHW, or depthwise (kh, kw, C, 1) -> (C, 1, kh, kw)."""
    return w.transpose(2, 3, 0, 1) if depthwise else w.transpose(3, 2, 0, 1)


def _bn(out: dict, prefix: str, tf: str, c: dict) -> None:
    for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                         ("running_var", "moving_variance")):
        out[f"{prefix}.{ours}"] = c[f"{tf}/BatchNorm/{theirs}"]


def backbone_names() -> list[tuple[str, str, str]]:
    """(cvapps conv prefix, cvapps BN prefix, TF scope) of every conv + BN of the backbone."""
    rows = [("backbone.body.0.0", "backbone.body.0.1", f"{TF}/Conv"),
            ("backbone.body.1.conv.0.0", "backbone.body.1.conv.0.1", f"{TF}/expanded_conv/depthwise"),
            ("backbone.body.1.conv.1", "backbone.body.1.conv.2", f"{TF}/expanded_conv/project")]
    for k in range(1, 17):
        scope = f"{TF}/expanded_conv_{k}"
        b = f"backbone.body.{k + 1}.conv"
        rows += [(f"{b}.0.0", f"{b}.0.1", f"{scope}/expand"), (f"{b}.1.0", f"{b}.1.1", f"{scope}/depthwise"),
                 (f"{b}.2", f"{b}.3", f"{scope}/project")]
    rows.append(("backbone.body.18.0", "backbone.body.18.1", f"{TF}/Conv_1"))
    return rows


def extra_names(mids: list[int], outs: list[int]) -> list[tuple[str, str, str]]:
    rows = []
    for i, (mid, out) in enumerate(zip(mids, outs)):
        e = f"head.extras.{i}"
        rows += [(f"{e}.0.0", f"{e}.0.1", f"{TF}/layer_19_1_Conv2d_{i + 2}_1x1_{mid}"),
                 (f"{e}.1.0", f"{e}.1.1", f"{TF}/layer_19_2_Conv2d_{i + 2}_3x3_s2_{out}_depthwise"),
                 (f"{e}.2.0", f"{e}.2.1", f"{TF}/layer_19_2_Conv2d_{i + 2}_3x3_s2_{out}")]
    return rows


@MAPPINGS.decorator("tf_ssd_mobilenet_v2")
def convert(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """TF constants ``c`` -> a full state dict for a model whose own state is ``state``."""
    h = config["head"]
    out: dict[str, np.ndarray] = {}
    for conv, bn, scope in backbone_names() + extra_names(h["extra_mid"], h["extra_channels"]):
        depthwise = f"{scope}/depthwise_weights" in c
        w = c.get(f"{scope}/depthwise_weights" if depthwise else f"{scope}/weights")
        if w is None:
            raise WeightsError(f"the graph has no weights for {scope}")
        out[f"{conv}.weight"] = _conv(w, depthwise)
        _bn(out, bn, scope, c)
    # class columns kept per anchor: background (0) and the model's category ids, in label order
    keep = [0] + list(config["category_ids"])
    for level in range(len(h["levels"])):
        cls_w, cls_b = c[f"BoxPredictor_{level}/ClassPredictor/weights"], c[f"BoxPredictor_{level}/ClassPredictor/biases"]
        per = 91
        a = cls_w.shape[3] // per
        cols = np.array([k * per + j for k in range(a) for j in keep])
        out[f"head.cls.{level}.0.weight"] = _conv(cls_w[..., cols])
        out[f"head.cls.{level}.0.bias"] = cls_b[cols]
        box_w, box_b = c[f"BoxPredictor_{level}/BoxEncodingPredictor/weights"], \
            c[f"BoxPredictor_{level}/BoxEncodingPredictor/biases"]
        order = np.array([k * 4 + j for k in range(a) for j in (1, 0, 3, 2)])  # (ty, tx, th, tw) -> (tx, ty, tw, th)
        out[f"head.reg.{level}.0.weight"] = _conv(box_w[..., order])
        out[f"head.reg.{level}.0.bias"] = box_b[order]
    return complete_state(out, state)
