"""What every single-stage model of a top-down keypoint task shares (the face detector,
MultiPose, the palm detector): whole letterboxed images in, its own instances out, converted
for inference only. Mixed in front of the task's model class by ``mixed_class``, so the
model stays that task's (spec, predictions, metrics, tracking)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ...data.transforms import Letterbox, meta_scale
from ...errors import ConfigError
from ...ops.keypoints import apply_affine
from ...options import Options
from ...schema import Schema
from ..base import TaskModel
from .postprocess import Keypoints


class SingleStageKeypoints:
    whole_image: ClassVar[bool] = True
    finds_instances: ClassVar[bool] = True  # boxes come from the model, not a box source
    has_eval_loss: ClassVar[bool] = False
    options: ClassVar[type[Options]]  # the head's options
    finds: ClassVar[str] = "instances"  # what it finds, for messages ("faces", "people", "palms")
    train_hint: ClassVar[str] = "fine-tune a top-down model of the task on your data"
    points: ClassVar[int | None] = None  # the points a head predicts when its options do not say

    @classmethod
    def head_options(cls, kind):
        return cls.options

    @classmethod
    def normalize_config(cls, config: dict) -> dict:
        """The head's options parsed once; its points must be the schema's."""
        schema = Schema.from_dict(config["schema"])
        h = cls.options.parse(config["head"])
        k = getattr(h, "num_keypoints", cls.points)
        if k != len(schema):
            raise ConfigError(f"the {h.what} predicts {k} points, the schema {schema.name!r} has {len(schema)}")
        return {**config, "head": h.to_dict()}

    def __init__(self, config, backbone, head):
        TaskModel.__init__(self, config, backbone, head)
        self.schema = Schema.from_dict(config["schema"])
        self.perm = self.schema.flip_perm
        self.refine_index = None

    def forward(self, x: torch.Tensor):
        """x: (B, 3, H, W) normalised letterboxed images -> the head's raw outputs."""
        return self.forward_head(self.forward_features(x))

    def infer(self, x: torch.Tensor, **_):
        return self(x)

    def loss(self, raw, targets):
        raise ConfigError(f"the converted {self.config.get('weights') or 'model'} is inference-only",
                          hint=self.train_hint)

    def preprocessor(self, boxes=None) -> Letterbox:
        if boxes is not None:
            raise ConfigError(f"{self.config.get('weights') or 'this model'} finds the {self.finds} itself: "
                              "--boxes / --detector / --whole-image are for top-down models")
        return Letterbox.from_config(self.config["preprocessing"])

    def empty(self) -> Keypoints:
        k = len(self.schema)
        return Keypoints(np.zeros((0, k, 2)), np.zeros((0, k)), np.zeros((0, 4)), np.zeros(0),
                         list(self.schema.keypoints), self.schema.skeleton, self.instance)

    def found(self, points: np.ndarray, scores: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray,
              meta: dict, clip: bool = True) -> Keypoints:
        """Keypoints from input-pixel points (N, K, 2), boxes (N, 4): mapped to the original
        image (meta "inv", an input -> image affine map without rotation, else
        ``meta_scale``), boxes clipped to it unless ``clip`` is False."""
        pts = np.asarray(points, np.float64).reshape(-1, len(self.schema), 2)
        bb = np.asarray(boxes, np.float64).reshape(-1, 4)
        if "inv" in meta:
            pts, bb = apply_affine(pts, meta["inv"]), apply_affine(bb.reshape(-1, 2, 2), meta["inv"]).reshape(-1, 4)
        else:
            sx, sy = meta_scale(meta)
            pts, bb = pts / [sx, sy], bb / [sx, sy, sx, sy]
        bb = np.clip(bb, 0, [meta["width"], meta["height"]] * 2) if clip else bb
        return Keypoints(pts, np.asarray(scores, np.float64), bb, np.asarray(box_scores, np.float64),
                         list(self.schema.keypoints), self.schema.skeleton, self.instance)

    @staticmethod
    def score_entropy(p: torch.Tensor, top: int = 20) -> torch.Tensor:
        """p (B, A) instance probabilities -> (B,) mean binary entropy (bits) of the ``top``
        highest: instances the model is unsure of (near 0.5) raise it; clear ones do not."""
        p = p.float().topk(min(top, p.shape[1]), dim=1).values.clamp(1e-6, 1 - 1e-6)
        return (-(p * p.log2() + (1 - p) * (1 - p).log2())).mean(1)

    def mc_variance(self, x, passes=None):
        raise ConfigError(f"{self.config.get('weights') or 'this model'} has no dropout: use the 'entropy' or "
                          "'least_confidence' strategy")
