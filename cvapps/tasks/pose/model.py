"""Top-down human pose: the keypoint model on person crops, scored by PCK@0.2 and COCO
OKS AP (pycocotools) against the evaluation set's ground truth."""

from __future__ import annotations

import numpy as np

from ..base import mixed_class, register_task
from ..keypoints.model import KeypointModel
from ..keypoints.postprocess import instance_scores
from ..keypoints.workflow import KeypointCollector
from .metrics import oks_metrics, pck
from .multipose import MultiPoseModel
from .palm import PalmDetectorModel
from .spec import PoseSpec

SINGLE_STAGE = {"movenet_multipose": MultiPoseModel, "blazepalm": PalmDetectorModel}  # head kind -> mixin


@register_task("pose", PoseSpec)
class PoseModel(KeypointModel):
    default_loss = "l1"
    default_size = [256, 192]

    @classmethod
    def from_config(cls, config: dict) -> "PoseModel":
        """A single-stage head kind (``SINGLE_STAGE``: MultiPose, the palm detector) makes that
        model (whole images in, its own instances out)."""
        mixin = SINGLE_STAGE.get((config.get("head") or {}).get("kind"))
        if mixin is not None and not issubclass(cls, mixin):
            return mixed_class(mixin, cls).from_config(config)
        return super().from_config(config)

    def primary_metric(self) -> tuple[str, str]:
        return "AP", "max"

    def make_evaluator(self, ds) -> "PoseEvaluator":
        return PoseEvaluator(ds.data.to_coco(), list(self.schema.sigmas))


class PoseEvaluator(KeypointCollector):
    def __init__(self, gt_coco: dict, sigmas: list[float]):
        super().__init__()
        self.gt_coco, self.sigmas = gt_coco, sigmas

    def results(self) -> list[dict]:
        """COCO keypoint results of the collected crops (box score 1: ground-truth boxes)."""
        out = []
        for p, s, img, b in zip(self.pred, self.scores, self.image_ids, self.boxes):
            score = float(instance_scores(s[None], np.ones(1))[0])
            kp = np.concatenate([p, s[:, None]], 1).reshape(-1)
            out.append({"image_id": img, "category_id": 1, "keypoints": kp.tolist(), "score": score,
                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
        return out

    def compute(self) -> dict:
        m = oks_metrics(self.gt_coco, self.results(), self.sigmas)
        m["PCK"] = pck(np.asarray(self.pred), np.asarray(self.gt), np.asarray(self.boxes)) if self.pred else 0.0
        m["count"] = len(self.pred)
        return m
