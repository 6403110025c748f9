"""MoveNet MultiPose: every person of the image in one pass, no person detector — the MoveNet
FPN with two more heads (box scale and box offset at each person's centre) on a MobileNetV2
of width 1.5, decoded as the original graph does (cvapps.ops.keypoints.decode_multipose), as
the pose task's single-stage model (head kind ``movenet_multipose``; whole images in,
letterboxed to a square multiple of 32; like the face detector, it finds its own instances)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...options import Options, opt
from ...ops.keypoints import decode_multipose
from ..base import TaskModel
from ..keypoints.movenet import MoveNetHead, separable
from ..keypoints.postprocess import Keypoints
from ..keypoints.single_stage import SingleStageKeypoints


@dataclass
class MultiPoseOptions(Options):
    """``conf``: the person score (centre x mean confident keypoint score) a person needs;
    ``people``: centres decoded per image (the graph's 6); ``kpt_threshold`` and ``spread``:
    the graph's decoding constants (checked against the file when converting)."""

    what: ClassVar[str] = "MultiPose head"
    kind: str = opt("movenet_multipose", choices=("movenet_multipose",))
    num_keypoints: int = opt(17, low=1)
    conf: float = opt(0.2, low=0.0, high=1.0)
    people: int = opt(6, low=1)
    kpt_threshold: float = opt(0.127, low=0.0, high=1.0)
    spread: float = opt(0.3, low=0.0, low_open=True)


@dataclass
class MultiPoseRaw:
    """The six raw maps at stride 4: centre (B, 1, h, w), regress (B, 2K, ..), heatmap (B, K, ..),
    offset (B, 2K, ..), box_scale (B, 2, ..), box_offset (B, 2, ..); logits / raw values."""

    centre: torch.Tensor
    regress: torch.Tensor
    heatmap: torch.Tensor
    offset: torch.Tensor
    box_scale: torch.Tensor
    box_offset: torch.Tensor

    @property
    def maps(self) -> tuple[torch.Tensor, ...]:
        return (self.centre, self.regress, self.heatmap, self.offset, self.box_scale, self.box_offset)


class MultiPoseHead(MoveNetHead):
    """The MoveNet head plus box scale (2: h, w in cells) and box offset (2: dy, dx)."""

    outputs = ("centre", "regress", "heatmap", "offset", "box_scale", "box_offset")

    def __init__(self, feature_info, k: int):
        super().__init__(feature_info, k)
        for name in ("box_scale", "box_offset"):
            self.heads[name] = nn.Sequential(*separable(24, 96), nn.Conv2d(96, 2, 1))


class MultiPoseModel(SingleStageKeypoints):
    """Mixed into the pose model class by ``mixed_class`` (it stays the pose task's model:
    same spec, Keypoints predictions, metrics, tracking)."""

    options: ClassVar[type[Options]] = MultiPoseOptions
    finds: ClassVar[str] = "people"
    train_hint: ClassVar[str] = "fine-tune a top-down pose model (--weights movenet_lightning.coco17) on your data"

    @classmethod
    def build_head(cls, config: dict, backbone) -> nn.Module:
        # under "main" as the top-down MoveNet's head: the same parameter names (Lightning's, Thunder's)
        return nn.ModuleDict({"main": MultiPoseHead(backbone.feature_info, config["head"]["num_keypoints"])})

    def forward_head(self, feats, input_hw=None) -> MultiPoseRaw:
        """Letterboxed images' features (sides multiples of 32) -> MultiPoseRaw."""
        return MultiPoseRaw(*self.head["main"](feats))

    def predict(self, inputs, batch_size: int = 16, precision: str = "fp32", conf: float | None = None,
                boxes=None, **_) -> list[Keypoints]:
        """inputs: paths or RGB arrays -> one Keypoints (every person found: box, score, 17
        points) per input; ``conf``: the person score needed (default: the config's)."""
        self.preprocessor(boxes)  # refuses boxes
        return TaskModel.predict(self, inputs, batch_size, precision, conf=conf)

    @torch.no_grad()
    def postprocess(self, raw, metas: list[dict], conf: float | None = None, **_) -> list[Keypoints]:
        h = self.config["head"]
        conf = h["conf"] if conf is None else conf
        if raw is None:
            return [self.empty() for _ in metas]
        points, kscore, boxes, pscore = decode_multipose(*raw.maps, people=h["people"],
                                                         kpt_threshold=h["kpt_threshold"], spread=h["spread"])
        in_h, in_w = self.input_hw
        stride = torch.tensor([in_w / raw.centre.shape[-1], in_h / raw.centre.shape[-2]])
        out = []
        for p, ks, b, ps, m in zip(points.cpu(), kscore.cpu(), boxes.cpu(), pscore.cpu(), metas):
            keep = ps >= conf
            out.append(self.found((p[keep] * stride).numpy(), ks[keep].numpy(), (b[keep] * stride.repeat(2)).numpy(),
                                  ps[keep].numpy(), m))
        return out

    def uncertainty(self, raw, metas=None, kind: str = "confidence") -> torch.Tensor:
        """(B,) 1 - the mean keypoint score of the image's strongest person."""
        h = self.config["head"]
        _, kscore, _, pscore = decode_multipose(*raw.maps, people=h["people"], kpt_threshold=h["kpt_threshold"],
                                                spread=h["spread"])
        best = pscore.argmax(1)
        return 1 - kscore[torch.arange(len(best)), best].mean(1)


