"""The semantic segmentation TaskModel: FCN-32s/16s/8s on any backbone, SegNet on
backbones with pool indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones import Backbone
from ...data.segmentation import default_colors
from ...data.transforms import Letterbox, meta_scale
from ...errors import ConfigError
from ...options import Options, opt
from ..base import TaskModel, register_task
from .fcn import FCNHead
from .metrics import confusion, seg_metrics
from .postprocess import SegMask
from .segnet import SegNetDecoder
from .selfie import SelfieDecoder
from .spec import SegmentationSpec


def pixel_kl(logits: torch.Tensor, soft: torch.Tensor) -> dict[str, torch.Tensor]:
    """logits (B, C, H, W), soft (B, C, H, W) a teacher's probabilities (all 0 where no image
    is: letterbox padding) -> {"loss": mean over image pixels of sum_c q log(q / p), "kl"}."""
    logp = logits.float().log_softmax(1)
    q = soft.float()
    kl = (q * (q.clamp_min(1e-8).log() - logp)).sum(1)  # (B, H, W)
    valid = q.sum(1) > 0.5
    loss = (kl * valid).sum() / valid.sum().clamp_min(1)
    return {"loss": loss, "kl": loss.detach()}


@dataclass
class SegHeadOptions(Options):
    """``kind``: fcn32s | fcn16s | fcn8s (skip fusion; learned or fixed bilinear upsampling),
    segnet (pool-index unpooling) or selfie (MediaPipe's person / background decoder on the
    selfie_encoder backbone); loss: CE with ``ignore_index`` and optional
    ``class_weights``, plus ``dice`` x soft Dice."""

    what: ClassVar[str] = "segmentation head"
    kind: str = opt("fcn8s", choices=("fcn32s", "fcn16s", "fcn8s", "segnet", "selfie"))
    num_classes: int = opt(2, low=1)
    learned_upsampling: bool = True
    ignore_index: int = opt(255, low=0, high=65535)
    class_weights: list | None = None
    dice: float = opt(0.0, low=0.0)
    dropout: float = opt(0.1, low=0.0, high=0.95)

    def validate(self) -> None:
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            raise ConfigError(f"{len(self.class_weights)} class weights for {self.num_classes} classes")


@dataclass
class SegRaw:
    """logits: (B, C, S, S) at the (letterboxed) input size."""

    logits: torch.Tensor


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int], strip_bytes: int = 64 << 20):
    """logits (C, h, w) -> (mask (H, W) uint8 (uint16 beyond 256 classes), max probability
    (H, W) float32) of the bilinearly resized logits (align_corners=False, as
    F.interpolate). Bilinear resizing is separable: the width is resized once (C x h x W),
    then output rows are blended from their two source rows a strip at a time, so memory is
    O(C x h x W + strip) instead of O(C x H x W)."""
    c, h, _ = logits.shape
    H, W = size
    wide = F.interpolate(logits[None], size=(h, W), mode="bilinear", align_corners=False)[0]  # (C, h, W)
    mask = np.empty((H, W), np.uint8 if c <= 256 else np.uint16)
    prob = np.empty((H, W), np.float32)
    rows = max(1, strip_bytes // (4 * c * W))
    for r0 in range(0, H, rows):
        y = torch.arange(r0, min(H, r0 + rows), dtype=torch.float32, device=logits.device)
        src = ((y + 0.5) * (h / H) - 0.5).clamp(min=0)
        y0 = src.floor().long().clamp(max=h - 1)
        y1 = (y0 + 1).clamp(max=h - 1)
        lam = (src - y0.float()).clamp(0, 1)[None, :, None]
        strip = wide[:, y0] * (1 - lam) + wide[:, y1] * lam  # (C, rows, W)
        p, k = strip.softmax(0).max(0)
        mask[r0 : r0 + len(y)] = k.cpu().numpy()
        prob[r0 : r0 + len(y)] = p.cpu().numpy()
    return mask, prob


@register_task("segment", SegmentationSpec)
class SegmentationModel(TaskModel):
    @classmethod
    def head_options(cls, kind: str | None) -> type[SegHeadOptions]:
        return SegHeadOptions

    @classmethod
    def check_outputs(cls, config: dict) -> None:
        labels, n = config.get("labels") or [], config["head"]["num_classes"]
        if len(labels) != n:
            raise ConfigError(f"{len(labels)} labels for a head of {n} classes",
                              hint="the label list names each class of the head, in order")

    @classmethod
    def build_head(cls, config: dict, backbone: Backbone):
        h = SegHeadOptions.parse(config["head"])
        if h.kind == "selfie":
            return SelfieDecoder(backbone.feature_info, h.num_classes)
        if h.kind == "segnet":
            # SegNet-Basic's decoder: 7x7 convs without ReLU (paper); full SegNet: VGG mirror
            basic = backbone.name == "segnet_basic"
            return SegNetDecoder(backbone, h.num_classes, kernel=7 if basic else 3, relu=not basic)
        return FCNHead(backbone, h.num_classes, h.kind, h.learned_upsampling, h.dropout)

    def forward(self, x: torch.Tensor) -> SegRaw:
        """x: (B, 3, H, W) -> logits (B, C, H, W), any H, W (odd sizes included)."""
        if self.hcfg["kind"] == "segnet":
            feats, pools = self.backbone.forward_with_pool_indices(x)
            return self.forward_from_features(feats, x, pools)
        return self.forward_from_features(self.backbone(x), x)

    def forward_from_features(self, feats, x, pools=None) -> SegRaw:
        if self.hcfg["kind"] == "segnet":
            return SegRaw(self.head(feats, pools, x.shape[-2:]))
        return SegRaw(self.head(feats, x.shape[-2:]))

    @property
    def needs_pool_indices(self) -> bool:
        return self.hcfg["kind"] == "segnet"

    def loss(self, raw: SegRaw, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Cross-entropy (+ dice) on the masks; on a teacher's probabilities ("soft",
        distillation) the per-pixel KL(teacher || student) averaged over the image pixels."""
        if all("soft" in t for t in targets):
            return pixel_kl(raw.logits, torch.stack([t["soft"] for t in targets]).to(raw.logits.device))
        gt = torch.stack([t["mask"] for t in targets]).to(raw.logits.device).long()
        h = self.hcfg
        w = torch.tensor(h["class_weights"], dtype=torch.float32, device=gt.device) if h["class_weights"] else None
        ce = F.cross_entropy(raw.logits.float(), gt, weight=w, ignore_index=int(h["ignore_index"]))
        if not bool((gt != h["ignore_index"]).any()):  # nothing labelled (a teacher sure of no pixel): no loss, not NaN
            ce = raw.logits.sum() * 0.0
        out = {"loss": ce, "ce": ce.detach()}
        if h["dice"]:
            valid = (gt != h["ignore_index"]).unsqueeze(1)
            p = raw.logits.float().softmax(1) * valid
            onehot = F.one_hot(gt.clamp(0, p.shape[1] - 1), p.shape[1]).permute(0, 3, 1, 2) * valid
            inter, denom = (p * onehot).sum((0, 2, 3)), (p + onehot).sum((0, 2, 3))
            dice = 1 - ((2 * inter + 1) / (denom + 1)).mean()
            out["loss"] = ce + float(h["dice"]) * dice
            out["dice"] = dice.detach()
        return out

    def preprocessor(self) -> Letterbox:
        return Letterbox.from_config(self.config["preprocessing"])

    def postprocess(self, raw: SegRaw, metas: list[dict], **_) -> list[SegMask]:
        """Crop the letterbox padding, resize logits bilinearly to the original size, argmax
        (in row strips: memory stays bounded for very large images)."""
        out = []
        colors = self.config.get("colors") or default_colors(len(self.labels))
        for logits, meta in zip(raw.logits.float(), metas):
            h, w = meta["height"], meta["width"]
            sx, sy = meta_scale(meta)
            valid = logits[:, : max(1, round(h * sy)), : max(1, round(w * sx))]
            mask, prob = upsample_argmax(valid, (h, w))
            out.append(SegMask(mask, prob, self.labels, colors))
        return out

    def uncertainty(self, raw: SegRaw, metas: list[dict] | None = None, kind: str = "entropy") -> torch.Tensor:
        """(B,) mean pixel entropy ("entropy") or mean (1 - top1 + top2 margin) ("margin") over
        the image area, excluding letterbox padding when ``metas`` are given."""
        p = raw.logits.float().softmax(1)  # (B, C, H, W)
        if kind == "margin":
            top = p.topk(2, dim=1).values
            per_pixel = 1 - (top[:, 0] - top[:, 1])
        else:
            per_pixel = -(p * p.clamp_min(1e-12).log()).sum(1)
        valid = torch.ones_like(per_pixel, dtype=torch.bool)
        for b, meta in enumerate(metas or []):
            sx, sy = meta_scale(meta)
            valid[b] = False
            valid[b, : round(meta["height"] * sy), : round(meta["width"] * sx)] = True
        return (per_pixel * valid).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)

    # training hooks -------------------------------------------------------------------
    def primary_metric(self) -> tuple[str, str]:
        return "mIoU", "max"

    def make_evaluator(self, ds) -> "SegEvaluator":
        return SegEvaluator(self, int(self.hcfg["ignore_index"]))


class SegEvaluator:
    """One confusion matrix over the evaluation set at the network's input resolution
    (letterbox padding carries the ignore label, so it never counts)."""

    def __init__(self, model: SegmentationModel, ignore_index: int):
        self.model, self.ignore = model, ignore_index
        self.cm = np.zeros((len(model.labels),) * 2, np.int64)

    def add(self, raw: SegRaw, targets: list[dict]) -> None:
        pred = raw.logits.argmax(1).cpu().numpy()
        for p, t in zip(pred, targets):
            self.cm += confusion(p, t["mask"].numpy(), len(self.model.labels), self.ignore)

    def compute(self) -> dict:
        return seg_metrics(self.cm, self.model.labels)
