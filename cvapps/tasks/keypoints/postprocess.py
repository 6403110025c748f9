"""The typed keypoint prediction: points, per-point scores and boxes in original pixels."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from ... import draw
from ...data.labels import PointSet

from ...tracking import Trackable
from ..base import Prediction

POINT_THR = 0.2  # points below this confidence are not drawn or counted in instance scores


def instance_scores(scores: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
    """(N, K), (N,) -> (N,): box score x mean confidence of the confident points (the
    SimpleBaseline rescoring COCO keypoint AP expects)."""
    conf = np.where(scores > POINT_THR, scores, 0).sum(1) / np.maximum((scores > POINT_THR).sum(1), 1)
    return box_scores * np.where((scores > POINT_THR).any(1), conf, scores.mean(1) if scores.size else 0)


@dataclass
class Keypoints(Prediction):
    """points (N, K, 2) xy pixels, scores (N, K) in [0, 1], boxes (N, 4) xyxy, box_scores (N,);
    ``names``/``skeleton`` from the model's schema; ``track_ids`` (N,) int64 when tracked
    over video (points then smoothed per track unless asked not to); ``classes`` (N,) str and
    ``class_scores`` (N,) when the model also classifies each instance (a hand's side)."""

    draw_order = 3

    points: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    names: list[str]
    skeleton: list
    label: str = "instance"
    track_ids: np.ndarray | None = field(default=None)
    classes: np.ndarray | None = field(default=None)
    class_scores: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.points)

    def agreement(self, other: "Keypoints", tol: float = 0.02, confident: float = 0.5) -> tuple[int, int]:
        """The confident points (score >= ``confident``) within ``tol`` of their instance box's
        diagonal of the same point of the same instance (instances in order; an instance only
        one side finds counts its confident points against)."""
        if len(self) != len(other):
            return 0, int((self.scores >= confident).sum() + (other.scores >= confident).sum())
        if not len(self):
            return 0, 0
        diag = np.hypot(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])
        close = np.linalg.norm(self.points - other.points, axis=-1) <= tol * np.maximum(diag, 1.0)[:, None]
        sure = self.scores >= confident
        return int((close & sure).sum()), int(sure.sum())

    def point_names(self) -> list[str]:
        return list(self.names)

    def to_labels(self, min_score: float = 0.3) -> dict[str, list]:
        """One point set per instance with its box; points scored below ``min_score`` are left
        for the annotator to place (not labelled)."""
        sets = []
        for pts, sc, box, bs in zip(self.points, self.scores, self.boxes, self.box_scores):
            kp = np.concatenate([pts.astype(np.float64), np.full((len(pts), 1), 2.0)], 1)
            kp[sc < min_score] = 0.0
            sets.append(PointSet(self.label, kp, box.astype(np.float64), float(bs)))
        return {"pointsets": sets}

    def to_dict(self) -> list[dict]:
        """COCO keypoint-results style records (without image_id): keypoints [x, y, score, ...]."""
        out = []
        inst = instance_scores(self.scores, self.box_scores)
        for k, (p, s, b, sc) in enumerate(zip(self.points, self.scores, self.boxes, inst)):
            kp = np.concatenate([p, s[:, None]], 1).reshape(-1)
            out.append({"category_id": 1, "bbox": [round(float(b[0]), 2), round(float(b[1]), 2),
                                                   round(float(b[2] - b[0]), 2), round(float(b[3] - b[1]), 2)],
                        "score": round(float(sc), 4), "keypoints": [round(float(v), 2) for v in kp]})
            if self.track_ids is not None:
                out[-1]["track_id"] = int(self.track_ids[k])
            if self.classes is not None:
                out[-1].update({"class": str(self.classes[k]), "class_score": round(float(self.class_scores[k]), 4)})
        return out

    def draw(self, image: np.ndarray) -> np.ndarray:
        out = image.copy()
        t = max(1, round(max(image.shape[:2]) / 400))
        tags = []
        ids = self.track_ids.tolist() if self.track_ids is not None else [None] * len(self)
        for k, (p, s, b, tid) in enumerate(zip(self.points, self.scores, self.boxes, ids)):
            x1, y1, x2, y2 = (int(round(v)) for v in b)
            box_colour = (255, 200, 0) if tid is None else draw.colour(tid)
            cv2.rectangle(out, (x1, y1), (x2, y2), box_colour, t)
            tag = " ".join(([f"#{tid}"] if tid is not None else []) +
                           ([f"{self.classes[k]} {self.class_scores[k]:.2f}"] if self.classes is not None else []))
            if tag:
                tags.append((tag, x1, y1, box_colour))
            r = max(1, round((0.03 if len(p) <= 17 else 0.012 if len(p) <= 100 else 0.005) * max(x2 - x1, y2 - y1)))
            for a, c in self.skeleton:
                if s[a] > POINT_THR and s[c] > POINT_THR:
                    cv2.line(out, tuple(int(v) for v in p[a]), tuple(int(v) for v in p[c]), (0, 200, 255), t,
                             cv2.LINE_AA)
            for (x, y), sc in zip(p, s):
                if sc > POINT_THR:
                    cv2.circle(out, (int(x), int(y)), r, (255, 40, 40), -1, cv2.LINE_AA)
        return draw.labels(out, tags, draw.text_size(out.shape[:2], 0.8)) if tags else out

    def track_boxes(self) -> Trackable:
        return Trackable(self.boxes, self.box_scores, np.zeros(len(self), np.int64), [self.label])

    def with_tracks(self, keep: np.ndarray, ids: np.ndarray, smooth=None) -> "Keypoints":
        points = self.points[keep]
        if smooth is not None and len(keep):
            points = smooth(points).astype(self.points.dtype)
        return replace(self.take(keep), points=points, track_ids=np.asarray(ids, np.int64))

    def take(self, keep: np.ndarray) -> "Keypoints":
        """The instances ``keep`` (indices or an (N,) bool mask) selects."""
        some = lambda a: a[keep] if a is not None else None  # noqa: E731
        return replace(self, points=self.points[keep], scores=self.scores[keep], boxes=self.boxes[keep],
                       box_scores=self.box_scores[keep], track_ids=some(self.track_ids), classes=some(self.classes),
                       class_scores=some(self.class_scores))

    def resized(self, sx: float, sy: float) -> "Keypoints":
        return replace(self, points=self.points * np.array([sx, sy]), boxes=self.boxes * np.array([sx, sy, sx, sy]))

    def summary(self) -> str:
        if not len(self):
            return "no instances"
        return f"{len(self)} instance{'s' if len(self) != 1 else ''} x {self.points.shape[1]} points"
