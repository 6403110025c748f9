"""The single-stage (SSD-style) detection TaskModel."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...backbones import Backbone
from ...errors import ConfigError
from ...ops import default_boxes
from ..base import TaskModel, register_task
from .head import SSDHead
from .loss import detection_loss
from .metrics import coco_metrics, results_from
from .postprocess import Detections, postprocess

HEAD_DEFAULTS = {
    "kind": "ssd", "levels": [8, 16, 32, 64], "anchor_base": 4.0, "anchor_scales": [1.0, 1.4142],
    "aspect_ratios": [0.5, 1.0, 2.0], "cls_loss": "ce", "box_loss": "smooth_l1", "neg_pos_ratio": 3,
    "match_low": 0.4, "match_high": 0.5, "extra_channels": 256, "conf": 0.25, "iou": 0.45, "max_det": 100,
    "uncertainty": "least_confidence", "uncertainty_topk": 10,
}
EVAL_CONF = 0.01  # mAP needs the low-score tail of the ranking


@dataclass
class DetRaw:
    """cls: (B, N, K') logits (K' = K + 1 with background column 0 for "ce", K for "focal");
    deltas: (B, N, 4) encoded boxes; anchors: (N, 4) xyxy input pixels."""

    cls: torch.Tensor
    deltas: torch.Tensor
    anchors: torch.Tensor


@register_task("detect")
class DetectionModel(TaskModel):
    @classmethod
    def from_config(cls, config: dict) -> TaskModel:
        """The "detect" task builds this SSD model or, for head kind "fasterrcnn", the two-stage one."""
        if cls is DetectionModel and config.get("head", {}).get("kind") == "fasterrcnn":
            from .fasterrcnn import FasterRCNNModel

            return FasterRCNNModel.from_config(config)
        return super().from_config(config)

    @classmethod
    def build_head(cls, config: dict, backbone: Backbone):
        head = config["head"]
        unknown = set(head) - set(HEAD_DEFAULTS) - {"num_classes"}
        if unknown:
            raise ConfigError(f"unknown detection head options {sorted(unknown)}",
                              hint=f"known: {sorted(HEAD_DEFAULTS)}")
        h = {**HEAD_DEFAULTS, **head}
        outputs = h["num_classes"] + (1 if h["cls_loss"] == "ce" else 0)
        return SSDHead(backbone, list(h["levels"]), len(h["anchor_scales"]) * len(h["aspect_ratios"]), outputs,
                       int(h["extra_channels"]))

    def __init__(self, config, backbone, head):
        config = {**config, "head": {**HEAD_DEFAULTS, **config["head"]}}
        super().__init__(config, backbone, head)
        self._anchor_cache: dict = {}

    @property
    def hcfg(self) -> dict:
        return self.config["head"]

    def anchors(self, sizes: list[tuple[int, int]], device) -> torch.Tensor:
        key = (tuple(sizes), str(device))
        if key not in self._anchor_cache:
            h = self.hcfg
            self._anchor_cache = {key: default_boxes(sizes, h["levels"], h["anchor_base"], h["anchor_scales"],
                                                     h["aspect_ratios"], device)}
        return self._anchor_cache[key]

    def forward_head(self, feats: list[torch.Tensor]) -> DetRaw:
        cls, deltas, sizes = self.head(feats)
        return DetRaw(cls, deltas, self.anchors(sizes, cls.device))

    def loss(self, raw: DetRaw, targets: list[dict]) -> dict[str, torch.Tensor]:
        return detection_loss(raw.cls, raw.deltas, raw.anchors, targets, self.hcfg)

    def preprocessor(self):
        from ...data.transforms import Letterbox

        return Letterbox.from_config(self.config["preprocessing"])

    def postprocess(self, raw: DetRaw, metas: list[dict], **kw) -> list[Detections]:
        return postprocess(raw.cls, raw.deltas, raw.anchors, metas, self.hcfg,
                           int(self.config["preprocessing"]["input_size"]), self.labels,
                           self.config.get("category_ids") or [], **kw)

    def uncertainty(self, raw: DetRaw, kind: str | None = None) -> torch.Tensor:
        """(B,) score from the ``uncertainty_topk`` most confident anchors: the mean of
        1 - max class probability ("least_confidence") or of the class entropy ("entropy");
        ``kind`` defaults to the head's ``uncertainty`` option."""
        probs = raw.cls.float().softmax(-1) if self.hcfg["cls_loss"] == "ce" else raw.cls.float().sigmoid()
        fg = probs[..., 1:] if self.hcfg["cls_loss"] == "ce" else probs
        conf = fg.max(-1).values  # (B, N)
        top = conf.topk(min(int(self.hcfg["uncertainty_topk"]), conf.shape[1]), dim=1).indices
        if (kind or self.hcfg["uncertainty"]) == "entropy":
            p = probs / probs.sum(-1, keepdim=True)
            ent = -(p * p.clamp_min(1e-12).log()).sum(-1)  # (B, N)
            return ent.gather(1, top).mean(1)
        return (1 - conf.gather(1, top)).mean(1)

    # training hooks -------------------------------------------------------------------
    def primary_metric(self) -> tuple[str, str]:
        return "AP50", "max"

    def make_evaluator(self, ds) -> "DetectionEvaluator":
        return DetectionEvaluator(self, ds.data)


class DetectionEvaluator:
    """Collects detections (original pixels) per image; COCO metrics via pycocotools."""

    def __init__(self, model: TaskModel, data):
        self.model, self.data, self.dets, self.ids = model, data, [], []

    def add(self, raw, targets: list[dict]) -> None:
        metas = [t["meta"] for t in targets]
        self.dets += self.model.postprocess(raw, metas, conf=EVAL_CONF)
        self.ids += [self.data.records[t["index"]].image_id for t in targets]

    def results(self) -> list[dict]:
        return results_from(self.dets, self.ids)

    def compute(self) -> dict:
        return coco_metrics(self.data.to_coco(), self.results())
