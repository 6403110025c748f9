"""cvapps: computer-vision applications on shared pretrained backbones.

    import cvapps
    model = cvapps.load("mobilenet_v2.imagenet1k")      # or a .safetensors model file
    for pred in model.predict(["a.jpg", "b.jpg"]):
        print(pred.topk[0])

The public names load on first use (PEP 562), so importing the package (or running
`cvapps --help`) does not pay for torch until a model is needed.
"""

from __future__ import annotations

import importlib

from .errors import ConfigError, CvappsError, DataError, ShapeError, WeightsError

__version__ = "0.2.0"
_LAZY = {
    **{name: "api" for name in ("backbone_table", "create_model", "evaluate", "evaluate_keypoint_results",
                                "evaluate_results", "export", "list_backbones", "load", "load_bundle", "predict",
                                "predict_bundle", "predict_keypoints", "pull_weights", "save", "select", "simulate",
                                "track", "train", "weights_table")},
    **{name: "training.freezing" for name in ("count_parameters", "freeze", "param_groups", "unfreeze")},
    "list_weights": "weights", "pull": "weights", "distill": "distilling", "self_train": "selftraining",
    "adapt": "adapting", "adabn": "adapting", "pretrain": "pretraining", "train_bundle": "multitask",
    "set_max_pixels": "data.io",
}
__all__ = ["ConfigError", "CvappsError", "DataError", "ShapeError", "WeightsError", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in ("api", "tasks", "active", "data", "inference", "training", "backbones", "ops"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cvapps' has no attribute {name!r}")
