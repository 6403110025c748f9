"""Two-stage option: torchvision's Faster R-CNN parts (FPN, RPN, RoI heads) on a cvapps
backbone. Same task ("detect"), model-file format and Detections as the SSD head; chosen
with head kind "fasterrcnn". NMS and score filtering happen inside torchvision's RoI heads."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign, batched_nms, clip_boxes_to_image, remove_small_boxes
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ...backbones import Backbone
from ...errors import ConfigError
from .model import DetectionModel
from .postprocess import MIN_SIDE, Detections

RCNN_DEFAULTS = {"kind": "fasterrcnn", "fpn_channels": 128, "rpn_pre_nms": 1000, "rpn_post_nms": 500,
                 "conf": 0.25, "iou": 0.5, "max_det": 100, "uncertainty_topk": 10}


@dataclass
class RCNNRaw:
    """detections: per image {"boxes" (N, 4) xyxy input pixels, "scores" (N,), "labels" (N,)
    with 1..K}; losses: the RPN + RoI losses when computed with targets, else empty."""

    detections: list[dict]
    losses: dict


class RCNNHead(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, h: dict):
        super().__init__()
        levels = [i for i, f in enumerate(backbone.feature_info) if f.stride >= 4]
        if len(levels) < 4:
            raise ConfigError(f"fasterrcnn needs features at strides 4..32, {backbone.name} has "
                              f"{[f.stride for f in backbone.feature_info]}")
        self.levels = levels[-4:]
        ch = int(h["fpn_channels"])
        self.fpn = FeaturePyramidNetwork([backbone.feature_info[i].channels for i in self.levels], ch,
                                         extra_blocks=LastLevelMaxPool())
        names = ["0", "1", "2", "3", "pool"]
        anchors = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
        n_pre, n_post = int(h["rpn_pre_nms"]), int(h["rpn_post_nms"])
        self.rpn = RegionProposalNetwork(anchors, RPNHead(ch, 3), 0.7, 0.3, 256, 0.5,
                                         {"training": 2 * n_pre, "testing": n_pre},
                                         {"training": 2 * n_post, "testing": n_post}, 0.7)
        self.roi_heads = RoIHeads(MultiScaleRoIAlign(names[:4], 7, 2), TwoMLPHead(ch * 49, 1024),
                                  FastRCNNPredictor(1024, num_classes + 1), 0.5, 0.5, 512, 0.25, None,
                                  0.01, float(h["iou"]), int(h["max_det"]))

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


class FasterRCNNModel(DetectionModel):
    has_eval_loss = False  # torchvision computes its losses inside forward, given targets

    @classmethod
    def build_head(cls, config: dict, backbone: Backbone):
        h = {**RCNN_DEFAULTS, **config["head"]}
        unknown = set(h) - set(RCNN_DEFAULTS) - {"num_classes"}
        if unknown:
            raise ConfigError(f"unknown fasterrcnn head options {sorted(unknown)}", hint=f"known: {sorted(RCNN_DEFAULTS)}")
        return RCNNHead(backbone, int(h["num_classes"]), h)

    def __init__(self, config, backbone, head):
        config = {**config, "head": {**RCNN_DEFAULTS, **config["head"]}}
        super(DetectionModel, self).__init__(config, backbone, head)

    def forward(self, x: torch.Tensor) -> RCNNRaw:
        return self.head(self.forward_features(x), x)

    def forward_from_features(self, feats, x, pools=None) -> RCNNRaw:
        return self.head(feats, x)

    def training_step(self, x, targets):
        raw = self.head(self.forward_features(x), x, targets)
        return {"loss": sum(raw.losses.values()), **{k: v.detach() for k, v in raw.losses.items()}}

    def loss(self, raw, targets):
        raise ConfigError("fasterrcnn losses need the targets during forward; use training_step")

    def postprocess(self, raw: RCNNRaw, metas: list[dict], conf=None, iou=None, max_det=None, classes=None):
        h = self.hcfg
        conf = h["conf"] if conf is None else conf
        out = []
        for d, meta in zip(raw.detections, metas):
            keep = d["scores"] > conf
            if classes is not None:
                keep &= torch.isin(d["labels"] - 1, torch.as_tensor(classes, device=d["labels"].device))
            b, s, lab = d["boxes"][keep], d["scores"][keep], d["labels"][keep] - 1
            if iou is not None:
                k = batched_nms(b, s, lab, iou)
                b, s, lab = b[k], s[k], lab[k]
            n = h["max_det"] if max_det is None else max_det
            b, s, lab = b[:n], s[:n], lab[:n]
            b = clip_boxes_to_image(b / meta.get("scale", 1.0), (meta["height"], meta["width"]))
            keep = remove_small_boxes(b, MIN_SIDE)
            b, s, lab = b[keep], s[keep], lab[keep]
            out.append(Detections(b.cpu().numpy().astype(np.float32), s.cpu().numpy().astype(np.float32),
                                  lab.cpu().numpy().astype(np.int64), self.labels, self.config.get("category_ids") or []))
        return out

    def uncertainty(self, raw: RCNNRaw, kind: str | None = None) -> torch.Tensor:
        """(B,) mean of 1 - score over the top-k detections (missing ones count as 1); torchvision's
        RoI heads keep only the winning class score, so ``kind`` has no entropy variant here."""
        k = int(self.hcfg["uncertainty_topk"])
        vals = []
        for d in raw.detections:
            s = torch.ones(k, device=d["scores"].device)
            top = d["scores"][:k]
            s[: len(top)] = 1 - top
            vals.append(s.mean())
        return torch.stack(vals)
