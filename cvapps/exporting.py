"""Export a TaskModel to ONNX or TorchScript, and run exported ONNX models through the same
predict pipeline with ONNX Runtime.

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
import importlib
import importlib.util
import json
import os
import tempfile
import time
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .data.io import atomic_write, read_image
from .data.transforms import size_hw
from .errors import ConfigError, DataError
from .options import parse_size
from .tasks import model_class
from .tasks.batch import predict_inputs
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
        raise ConfigError(f"unknown export format {fmt!r}", hint="onnx or torchscript")
    if model.export_blocker:
        raise ConfigError(model.export_blocker, hint="export a model whose head has a fixed graph (e.g. --head ssd)")
    if nms is not None:
        return _export_nms(model, Path(out), fmt, dynamic_batch, img_size, opset, nms)
    config, (h, w) = _input_config(model, img_size)
    model = model.eval().cpu()
    x = torch.zeros(2 if dynamic_batch else 1, 3, h, w)
    with torch.no_grad():
        raw = model(x)
    names = [f.name for f in dataclasses.fields(raw) if isinstance(getattr(raw, f.name), torch.Tensor)]
    wrapper = _RawOutputs(model, names).eval()
    meta = {META_CONFIG: json.dumps(config), META_RAW: f"{type(raw).__module__}.{type(raw).__qualname__}",
            META_OUTPUTS: json.dumps(names)}
    out = Path(out)
    if fmt == "torchscript":
        out.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad(), quiet_tracing(), warnings.catch_warnings():
            # PyTorch deprecates TorchScript (torch.export is its successor): the help says so once
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning)
            traced = torch.jit.trace(wrapper, x, check_trace=False)
            atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files={k + ".json": v for k, v in
                                                                                          meta.items()}))
        return out
    batch_axes = {"image": {0: "batch"}, **{n: {0: "batch"} for n in names if getattr(raw, n).dim() > 0
                                            and getattr(raw, n).shape[0] == x.shape[0] and n != "anchors"}}
    return _write_onnx(wrapper, x, out, names, meta, opset, batch_axes if dynamic_batch else None)


def _input_config(model, img_size) -> tuple[dict, tuple[int, int]]:
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
    config, (h, w) = _input_config(model, img_size)
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


def ort_session(path: Path, device: str = "cpu", threads: int | None = None):
    """An ONNX Runtime session for ``path`` (CUDA first on a CUDA device; idle threads sleep)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "ACTIVE":
        # idle ORT threads spinning fight predict's decode / writer threads and any busy
        # neighbour for the cores: measured 96 -> 208 images/s at batch 1 (classify_speed.py)
        # when they sleep instead; OMP_WAIT_POLICY=ACTIVE asks for spinning
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") else \
        ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DataError(f"not a loadable ONNX model: {str(e).splitlines()[0]}", path=str(path)) from None


