"""Export a TaskModel to ONNX or TorchScript (and the cached graphs that cvapps.runtimes
compile for ONNX Runtime and OpenVINO).

The exported graph is the network up to the task's raw outputs (the tensor fields of its
Raw dataclass: logits; SSD class logits, box deltas and anchors; segmentation logits;
keypoint points/scores/heatmaps). Postprocessing stays in Python because ONNX cannot
express it cleanly: top-k labels, box decoding + NMS, letterbox un-padding + resize +
argmax, the inverse crop affine of keypoints. The model's config (labels, preprocessing,
schema) and the raw layout travel in the file's metadata."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .data.io import atomic_write, read_image
from .data.transforms import size_hw
from .errors import ConfigError, DataError
from .options import parse_size
from .progress import say_once
from .weights import cvapps_home

META_CONFIG, META_RAW, META_OUTPUTS = "cvapps_config", "cvapps_raw", "cvapps_outputs"
META_NMS = "cvapps_nms"


class _RawOutputs(nn.Module):
    """Wraps a TaskModel so forward returns the raw dataclass's present tensor fields."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, x: torch.Tensor):
        raw = self.model(x)
        return tuple(getattr(raw, n) for n in self.names)


class _FinalDetections(nn.Module):
    """Wraps a detection model so forward returns its final detections (box decoding and
    NMS in the graph) for a batch of one image."""

    def __init__(self, model, post: dict):
        super().__init__()
        self.model, self.post = model, post

    def forward(self, x: torch.Tensor):
        return self.model.final_detections(self.model(x), **self.post)


def export(model, out: str | Path, fmt: str = "onnx", dynamic_batch: bool = False,
           img_size: int | list | None = None, opset: int = 17, nms: dict | None = None) -> Path:
    """Write ``model`` as ``fmt`` (onnx | torchscript) to ``out``; returns the path.
    ``img_size`` overrides the input size recorded in the config (int or [H, W]). ``nms``
    (detection, ONNX): end the graph in box decoding + NMS for one image instead of the raw
    outputs — {"conf", "iou", "max_det"} (None values: the head's); outputs "boxes" (M, 4)
    xyxy in input pixels, "scores" (M,), "labels" (M,) indices into the config's labels."""
    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"unknown export format {fmt!r}", hint="onnx, openvino, tflite, coreml or torchscript")
    if model.export_blocker:
        raise ConfigError(model.export_blocker, hint="export a model whose head has a fixed graph (e.g. --head ssd)")
    if nms is not None:
        return _export_nms(model, Path(out), fmt, dynamic_batch, img_size, opset, nms)
    wrapper, x, raw, meta = raw_outputs(model, img_size, 2 if dynamic_batch else 1)
    names = wrapper.names
    out = Path(out)
    if fmt == "torchscript":
        traced = trace(wrapper, x)
        atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files={k + ".json": v for k, v in
                                                                                      meta.items()}))
        return out
    batch_axes = {"image": {0: "batch"}, **{n: {0: "batch"} for n in names if getattr(raw, n).dim() > 0
                                            and getattr(raw, n).shape[0] == x.shape[0] and n != "anchors"}}
    return _write_onnx(wrapper, x, out, names, meta, opset, batch_axes if dynamic_batch else None)


def raw_outputs(model, img_size=None, batch: int = 1) -> tuple["_RawOutputs", torch.Tensor, object, dict]:
    """What every export traces: (``model`` wrapped to return its raw outputs' tensors, a zero
    input (batch, 3, H, W), the raw outputs on it, the cvapps metadata: config, raw type,
    output names)."""
    config, (h, w) = input_config(model, img_size)
    model = model.eval().cpu()
    x = torch.zeros(batch, 3, h, w)
    with torch.no_grad():
        raw = model(x)
    names = [f.name for f in dataclasses.fields(raw) if isinstance(getattr(raw, f.name), torch.Tensor)]
    meta = {META_CONFIG: json.dumps(config), META_RAW: f"{type(raw).__module__}.{type(raw).__qualname__}",
            META_OUTPUTS: json.dumps(names)}
    return _RawOutputs(model, names).eval(), x, raw, meta


def trace(wrapper: nn.Module, x: torch.Tensor):
    """TorchScript of ``wrapper`` on ``x`` (for the torchscript and Core ML exports), quietly."""
    with torch.no_grad(), quiet_tracing(), warnings.catch_warnings():
        # PyTorch deprecates TorchScript (torch.export is its successor): the help says so once
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning)
        return torch.jit.trace(wrapper, x, check_trace=False)


