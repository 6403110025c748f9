"""cvapps: computer-vision applications on shared pretrained backbones.

    import cvapps
    model = cvapps.load("mobilenet_v2.imagenet1k")      # or a .safetensors model file
    for pred in model.predict(["a.jpg", "b.jpg"]):
        print(pred.topk[0])
"""

from . import tasks  # noqa: F401  (registers tasks)
from .api import (backbone_table, create_model, evaluate, evaluate_keypoint_results, list_backbones, load,
                  load_bundle, predict, predict_bundle, predict_keypoints, pull_weights, save, select, simulate, train,
                  weights_table)
from .errors import ConfigError, CvappsError, DataError, ShapeError, WeightsError
from .training.freezing import count_parameters, freeze, param_groups, unfreeze
from .weights import list_weights, pull

__version__ = "0.1.0"
__all__ = [
    "ConfigError", "CvappsError", "DataError", "ShapeError", "WeightsError", "backbone_table", "count_parameters",
    "create_model", "evaluate", "evaluate_keypoint_results", "freeze", "list_backbones", "list_weights", "load",
    "load_bundle", "param_groups", "predict", "predict_bundle", "predict_keypoints", "pull", "pull_weights", "save",
    "select", "simulate", "train", "unfreeze", "weights_table",
]
