"""KeypointModel: the top-down keypoint TaskModel that facial landmarks and pose share
(heads, losses, decoding, flip test, uncertainty). Subclasses add metrics and defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ...backbones import Backbone
from ...errors import ConfigError, ShapeError
from ...ops.keypoints import (apply_affine, box_from_points, decode_heatmaps, flip_heatmaps, flip_points,
                              gaussian_heatmaps)
from ...ops.uncertainty import variance
from ...options import Options, opt
from ...schema import Schema
from ..base import TaskModel
from ..spec import mc_dropout
from . import facemesh, hand, movenet  # noqa: F401  (register their head kinds)
from .heads import KEYPOINT_HEADS, CascadeRefiner, KeypointRaw, cascade_feature_index
from .postprocess import Keypoints
from .topdown import FixedBoxes, TopDown

WING_W, WING_EPS, WING_SCALE = 10.0, 2.0, 64.0  # Feng et al.; errors measured on a 64-pixel crop


@dataclass
class KeypointHeadOptions(Options):
    """``kind``: heatmap (deconvolutions to stride 4, Gaussian targets of ``sigma``),
    regression (pooled features -> K x 2) or movenet (a CenterNet-style FPN head on 4 feature
    maps, MoveNet's decoding; cvapps.tasks.keypoints.movenet) or facemesh; ``loss``
    (regression): wing | l1 | l2 (default per task), heatmaps use mse; ``cascade``: a second
    stage refining each point from a ``cascade_window``-wide patch; ``mc_passes``:
    MC-dropout passes for uncertainty."""

    what: ClassVar[str] = "keypoint head"
    kind: str = opt("heatmap", choices=tuple(KEYPOINT_HEADS.names()))
    num_keypoints: int | None = opt(None, low=1)
    loss: str | None = opt(None, choices=("mse", "l2", "l1", "wing"))
    sigma: float = opt(2.0, low=0.0, low_open=True)
    channels: int = opt(128, low=1)
    dropout: float | None = opt(None, low=0.0, high=0.95)
    cascade: bool = False
    cascade_window: float = opt(0.2, low=0.0, high=1.0, low_open=True)
    mc_passes: int = opt(8, low=1)


def wing(d: torch.Tensor) -> torch.Tensor:
    c = WING_W - WING_W * math.log(1 + WING_W / WING_EPS)
    return torch.where(d < WING_W, WING_W * torch.log1p(d / WING_EPS), d - c)


class KeypointModel(TaskModel):
    default_loss: ClassVar[str] = "l1"
    default_size: ClassVar[list[int]] = [256, 256]
    whole_image = False  # top-down: one crop per instance box

    @classmethod
    def head_options(cls, kind: str | None) -> type[KeypointHeadOptions]:
        return KeypointHeadOptions

    @classmethod
    def normalize_config(cls, config: dict) -> dict:
        """Head options completed from the schema and the task's defaults (checked once here)."""
        schema = Schema.from_dict(config["schema"])
        h = KeypointHeadOptions.parse(config["head"])
        k = len(schema)
        if h.num_keypoints not in (None, k):
            raise ConfigError(f"head has {h.num_keypoints} keypoints, schema {schema.name!r} {k}")
        h.num_keypoints = k
        h.loss = h.loss or ("mse" if h.kind == "heatmap" else cls.default_loss)
        h.dropout = h.dropout if h.dropout is not None else (0.1 if h.kind == "heatmap" else 0.2)
        return {**config, "head": h.to_dict(), "schema": schema.to_dict()}

    @classmethod
    def check_outputs(cls, config: dict) -> None:
        k, labels = len((config.get("schema") or {}).get("keypoints") or []), config.get("labels")
        if k < 1:
            raise ConfigError("the keypoint schema has no points")
        if labels is not None and len(labels) != k:
            raise ConfigError(f"{len(labels)} labels for {k} keypoints",
                              hint="the label list names each keypoint of the schema, in order")

    @classmethod
    def build_head(cls, config: dict, backbone: Backbone) -> nn.Module:
        h = KeypointHeadOptions.parse(config["head"])
        main = KEYPOINT_HEADS.get(h.kind).build(backbone, h)
        head = nn.ModuleDict({"main": main})
        if h.cascade:
            f = backbone.feature_info[cascade_feature_index(backbone)]
            head["refine"] = CascadeRefiner(f.channels, f.stride, h.num_keypoints, h.cascade_window)
        return head

    def __init__(self, config, backbone, head):
        super().__init__(config, backbone, head)
        self.schema = Schema.from_dict(config["schema"])
        self.perm = self.schema.flip_perm
        self.refine_index = cascade_feature_index(backbone) if "refine" in head else None

    @property
    def instance(self) -> str:
        """What one prediction is (its label): the config's ``instance`` (e.g. hand), else the task's."""
        return self.config.get("instance") or self.spec.instance

    # forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> KeypointRaw:
        """x: (B, 3, H, W) normalised crops -> KeypointRaw."""
        return self.forward_head(self.forward_features(x), tuple(x.shape[-2:]))

    def forward_head(self, feats: list[torch.Tensor], input_hw: tuple[int, int] | None = None) -> KeypointRaw:
        hw = input_hw or self.input_hw
        raw = self.head["main"].keypoints(feats, hw)
        if "refine" in self.head:
            raw.coarse = raw.points
            raw.points = self.head["refine"](feats[self.refine_index], raw.points, hw)
        return raw

    def infer(self, x: torch.Tensor, flip_test: bool = False, **_) -> KeypointRaw:
        """Inference forward; ``flip_test`` averages with the mirrored input (pairs swapped)."""
        raw = self(x)
        if not flip_test:
            return raw
        f = self(x.flip(-1))
        w = x.shape[-1]
        if raw.heatmaps is not None and raw.coarse is None and self.hcfg["kind"] == "heatmap":
            stride = w / raw.heatmaps.shape[-1]
            hm = (raw.heatmaps.float() + flip_heatmaps(f.heatmaps.float(), self.perm)) / 2
            pts, scores = decode_heatmaps(hm, stride)
            return KeypointRaw(pts, scores.clamp(0, 1), hm)
        pts = (raw.points.float() + flip_points(f.points.float(), w, self.perm)) / 2
        return KeypointRaw(pts, (raw.scores + f.scores[:, self.perm]) / 2)

    # training -----------------------------------------------------------------------
    def _coord_loss(self, pred: torch.Tensor, gt: torch.Tensor, w: torch.Tensor, kind: str) -> torch.Tensor:
        d = (pred.float() - gt) / self.input_hw[1] * WING_SCALE  # (B, K, 2) in 64-pixel-crop units
        n = w.sum().clamp_min(1) * 2
        if kind == "wing":
            return (wing(d.abs()) * w[..., None]).sum() / n
        if kind == "l1":
            return (d.abs() * w[..., None]).sum() / n
        return (d.pow(2) * w[..., None]).sum() / n

    def loss(self, raw: KeypointRaw, targets: list[dict]) -> dict[str, torch.Tensor]:
        """targets: per crop {"keypoints" (K, 2) input pixels, "weights" (K,) 0 = not labelled}."""
        gt = torch.stack([t["keypoints"] for t in targets]).float().to(raw.points.device)  # (B, K, 2)
        w = torch.stack([t["weights"] for t in targets]).float().to(raw.points.device)  # (B, K)
        if gt.shape[1:] != raw.points.shape[1:]:
            raise ShapeError(f"targets have {gt.shape[1]} keypoints, the model {raw.points.shape[1]}")
        own = getattr(self.head["main"], "loss", None)  # a head kind with its own targets (MoveNet)
        if own is not None and raw.coarse is None:
            return own(raw, gt, w, self.hcfg, self.input_hw)
        out: dict[str, torch.Tensor] = {}
        if raw.heatmaps is not None:
            hm = raw.heatmaps.float()
            stride = self.input_hw[1] / hm.shape[-1]
            tgt = gaussian_heatmaps(gt, w, tuple(hm.shape[-2:]), stride, float(self.hcfg["sigma"]))
            # per labelled keypoint: summed squared error over its map
            main = ((hm - tgt).pow(2).sum((2, 3)) * (w > 0)).sum() / (w > 0).sum().clamp_min(1)
        else:
            main = self._coord_loss(raw.coarse if raw.coarse is not None else raw.points, gt, w, self.hcfg["loss"])
        out["main"] = main.detach()
        total = main
        if raw.coarse is not None:
            ref = self._coord_loss(raw.points, gt, w, "l1" if self.hcfg["loss"] == "mse" else self.hcfg["loss"])
            out["refine"] = ref.detach()
            total = total + ref
        out["loss"] = total
        return out

    # inference ----------------------------------------------------------------------
    def preprocessor(self, boxes=None) -> TopDown:
        return TopDown.from_config(self.config["preprocessing"], boxes)

    def to_image(self, raw: KeypointRaw, metas: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image: (points (N, K, 2) original pixels, scores (N, K))."""
        pts = raw.points.float().cpu().numpy() if raw is not None else np.zeros((0, 0, 2))
        sc = raw.scores.float().cpu().numpy() if raw is not None else np.zeros((0, 0))
        out, i = [], 0
        k = len(self.schema)
        for m in metas:
            n = len(m["inv"])
            p = np.stack([apply_affine(pts[i + j], m["inv"][j]) for j in range(n)]) if n else np.zeros((0, k, 2))
            out.append((p, sc[i : i + n] if n else np.zeros((0, k))))
            i += n
        return out

    def postprocess(self, raw: KeypointRaw | None, metas: list[dict], **_) -> list[Keypoints]:
        """Config ``instance_classes``: names of the head's per-instance classes (``raw.classes``);
        ``box_from_points``: each instance's box is its points' (not its crop's);
        ``min_presence``: instances whose mean point score is lower are dropped (a hand model's
        presence: the crop holds no hand)."""
        out = [Keypoints(p, s, m["boxes"], m["box_scores"], list(self.schema.keypoints), self.schema.skeleton,
                         self.instance)
               for (p, s), m in zip(self.to_image(raw, metas), metas)]
        names = self.config.get("instance_classes")
        if names and raw is not None and getattr(raw, "classes", None) is not None:
            probs, i = raw.classes.float().cpu().numpy(), 0
            for kp in out:
                pr = probs[i : i + len(kp)]
                kp.classes, kp.class_scores = np.asarray(names)[pr.argmax(1)], pr.max(1).astype(np.float64)
                i += len(kp)
        if self.config.get("box_from_points"):
            for kp in out:
                kp.boxes = np.array([box_from_points(p) for p in kp.points]).reshape(-1, 4)
        if self.config.get("min_presence"):
            out = [kp.take(kp.scores.mean(1) >= self.config["min_presence"]) if len(kp) else kp for kp in out]
        return out

    def uncertainty(self, raw: KeypointRaw, metas=None, kind: str = "confidence") -> torch.Tensor:
        """(B,) per crop: 1 - mean heatmap peak confidence. Regression heads have no
        confidence: use ``mc_variance`` (MC dropout) instead."""
        if self.hcfg["kind"] == "regression":
            raise ConfigError("a regression keypoint head has no confidence; use the 'variance' strategy "
                              "(MC dropout)")
        return 1 - raw.scores.float().mean(1)

    @torch.no_grad()
    def mc_variance(self, x: torch.Tensor, passes: int | None = None) -> torch.Tensor:
        """(B,) predictive variance of the points over ``passes`` (config ``mc_passes``) MC
        dropout passes of the head, in (fraction of crop width)^2, averaged over K x 2.
        The backbone runs once; only the head's dropout is stochastic."""
        feats = self.forward_features(x)
        runs = mc_dropout(self.head["main"].dropout, int(passes or self.hcfg["mc_passes"]),
                          lambda: self.forward_head(feats, tuple(x.shape[-2:])).points.float() / x.shape[-1])
        return variance(runs)  # runs: (T, B, K, 2)

    def predict(self, inputs, batch_size: int = 16, precision: str = "fp32", boxes=None,
                flip_test: bool = False) -> list[Keypoints]:
        """inputs: paths or RGB arrays. ``boxes``: a list with an (N, 4) xyxy array per input,
        a box source (see cvapps.tasks.keypoints.topdown), or None for the task's default
        (landmarks: OpenCV's Haar face cascade; pose: the whole image)."""
        n = 1 if isinstance(inputs, (str, np.ndarray)) or hasattr(inputs, "__fspath__") else len(inputs)
        if isinstance(boxes, (list, tuple)):
            if len(boxes) != n:
                raise ConfigError(f"{len(boxes)} box arrays for {n} inputs")
            boxes = FixedBoxes(boxes)
        return super().predict(inputs, batch_size, precision, pre=self.preprocessor(boxes), flip_test=flip_test)
