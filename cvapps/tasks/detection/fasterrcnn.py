"""Two-stage head kind: torchvision's Faster R-CNN parts (FPN, RPN, RoI heads) on a cvapps
backbone. Same task ("detect"), model-file format and Detections as the SSD head; chosen
with head kind "fasterrcnn". NMS and score filtering happen inside torchvision's RoI heads."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign, batched_nms
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ...backbones import Backbone
from ...errors import ConfigError
from ...options import Options, opt
from .head import DetectionHead, register_head
from .postprocess import Detections, to_original


@dataclass
class RCNNOptions(Options):
    """Two-stage head: FPN width, RPN proposals kept before / after NMS, score threshold,
    NMS IoU of the RoI heads, detections per image."""

    what: ClassVar[str] = "fasterrcnn head"
    kind: str = "fasterrcnn"
    num_classes: int = opt(1, low=1)
    fpn_channels: int = opt(128, low=8)
    rpn_pre_nms: int = opt(1000, low=1)
    rpn_post_nms: int = opt(500, low=1)
    conf: float = opt(0.25, low=0.0, high=1.0)
    iou: float = opt(0.5, low=0.0, high=1.0)
    max_det: int = opt(100, low=1)
    uncertainty_topk: int = opt(10, low=1)


@dataclass
class RCNNRaw:
    """detections: per image {"boxes" (N, 4) xyxy input pixels, "scores" (N,), "labels" (N,)
    with 1..K}; losses: the RPN + RoI losses when computed with targets, else empty."""

    detections: list[dict]
    losses: dict


@register_head("fasterrcnn")
class RCNNHead(DetectionHead):
    Options = RCNNOptions
    has_eval_loss = False  # torchvision computes its losses inside forward, given targets
    export_blocker = "Faster R-CNN cannot be exported: its proposal stage is data-dependent Python"

    def __init__(self, backbone: Backbone, h: RCNNOptions):
        super().__init__()
        self.h = h
        levels = [i for i, f in enumerate(backbone.feature_info) if f.stride >= 4]
        if len(levels) < 4:
            raise ConfigError(f"fasterrcnn needs features at strides 4..32, {backbone.name} has "
                              f"{[f.stride for f in backbone.feature_info]}")
        self.levels = levels[-4:]
        ch = h.fpn_channels
        self.fpn = FeaturePyramidNetwork([backbone.feature_info[i].channels for i in self.levels], ch,
                                         extra_blocks=LastLevelMaxPool())
        names = ["0", "1", "2", "3", "pool"]
        anchors = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
        n_pre, n_post = h.rpn_pre_nms, h.rpn_post_nms
        self.rpn = RegionProposalNetwork(anchors, RPNHead(ch, 3), 0.7, 0.3, 256, 0.5,
                                         {"training": 2 * n_pre, "testing": n_pre},
                                         {"training": 2 * n_post, "testing": n_post}, 0.7)
        self.roi_heads = RoIHeads(MultiScaleRoIAlign(names[:4], 7, 2), TwoMLPHead(ch * 49, 1024),
                                  FastRCNNPredictor(1024, h.num_classes + 1), 0.5, 0.5, 512, 0.25, None,
                                  0.01, h.iou, h.max_det)

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor, targets=None) -> RCNNRaw:
        """feats: backbone features of x (B, 3, S, S); boxes come out in x's pixels."""
        fmap = self.fpn(OrderedDict((str(k), feats[i]) for k, i in enumerate(self.levels)))
        images = ImageList(x, [tuple(x.shape[-2:])] * x.shape[0])
        if targets is not None:  # torchvision's labels: 1..K, 0 = background; crowd boxes dropped
            targets = [{"boxes": t["boxes"][~t["iscrowd"].bool()],
                        "labels": t["labels"][~t["iscrowd"].bool()] + 1} for t in targets]
        proposals, rpn_losses = self.rpn(images, fmap, targets)
        dets, roi_losses = self.roi_heads(fmap, proposals, images.image_sizes, targets)
        return RCNNRaw(dets, {**rpn_losses, **roi_losses})

    def training_step(self, feats, x, targets):
        raw = self(feats, x, targets)
        return {"loss": sum(raw.losses.values()), **{k: v.detach() for k, v in raw.losses.items()}}

    def loss(self, raw, targets):
        raise ConfigError("fasterrcnn losses need the targets during forward; use training_step")

    def postprocess(self, raw: RCNNRaw, metas: list[dict], input_hw, names, category_ids, conf=None, iou=None,
                    max_det=None, classes=None) -> list[Detections]:
        h = self.h
        conf = h.conf if conf is None else conf
        out = []
        for d, meta in zip(raw.detections, metas):
            keep = d["scores"] > conf
            if classes is not None:
                keep &= torch.isin(d["labels"] - 1, torch.as_tensor(classes, device=d["labels"].device))
            b, s, lab = d["boxes"][keep], d["scores"][keep], d["labels"][keep] - 1
            if iou is not None:
                k = batched_nms(b, s, lab, iou)
                b, s, lab = b[k], s[k], lab[k]
            n = h.max_det if max_det is None else max_det
            out.append(to_original(b[:n], s[:n], lab[:n], meta, names, category_ids))
        return out

    def uncertainty(self, raw: RCNNRaw, kind: str | None = None) -> torch.Tensor:
        """(B,) mean of 1 - score over the top-k detections (missing ones count as 1); torchvision's
        RoI heads keep only the winning class score, so there is no entropy variant here."""
        k = self.h.uncertainty_topk
        vals = []
        for d in raw.detections:
            s = torch.ones(k, device=d["scores"].device)
            top = d["scores"][:k]
            s[: len(top)] = 1 - top
            vals.append(s.mean())
        return torch.stack(vals)
