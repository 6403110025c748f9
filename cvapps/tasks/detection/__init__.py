from .head import DETECTION_HEADS, DetRaw
from .model import DetectionModel
from .postprocess import Detections

__all__ = ["DETECTION_HEADS", "DetRaw", "DetectionModel", "Detections"]
