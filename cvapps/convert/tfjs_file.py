"""Read the weights of a TensorFlow.js model: a weights manifest (face-api's
``*-weights_manifest.json``: a list of groups) or a graph / layers model's ``model.json``
(its ``weightsManifest`` key), and the binary shards it names — no TensorFlow, no JavaScript.

Each group lists ``paths`` (shard files beside the manifest, concatenated in order) and
``weights`` (name, shape, dtype, optional ``quantization``: ``uint8`` / ``uint16`` affine
``min + q * scale``, or ``float16`` IEEE halves). The weights take the group's bytes in
order, and the byte counts must add up exactly: a manifest that does not describe its shards
is refused, not read at an offset. Arrays keep TF.js's layouts (convolutions HWIO, depthwise
``[kh, kw, C, multiplier]``); a mapping transposes them for torch."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WeightsError

DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
QUANTIZED = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


def _manifest(path: Path) -> tuple[list[dict], dict | None]:
    """(weight groups, graph topology or None) of a manifest or model.json."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"not a TF.js manifest: {e}", path=str(path)) from None
    if isinstance(doc, dict):
        groups, topology = doc.get("weightsManifest"), doc.get("modelTopology")
    else:
        groups, topology = doc, None
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "paths" in g and "weights" in g
                                               for g in groups):
        raise WeightsError("not a TF.js manifest: expected a list of {paths, weights} groups (or a model.json "
                           "with weightsManifest)", path=str(path))
    return groups, topology


def _nbytes(w: dict, where: str) -> int:
    count = int(np.prod(w.get("shape") or [], dtype=np.int64))
    q = w.get("quantization")
    if q is not None:
        if q.get("dtype") not in QUANTIZED:
            raise WeightsError(f"{where}: weight {w.get('name')!r} has quantization dtype {q.get('dtype')!r}; "
                               f"readable: {', '.join(QUANTIZED)}")
        return count * np.dtype(QUANTIZED[q["dtype"]]).itemsize
    if w.get("dtype") not in DTYPES:
        raise WeightsError(f"{where}: weight {w.get('name')!r} has dtype {w.get('dtype')!r}; readable: "
                           f"{', '.join(DTYPES)}")
    return count * np.dtype(DTYPES[w["dtype"]]).itemsize


def _value(w: dict, raw: bytes) -> np.ndarray:
    shape = tuple(int(s) for s in w.get("shape") or [])
    q = w.get("quantization")
    if q is None:
        return np.frombuffer(raw, DTYPES[w["dtype"]]).reshape(shape).copy()
    codes = np.frombuffer(raw, QUANTIZED[q["dtype"]]).reshape(shape)
    if q["dtype"] == "float16":
        return codes.astype(np.float32)
    value = float(q["min"]) + codes.astype(np.float64) * float(q["scale"])  # in float64: min + q*scale exactly
    return value.astype(np.float32 if w.get("dtype", "float32") == "float32" else DTYPES[w["dtype"]])


def read_tfjs(path: str | Path) -> dict[str, np.ndarray]:
    """Every weight of a TF.js manifest / model.json and its shards -> {name: array}
    (float32 for float weights, dequantised)."""
    p = Path(path)
    groups, _ = _manifest(p)
    out: dict[str, np.ndarray] = {}
    for k, g in enumerate(groups):
        where = f"{p.name} group {k}"
        shards = []
        for name in g["paths"]:
            shard = p.parent / name
            if not shard.is_file():
                raise WeightsError(f"{where}: shard {name} is missing (expected beside the manifest)",
                                   path=str(shard))
            shards.append(shard.read_bytes())
        data = b"".join(shards)
        sizes = [_nbytes(w, where) for w in g["weights"]]
        if sum(sizes) != len(data):
            raise WeightsError(f"{where}: the weights need {sum(sizes)} bytes but the shards hold {len(data)}",
                               path=str(p), hint="the manifest does not describe these shards (another version?)")
        at = 0
        for w, n in zip(g["weights"], sizes):
            if w["name"] in out:
                raise WeightsError(f"{where}: weight {w['name']!r} is listed twice", path=str(p))
            out[w["name"]] = _value(w, data[at:at + n])
            at += n
    return out


@dataclass
class GraphNode:
    name: str
    op: str
    inputs: list[str]
    attr: dict


def read_tfjs_graph(path: str | Path) -> list[GraphNode]:
    """The nodes of a graph model's topology (a TF GraphDef as JSON), in file order: what a
    mapping reads an architecture's wiring from (ops, inputs, ``attr`` such as strides,
    padding, ``fused_ops``). A weights-only manifest has none: refused."""
    p = Path(path)
    _, topology = _manifest(p)
    if not isinstance(topology, dict) or not isinstance(topology.get("node"), list):
        raise WeightsError("no graph topology in this TF.js file (a weights manifest; the architecture is in the "
                           "code that used it)", path=str(p))
    return [GraphNode(n.get("name", ""), n.get("op", ""), list(n.get("input", [])), dict(n.get("attr", {})))
            for n in topology["node"]]


CONV_OPS = {"Conv2D": "CONV_2D", "_FusedConv2D": "CONV_2D", "DepthwiseConv2dNative": "DEPTHWISE_CONV_2D",
            "FusedDepthwiseConv2dNative": "DEPTHWISE_CONV_2D"}


def _fused(node: GraphNode) -> list[str]:
    ops = node.attr.get("fused_ops", {}).get("list", {}).get("s", [])
    return [base64.b64decode(s).decode(errors="replace") for s in ops]


def read_tfjs_ops(path: str | Path) -> dict[str, np.ndarray]:
    """A graph model's weights (``read_tfjs``) plus its convolutions keyed as the TFLite reader
    keys them — ``CONV_2D.{n}`` / ``DEPTHWISE_CONV_2D.{n}`` ``.weight`` (torch layout: HWIO ->
    OIHW, [kh, kw, C, 1] -> [C, 1, kh, kw]) and ``.bias`` (a fused BiasAdd's; zeros for a
    conv without one, e.g. a separable conv's depthwise half), n counting in file order — and
    each again under ``node:{node name}``, for mappings that find a layer by its name."""
    weights = read_tfjs(path)
    out = dict(weights)
    counts = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 0}
    for node in read_tfjs_graph(path):
        kind = CONV_OPS.get(node.op)
        if kind is None:
            continue
        if len(node.inputs) < 2 or node.inputs[1] not in weights:
            raise WeightsError(f"{node.op} {node.name!r} has no constant filter", path=str(path))
        w = weights[node.inputs[1]]
        w = w.transpose(3, 2, 0, 1) if kind == "CONV_2D" else w.transpose(2, 3, 0, 1)
        has_bias = "BiasAdd" in _fused(node) and len(node.inputs) > 2 and node.inputs[2] in weights
        b = weights[node.inputs[2]] if has_bias else np.zeros(w.shape[0], np.float32)
        for key in (f"{kind}.{counts[kind]}", f"node:{node.name}"):
            out[f"{key}.weight"], out[f"{key}.bias"] = w, b
        counts[kind] += 1
    return out
