"""Read the constant tensors of a TensorFlow 1 frozen graph (GraphDef .pb) without TensorFlow:
the weights of a frozen graph are its ``Const`` nodes (dtype, shape, raw content).

GraphDef: 1 node (NodeDef). NodeDef: 1 name, 2 op, 3 input, 5 attr (map: 1 key, 2 AttrValue).
AttrValue: 8 tensor (TensorProto). TensorProto: 1 dtype, 2 tensor_shape (2 dim: 1 size),
4 tensor_content (raw bytes), 5 float_val, 7 int_val, 10 int64_val, 13 half_val (a short
value list is broadcast to the shape, TF's rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .protobuf import fields, packed_floats, packed_varints, signed, text

# TF DataType enum -> numpy dtype
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 19: np.float16}


def _shape(msg) -> tuple[int, ...]:
    f = fields(msg)
    return tuple(signed(packed_varints(fields(d).get(1, [0]))[0]) for d in f.get(2, []))


def tensor(msg) -> np.ndarray | None:
    """A TensorProto -> numpy array (None for string constants: they hold no weights)."""
    f = fields(msg)
    code = f.get(1, [0])[0]
    if code == 7:
        return None
    if code not in DTYPES:
        raise WeightsError(f"unsupported TensorFlow dtype {code} in a constant")
    dtype = np.dtype(DTYPES[code])
    shape = _shape(f[2][0]) if 2 in f else ()
    n = int(np.prod(shape)) if shape else 1
    if 4 in f:  # tensor_content: the raw little-endian values
        arr = np.frombuffer(bytes(f[4][0]), dtype=dtype.newbyteorder("<")).astype(dtype)
    elif code in (1,) and 5 in f:
        arr = np.asarray(packed_floats(f[5]), dtype)
    elif code == 19 and 13 in f:
        arr = np.asarray(packed_varints(f[13]), np.uint16).view(np.float16)
    elif code in (3, 4, 5, 6, 10) and 7 in f:
        arr = np.asarray([signed(v) for v in packed_varints(f[7])]).astype(dtype)
    elif code == 9 and 10 in f:
        arr = np.asarray([signed(v) for v in packed_varints(f[10])], dtype)
    else:
        arr = np.zeros(0, dtype)
    if arr.size == n:
        return arr.reshape(shape)
    if 0 < arr.size < n:  # TF stores a repeated last value once
        return np.concatenate([arr, np.full(n - arr.size, arr[-1], dtype)]).reshape(shape)
    if arr.size == 0:
        return np.zeros(shape, dtype)
    raise WeightsError(f"a constant holds {arr.size} values for shape {shape}")


def read_constants(path: str | Path) -> dict[str, np.ndarray]:
    """Every Const node of a frozen GraphDef -> {node name: array}."""
    p = Path(path)
    try:
        graph = fields(p.read_bytes())
    except OSError as e:
        raise WeightsError(f"cannot read the graph: {e}", path=str(p)) from None
    out = {}
    for node in graph.get(1, []):
        nf = fields(node)
        if text(nf.get(2, [b""])[0]) != "Const":
            continue
        name = text(nf[1][0])
        for entry in nf.get(5, []):
            ef = fields(entry)
            if text(ef[1][0]) == "value":
                value = tensor(fields(ef[2][0])[8][0])
                if value is not None:
                    out[name] = value
    if not out:
        raise WeightsError("no constant tensors found: not a frozen TensorFlow graph", path=str(p))
    return out
