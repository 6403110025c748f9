"""``cvapps benchmark``: how fast (and how accurate) a model is on this machine, per backend
and precision, on the user's own images and data.

Variants: ``default`` (exactly what ``predict`` runs with no options), PyTorch fp32 (the
model as ``predict`` runs it: BatchNorm folded, channels-last input), PyTorch with
channels-last weights, PyTorch bf16 autocast, and every other runtime x precision of
cvapps.runtimes (ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 / int8; int8 is the static
QDQ graph calibrated on the images). For
each: images/s of ``predict`` on the images (decode thread, prepare, normalise, forward,
postprocess, JSON Lines written: the path `cvapps predict` takes) at batch 1 and 16, end-to-end fps of ``predict`` on a video made of the
images (decode thread, JSON Lines not written), and with labelled data the task's metrics.
Timings are best-of-two passes; run it on an otherwise idle machine."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console

from .api import _model, evaluate, helper_loader, predict
from .data.io import read_image
from .data.sources import expand_sources
from .errors import ConfigError
from .progress import Phase
from .runtime import cpu_features
from .runtimes import default_precision, pipeline_precision, prepare
from .tasks.batch import predict_inputs

VARIANTS = ("default", "torch_fp32", "torch_channels_last", "torch_bf16", "onnxruntime_fp32", "onnxruntime_int8",
            "openvino_fp32", "openvino_bf16", "openvino_int8")


def _video(images: list[np.ndarray], path: Path, frames: int) -> Path:
    """A 640x480 video cycling through ``images`` (letterboxed), ``frames`` long."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for i in range(frames):
        img = images[i % len(images)]
        s = min(640 / img.shape[1], 480 / img.shape[0])
        small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))))
        canvas = np.zeros((480, 640, 3), np.uint8)
        canvas[: small.shape[0], : small.shape[1]] = small
        out.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    out.release()
    return path


def _rate(fn, n: int) -> float:
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return round(n / best, 1)


