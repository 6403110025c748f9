"""ClassPrediction and logits -> predictions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ... import draw
from ..base import Prediction
from .loss import expected_value


@dataclass
class ClassPrediction(Prediction):
    """scores: (C,) float32 probabilities (softmax, or per-label sigmoid for multilabel);
    topk: [(index, label, score)] best first; value: regression / binned estimate or None."""

    draw_order = 2

    scores: np.ndarray
    topk: list[tuple[int, str, float]] = field(default_factory=list)
    value: float | None = None
    multilabel: bool = False  # scores are independent per label (sigmoid)

    @property
    def label(self) -> str | None:
        return self.topk[0][1] if self.topk else None

    def summary(self) -> str:
        if self.value is not None:
            return f"{self.value:.4g}"
        return f"{self.topk[0][1]}\t{self.topk[0][2]:.3f}" if self.topk else ""

    def agreement(self, other: "ClassPrediction", margin: float = 0.1) -> tuple[int, int]:
        """The top-1 answer where this one is decided — its score beats the runner-up's by
        ``margin`` (a near-tie flips between CPUs' roundings in fp32 too; it is not compared).
        A regression value: within 1% of its size."""
        if self.value is not None:
            return int(abs(self.value - other.value) <= 0.01 * max(1.0, abs(self.value))), 1
        top2 = np.sort(self.scores.ravel())[-2:]
        if len(top2) == 2 and top2[1] - top2[0] < margin:
            return 0, 0
        return int(int(np.argmax(self.scores)) == int(np.argmax(other.scores))), 1

    def to_labels(self) -> dict[str, list]:
        """The top-1 class (multilabel: every label scored 0.5 or more); a value has no class."""
        if self.value is not None:
            return {}
        if self.multilabel:
            return {"choices": [lab for _, lab, s in self.topk if s >= 0.5]}
        return {"choices": [self.topk[0][1]]} if self.topk else {}

    def to_dict(self) -> list[dict]:
        if self.value is not None:
            return [{"value": float(self.value)}]
        return [{"index": int(i), "label": lab, "score": round(float(s), 6)} for i, lab, s in self.topk]

    def draw(self, image: np.ndarray) -> np.ndarray:
        """image: RGB uint8 (H, W, 3) -> copy with the top-k labels in a box top-left."""
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
