from .model import ClassificationModel, ClassRaw
from .postprocess import ClassPrediction

__all__ = ["ClassificationModel", "ClassPrediction", "ClassRaw"]