def benchmark(model, sample=None, data: str | None = None, variants=VARIANTS, max_images: int = 64,
              video_frames: int = 100, console=None, **data_options) -> dict:
    """``model``: a model file, weights name or TaskModel; ``sample``: sources to time on
    (default: 64 synthetic 640x480 images); ``data``: labelled data for the metrics (as for
    ``evaluate``). Returns {"variants": {name: {...}}, "images", ...}; variants that cannot
    run here (bf16 without CPU support is still run; ONNX without onnxruntime, or a model
    that cannot export) are listed under "skipped" with the reason."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"unknown benchmark variants {unknown}", hint=f"known: {', '.join(VARIANTS)}")
    base = _model(model, None, "cpu").eval()
    paths = [p for p in expand_sources(sample) if isinstance(p, (str, Path))][:max_images] if sample else []
    if paths:
        arrays = [read_image(p) for p in paths]
    else:
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(max_images)]
    result: dict = {"model": str(model) if not hasattr(model, "task") else model.task, "task": base.task,
                    "metric": base.primary_metric()[0],
                    "images": len(arrays), "synthetic_images": not paths, "variants": {}, "skipped": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = _video(arrays, tmp / "clip.mp4", video_frames)
        inputs = [str(p) for p in paths] or arrays
        # the preprocessor and options predict uses on these images (box sources, test-time scales)
        pre, post = base.spec.predict_setup(base, helper_loader("cpu", "auto", console), inputs)
        runs = {}
        folded = copy.deepcopy(base).fold_batchnorm()
        calib = paths or _calibration_files(arrays, tmp)
        for name in variants:
            if name == "default":  # predict's own choice, with its default options
                m = prepare(folded, "auto", "cpu", default_precision(), post, console, calib=calib, pre=pre)
                runs[name] = (m, pipeline_precision(m, default_precision()))
            elif name == "torch_channels_last":
                runs[name] = (copy.deepcopy(folded).to(memory_format=torch.channels_last), "fp32")
            else:
                backend, _, precision = name.partition("_")
                try:
                    # (a graph runs one pass where PyTorch may run more: said below, not refused)
                    m = prepare(folded, backend, "cpu", precision, None, console, calib=calib)
                    runs[name] = (m, pipeline_precision(m, precision))  # a graph's precision is in the graph
                except ConfigError as e:  # not installed, not on this CPU, or a model that cannot export
                    result["skipped"][name] = e.one_line()
        differs = base.runtime_blocker(post)
        if differs and any(getattr(m, "backend", None) for m, _ in runs.values()):
            # e.g. the face detector's extra test-time scale on photos: not the same work per image
            result["note"] = f"on the images the PyTorch rows run {differs}; ONNX Runtime rows run one pass"
        with Phase(console or Console(stderr=True, markup=False), "benchmarking", len(runs)) as bar:
            for name, (m, precision) in runs.items():
                row = {}
                for b in (1, 16):
                    predict_inputs(m, inputs[:b], batch_size=b, precision=precision)  # warm
                    row[f"images_per_s_b{b}"] = _rate(
                        lambda m=m, b=b, p=precision: predict(m, inputs, task=base.task, batch_size=b, precision=p,
                                                              progress=False, save_json=tmp / "p.jsonl"), len(inputs))
                row["video_fps"] = _rate(lambda m=m, p=precision: predict(m, [str(video)], task=base.task, precision=p,
                                                                        progress=False), video_frames)
                if data is not None:
                    metrics = evaluate(m, data, precision=precision, **data_options)
                    row["metrics"] = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
                result["variants"][name] = row
                bar.advance(1)
    fastest = max(result["variants"], key=lambda k: result["variants"][k]["images_per_s_b16"], default=None)
    result["fastest_b16"] = fastest
    result["fastest_at_fp32_accuracy"] = _fastest_at_fp32_accuracy(result)
    result["cpu"] = cpu_features()
    return result


ACCURACY_TOLERANCE = 0.005  # of the primary metric (AP50 0.005, top-1 0.5 point): "as accurate as fp32"


def _fastest_at_fp32_accuracy(result: dict) -> str | None:
    """The fastest variant (b16) whose metric is within ACCURACY_TOLERANCE of the fp32 rows'
    (ONNX Runtime fp32, else PyTorch fp32); None without metrics."""
    rows, metric = result["variants"], result["metric"]
    ref = next((rows[n]["metrics"][metric] for n in ("onnxruntime_fp32", "torch_fp32")
                if metric in rows.get(n, {}).get("metrics", {})), None)
    if ref is None:
        return None
    ok = [n for n, r in rows.items() if abs(r.get("metrics", {}).get(metric, -1e9) - ref) <= ACCURACY_TOLERANCE]
    return max(ok, key=lambda n: rows[n]["images_per_s_b16"], default=None)


def _calibration_files(arrays: list[np.ndarray], tmp: Path) -> list[Path]:
    """int8 calibration reads image files: the synthetic images written as PNGs."""
    files = []
    for i, a in enumerate(arrays[:32]):
        f = tmp / f"calib{i}.png"
        cv2.imwrite(str(f), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
        files.append(f)
    return files


def table(result: dict):
    """A rich Table of ``benchmark``'s result."""
    from rich.table import Table

    shown = any("metrics" in r for r in result["variants"].values())
    metric_names = [result["metric"]] if shown else []
    cpu = result.get("cpu", {})
    t = Table(title=f"{result['model']} ({result['task']}) on {result['images']} "
                    f"{'synthetic ' if result['synthetic_images'] else ''}images — {cpu.get('model', '?')} "
                    f"({', '.join(cpu.get('isa', [])) or 'no AVX2'})")
    for col in ("variant", "img/s b1", "img/s b16", "video fps", *metric_names):
        t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for name, r in result["variants"].items():
        mark = " *" if name == result["fastest_b16"] else ""
        mark += " =" if name == result.get("fastest_at_fp32_accuracy") else ""
        t.add_row(name + mark, str(r["images_per_s_b1"]),
                  str(r["images_per_s_b16"]), str(r["video_fps"]),
                  *[str(r.get("metrics", {}).get(k, "")) for k in metric_names])
    for name, why in result["skipped"].items():
        t.add_row(name, "-", "-", "-", *["" for _ in metric_names], style="dim")
    t.caption = "* fastest at batch 16" + ("; = fastest within 0.005 of fp32's metric" if
                                           result.get("fastest_at_fp32_accuracy") else "")
    if result.get("note"):
        t.caption += "; " + result["note"]
    return t
