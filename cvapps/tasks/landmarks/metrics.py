"""Facial landmark metrics: NME (inter-ocular, or box diagonal when the schema has no
eyes), failure rate at 0.08 / 0.10, and the area under the CED curve up to 0.10."""

from __future__ import annotations

import numpy as np


def normaliser(gt: np.ndarray, box: np.ndarray, eyes: list[int] | None) -> float:
    """gt (K, 2|3), box xyxy -> distance between the eye points, or the box diagonal."""
    if eyes is not None:
        return float(np.linalg.norm(gt[eyes[0], :2] - gt[eyes[1], :2]))
    return float(np.hypot(box[2] - box[0], box[3] - box[1]))


def nme(pred: np.ndarray, gt: np.ndarray, norm: float) -> float:
    """pred (K, 2), gt (K, 3) -> mean point error over labelled points / norm."""
    lab = gt[:, 2] > 0
    if not lab.any() or norm <= 0:
        return float("nan")
    return float(np.linalg.norm(pred[lab] - gt[lab, :2], axis=1).mean() / norm)


def landmark_metrics(nmes: list[float], missed: int = 0) -> dict:
    """Per-face NMEs -> {"NME", "FR@0.08", "FR@0.10", "AUC@0.10", "count"}. ``missed``
    faces (no prediction) count as failures with zero AUC but not in the mean NME.
    AUC@a is exact: the CED curve's area over [0, a] / a = mean(max(0, 1 - nme / a))."""
    e = np.asarray([v for v in nmes if np.isfinite(v)], np.float64)
    n = len(e) + missed
    if n == 0:
        return {"NME": float("nan"), "FR@0.08": float("nan"), "FR@0.10": float("nan"), "AUC@0.10": float("nan"),
                "count": 0}
    return {"NME": float(e.mean()) if len(e) else float("nan"),
            "FR@0.08": float(((e > 0.08).sum() + missed) / n), "FR@0.10": float(((e > 0.10).sum() + missed) / n),
            "AUC@0.10": float(np.clip(1 - e / 0.10, 0, None).sum() / n), "count": int(n),
            **({"missed": missed} if missed else {})}


def evaluate_pairs(pairs, missed: int, eyes) -> dict:
    """(pred, gt, box) pairs from a results file -> landmark metrics."""
    return landmark_metrics([nme(p, g, normaliser(g, np.asarray(b), eyes)) for p, g, b in pairs], missed)