def input_config(model, img_size) -> tuple[dict, tuple[int, int]]:
    """The config the exported file records (input size overridden by ``img_size``) and its (H, W)."""
    config = json.loads(json.dumps(model.config))
    if img_size is not None:
        config = type(model).with_input_size(config, parse_size(img_size))
    return config, size_hw(config["preprocessing"]["input_size"])


def _write_onnx(wrapper: nn.Module, x: torch.Tensor, out: Path, names: list[str], meta: dict, opset: int,
                dynamic_axes: dict | None) -> Path:
    """Trace ``wrapper`` on ``x`` into ``out`` (atomically) with ``meta`` in its metadata."""
    def write(tmp: Path) -> None:
        with torch.no_grad(), quiet_tracing():
            torch.onnx.export(wrapper, (x,), str(tmp), input_names=["image"], output_names=names, opset_version=opset,
                              dynamic_axes=dynamic_axes, dynamo=False)
        if meta:  # (a bundle group's graph has none: no reload and rewrite of the file)
            add_metadata(tmp, meta)

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, write)
    return out


def _export_nms(model, out: Path, fmt: str, dynamic_batch: bool, img_size, opset: int, nms: dict) -> Path:
    if not hasattr(model, "final_detections"):
        raise ConfigError(f"--nms is for detection models, this is a {model.task} model")
    if fmt != "onnx" or dynamic_batch:
        raise ConfigError("--nms writes an ONNX graph for one image at a time",
                          hint="drop --format torchscript / --dynamic-batch")
    config, (h, w) = input_config(model, img_size)
    model = model.eval().cpu()
    head = model.head.h
    post = {k: (getattr(head, k) if nms.get(k) is None else nms[k]) for k in ("conf", "iou", "max_det")}
    model.final_detections(model(torch.zeros(1, 3, h, w)), **post)  # refuses non-SSD heads before tracing
    wrapper = _FinalDetections(model, post).eval()
    names = ["boxes", "scores", "labels"]
    meta = {META_CONFIG: json.dumps(config), META_OUTPUTS: json.dumps(names), META_NMS: json.dumps(
        {**post, "boxes": "xyxy input pixels (clipped); original pixels = input / preprocessing scale"})}
    return _write_onnx(wrapper, torch.zeros(1, 3, h, w), out, names, meta, opset,
                       {n: {0: "detections"} for n in names})


def add_metadata(path: Path, meta: dict[str, str]) -> None:
    """Write ``meta`` into the ONNX file's metadata_props (where the cvapps config travels)."""
    import onnx

    proto = onnx.load(str(path))
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))


