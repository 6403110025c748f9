"""OpenVINO on the CPU: fp32, bf16 where the CPU has bf16 units (AMX, AVX-512 bf16) and
int8 (the statically quantised QDQ graph of ``cvapps.exporting.quantize_int8``, run on the
CPU's int8 units). Built from the cached ONNX graph; compiled models are cached on disk
($CVAPPS_HOME/openvino). An exported OpenVINO IR (``.xml`` + ``.bin``, cvapps metadata in
its rt_info) loads directly."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from ..errors import ConfigError, DataError
from ..exporting import cached_graph, export, int8_graph
from ..weights import cvapps_home
from .base import GraphModel, Runtime, register

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 comes from the graph's quantize nodes


@functools.lru_cache(maxsize=1)
def core():
    """The process's one OpenVINO Core (Cores made per model and dropped crashed a long process)."""
    import openvino as ov

    return ov.Core()


def capabilities() -> set[str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES (e.g. FP32, BF16, INT8) on this machine."""
    return set(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoModel(GraphModel):
    """An ONNX graph or an OpenVINO IR with cvapps metadata, compiled for the CPU."""

    backend = "openvino"

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise DataError("no such model file", path=str(path))
        c = core()
        try:
            graph = c.read_model(str(path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise DataError(f"OpenVINO cannot read it: {str(e).splitlines()[0]}", path=str(path)) from None
        batch = graph.inputs[0].get_partial_shape()[0]
        super().__init__(_metadata(graph), path, batch.get_length() if batch.is_static else None)
        cache = cvapps_home() / "openvino"
        cache.mkdir(parents=True, exist_ok=True)
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(cache)}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = c.compile_model(graph, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.order = [self.compiled.output(n) for n in self.names]
        self.precision = precision

    def run_arrays(self, x):
        out = self.request.infer({0: x})
        return [out[o].copy() for o in self.order]


def _metadata(graph) -> dict[str, str]:
    """cvapps metadata of an ONNX file (its metadata_props, under rt_info "framework") or of an
    IR written by ``write_ir`` (rt_info "cvapps")."""
    info = graph.get_rt_info()
    out = {}
    for key in ("framework", "cvapps"):
        if key in info.keys():
            out.update({k: v.astype(str) if hasattr(v, "astype") else str(v) for k, v in info[key].items()})
    return out


def write_ir(onnx_path: Path, out: Path) -> Path:
    """``onnx_path`` (a cvapps ONNX export) as an OpenVINO IR ``out`` (.xml + .bin) with the
    cvapps metadata in its rt_info, so ``predict --model out.xml`` runs it."""
    import onnx
    import openvino as ov

    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    graph = ov.convert_model(str(onnx_path))
    for k, v in meta.items():
        graph.set_rt_info(v, ["cvapps", k])
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(graph, str(out), compress_to_fp16=False)
    return out


@register
class OpenVino(Runtime):
    name = "openvino"
    package = "openvino"
    extra = "openvino"
    precisions = ("fp32", "bf16", "int8")
    suffixes = (".xml",)
    reads = (".onnx",)
    formats = ("openvino",)
    auto_rank = 0  # fp32: ONNX Runtime measured as fast or faster; bf16 / int8 are chosen by measurement

    def precisions_here(self, device: str = "cpu") -> tuple[str, ...]:
        caps = capabilities()
        return tuple(p for p in self.precisions if p.upper() in caps)

    def build(self, model, precision, device, threads, console, calib=None):
        graph = cached_graph(model, console)
        if precision == "int8":
            graph = int8_graph(model, graph, calib, console)
        return OpenVinoModel(graph, precision, threads)

    def load(self, path, device, threads, precision="fp32"):
        return OpenVinoModel(path, precision, threads)

    def write(self, model, out: Path, dynamic_batch: bool = False, img_size=None, nms=None,
              precision: str = "fp32") -> Path:
        """``out`` (.xml, its weights beside it in .bin): the model's ONNX export as an IR."""
        if out.suffix.lower() != ".xml":
            raise ConfigError(f"--out {out}: an OpenVINO IR is an .xml file (its weights go beside it in .bin)",
                              hint=f"e.g. --out {out.with_suffix('.xml')}")
        with tempfile.TemporaryDirectory() as tmp:
            onnx = export(model, Path(tmp) / "m.onnx", dynamic_batch=dynamic_batch, img_size=img_size, nms=nms)
            return write_ir(onnx, out)
