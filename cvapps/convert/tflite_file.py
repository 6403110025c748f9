"""Read the weights of a TensorFlow Lite model (a flatbuffer) with the ``tflite`` package's
generated bindings (pure Python, Apache-2.0): no TensorFlow, nothing executed.

TFLite fuses tensor names when it folds BatchNorm and shares constants (a depthwise kernel can
be named after another layer), so names are no reliable key. Weights are keyed by their op's
position instead: ``{OP}.{n}`` (n counts that op type in the file's execution order) with, in
torch's layout, ``CONV_2D`` (OHWI -> OIHW) and ``DEPTHWISE_CONV_2D`` (1HWC -> C1HW) ``.weight``
/ ``.bias``; ``PRELU`` ``.weight`` (per-channel slopes); MediaPipe's custom
``Convolution2DTransposeBias`` ``.weight`` (OHWI -> ConvTranspose2d's IOHW) / ``.bias``. Every
other constant tensor is kept under its own name in its own layout. fp16 weights behind
``DEQUANTIZE`` ops come out as float32, and so do integer-quantised constants (int8 / uint8
weights, int32 biases of a full-integer model): ``scale * (q - zero_point)`` per channel along
the tensor's quantised dimension — the float weights the quantiser rounded, not the originals.
``FULLY_CONNECTED`` weights are ``[out, in]`` as torch's ``Linear``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightsError

# tflite.TensorType -> numpy dtype (the types constant tensors use)
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8}
# op -> layout of its constant weight input: OHWI -> OIHW, 1HWC -> C1HW, OHWI -> IOHW, flat
LAYOUTS = {"CONV_2D": (0, 3, 1, 2), "DEPTHWISE_CONV_2D": (3, 0, 1, 2), "Convolution2DTransposeBias": (3, 0, 1, 2),
           "PRELU": None, "FULLY_CONNECTED": (0, 1)}


def _op_names() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _const(model, graph, index: int) -> np.ndarray | None:
    """A tensor's constant value (None when it is computed)."""
    t = graph.Tensors(index)
    data = model.Buffers(t.Buffer()).DataAsNumpy()
    if isinstance(data, int):  # no data: an activation
        return None
    if t.Type() not in DTYPES:
        raise WeightsError(f"tensor {t.Name().decode(errors='replace')!r}: unsupported TFLite type {t.Type()}")
    shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    arr = np.frombuffer(data.tobytes(), DTYPES[t.Type()])
    if arr.size != int(np.prod(shape)):
        raise WeightsError(f"tensor {t.Name().decode(errors='replace')!r} holds {arr.size} values for shape {shape}")
    arr = arr.reshape(shape)
    q = t.Quantization()
    if q is not None and q.ScaleLength() and t.Type() in (2, 3, 9):
        return _dequantize(arr, q, t.Name().decode(errors="replace"))
    return arr


def _dequantize(q_values: np.ndarray, q, name: str) -> np.ndarray:
    """scale * (q - zero_point), per channel along the quantised dimension (or per tensor)."""
    scale = q.ScaleAsNumpy().astype(np.float64)
    zero = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros_like(scale)
    if len(scale) > 1:
        axis = q.QuantizedDimension()
        if q_values.ndim <= axis or q_values.shape[axis] != len(scale):
            raise WeightsError(f"tensor {name!r}: {len(scale)} quantisation scales for shape {q_values.shape}")
        view = [1] * q_values.ndim
        view[axis] = len(scale)
        scale, zero = scale.reshape(view), zero.reshape(view)
    return (scale * (q_values.astype(np.float64) - zero)).astype(np.float32)


def read_tflite(path: str | Path) -> dict[str, np.ndarray]:
    """Every constant of a TFLite model -> {name: array}, plus each conv op's weight and bias
    under ``CONV_2D.{n}.weight`` (torch layout) / ``.bias`` (see the module docstring)."""
    import tflite

    p = Path(path)
    try:
        buf = p.read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read the model: {e}", path=str(p)) from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise WeightsError("not a TFLite model (no TFL3 identifier)", path=str(p))
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
        names = _op_names()
        consts: dict[int, np.ndarray] = {}
        for i in range(graph.TensorsLength()):
            a = _const(model, graph, i)
            if a is not None:
                consts[i] = a
        dequantized: dict[int, np.ndarray] = {}  # DEQUANTIZE output -> its float32 input
        out: dict[str, np.ndarray] = {}
        counts = {op: 0 for op in LAYOUTS}
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
            if name == "CUSTOM":
                name = code.CustomCode().decode(errors="replace")
            ins = [int(i) for i in op.InputsAsNumpy()]
            if name == "DEQUANTIZE" and ins[0] in consts:
                dequantized[int(op.OutputsAsNumpy()[0])] = consts[ins[0]].astype(np.float32)
            elif name in LAYOUTS:
                w = dequantized.get(ins[1], consts.get(ins[1]))
                b = dequantized.get(ins[2], consts.get(ins[2])) if len(ins) > 2 and ins[2] >= 0 else None
                if w is None:
                    raise WeightsError(f"{name} op {k} has no constant weights", path=str(p))
                w = w.astype(np.float32)
                key = f"{name}.{counts[name]}"
                counts[name] += 1
                out[f"{key}.weight"] = w.reshape(-1) if LAYOUTS[name] is None else w.transpose(LAYOUTS[name])
                if b is not None:
                    out[f"{key}.bias"] = b.astype(np.float32)
        for i, a in consts.items():
            out.setdefault(graph.Tensors(i).Name().decode(errors="replace"), a)
        for i, a in dequantized.items():
            out[graph.Tensors(i).Name().decode(errors="replace")] = a
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged flatbuffer fails anywhere in the bindings
        raise WeightsError(f"not a readable TFLite model ({type(e).__name__}: {e})", path=str(p)) from None
    return out
