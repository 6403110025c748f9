"""Converting models made with other frameworks into cvapps's own modules, offline.

A conversion = a reader (a file format -> {tensor name: numpy array}) + a mapping (those
tensors -> the state dict of a cvapps model built from the manifest's config). Both are
registered by name; a weights manifest names the pair (``"converter": {"reader": ...,
"mapping": ...}``). Nothing here imports the frameworks that wrote the files."""

from __future__ import annotations

from ..registry import Registry
from .graphdef import read_constants
from .onnx_file import read_onnx
from .tflite_file import read_tflite
from .tfjs_file import read_tfjs, read_tfjs_ops

READERS: Registry = Registry("model-file reader")
MAPPINGS: Registry = Registry("weights mapping")
READERS.register("tf_graphdef", read_constants)
READERS.register("onnx", read_onnx)
READERS.register("tflite", read_tflite)
READERS.register("tfjs", read_tfjs)
READERS.register("tfjs_graph", read_tfjs_ops)

# importing the mapping modules registers their mappings
from . import (efficientnet_lite, faceapi, facemesh, mediapipe_hand, movenet, retinaface, selfie,  # noqa: E402,F401
               tf_ssd)

__all__ = ["MAPPINGS", "READERS"]
