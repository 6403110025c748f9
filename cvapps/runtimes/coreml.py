"""Core ML (Apple): ``export --format coreml`` writes an ML Program (``.mlpackage``) with
``coremltools`` (the ``[coreml]`` extra, BSD-3), traced from the same raw-output wrapper as the
ONNX export; the cvapps metadata (config, output names, raw type) goes into the package's
user-defined metadata. Conversion runs anywhere; Core ML itself runs only on macOS, so
``predict --model m.mlpackage`` loads it there and refuses in one line elsewhere — on the
Linux machines cvapps is tested on, its predictions are never checked (only the converted
program's inputs, outputs, precision and metadata are).

The input is the preprocessed tensor "image" (B, 3, H, W) float32, as in every cvapps export
(preprocessing and postprocessing stay with cvapps); compute precision fp32 by default, fp16
(what the Neural Engine runs) with ``--precision fp16``."""

from __future__ import annotations

import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..exporting import raw_outputs, trace
from .base import GraphModel, Runtime, register

MAX_BATCH = 64  # --dynamic-batch: Core ML wants a bounded range


def _coremltools():
    """coremltools, without its import-time warnings that the macOS-only runtime is absent."""
    import logging

    class _OffMac(logging.Filter):
        def filter(self, record):
            return "libcoremlpython" not in record.getMessage()

    log = logging.getLogger("coremltools")
    quiet = _OffMac()
    log.addFilter(quiet)
    try:
        import coremltools
    finally:
        log.removeFilter(quiet)
    return coremltools


def convert(model, out: Path, dynamic_batch: bool = False, img_size=None, precision: str = "fp32") -> Path:
    """``model`` (a TaskModel) as an ML Program at ``out`` (.mlpackage), written atomically."""
    ct = _coremltools()

    wrapper, x, _, meta = raw_outputs(model, img_size)
    names, (h, w) = wrapper.names, x.shape[2:]
    traced = trace(wrapper, x)
    batch = ct.RangeDim(1, MAX_BATCH, default=1) if dynamic_batch else 1
    precisions = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}
    try:
        ml = ct.convert(traced, inputs=[ct.TensorType(name="image", shape=(batch, 3, h, w), dtype=np.float32)],
                        outputs=[ct.TensorType(name=n) for n in names], convert_to="mlprogram",
                        compute_precision=precisions[precision], minimum_deployment_target=ct.target.iOS16)
    except Exception as e:  # noqa: BLE001 - coremltools raises plain exceptions for unsupported ops
        raise ConfigError(f"Core ML conversion failed: {str(e).splitlines()[0][:300]}") from None
    ml.user_defined_metadata.update({**meta, "cvapps_precision": precision})
    ml.short_description = f"cvapps {model.task} model ({', '.join(names)}: raw outputs)"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # a package is a folder: move it in whole
        ml.save(str(Path(tmp) / out.name))
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(Path(tmp) / out.name), out)
    return out


def metadata(path: Path) -> dict[str, str]:
    """The cvapps metadata of an .mlpackage (read from its spec: works on any OS)."""
    return dict(_spec(path).description.metadata.userDefined)


def _spec(path: Path):
    try:
        return _coremltools().utils.load_spec(str(path))
    except Exception as e:  # noqa: BLE001
        raise DataError(f"not a Core ML model: {str(e).splitlines()[0][:200]}", path=str(path)) from None


class CoreMlModel(GraphModel):
    """An .mlpackage exported by cvapps, run by Core ML (macOS only)."""

    backend = "coreml"

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.exists():
            raise DataError("no such model file", path=str(path))
        spec = _spec(path)
        image = spec.description.input[0].type.multiArrayType
        fixed = None if image.shapeRange.sizeRanges else int(image.shape[0])
        super().__init__(dict(spec.description.metadata.userDefined), path, fixed)
        self.precision = spec.description.metadata.userDefined.get("cvapps_precision", "fp32")
        self.ml = _coremltools().models.MLModel(str(path))

    def run_arrays(self, x):
        out = self.ml.predict({"image": x})
        return [np.asarray(out[n], dtype=np.float32) for n in self.names]


@register
class CoreMl(Runtime):
    name = "coreml"
    package = "coremltools"
    extra = "coreml"
    precisions = ("fp32", "fp16")
    suffixes = (".mlpackage",)
    formats = ("coreml",)
    write_precisions = ("fp32", "fp16")
    auto_rank = -1  # a device runtime: named, never chosen for a desktop CPU

    def runs_on(self, device: str) -> bool:
        return platform.system() == "Darwin" and str(device) == "cpu"

    def check(self, device: str, precision: str) -> None:
        if platform.system() != "Darwin":
            raise ConfigError("Core ML runs models on macOS only (coremltools converts them anywhere)",
                              hint="run the .mlpackage on a Mac, or export --format onnx / openvino here")
        super().check(device, precision)

    def build(self, model, precision, device, threads, console, calib=None):
        raise ConfigError("--backend coreml runs exported .mlpackage files", hint="cvapps export --format coreml, "
                                                                                  "then --model FILE.mlpackage")

    def load(self, path, device, threads, precision="fp32"):
        return CoreMlModel(path)

    def write(self, model, out: Path, dynamic_batch: bool = False, img_size=None, nms=None,
              precision: str = "fp32") -> Path:
        if out.suffix.lower() != ".mlpackage":
            raise ConfigError(f"--out {out}: a Core ML ML Program is an .mlpackage",
                              hint=f"e.g. --out {out.with_suffix('.mlpackage')}")
        if nms is not None:
            raise ConfigError("--format coreml writes the raw outputs (box decoding and NMS stay with cvapps)",
                              hint="drop --nms")
        return convert(model, out, dynamic_batch, img_size, precision)
