"""Classification metrics from accumulated logits/targets."""

from __future__ import annotations

import numpy as np
import torch

from .loss import expected_value


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) predicted and true indices -> (C, C) counts, rows = true class."""
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated AP of one label: mean precision at the rank of each positive."""
    if positives.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(bool)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, head: dict, labels: list[str]) -> dict:
    """logits (N, C), targets as in loss.py -> JSON-safe metrics dict."""
    kind = head.get("kind", "multiclass")
    n = int(logits.shape[0])
    if kind in ("regression", "binned"):
        pred = expected_value(logits, head["bins"]) if kind == "binned" else logits.squeeze(-1)
        err = (pred - targets.float()).abs()
        return {"MAE": float(err.mean()), "RMSE": float(err.pow(2).mean().sqrt()), "count": n}
    if kind == "multilabel":
        s, t = logits.sigmoid().numpy(), targets.numpy()
        aps = [average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])]
        per = {labels[c] if c < len(labels) else str(c): ap for c, ap in enumerate(aps)}
        valid = [a for a in aps if not np.isnan(a)]
        return {"mAP": float(np.mean(valid)) if valid else 0.0, "per_class_AP": per, "count": n}
    c = logits.shape[1]
    pred = logits.argmax(1).numpy()
    t = targets.long().numpy()
    top5 = logits.topk(min(5, c), dim=1).indices.numpy()
    cm = confusion_matrix(pred, t, c)
    per_class = {}
    for i in range(c):
        total = int(cm[i].sum())
        if total:
            per_class[labels[i] if i < len(labels) else str(i)] = float(cm[i, i] / total)
    return {
        "top1": float((pred == t).mean()) if n else 0.0,
        "top5": float((top5 == t[:, None]).any(1).mean()) if n else 0.0,
        "per_class": per_class,
        "mean_class_acc": float(np.mean(list(per_class.values()))) if per_class else 0.0,
        "confusion_matrix": cm.tolist(),
        "count": n,
    }


def primary_metric(kind: str) -> tuple[str, str]:
    """(metric key, 'max'|'min') used for early stopping and best-model selection."""
    return {"multiclass": ("top1", "max"), "multilabel": ("mAP", "max")}.get(kind, ("MAE", "min"))


def save_confusion_png(cm: list[list[int]], labels: list[str], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    size = max(4, min(20, 0.5 * len(labels) + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 30:
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
