"""Facial landmarks: the keypoint spec with face defaults and NME metrics for results files."""

from __future__ import annotations

from ..keypoints.spec import KeypointSpec
from ..keypoints.topdown import HaarFaces
from .metrics import evaluate_pairs


class LandmarkSpec(KeypointSpec):
    default_schema = "ibug68"
    rotate = 20.0
    box_label = "face"
    instance = "face"
    default_weights = "retinaface.face5"  # boxes + 5 points of every face, no training
    default_detector = "retinaface.face5"  # faces for the top-down landmark models
    named_box_sources = {"haar": HaarFaces}  # --faces haar: OpenCV's frontal-face cascade

    def results_metrics(self, gt, by_name, pairs, missed) -> dict:
        """NME / FR / AUC over IoU-matched faces; unmatched faces count as failures."""
        return evaluate_pairs(pairs, missed, gt.schema.eyes)
