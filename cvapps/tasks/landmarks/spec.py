"""Facial landmarks: the keypoint spec with face defaults and NME metrics for results files."""

from __future__ import annotations

from ..keypoints.spec import KeypointSpec
from .metrics import evaluate_pairs


class LandmarkSpec(KeypointSpec):
    default_schema = "ibug68"
    rotate = 20.0
    box_label = "face"
    instance = "face"

    def results_metrics(self, gt, by_name, pairs, missed) -> dict:
        """NME / FR / AUC over IoU-matched faces; unmatched faces count as failures."""
        return evaluate_pairs(pairs, missed, gt.schema.eyes)
