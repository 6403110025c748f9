"""Human pose: the keypoint spec with COCO OKS metrics for results files."""

from __future__ import annotations

import numpy as np

from ..keypoints.spec import KeypointSpec, all_still
from ..keypoints.workflow import coco_keypoint_results
from .metrics import oks_metrics, pck


class PoseSpec(KeypointSpec):
    default_schema = "coco17"
    rotate = 30.0
    box_label = "person"
    instance = "person"
    default_weights = "movenet_lightning.coco17"  # 17 COCO points per person, no training: video, cameras
    photo_weights = "movenet_thunder.coco17"  # still images (benchmarks/pose_models.py: the more accurate)
    default_detector = "ssd_mobilenet_v2.coco"  # people boxes; --whole-image for one person per frame

    def pick_model(self, options: dict, items=None) -> str | None:
        """With no --model: Thunder when every input is a still image, else (video, cameras,
        streams; or inputs not known yet) Lightning, the default."""
        return self.photo_weights if items is not None and all_still(items) else None

    def results_metrics(self, gt, by_name, pairs, missed) -> dict:
        """COCO OKS AP/AR (pycocotools) on all results plus PCK@0.2 over IoU-matched instances."""
        m = oks_metrics(gt.to_coco(), coco_keypoint_results(by_name, gt), list(gt.schema.sigmas))
        m["PCK"] = pck(np.stack([p for p, _, _ in pairs]), np.stack([g for _, g, _ in pairs]),
                       np.stack([b for _, _, b in pairs])) if pairs else 0.0
        m["count"], m["unmatched"] = len(pairs), missed
        return m
