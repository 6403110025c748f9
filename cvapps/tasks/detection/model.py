"""The detection TaskModel: a backbone and a pluggable head kind (``head.kind``: ssd |
fasterrcnn, see head.py / fasterrcnn.py), letterboxed input, COCO metrics."""

from __future__ import annotations

import torch
from torchvision.ops import clip_boxes_to_image

from ...backbones import Backbone
from ...errors import ConfigError
from ...ops import decode_boxes
from ...data.transforms import Letterbox
from ..base import TaskModel, register_task
from . import fasterrcnn, slicing  # noqa: F401  (fasterrcnn registers the two-stage head kind)
from .head import DETECTION_HEADS
from .metrics import coco_metrics, results_from
from .postprocess import Detections, select_in_graph
from .classes import class_mapping
from .spec import DetectionSpec

EVAL_CONF = 0.01  # mAP needs the low-score tail of the ranking


@register_task("detect", DetectionSpec)
class DetectionModel(TaskModel):
    @classmethod
    def head_options(cls, kind: str | None):
        return DETECTION_HEADS.get(kind or "ssd").Options

    @classmethod
    def build_head(cls, config: dict, backbone: Backbone):
        kind = config["head"].get("kind", "ssd")
        return DETECTION_HEADS.get(kind)(backbone, cls.head_options(kind).parse(config["head"]))

    @classmethod
    def check_outputs(cls, config: dict) -> None:
        labels, n = config.get("labels") or [], config["head"].get("num_classes")
        if n is not None and len(labels) != n:
            raise ConfigError(f"{len(labels)} labels for a head of {n} classes",
                              hint="the label list names each class of the head, in order")
        ids = config.get("category_ids")
        if ids is not None and len(ids) != len(labels):
            raise ConfigError(f"{len(ids)} category ids for {len(labels)} labels")

    @property
    def has_eval_loss(self) -> bool:
        return self.head.has_eval_loss

    @property
    def export_blocker(self) -> str | None:
        return self.head.export_blocker

    def forward(self, x: torch.Tensor):
        """x: (B, 3, H, W) normalised -> the head kind's raw output (boxes in x's pixels)."""
        return self.head(self.forward_features(x), x)

    def forward_from_features(self, feats, x, pools=None):
        return self.head(feats, x)

    def keep_classes(self, teacher: "DetectionModel", columns: list[int]) -> None:
        """Learning without forgetting (Li & Hoiem 2016) for a sigmoid (focal) SSD head whose
        first classes are ``teacher``'s: the classes ``columns`` take no loss from the labels
        (an unlabelled person in a photo of cats is not background for them) and learn the
        frozen teacher's scores and boxes on the same augmented batch instead."""
        if self.hcfg.get("kind", "ssd") != "ssd" or self.hcfg.get("cls_loss") != "focal":
            raise ConfigError("--keep-classes needs an SSD head with sigmoid (focal) scores, like "
                              "ssd_mobilenet_v2.coco's", hint="softmax heads make the classes compete")
        if teacher.config["preprocessing"].get("input_size") != self.config["preprocessing"].get("input_size"):
            raise ConfigError("--keep-classes trains at the pretrained detector's input size (its anchors must "
                              "match the teacher's)", hint="leave out --img-size")
        teacher = teacher.eval().requires_grad_(False)
        self.__dict__["_lwf"] = (teacher, torch.as_tensor(columns, dtype=torch.long))  # not a submodule: not saved

    def training_step(self, x: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        lwf = self.__dict__.get("_lwf")
        if lwf is None:
            return self.head.training_step(self.forward_features(x), x, targets)
        teacher, columns = lwf
        with torch.no_grad():
            old = teacher.to(x.device)(x)
        return self.head.lwf_loss(self(x), old, targets, columns.to(x.device))

    def loss(self, raw, targets: list[dict]) -> dict[str, torch.Tensor]:
        return self.head.loss(raw, targets)

    def preprocessor(self) -> Letterbox:
        return Letterbox.from_config(self.config["preprocessing"])

    def postprocess(self, raw, metas: list[dict], **kw) -> list[Detections]:
        """-> one Detections per image in original pixels; ``kw``: conf, iou, max_det, classes
        (label indices or names, a list or a comma-separated string)."""
        classes = kw.get("classes")
        if classes is not None and (isinstance(classes, str) or any(isinstance(c, str) for c in classes)):
            kw = {**kw, "classes": self.spec.class_indices(self, classes)}
        if metas and "passes" in metas[0]:  # sliced inference: each image's passes, then merged
            flat = [m for meta in metas for m in meta["passes"]]
            parts = self.head.postprocess(raw, flat, self.input_hw, self.labels, self.config.get("category_ids") or [],
                                          **kw)
            h, out, i = self.head.h, [], 0
            iou, max_det = (h.iou if kw.get("iou") is None else kw["iou"]), (kw.get("max_det") or h.max_det)
            for meta in metas:
                n = len(meta["passes"])
                out.append(slicing.merge(parts[i : i + n], [m["window"] for m in meta["passes"]], meta["width"],
                                         meta["height"], iou, max_det))
                i += n
            return out
        return self.head.postprocess(raw, metas, self.input_hw, self.labels, self.config.get("category_ids") or [],
                                     **kw)

    def final_detections(self, raw, conf: float | None = None, iou: float | None = None,
                         max_det: int | None = None):
        """The first image's final detections computed in graph-traceable torch (export
        ``--nms``): (boxes (M, 4) xyxy input pixels, clipped; scores (M,); labels (M,) indices
        into ``labels``). Defaults: the head's conf / iou / max_det."""
        if not hasattr(self.head, "probs"):
            raise ConfigError(f"--nms is for SSD-style heads, not {self.config['head']['kind']!r}")
        h = self.head.h
        boxes = clip_boxes_to_image(decode_boxes(raw.deltas[:1].float(), raw.anchors)[0], tuple(self.input_hw))
        return select_in_graph(self.head.probs(raw)[0], boxes, h.conf if conf is None else conf,
                               h.iou if iou is None else iou, h.max_det if max_det is None else max_det)

    def adapt_head(self, state: dict[str, torch.Tensor], source_labels: list[str] | None) -> dict:
        """Equal-shape tensors, plus a pretrained detector's class rows for the classes this
        model shares with it by name (VOC/COCO synonyms included); new classes stay fresh. An
        SSDLite head from a plain-conv SSD head (same anchors): predictors factorised from its."""
        out = super().adapt_head(state, source_labels)
        if source_labels is None or not hasattr(self.head, "class_rows"):
            return out
        mapping, _ = class_mapping(list(self.labels), list(source_labels))
        out.update(self.head.class_rows(state, self.state_dict(), mapping, len(source_labels)))
        out.update(self.head.separable_rows(state, mapping, len(source_labels)))
        return out

    def uncertainty(self, raw, kind: str | None = None) -> torch.Tensor:
        """(B,) per-image uncertainty from the most confident detections (see the head kind)."""
        return self.head.uncertainty(raw, kind)

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
