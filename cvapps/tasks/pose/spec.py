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
    # 17 COCO points per person, no training (benchmarks/pose_models.py): photos get the most accurate
    # (Thunder on the detector's people), video and cameras the fastest (MultiPose: one pass for
    # everyone, 4x the frame rate of detector + Lightning here); top-down options keep a top-down model
    default_weights = "movenet_lightning.coco17"
    photo_weights = "movenet_thunder.coco17"
    video_weights = "movenet_multipose.coco17"
    top_down_options = ("boxes", "detector", "whole_image", "flip_test")
    default_detector = "ssd_mobilenet_v2.coco"  # people boxes; --whole-image for one person per frame

    def pick_model(self, options: dict, items=None) -> str | None:
        """With no --model: Thunder when every input is a still image; otherwise MultiPose,
        unless a top-down option (--boxes, --detector, --whole-image, --flip-test) asks for a
        top-down model: then Lightning (the default, also when the inputs are not known)."""
        if items is None:
            return None
        if all_still(items):
            return self.photo_weights
        return None if any(options.get(k) for k in self.top_down_options) else self.video_weights

    def results_metrics(self, gt, by_name, pairs, missed) -> dict:
        """COCO OKS AP/AR (pycocotools) on all results plus PCK@0.2 over IoU-matched instances."""
        m = oks_metrics(gt.to_coco(), coco_keypoint_results(by_name, gt), list(gt.schema.sigmas))
        m["PCK"] = pck(np.stack([p for p, _, _ in pairs]), np.stack([g for _, g, _ in pairs]),
                       np.stack([b for _, _, b in pairs])) if pairs else 0.0
        m["count"], m["unmatched"] = len(pairs), missed
        return m