class OnnxModel:
    """An exported ONNX model run by ONNX Runtime, usable wherever the predict pipeline takes
    a TaskModel: the task's preprocessing, postprocessing and drawing come from a TaskModel
    rebuilt from the file's config (its weights are never used)."""

    backend = "onnxruntime"
    memory_format = torch.contiguous_format  # what the session reads (NCHW): batches made so need no copy
    # evaluated by its metrics alone: a loss may need raw outputs predict does not (MoveNet's maps)
    has_eval_loss = False

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        if not runtime_available():
            raise ConfigError("the onnxruntime backend needs the [onnx] extra", hint="pip install 'cvapps[onnx]'")
        path = Path(path)
        if not path.is_file():
            raise DataError("no such ONNX file", path=str(path))
        self.session = ort_session(path, device, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_NMS in meta:
            raise DataError("this graph ends in NMS (final boxes, for other runtimes); cvapps predicts with the "
                            "raw-output export", path=str(path), hint="export again without --nms for cvapps")
        if META_CONFIG not in meta:
            raise DataError("ONNX file has no cvapps metadata", path=str(path),
                            hint="export it with `cvapps export --format onnx`")
        self.config = json.loads(meta[META_CONFIG])
        self.names = json.loads(meta[META_OUTPUTS])
        module, _, cls = meta[META_RAW].rpartition(".")
        if not module.startswith("cvapps."):
            raise DataError(f"unexpected raw type {meta[META_RAW]!r}", path=str(path))
        self.raw_type = getattr(importlib.import_module(module), cls)
        self.task_model = model_class(self.config["task"]).from_config(self.config).eval()
        shape = self.session.get_inputs()[0].shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.path = path

    def __getattr__(self, name):  # labels, schema, perm, hcfg, ... come from the task model
        if name in ("task_model", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.task_model, name)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def eval(self) -> "OnnxModel":
        return self

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """x (B, 3, H, W) float32 -> the raw output arrays (static-batch files run in chunks)."""
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            return self.session.run(self.names, {"image": x})
        n, b = x.shape[0], self.fixed_batch
        parts = []
        for i in range(0, n, b):
            chunk = x[i : i + b]
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            parts.append(self.session.run(self.names, {"image": chunk}))
        out = []
        for j, name in enumerate(self.names):
            if name == "anchors":
                out.append(parts[0][j])
            else:
                out.append(np.concatenate([p[j] for p in parts])[:n])
        return out

    def __call__(self, x: torch.Tensor):
        arrays = self.run(x.detach().float().contiguous().cpu().numpy())
        return self.raw_type(**{n: torch.from_numpy(a) for n, a in zip(self.names, arrays)})

    def infer(self, x: torch.Tensor, **post):
        # the task's own inference logic (e.g. keypoint flip test), with self(x) running ORT
        return type(self.task_model).infer(self, x, **post)

    def preprocessor(self, *args, **kwargs):
        return self.task_model.preprocessor(*args, **kwargs)

    def predict(self, inputs, batch_size: int = 16, precision: str = "fp32", **post) -> list:
        """TaskModel.predict on ONNX Runtime (box sources call it for their boxes)."""
        return predict_inputs(self, inputs, batch_size, precision, **post)

    def postprocess(self, raw, metas, **post):
        return self.task_model.postprocess(raw, metas, **post)


BACKENDS = ("auto", "torch", "onnxruntime")
_said: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # console -> what it was told


def _say_once(console, text: str) -> None:
    """Tell ``console`` once (a CLI run has its own console: each run is told)."""
    if console is not None and text not in _said.setdefault(console, set()):
        _said[console].add(text)
        console.print(text, highlight=False, markup=False)


def runtime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


GRAPH_REVISION = 2  # raised when the same model exports to a different graph (2: constant TF pads)


def model_digest(model) -> str:
    """sha256 of what an exported graph depends on: the weights, the config and the code
    (cvapps, torch versions, GRAPH_REVISION); the cache key of ``fastest``."""
    h = hashlib.sha256(json.dumps([model.config, __version__, torch.__version__, GRAPH_REVISION],
                                  sort_keys=True).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fastest(model, device: str = "cpu", precision: str = "fp32", post: dict | None = None, console=None,
            threads: int | None = None):
    """``backend="auto"``: ``model`` (a TaskModel) run by ONNX Runtime when that can run it
    with these options — installed, CPU, fp32, an exportable head — else ``model`` itself
    (saying why once). The graph is exported on first use to $CVAPPS_HOME/onnx/<digest>.onnx
    (dynamic batch; the digest covers weights, config and versions) and reused afterwards."""
    if not runtime_available():
        _say_once(console, "running on PyTorch; `pip install 'cvapps[onnx]'` runs models ~2-5x faster on CPU "
                           "(ONNX Runtime)")
        return model
    if str(device) != "cpu":
        _say_once(console, f"running on PyTorch: --device {device} (the ONNX Runtime path is the CPU's)")
        return model
    if precision != "fp32":
        _say_once(console, f"running on PyTorch: --precision {precision} is PyTorch's autocast (ONNX Runtime runs "
                           "fp32)")
        return model
    reason = model.runtime_blocker(post or {})
    if reason:
        _say_once(console, f"running on PyTorch: {reason}")
        return model
    return OnnxModel(cached_graph(model, console), device="cpu", threads=threads)


def cached_graph(model, console=None) -> Path:
    """$CVAPPS_HOME/onnx/<digest>.onnx of ``model`` (a dynamic-batch export, made on first use;
    the digest covers weights, config and versions)."""
    path = cvapps_home() / "onnx" / f"{model_digest(model)[:24]}.onnx"
    if not path.is_file():
        t = time.perf_counter()
        export(model, path, dynamic_batch=True)
        _say_once(console, f"exported the model for ONNX Runtime once ({time.perf_counter() - t:.1f} s): {path}; "
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


class GroupRunner:
    """``runner(x) -> [raw per model]``: a bundle group's heads on one ONNX Runtime pass."""

    memory_format = torch.contiguous_format

    def __init__(self, path: Path, names: list[list[str]], raw_types: list[type], threads: int | None = None):
        self.session, self.names, self.raw_types = ort_session(path, "cpu", threads), names, raw_types
        self.flat = [f"m{i}.{n}" for i, ns in enumerate(names) for n in ns]

    def __call__(self, x: torch.Tensor) -> list:
        arrays = iter(self.session.run(self.flat, {"image": x.detach().float().contiguous().cpu().numpy()}))
        return [t(**{n: torch.from_numpy(next(arrays)) for n in ns}) for t, ns in zip(self.raw_types, self.names)]


def fastest_group(models: list, post: dict | None = None, console=None, threads: int | None = None):
    """A GroupRunner for ``models`` (sharing one backbone; CPU fp32) when ONNX Runtime can run
    every head, else None (the group stays on PyTorch, said once). The graph is exported once
    to $CVAPPS_HOME/onnx/group-<digest>.onnx."""
    if not runtime_available():
        return None
    for m in models:
        reason = m.export_blocker or m.runtime_blocker(post or {}) or \
            ("SegNet unpools with the backbone's pool indices" if m.needs_pool_indices else None)
        if reason:
            _say_once(console, f"bundle: {m.task} runs on PyTorch: {reason}")
            return None
    digest = hashlib.sha256("".join(model_digest(m) for m in models).encode()).hexdigest()[:24]
    path = cvapps_home() / "onnx" / f"group-{digest}.onnx"
    _, (h, w) = _input_config(models[0], None)
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
        _say_once(console, f"exported the bundle's shared pass for ONNX Runtime once: {path}")
    return GroupRunner(path, names, [type(r) for r in raws], threads)


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
    _say_once(console, f"int8: calibrated on {len(paths)} images")
    return out
