"""Facial landmarks: the keypoint model on face crops (Wing loss, optional cascade),
scored by NME / failure rate / AUC."""

from __future__ import annotations

from ..base import mixed_class, register_task
from ..keypoints.model import KeypointModel
from ..keypoints.topdown import HaarFaces
from ..keypoints.workflow import KeypointCollector
from .retinaface import FaceDetectorModel
from .metrics import landmark_metrics, nme, normaliser
from .spec import LandmarkSpec


@register_task("landmarks", LandmarkSpec)
class LandmarkModel(KeypointModel):
    default_loss = "wing"
    default_size = [256, 256]

    @classmethod
    def from_config(cls, config: dict) -> "LandmarkModel":
        """Head kind "retinaface" makes the single-stage face detector (whole images in)."""
        if (config.get("head") or {}).get("kind") == "retinaface" and not issubclass(cls, FaceDetectorModel):
            return mixed_class(FaceDetectorModel, cls).from_config(config)
        return super().from_config(config)

    def primary_metric(self) -> tuple[str, str]:
        return "NME", "min"

    def preprocessor(self, boxes=None):
        """Face crops; boxes default to OpenCV's Haar frontal-face cascade."""
        return super().preprocessor(boxes if boxes is not None else HaarFaces())

    def make_evaluator(self, ds) -> "LandmarkEvaluator":
        return LandmarkEvaluator(self.schema.eyes)


class LandmarkEvaluator(KeypointCollector):
    def __init__(self, eyes):
        super().__init__()
        self.eyes = eyes

    def nmes(self) -> list[float]:
        return [nme(p, g, normaliser(g, b, self.eyes)) for p, g, b in zip(self.pred, self.gt, self.boxes)]

    def compute(self) -> dict:
        return landmark_metrics(self.nmes())
