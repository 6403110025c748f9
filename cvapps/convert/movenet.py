"""MoveNet SinglePose Lightning (TFLite, fp16) and Thunder (a TF.js graph model, fp16) -> a
cvapps pose model: torchvision's MobileNetV2 (width 1 / 1.75, TF "SAME" padding, taps at
features 3 / 6 / 10 / 18) + the MoveNet head (cvapps.tasks.keypoints.movenet).

The TFLite file has BatchNorm folded into the convs: a folded conv's bias goes to an identity
BatchNorm (weight 1, mean 0, var 1 - eps), so the model keeps torchvision's module layout.
Convs are matched by position (the reader's ``CONV_2D.{n}`` / ``DEPTHWISE_CONV_2D.{n}``,
execution order), which is fixed by the file's sha256; shapes are checked for every tensor.
The decoding constants in the file (input scaling, centre weights, the 1.8-cell distance bias,
the 1/48 output scale) are checked against what cvapps.tasks.keypoints.movenet assumes."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import WeightsError
from ..ops.keypoints import MOVENET_DIST_BIAS, movenet_centre_weights
from . import MAPPINGS
from .state import by_position, complete_state

HEADS = ("centre", "heatmap", "offset", "regress")  # the file's order


def conv_order() -> tuple[list[str], list[str]]:
    """Our conv modules in the file's execution order: (1x1 / full convs, depthwise convs).
    The file computes each FPN lateral right after the backbone block it taps."""
    b = "backbone.body"
    convs, dws = [f"{b}.0.0", f"{b}.1.conv.1"], [f"{b}.1.conv.0.0"]
    lateral_after = {2: 0, 5: 1, 9: 2}  # TF block k (= features.k+1) -> lateral index
    for k in range(1, 17):
        convs += [f"{b}.{k + 1}.conv.0.0", f"{b}.{k + 1}.conv.2"]
        dws.append(f"{b}.{k + 1}.conv.1.0")
        if k in lateral_after:
            convs.append(f"head.main.lateral.{lateral_after[k]}")
    convs += [f"{b}.18.0", "head.main.lateral.3"]
    for i in range(3):
        dws.append(f"head.main.fpn.{i}.0")
        convs.append(f"head.main.fpn.{i}.1")
    for name in HEADS:
        dws.append(f"head.main.heads.{name}.0")
        convs += [f"head.main.heads.{name}.1", f"head.main.heads.{name}.3"]
    return convs, dws


def near(c: dict[str, np.ndarray], key: str, want, tol=2e-3) -> None:
    got = c.get(key)
    if got is None or got.size != np.size(want) or \
            not np.allclose(np.asarray(got, np.float32).reshape(np.shape(want)), want, atol=tol, rtol=tol):
        raise WeightsError(f"the model file's constant {key!r} is not the MoveNet decoding cvapps implements")


def _check_constants(c: dict[str, np.ndarray]) -> None:
    near(c, "truediv_1;truediv_1/y", 2 / 255)  # input: x * 2/255 - 1
    near(c, "sub_1/y", 1.0)
    near(c, "add_1/y", MOVENET_DIST_BIAS)
    near(c, "Reshape_13", [[[[1 / 48, 1 / 48]]]])
    near(c, "truediv_2;add_1", movenet_centre_weights(48, 48).numpy()[..., None])


@MAPPINGS.decorator("movenet")
def convert(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    _check_constants(c)
    convs, dws = conv_order()
    return complete_state(by_position(c, state, {"CONV_2D": convs, "DEPTHWISE_CONV_2D": dws}), state)


TFJS_HEADS = {"center_0": "centre", "kpt_heatmap_0": "heatmap", "kpt_offset_0": "offset", "kpt_regress_0": "regress",
              "box_scale_0": "box_scale", "box_offset_0": "box_offset"}  # the last two: MultiPose


@MAPPINGS.decorator("movenet_tfjs")
def convert_tfjs(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """The TF.js graph (cvapps.convert.tfjs_file.read_tfjs_ops): the backbone, laterals and FPN
    by position as in the TFLite file; the heads (four, MultiPose's six) by their layer names
    (the graph runs the heads' depthwise convs first, then their 1x1s)."""
    size = int(config["preprocessing"]["input_size"]) // 4  # the output map
    p = "StatefulPartitionedCall/"
    near(c, p + "truediv", [[[[2 / 255] * 3]]])  # input: (x - 0) * 2/255 - 1
    near(c, p + "sub_1/y", 1.0)
    if config["head"]["kind"] == "movenet_multipose":  # its decoding's constants
        near(c, p + "Greater_1/y", config["head"]["kpt_threshold"])
        near(c, p + "mul_6/y", config["head"]["spread"])
        near(c, p + "TopKV2/k", config["head"]["people"])
    else:
        near(c, p + "Reshape_13", [[[[1 / size, 1 / size]]]])
        near(c, "ConstantFolding/StatefulPartitionedCall/truediv_2_recip",
             movenet_centre_weights(size, size).numpy()[..., None])
    convs, dws = conv_order()
    n_heads = len(HEADS)
    body = {"CONV_2D": convs[: -2 * n_heads], "DEPTHWISE_CONV_2D": dws[:-n_heads]}
    nodes = [k[len("node:"):-len(".weight")] for k in c if k.startswith("node:") and k.endswith(".weight")]
    heads = [(n, next((TFJS_HEADS[p] for p in n.split("/") if p in TFJS_HEADS), None)) for n in nodes]
    heads = [(n, h) for n, h in heads if h is not None]
    dw_heads = sum(n.endswith("/depthwise") for n, _ in heads)
    out = by_position(c, state, body, more={"CONV_2D": len(heads) - dw_heads, "DEPTHWISE_CONV_2D": dw_heads})
    for node, head in heads:
        slot = 0 if node.endswith("/depthwise") else 1 if node.endswith("/Relu") else 3
        mod = f"head.main.heads.{head}.{slot}"
        if tuple(state[f"{mod}.weight"].shape) != c[f"node:{node}.weight"].shape:
            raise WeightsError(f"{node} has weights {c[f'node:{node}.weight'].shape}, our {mod} "
                               f"{tuple(state[f'{mod}.weight'].shape)}")
        out[f"{mod}.weight"], out[f"{mod}.bias"] = c[f"node:{node}.weight"], c[f"node:{node}.bias"]
    return complete_state(out, state)