@contextlib.contextmanager
def quiet_tracing():
    """The tracer's warnings say that shapes and Python numbers become constants — true and
    intended here: a graph is exported for one input size (or a dynamic batch only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        # torchvision's ONNX symbolic for nms is registered through the deprecated torch.jit.script
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
        yield


GRAPH_REVISION = 2  # raised when the same model exports to a different graph (2: constant TF pads)


def model_digest(model) -> str:
    """sha256 of what an exported graph depends on: the weights, the config and the code
    (cvapps, torch versions, GRAPH_REVISION); the cache key of the graphs runtimes build on."""
    h = hashlib.sha256(json.dumps([model.config, __version__, torch.__version__, GRAPH_REVISION],
                                  sort_keys=True).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_graph(model, console=None) -> Path:
    """$CVAPPS_HOME/onnx/<digest>.onnx of ``model`` (a dynamic-batch export, made on first use;
    the digest covers weights, config and versions)."""
    path = cvapps_home() / "onnx" / f"{model_digest(model)[:24]}.onnx"
    if not path.is_file():
        t = time.perf_counter()
        export(model, path, dynamic_batch=True)
        say_once(console, f"exported the model for ONNX Runtime once ({time.perf_counter() - t:.1f} s): {path}; "
                           f"--backend torch runs PyTorch")
    return path


class _GroupOutputs(nn.Module):
    """Models sharing one backbone (a bundle's group): one backbone pass, every head's raw
    tensor fields in order."""

    def __init__(self, models: list, names: list[list[str]]):
        super().__init__()
        self.models, self.names = nn.ModuleList(models), names

    def forward(self, x: torch.Tensor):
        feats = self.models[0].backbone(x)
        out = []
        for m, names in zip(self.models, self.names):
            raw = m.forward_from_features(feats, x, None)
            out += [getattr(raw, n) for n in names]
        return tuple(out)


def group_graph(models: list, console=None) -> tuple[Path, list[list[str]], list[type]]:
    """$CVAPPS_HOME/onnx/group-<digest>.onnx: ``models`` (sharing one backbone) as one graph
    (exported on first use), with each model's raw output names and Raw types."""
    digest = hashlib.sha256("".join(model_digest(m) for m in models).encode()).hexdigest()[:24]
    path = cvapps_home() / "onnx" / f"group-{digest}.onnx"
    _, (h, w) = input_config(models[0], None)
    x = torch.zeros(2, 3, h, w)
    with torch.no_grad():
        feats = models[0].eval().backbone(x)
        raws = [m.eval().forward_from_features(feats, x, None) for m in models]
    names = [[f.name for f in dataclasses.fields(r) if isinstance(getattr(r, f.name), torch.Tensor)] for r in raws]
    if not path.is_file():
        flat = [f"m{i}.{n}" for i, ns in enumerate(names) for n in ns]
        batch = {"image": {0: "batch"}, **{f"m{i}.{n}": {0: "batch"} for i, (r, ns) in enumerate(zip(raws, names))
                                         for n in ns if n != "anchors" and getattr(r, n).dim() > 0
                                         and getattr(r, n).shape[0] == 2}}
        _write_onnx(_GroupOutputs([m.cpu() for m in models], names).eval(), x, path, flat, {}, 17, batch)
        say_once(console, f"exported the bundle's shared pass for ONNX Runtime once: {path}")
    return path, names, [type(r) for r in raws]


def quantize_int8(model, out: str | Path, calib: list, max_images: int = 100, console=None,
                  fp32: Path | None = None, pre=None) -> Path:
    """A statically quantised (int8 QDQ: int8 weights per channel, uint8 activations) ONNX
    model of ``model`` at ``out``, its activation ranges calibrated on up to ``max_images``
    of ``calib`` (image paths, prepared like the model's inputs). The cvapps metadata is kept,
    so `predict --model out.onnx` runs it like any export. ``fp32``: the model's plain ONNX
    export when the caller has one (else it is exported here). ``pre``: the preprocessor that
    prepares them (default the model's; top-down models: the one with the box source
    ``predict`` uses, so calibration sees the crops the model will)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if model.export_blocker:
        raise ConfigError(model.export_blocker)
    if not calib:
        raise ConfigError("--int8 needs calibration images", hint="pass --calib FOLDER (a few dozen typical images)")
    pre = pre or model.preprocessor()
    paths = list(calib)[:max_images]

    def inputs():  # one (1, 3, H, W) input at a time: whole images, or each crop of a top-down model
        for p in paths:
            u8, _ = pre.prepare(read_image(p), str(p))
            for x in (u8 if u8.dim() == 4 else u8[None]):
                yield {"image": pre.normalize(x[None]).numpy()}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = inputs()

        def get_next(self):
            return next(self.it, None)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        fp32 = fp32 or export(model, Path(work) / "fp32.onnx")
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        meta = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}

        def write(tmp: Path) -> None:
            quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            add_metadata(tmp, meta)

        atomic_write(out, write)
    say_once(console, f"int8: calibrated on {len(paths)} images")
    return out


def int8_graph(model, fp32_graph: Path, calib, console=None, pre=None) -> Path:
    """The model's int8 QDQ graph calibrated on ``calib`` (image paths), cached beside the fp32
    graph ``fp32_graph`` (keyed by the calibration images' names)."""
    paths = [p for p in (calib or []) if isinstance(p, (str, Path))]
    if not paths:
        raise ConfigError("--precision int8 needs calibration images", hint="run it on image files (the first 100 "
                          "calibrate it), or export with `cvapps export --int8 --calib DIR`")
    key = hashlib.sha256("\n".join(str(Path(p).resolve()) for p in paths[:100]).encode()).hexdigest()[:12]
    out = fp32_graph.with_name(f"{fp32_graph.stem}.int8-{key}.onnx")
    if not out.is_file():
        quantize_int8(model, out, paths, console=console, fp32=fp32_graph, pre=pre)
    return out
