"""The classification TaskModel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...backbones import Backbone
from ...data.transforms import EvalTransform
from ...errors import ConfigError
from ..base import TaskModel, register_task
from ..keypoints.topdown import TopDown, dlib_boxes
from .head import ClassificationHead, ClassifyHeadOptions
from .loss import classification_loss, keep_classes_loss
from .metrics import classification_metrics, primary_metric
from .postprocess import by_instance, postprocess
from .spec import ClassificationSpec


class InstanceCrops(TopDown):
    """Per image, a square crop of each instance's box (its longer side x the config's
    ``margin``, default 1.1; rotated upright with ``align: roll`` when the box source knows
    the roll, e.g. faces), resized to the classifier's input. ``box: dlib`` (face descriptor
    models): the box is the dlib face-chip square of the face detector's five points."""

    def __init__(self, *args, dlib: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.dlib = dlib

    @classmethod
    def from_config(cls, pre: dict, boxes=None) -> "InstanceCrops":
        return cls(pre["mean"], pre["std"], pre["input_size"], pre.get("margin", 1.1), boxes,
                   pre.get("align") == "roll", dlib=pre.get("box") == "dlib")

    def prepare(self, image, source: str = "", frame=None):
        found = self.boxes(image, source, frame)
        if self.dlib and len(found) > 3 and found[3].shape[1:] == (5, 2):
            crops, meta = self.prepare_boxes(image, dlib_boxes(found[3]), found[1], found[2])
            meta["boxes"] = np.asarray(found[0], np.float64).reshape(-1, 4)  # reported: the detector's boxes
            return crops, meta
        return self.prepare_boxes(image, *found[:3])


@dataclass
class ClassRaw:
    """logits: (B, C); embedding: (B, D) pooled last backbone feature."""

    logits: torch.Tensor
    embedding: torch.Tensor


@register_task("classify", ClassificationSpec)
class ClassificationModel(TaskModel):
    supports_feature_cache = True

    @classmethod
    def head_options(cls, kind: str | None) -> type[ClassifyHeadOptions]:
        return ClassifyHeadOptions

    @classmethod
    def build_head(cls, config: dict, backbone: Backbone):
        h = ClassifyHeadOptions.parse(config["head"])
        return ClassificationHead(backbone.out_channels, h.num_outputs, h.hidden, h.activation, h.dropout)

    @classmethod
    def check_outputs(cls, config: dict) -> None:
        h, labels = config["head"], config.get("labels") or []
        if h.get("kind", "multiclass") in ("multiclass", "multilabel") and len(labels) != h["num_outputs"]:
            raise ConfigError(f"{len(labels)} labels for a head of {h['num_outputs']} outputs",
                              hint="the label list names each output of the head, in order")

    @classmethod
    def with_input_size(cls, config: dict, size) -> dict:
        """Classifiers crop a square: ``size`` S (or [S, S]); the resize keeps its ratio to the crop."""
        s = int(size[0] if isinstance(size, (list, tuple)) else size)
        pre = dict(config["preprocessing"])
        pre["resize_size"] = round(s * pre["resize_size"] / pre["input_size"])
        pre["input_size"] = s
        return {**config, "preprocessing": pre}

    @property
    def kind(self) -> str:
        return self.config["head"].get("kind", "multiclass")

    def forward_head(self, feats: list[torch.Tensor]) -> ClassRaw:
        logits, emb = self.head(feats[-1])
        return ClassRaw(logits, emb)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D): an embedding model's descriptor, else the pooled feature."""
        if self.kind == "embedding":
            return self(x).logits.float()
        return super().embed(x)

    def loss(self, raw: ClassRaw, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.kind == "embedding":
            raise ConfigError("an embedding model (a descriptor such as face identity) is not trained with class "
                              "labels", hint="enrol examples instead (cvapps faces enroll); or train a classifier "
                                             "on it with --weights")
        return classification_loss(raw.logits, targets, self.config["head"])

    def adapt_head(self, state: dict[str, torch.Tensor], source_labels: list[str] | None) -> dict:
        """Pretrained head tensors: those of equal shape, and the output rows of a classifier
        with other classes taken by name (e.g. ImageNet's 1000 + new classes)."""
        own = self.state_dict()
        out = super().adapt_head(state, source_labels)
        if not source_labels:
            return out
        src = {n.lower(): i for i, n in enumerate(source_labels)}
        same_place = lambda i, n: i < len(source_labels) and source_labels[i].lower() == n.lower()  # noqa: E731
        rows = [(i, i if same_place(i, n) else src[n.lower()]) for i, n in enumerate(self.labels)
                if n.lower() in src]  # in place first: ImageNet repeats a few names (crane, maillot)
        for key, v in state.items():
            if key in own and key not in out and v.shape[0] == len(source_labels) and \
                    own[key].shape[0] == len(self.labels) and v.shape[1:] == own[key].shape[1:] and rows:
                new = own[key].clone()
                mine, theirs = zip(*rows)
                new[list(mine)] = v[list(theirs)]
                out[key] = new
        return out

    def keep_classes(self, teacher: "ClassificationModel", columns: list[int]) -> None:
        """Train with the frozen ``teacher`` (the pretrained classifier whose classes are this
        model's ``columns``) supervising every batch: keep_classes_loss."""
        if self.kind != "multiclass" or teacher.config["head"].get("kind", "multiclass") != "multiclass":
            raise ConfigError("--keep-classes is for multiclass classifiers")
        self.__dict__["_lwf"] = (teacher.eval().requires_grad_(False), torch.as_tensor(columns, dtype=torch.long))

    def training_step(self, x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        lwf = self.__dict__.get("_lwf")
        if lwf is None:
            return super().training_step(x, targets)
        teacher, columns = lwf
        with torch.no_grad():
            old = teacher.to(x.device)(x).logits
        return keep_classes_loss(self(x).logits, old, targets, columns.to(x.device))

    def postprocess(self, raw: ClassRaw | None, metas: list[dict], top_k: int = 5,
                    instance: str | None = None) -> list:
        """One ClassPrediction per image; with ``instance`` (crops of the instances an
        InstanceCrops preprocessor found) one InstanceClasses per image."""
        preds = postprocess(raw.logits, self.config["head"], self.labels, top_k=top_k) if raw is not None else []
        return by_instance(preds, metas, self.labels, instance) if instance else preds

    def preprocessor(self, boxes=None) -> "EvalTransform | InstanceCrops":
        """The whole image (resized, centre-cropped); with a box source (see
        cvapps.tasks.keypoints.topdown) each instance's crop instead."""
        if boxes is not None:
            return InstanceCrops.from_config(self.config["preprocessing"], boxes)
        return EvalTransform.from_config(self.config["preprocessing"])

    # training hooks -------------------------------------------------------------------
    def make_evaluator(self, ds) -> "_LogitsEvaluator":
        return _LogitsEvaluator(self)

    def primary_metric(self) -> tuple[str, str]:
        return primary_metric(self.kind)

    def cache_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """What a frozen backbone contributes: the head pools first, so (B, C, 1, 1)."""
        return feats[-1].mean(dim=(2, 3), keepdim=True)

    def forward_cached(self, cached: torch.Tensor) -> ClassRaw:
        return self.forward_head([cached])

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict:
        return classification_metrics(logits, targets, self.config["head"], self.labels)

    def uncertainty(self, raw: ClassRaw) -> torch.Tensor:
        """(B,) predictive entropy in nats: softmax for multiclass/binned, summed
        per-label binary entropy for multilabel. Regression has no entropy."""
        if self.kind in ("regression", "embedding"):
            raise ConfigError(f"{self.kind} models have no class entropy", hint="use the MC-dropout variance strategy")
        if self.kind == "multilabel":
            p = raw.logits.sigmoid().clamp(1e-7, 1 - 1e-7)
            return -(p * p.log() + (1 - p) * (1 - p).log()).sum(1)
        logp = raw.logits.log_softmax(1)
        return -(logp.exp() * logp).sum(1)


class _LogitsEvaluator:
    def __init__(self, model: ClassificationModel):
        self.model, self.logits, self.targets = model, [], []

    def add(self, raw: ClassRaw, targets: torch.Tensor) -> None:
        self.logits.append(raw.logits.detach().float().cpu())
        self.targets.append(targets)

    def compute(self) -> dict:
        return self.model.metrics(torch.cat(self.logits), torch.cat(self.targets))
