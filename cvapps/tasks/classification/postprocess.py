"""ClassPrediction and logits -> predictions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ... import draw
from ...data.labels import Box
from ...progress import count
from ...tracking import Trackable
from ..base import Prediction
from ..detection.postprocess import Detections
from .loss import expected_value


@dataclass
class ClassPrediction(Prediction):
    """scores: (C,) float32 probabilities (softmax, or per-label sigmoid for multilabel);
    topk: [(index, label, score)] best first; value: regression / binned estimate or None;
    vector: (D,) float32 descriptor of an embedding model (its length as the model gives it)."""

    draw_order = 2

    scores: np.ndarray
    topk: list[tuple[int, str, float]] = field(default_factory=list)
    value: float | None = None
    multilabel: bool = False  # scores are independent per label (sigmoid)
    vector: np.ndarray | None = None

    @property
    def label(self) -> str | None:
        return self.topk[0][1] if self.topk else None

    def summary(self) -> str:
        if self.vector is not None:
            return f"{self.topk[0][1]} ({self.topk[0][2]:.2f})" if self.topk else f"{len(self.vector)}-d descriptor"
        if self.value is not None:
            return f"{self.value:.4g}"
        return f"{self.topk[0][1]}\t{self.topk[0][2]:.3f}" if self.topk else ""

    def agreement(self, other: "ClassPrediction", margin: float = 0.1) -> tuple[int, int]:
        """The top-1 answer where this one is decided — its score beats the runner-up's by
        ``margin`` (a near-tie flips between CPUs' roundings in fp32 too; it is not compared).
        A regression value: within 1% of its size; a descriptor: cosine similarity >= 0.99."""
        if self.vector is not None:
            a, b = self.vector, other.vector
            return int(float(a @ b) >= 0.99 * float(np.linalg.norm(a) * np.linalg.norm(b))), 1
        if self.value is not None:
            return int(abs(self.value - other.value) <= 0.01 * max(1.0, abs(self.value))), 1
        top2 = np.sort(self.scores.ravel())[-2:]
        if len(top2) == 2 and top2[1] - top2[0] < margin:
            return 0, 0
        return int(int(np.argmax(self.scores)) == int(np.argmax(other.scores))), 1

    def to_labels(self) -> dict[str, list]:
        """The top-1 class (multilabel: every label scored 0.5 or more); a value has no class."""
        if self.value is not None or self.vector is not None:
            return {}
        if self.multilabel:
            return {"choices": [lab for _, lab, s in self.topk if s >= 0.5]}
        return {"choices": [self.topk[0][1]]} if self.topk else {}

    def to_dict(self) -> list[dict]:
        if self.vector is not None:  # with topk: identified against a gallery, (person, distance) nearest first
            near = [{"label": lab, "distance": round(d, 4)} for _, lab, d in self.topk]
            return near + [{"descriptor": [round(float(v), 6) for v in self.vector]}]
        if self.value is not None:
            return [{"value": float(self.value)}]
        return [{"index": int(i), "label": lab, "score": round(float(s), 6)} for i, lab, s in self.topk]

    def draw(self, image: np.ndarray) -> np.ndarray:
        """image: RGB uint8 (H, W, 3) -> copy with the top-k labels in a box top-left."""
        if self.vector is not None:
            return image.copy()
        lines = [f"{self.value:.3f}"] if self.value is not None else [f"{lab} {s:.2f}" for _, lab, s in self.topk]
        size = draw.text_size(image.shape[:2])
        return draw.labels(image, [(t, 0, i * int(size * 1.4), (0, 0, 0)) for i, t in enumerate(lines)], size,
                           fg=(255, 255, 255), above=False)

    def resized(self, sx: float, sy: float) -> "ClassPrediction":
        return self


def postprocess(logits: torch.Tensor, head: dict, labels: list[str], top_k: int = 5) -> list[ClassPrediction]:
    """logits: (B, C) -> B predictions."""
    kind = head.get("kind", "multiclass")
    logits = logits.float().cpu()
    if kind == "embedding":
        return [ClassPrediction(scores=np.zeros(0, np.float32), vector=row.numpy()) for row in logits]
    if kind == "regression":
        return [ClassPrediction(scores=row.numpy(), value=float(row[0])) for row in logits]
    if kind == "binned":
        values = expected_value(logits, head["bins"])
        return [ClassPrediction(scores=p.numpy(), value=float(v)) for p, v in zip(logits.softmax(-1), values)]
    probs = logits.sigmoid() if kind == "multilabel" else logits.softmax(-1)
    k = min(top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    out = []
    for p, vals, idx in zip(probs, top.values, top.indices):
        names = [labels[i] if i < len(labels) else str(i) for i in idx.tolist()]
        out.append(ClassPrediction(scores=p.numpy(), topk=list(zip(idx.tolist(), names, vals.tolist())),
                                   multilabel=kind == "multilabel"))
    return out


@dataclass
class InstanceClasses(Detections):
    """Each instance found in an image (a face, a person, a given box) with its own
    classification: ``classes[i]`` (a ClassPrediction: classes, a value or a descriptor) for
    ``boxes[i]`` (N, 4) xyxy original pixels, ``scores[i]`` the box's score. ``labels[i]``:
    the top-1 class index (-1 for a value or a descriptor); ``instance``: what the boxes are."""

    classes: list[ClassPrediction] = field(default_factory=list)
    instance: str = "box"

    def _tag(self, i: int) -> str:
        c = self.classes[i]  # classes or a named descriptor: its best; a value: the value
        if c.value is not None:
            return f"{self.names[0] if self.names else 'value'} {c.value:.3g}"
        return f"{c.topk[0][1]} {c.topk[0][2]:.2f}" if c.topk else self.instance

    def summary(self) -> str:
        tags = ", ".join(self._tag(i) for i in range(min(len(self), 5)))
        return count(len(self), self.instance) + (f": {tags}" if tags else "")

    def agreement(self, other: "InstanceClasses", margin: float = 0.1) -> tuple[int, int]:
        """Per instance (both sides cut the same boxes), the classification's agreement."""
        pairs = [a.agreement(b) for a, b in zip(self.classes, other.classes)]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)

    def to_labels(self) -> dict[str, list]:
        """Each box, labelled with its top-1 class (with no class: the instance's name)."""
        return {"boxes": [Box(c.label or self.instance, b.astype(np.float64), float(s))
                          for b, s, c in zip(self.boxes, self.scores, self.classes)]}

    def _fields(self, i: int) -> dict:
        c = self.classes[i]
        return {"instance": self.instance, "label": c.label, "classes": c.to_dict()}

    def track_boxes(self) -> Trackable:
        """One class (an instance's class may change between frames; its identity does not);
        descriptors, when the model gives them, are the appearance cue."""
        vecs = [c.vector for c in self.classes]
        feats = None
        if vecs and all(v is not None for v in vecs):
            v = np.stack(vecs).astype(np.float32)
            feats = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
        return Trackable(self.boxes, self.scores, np.zeros(len(self), np.int64), [self.instance], feats)

    def with_tracks(self, keep: np.ndarray, ids: np.ndarray, smooth=None) -> "InstanceClasses":
        return replace(super().with_tracks(keep, ids, smooth), classes=[self.classes[i] for i in keep])


def by_instance(preds: list[ClassPrediction], metas: list[dict], labels: list[str], instance: str) -> list:
    """Per-crop predictions -> one InstanceClasses per image (metas: a top-down preprocessor's,
    with each image's "boxes" and "box_scores")."""
    out, i = [], 0
    for m in metas:
        n = len(m["boxes"])
        mine = preds[i : i + n]
        i += n
        top = np.array([p.topk[0][0] if p.topk else -1 for p in mine], np.int64)
        out.append(InstanceClasses(np.asarray(m["boxes"], np.float32).reshape(-1, 4),
                                   np.asarray(m["box_scores"], np.float32), top, list(labels), classes=mine,
                                   instance=instance))
    return out
