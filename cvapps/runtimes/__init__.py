"""How a model is run: a registry of runtimes (PyTorch, ONNX Runtime, OpenVINO) and the one
place that chooses among them.

``prepare(model, backend, device, precision)`` turns a TaskModel into what runs it: the model
itself (PyTorch) or a GraphModel compiled for another runtime from the model's cached ONNX
graph, and says once what it chose and why. ``load_graph`` loads an exported model file by
its suffix. Adding a runtime = one module here that subclasses Runtime (and GraphModel) and
registers itself, imported below, plus its tests."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..exporting import group_graph
from . import coreml, litert, ort, ov, torch_rt  # noqa: F401 - each registers its runtime
from ..progress import say_once
from ..tasks.batch import predict_inputs
from . import guard
from .base import RUNTIMES, GraphModel, Runtime
from .ort import GroupRunner, OnnxModel

__all__ = ["RUNTIMES", "GraphModel", "OnnxModel", "Runtime", "backends", "bundle_runtime", "check_backend",
           "default_precision", "export_for_runtime", "is_graph", "load_graph", "pipeline_precision", "prepare",
           "prepare_group", "prepare_helper", "say_once"]

AUTO = "auto"
AUTO_PRECISIONS = ("bf16",)  # what --precision auto may choose besides fp32 (int8 needs the run's own calibration)


def default_precision() -> str:
    """The precision when none is given: $CVAPPS_PRECISION, else "auto"."""
    return os.environ.get("CVAPPS_PRECISION") or AUTO


def backends() -> tuple[str, ...]:
    return (AUTO, *RUNTIMES.names())


def is_graph(model) -> bool:
    """A model compiled for a runtime other than PyTorch (its weights fixed in the graph)."""
    return isinstance(model, GraphModel)


def check_backend(backend: str) -> None:
    if backend != AUTO and backend not in RUNTIMES:
        raise ConfigError(f"unknown backend {backend!r}", hint=" | ".join(backends()))


def load_graph(path: str | Path, device: str = "cpu", backend: str = AUTO, threads: int | None = None,
              precision: str = "fp32"):
    """An exported model file (``.onnx``, OpenVINO ``.xml``) run by ``backend`` (auto: the
    runtime of its suffix, ONNX Runtime for ``.onnx``); None when no runtime loads the suffix."""
    check_backend(backend)
    suffix = Path(path).suffix.lower()
    owners = [n for n in RUNTIMES.names() if suffix in RUNTIMES.get(n).suffixes]
    if not owners:
        return None
    readers = [n for n in RUNTIMES.names() if suffix in RUNTIMES.get(n).suffixes + RUNTIMES.get(n).reads]
    rt = RUNTIMES.get(backend if backend in readers else owners[0])  # auto / torch: the file's own runtime
    rt.check(device, precision)
    return rt.load(Path(path), device, threads, precision)


def prepare(model, backend: str = AUTO, device: str = "cpu", precision: str = "fp32", post: dict | None = None,
            console=None, threads: int | None = None, calib=None, pre=None):
    """What runs ``model`` (a TaskModel, batch norm folded): ``backend`` "auto" picks ONNX
    Runtime when it is installed and can run the model with these options (exported once to
    a cache), else PyTorch, saying why once; a named backend is checked (installed, device,
    precision on this CPU, a graph for the model) and refused in one line when it cannot.
    ``precision`` "auto": fp32, or a faster precision this machine has where it is measured
    to answer as fp32 does (cvapps.runtimes.guard). ``calib``: image paths for int8
    calibration; ``pre``: the preprocessor predict uses (the check runs the model as predict does)."""
    check_backend(backend)
    if precision == AUTO:
        return _auto_precision(model, backend, device, post or {}, console, threads, calib, pre)
    if backend != AUTO:
        rt = RUNTIMES.get(backend)
        rt.check(device, precision)
        reason = None if rt.name == "torch" else model.runtime_blocker(post or {})
        if reason:
            raise ConfigError(f"--backend {backend} cannot run this model: {reason}", hint="use --backend torch")
        return rt.build(model, precision, device, threads, console, calib)
    torch_rt_ = RUNTIMES.get("torch")
    graph_rts = sorted((RUNTIMES.get(n) for n in RUNTIMES.names() if RUNTIMES.get(n) is not torch_rt_),
                       key=lambda r: -r.auto_rank)
    usable = [r for r in graph_rts if not r.missing() and r.auto_rank >= 0]  # (mobile runtimes are only named)
    if not usable:
        say_once(console, "running on PyTorch; `pip install 'cvapps[onnx]'` runs models ~2-5x faster on CPU "
                          "(ONNX Runtime)")
        return model
    fits = [r for r in usable if r.runs_on(device) and precision in r.precisions_here(device)]
    if not fits and precision not in torch_rt_.precisions_here(device):
        raise ConfigError(f"--precision {precision} runs on no installed runtime here (--device {device})",
                          hint="available: " + ", ".join(sorted({f"{p} ({r.name})" for r in (*usable, torch_rt_)
                                                                 if r.runs_on(device) for p in r.precisions_here(device)})))
    if not fits:
        why = (f"--device {device} (no installed runtime but PyTorch runs there)" if not any(r.runs_on(device)
               for r in usable) else f"--precision {precision} is PyTorch's autocast here")
        say_once(console, f"running on PyTorch: {why}")
        return model
    reason = model.runtime_blocker(post or {})
    if reason:
        say_once(console, f"running on PyTorch: {reason}")
        return model
    return fits[0].build(model, precision, device, threads, console, calib)


def pipeline_precision(model, precision: str) -> str:
    """The precision the predict loop's autocast uses for what ``prepare`` returned: a graph's
    precision is in the graph (fp32 around it); PyTorch runs "auto" as fp32, and refuses a
    precision it has not (a model object handed in runs as it is)."""
    if is_graph(model) or precision == AUTO:
        return "fp32"
    RUNTIMES.get("torch").check("cpu", precision)
    return precision


def _auto_precision(model, backend, device, post, console, threads, calib, pre):
    base = prepare(model, backend, device, "fp32", post, console, threads, calib)
    if not is_graph(base):  # PyTorch runs fp32 (bf16 autocast is asked for by name)
        return base
    runtimes = [RUNTIMES.get(n) for n in (RUNTIMES.names() if backend == AUTO else [backend])]
    cands = [(f"{rt.name} {p}", lambda rt=rt, p=p: rt.build(model, p, device, threads, console, calib))
             for rt in runtimes if rt.suffixes and not rt.missing() and rt.runs_on(device)
             for p in rt.precisions_here(device) if p in AUTO_PRECISIONS]
    if not cands:
        return base
    runner, record = guard.decide(model, base, cands,
                                  lambda r, images: predict_inputs(r, images, 16, "fp32", pre=pre, **post))
    checked = record.get("checked", {})
    if record["choice"] in checked:
        c = checked[record["choice"]]
        say_once(console, f"precision auto: {record['choice']} ({c['speedup']}x {base.backend} fp32 here; "
                          f"{c['agreeing']}/{c['compared']} answers as fp32's on the calibration images; "
                          f"--precision fp32 forces fp32)")
    else:
        why = "; ".join(f"{k}: {v['agreeing']}/{v['compared']} answers as fp32's, {v['speedup']}x"
                        for k, v in checked.items())
        say_once(console, f"precision auto: fp32 ({why or 'decided before'}; below "
                          f"{guard.AGREEMENT:.0%} agreement or {guard.MIN_SPEEDUP}x)")
    return runner


def export_for_runtime(model, out, fmt: str, dynamic_batch: bool = False, img_size=None, nms=None,
                       precision: str = "fp32") -> Path | None:
    """``fmt`` a runtime's own format (openvino: an IR; tflite; coreml): the model written as
    that; None for the formats cvapps.exporting writes (onnx, torchscript), which are fp32."""
    rt = next((RUNTIMES.get(n) for n in RUNTIMES.names() if fmt in RUNTIMES.get(n).formats), None)
    have = rt.write_precisions if rt is not None else ("fp32",)
    if precision not in have:
        raise ConfigError(f"--format {fmt} writes --precision {' | '.join(have)}, not {precision}",
                          hint="fp16 files: --format coreml; int8: export --int8, or --precision int8 at run time")
    if rt is None:
        return None
    reason = rt.missing()
    if reason:
        raise ConfigError(reason)
    return rt.write(model, Path(out), dynamic_batch, img_size, nms, precision)


def prepare_helper(model, backend: str, device: str = "cpu", precision: str = "fp32", console=None,
                   threads: int | None = None, named_only: bool = False):
    """A model loaded beside the main one (a box detector, a face check), or one ``load`` was
    asked to compile: ``backend`` "auto" -> ``prepare`` (unless ``named_only``), "torch" -> the
    model as it is, another runtime -> compiled for it."""
    check_backend(backend)
    if backend == "torch" or (backend == AUTO and named_only):
        return model
    return prepare(model.eval().fold_batchnorm(), backend, device, precision, {}, console, threads)


def bundle_runtime(backend: str) -> bool:
    """Whether a bundle's shared passes may leave PyTorch (``backend`` auto); a bundle runs on
    PyTorch or, per shared pass, ONNX Runtime — other runtimes are refused in one line."""
    check_backend(backend)
    if backend not in (AUTO, "torch"):
        raise ConfigError(f"bundles run with backend auto or torch, not {backend!r}")
    return backend == AUTO


def prepare_group(models: list, post: dict | None = None, console=None, threads: int | None = None):
    """A GroupRunner for ``models`` (sharing one backbone; CPU fp32) when ONNX Runtime can run
    every head, else None (the group stays on PyTorch, said once)."""
    if RUNTIMES.get("onnxruntime").missing():
        return None
    for m in models:
        reason = m.export_blocker or m.runtime_blocker(post or {}) or \
            ("SegNet unpools with the backbone's pool indices" if m.needs_pool_indices else None)
        if reason:
            say_once(console, f"bundle: {m.task} runs on PyTorch: {reason}")
            return None
    path, names, raw_types = group_graph(models, console)
    return GroupRunner(path, names, raw_types, threads)
