"""LiteRT (TFLite): run `.tflite` exports with the LiteRT interpreter (``ai-edge-litert``, the
``[litert]`` extra), and write them: the ONNX export (batch 1) simplified by onnxsim and
converted by onnx2tf. The converter needs TensorFlow, which cvapps does not depend on: it
runs in the Python named by $CVAPPS_TFLITE_PYTHON (a virtual environment with ``onnx2tf
tensorflow-cpu tf-keras onnxsim onnx_graphsurgeon sng4onnx``), else in this one. The cvapps
metadata travels beside the file (``model.tflite.cvapps.json``); inputs are NHWC in the file
and NCHW to cvapps (transposed here), 4-D outputs come back to NCHW."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, DataError
from ..exporting import META_OUTPUTS, export, raw_outputs
from .base import GraphModel, Runtime, register
from .guard import sample_images

SIDECAR = ".cvapps.json"
SHAPES = "cvapps_shapes"  # the ONNX outputs' shapes at batch 1 (the file may hold them as NHWC)
CONVERTER = ("onnx2tf", "onnxsim", "tensorflow", "tf_keras")


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


class LiteRtModel(GraphModel):
    """A `.tflite` export with its cvapps sidecar, run by the LiteRT interpreter (batch 1)."""

    backend = "litert"

    def __init__(self, path: str | Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.is_file():
            raise DataError("no such model file", path=str(path))
        if not sidecar(path).is_file():
            raise DataError(f"no cvapps metadata beside it ({sidecar(path).name})", path=str(path),
                            hint="export it with `cvapps export --format tflite`")
        meta = json.loads(sidecar(path).read_text())
        super().__init__(meta, path, fixed_batch=1)
        try:
            self.interpreter = Interpreter(str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise DataError(f"LiteRT cannot load it: {str(e).splitlines()[0]}", path=str(path)) from None
        self.input = self.interpreter.get_input_details()[0]["index"]
        # onnx2tf names the outputs Identity, Identity_1, ... in the ONNX graph's order
        outs = sorted(self.interpreter.get_output_details(), key=lambda d: _position(d["name"]))
        self.outputs = [d["index"] for d in outs]
        self.shapes = [tuple(s) for s in json.loads(meta[SHAPES])]

    def run_arrays(self, x):
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        self.interpreter.invoke()
        out = []
        for index, shape in zip(self.outputs, self.shapes):
            a = self.interpreter.get_tensor(index)
            if a.ndim == 4 and a.shape != shape:  # NHWC in the file
                a = a.transpose(0, 3, 1, 2)
            out.append(a.reshape(shape))
        return out


def _position(name: str) -> int:
    """Identity -> 0, Identity_3 -> 3."""
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def converter_python() -> str:
    """The Python that converts (one line when it lacks the converter)."""
    python = os.environ.get("CVAPPS_TFLITE_PYTHON") or sys.executable
    probe = subprocess.run([python, "-c", "import " + ", ".join(CONVERTER)], capture_output=True, text=True)
    if probe.returncode:
        raise ConfigError(f"--format tflite converts with onnx2tf and TensorFlow, which {python} does not have",
                          hint="make a virtual environment with `pip install onnx2tf tensorflow-cpu tf-keras onnxsim "
                               "onnx_graphsurgeon sng4onnx` and set CVAPPS_TFLITE_PYTHON to its python")
    return python


def write_tflite(model, out: Path, img_size=None) -> Path:
    """``out`` (.tflite, batch 1, float32) and its sidecar, from the model's ONNX export."""
    import onnx

    python = converter_python()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx_path = export(model, tmp / "m.onnx", img_size=img_size)
        meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
        names = json.loads(meta[META_OUTPUTS])
        _, _, raw, _ = raw_outputs(model, img_size)
        meta[SHAPES] = json.dumps([list(getattr(raw, n).shape) for n in names])
        # onnx2tf reads its calibration sample from the working folder before it would download one
        views = [cv2.resize(v, (128, 128)).astype(np.float32) / 255 for v in sample_images()[:20]]
        np.save(tmp / "calibration_image_sample_data_20x128x128x3_float32.npy", np.stack(views))
        for step in ([python, "-m", "onnxsim", "m.onnx", "s.onnx"],
                     [python, "-c", "import sys; from onnx2tf.onnx2tf import main; sys.argv[0] = 'onnx2tf'; main()",
                      "-i", "s.onnx", "-o", "tf", "-n"]):
            r = subprocess.run(step, cwd=tmp, capture_output=True, text=True)
            if r.returncode:
                last = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()][-1:] or ["(no output)"]
                raise ConfigError(f"TFLite conversion failed in {step[2] if step[1] == '-m' else 'onnx2tf'}: "
                                  f"{last[0][:300]}")
        made = next((tmp / "tf").glob("*_float32.tflite"), None)
        if made is None:
            raise ConfigError("onnx2tf wrote no float32 .tflite")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, out)
    sidecar(out).write_text(json.dumps(meta))
    return out


@register
class LiteRt(Runtime):
    name = "litert"
    package = "ai_edge_litert"
    extra = "litert"
    precisions = ("fp32",)
    suffixes = (".tflite",)
    formats = ("tflite",)
    auto_rank = -1  # a mobile runtime: named, never chosen for a desktop CPU

    def build(self, model, precision, device, threads, console, calib=None):
        raise ConfigError("--backend litert runs exported .tflite files", hint="cvapps export --format tflite, then "
                                                                              "--model FILE.tflite")

    def load(self, path, device, threads, precision="fp32"):
        return LiteRtModel(path, threads)

    def write(self, model, out: Path, dynamic_batch: bool = False, img_size=None, nms=None,
              precision: str = "fp32") -> Path:
        if out.suffix.lower() != ".tflite":
            raise ConfigError(f"--out {out}: a TFLite model is a .tflite file", hint=f"e.g. --out {out.with_suffix('.tflite')}")
        if dynamic_batch or nms is not None:
            raise ConfigError("--format tflite writes the raw outputs for one image at a time",
                              hint="drop --dynamic-batch / --nms")
        return write_tflite(model, out, img_size)
