"""ONNX Runtime: the CPU's default runtime, and on ``--device cuda`` its TensorRT / CUDA
execution providers when ``onnxruntime-gpu`` is installed (untested here: no GPU)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..exporting import cached_graph, int8_graph
from ..weights import cvapps_home
from .base import RUNTIMES, GraphModel, Runtime, register


def providers(device: str = "cpu", precision: str = "fp32") -> list:
    """The execution providers for ``device``: on CUDA, TensorRT first (its engines cached under
    $CVAPPS_HOME/tensorrt, fp16 when asked), then CUDA, then the CPU — of those installed."""
    import onnxruntime as ort

    if not str(device).startswith("cuda"):
        return ["CPUExecutionProvider"]
    have = set(ort.get_available_providers())
    index = int(str(device).partition(":")[2] or 0)
    out: list = []
    if "TensorrtExecutionProvider" in have:
        cache = cvapps_home() / "tensorrt"
        cache.mkdir(parents=True, exist_ok=True)
        out.append(("TensorrtExecutionProvider", {"device_id": index, "trt_engine_cache_enable": True,
                                                  "trt_engine_cache_path": str(cache),
                                                  "trt_fp16_enable": precision == "fp16"}))
    if "CUDAExecutionProvider" in have:
        out.append(("CUDAExecutionProvider", {"device_id": index}))
    if not out:
        raise ConfigError(f"--device {device}: this onnxruntime has no CUDA or TensorRT provider",
                          hint="pip install onnxruntime-gpu (instead of onnxruntime), or --backend torch")
    return out + ["CPUExecutionProvider"]


def ort_session(path: Path, device: str = "cpu", threads: int | None = None, precision: str = "fp32"):
    """An ONNX Runtime session for ``path`` on ``device`` (idle threads sleep)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "ACTIVE":
        # idle ORT threads spinning fight predict's decode / writer threads and any busy
        # neighbour for the cores: measured 96 -> 208 images/s at batch 1 (classify_speed.py)
        # when they sleep instead; OMP_WAIT_POLICY=ACTIVE asks for spinning
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chosen = providers(device, precision)
    try:
        return ort.InferenceSession(str(path), opts, providers=chosen)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DataError(f"not a loadable ONNX model: {str(e).splitlines()[0]}", path=str(path)) from None


class OnnxModel(GraphModel):
    """An exported ONNX model (cvapps metadata) run by ONNX Runtime."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, precision: str = "fp32"):
        reason = RUNTIMES.get("onnxruntime").missing()
        if reason:
            raise ConfigError(reason)
        path = Path(path)
        if not path.is_file():
            raise DataError("no such ONNX file", path=str(path))
        self.session = ort_session(path, device, threads, precision)
        shape = self.session.get_inputs()[0].shape
        super().__init__(self.session.get_modelmeta().custom_metadata_map, path,
                         shape[0] if isinstance(shape[0], int) else None)
        self._device = torch.device(device)
        self.precision = precision

    @property
    def device(self) -> torch.device:
        return self._device if self._device.type == "cuda" else torch.device("cpu")

    def run_arrays(self, x):
        return self.session.run(self.names, {"image": x})


class GroupRunner:
    """``runner(x) -> [raw per model]``: a bundle group's heads on one ONNX Runtime pass."""

    memory_format = torch.contiguous_format

    def __init__(self, path: Path, names: list[list[str]], raw_types: list[type], threads: int | None = None):
        self.session, self.names, self.raw_types = ort_session(path, "cpu", threads), names, raw_types
        self.flat = [f"m{i}.{n}" for i, ns in enumerate(names) for n in ns]

    def __call__(self, x: torch.Tensor) -> list:
        arrays = iter(self.session.run(self.flat, {"image": x.detach().float().contiguous().cpu().numpy()}))
        return [t(**{n: torch.from_numpy(next(arrays)) for n in ns}) for t, ns in zip(self.raw_types, self.names)]


@register
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    package = "onnxruntime"
    extra = "onnx"
    precisions = ("fp32", "int8")  # int8: the statically quantised QDQ graph
    suffixes = (".onnx",)
    auto_rank = 1  # fp32 like PyTorch, ~1.2-5x its speed on CPU (classify_speed.py)

    def runs_on(self, device: str) -> bool:
        if str(device) == "cpu":
            return True
        if not str(device).startswith("cuda") or self.missing():
            return False
        import onnxruntime as ort

        return bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()))

    def precisions_here(self, device: str = "cpu") -> tuple[str, ...]:
        return ("fp32", "fp16") if str(device).startswith("cuda") else ("fp32", "int8")

    def build(self, model, precision, device, threads, console, calib=None):
        graph = cached_graph(model, console)
        if precision == "int8":
            graph = int8_graph(model, graph, calib, console)
        return OnnxModel(graph, device=device, threads=threads, precision=precision)

    def load(self, path, device, threads, precision="fp32"):
        return OnnxModel(path, device=device, threads=threads, precision=precision)

