"""Task models. Importing registers every task."""

from . import classification, detection, landmarks, pose, segmentation  # noqa: F401
from .base import TASKS, Prediction, TaskModel

__all__ = ["TASKS", "Prediction", "TaskModel"]
