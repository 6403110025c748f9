"""Task models and their specs. Importing registers every task."""

from . import classification, detection, landmarks, pose, segmentation  # noqa: F401
from .base import TASKS, Prediction, TaskModel, model_class

__all__ = ["TASKS", "Prediction", "TaskModel", "model_class"]
