from . import fasterrcnn  # noqa: F401  (registers the two-stage variant)
from .model import DetectionModel, DetRaw
from .postprocess import Detections

__all__ = ["DetRaw", "DetectionModel", "Detections"]
