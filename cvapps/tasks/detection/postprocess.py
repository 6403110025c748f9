"""Detections and decode -> score threshold -> per-class NMS -> max_det."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from ... import draw
from ...data.labels import Box
from ...data.transforms import meta_scale
from ...ops import decode_boxes
from ...progress import count
from ...tracking import Trackable
from ..base import Prediction


MIN_SIDE = 0.01  # px; what survives the 2-decimal rounding of to_dict()


@dataclass
class Detections(Prediction):
    """boxes (N, 4) float32 xyxy original-image pixels, scores (N,) float32, labels (N,)
    int64 label indices; ``names`` / ``category_ids`` map indices to names / COCO ids;
    ``track_ids`` (N,) int64 when tracked over video."""

    draw_order = 1

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: list[str] = field(default_factory=list, repr=False)
    category_ids: list[int] = field(default_factory=list, repr=False)
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def agreement(self, other: "Detections", iou: float = 0.8, confident: float = 0.5) -> tuple[int, int]:
        """The confident boxes (score >= ``confident``) of either side that the other side has
        too — same label, IoU >= ``iou``, one to one. Boxes near the confidence threshold come
        and go between CPUs' roundings in fp32 too; they are not compared."""
        mine, theirs = self.scores >= confident, other.scores >= confident
        n = int(mine.sum() + theirs.sum())
        if not len(self) or not len(other):
            return 0, n
        ious = box_iou(torch.from_numpy(self.boxes).float(), torch.from_numpy(other.boxes).float()).numpy()
        ious[self.labels[:, None] != other.labels[None, :]] = 0
        rows, cols = linear_sum_assignment(-ious)
        hit = ious[rows, cols] >= iou
        return int(mine[rows[hit]].sum() + theirs[cols[hit]].sum()), n

    def summary(self) -> str:
        names = [self.names[i] if i < len(self.names) else str(i) for i in self.labels.tolist()]
        top = ", ".join(f"{n} {s:.2f}" for n, s in list(zip(names, self.scores.tolist()))[:5])
        return count(len(self), "object") + (f": {top}" if top else "")

    def to_labels(self) -> dict[str, list]:
        return {"boxes": [Box(self.names[int(c)] if int(c) < len(self.names) else str(int(c)), b.astype(np.float64),
                              float(s)) for b, s, c in zip(self.boxes, self.scores, self.labels)]}

    def _name(self, i: int) -> str:
        lab = int(self.labels[i])
        return self.names[lab] if 0 <= lab < len(self.names) else str(lab)

    def _fields(self, i: int) -> dict:
        """Box i's JSON fields besides bbox, score and track id."""
        lab = int(self.labels[i])
        return {"category_id": self.category_ids[lab] if lab < len(self.category_ids) else lab + 1,
                "label": self._name(i)}

    def _tag(self, i: int) -> str:
        """Box i's drawn tag."""
        return f"{self._name(i)} {float(self.scores[i]):.2f}"

    def to_dict(self) -> list[dict]:
        """COCO-results style: bbox = [x, y, w, h]."""
        out = []
        for k, b in enumerate(self.boxes.tolist()):
            out.append({"bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
                        "score": round(float(self.scores[k]), 5), **self._fields(k)})
            if self.track_ids is not None:
                out[-1]["track_id"] = int(self.track_ids[k])
        return out

    def draw(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> copy with boxes and 'label score' tags."""
        out = np.ascontiguousarray(image).copy()
        th = max(1, round(min(out.shape[:2]) / 300))
        tags = []
        ids = self.track_ids.tolist() if self.track_ids is not None else [None] * len(self)
        for i, (b, lab, tid) in enumerate(zip(self.boxes.round().astype(int).tolist(), self.labels.tolist(), ids)):
            col = draw.colour(max(lab, 0) if tid is None else tid)  # tracked: one colour per identity
            cv2.rectangle(out, (b[0], b[1]), (b[2], b[3]), col, th)
            tags.append((self._tag(i) if tid is None else f"#{tid} {self._tag(i)}", b[0], b[1], col))
        return draw.labels(out, tags, draw.text_size(out.shape[:2], 0.8))

    def track_boxes(self) -> Trackable:
        return Trackable(self.boxes, self.scores, self.labels, self.names)

    def with_tracks(self, keep: np.ndarray, ids: np.ndarray, smooth=None) -> "Detections":
        return replace(self, boxes=self.boxes[keep], scores=self.scores[keep], labels=self.labels[keep],
                       track_ids=np.asarray(ids, np.int64))

    def resized(self, sx: float, sy: float) -> "Detections":
        """The same detections on the image scaled by (sx, sy)."""
        return replace(self, boxes=(self.boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32))


def select(probs: torch.Tensor, boxes: torch.Tensor, conf: float, iou: float, max_det: int,
           classes: list[int] | None = None, pre_nms: int = 1000, with_anchors: bool = False):
    """probs (N, K), boxes (N, 4) -> (boxes (M, 4), scores (M,), labels (M,)) after a score
    threshold, top ``pre_nms`` candidates and per-class NMS (``with_anchors``: + the (M,)
    anchor index of each, whose probs row is its class distribution)."""
    scores, labels = probs, torch.arange(probs.shape[1], device=probs.device).expand_as(probs)
    keep = scores > conf
    if classes is not None:
        keep &= torch.isin(labels, torch.as_tensor(classes, device=probs.device))
    anchor_idx = keep.nonzero(as_tuple=True)[0]
    scores, labels = scores[keep], labels[keep]
    if scores.numel() > pre_nms:
        top = scores.topk(pre_nms).indices
        scores, labels, anchor_idx = scores[top], labels[top], anchor_idx[top]
    b = boxes[anchor_idx]
    k = batched_nms(b, scores, labels, iou)[:max_det]
    return (b[k], scores[k], labels[k], anchor_idx[k]) if with_anchors else (b[k], scores[k], labels[k])


def to_original(b: torch.Tensor, s: torch.Tensor, lab: torch.Tensor, meta: dict, names: list[str],
                category_ids: list[int]) -> Detections:
    """Boxes in input pixels -> Detections in the original image (input / meta scale, clipped;
    clipping at the border can leave zero-area boxes, which are dropped)."""
    sx, sy = meta_scale(meta)
    b = clip_boxes_to_image(b / torch.tensor([sx, sy, sx, sy], dtype=b.dtype, device=b.device),
                            (meta["height"], meta["width"]))
    keep = remove_small_boxes(b, MIN_SIDE)
    b, s, lab = b[keep], s[keep], lab[keep]
    return Detections(b.cpu().numpy().astype(np.float32), s.cpu().numpy().astype(np.float32),
                      lab.cpu().numpy().astype(np.int64), names, category_ids)


def select_in_graph(probs: torch.Tensor, boxes: torch.Tensor, conf: float, iou: float, max_det: int,
                    pre_nms: int = 1000):
    """``select`` for one image written without data-dependent Python, so that it traces into
    an ONNX graph (TopK, NonZero, NonMaxSuppression): the top ``pre_nms`` (class, anchor)
    scores overall, then the threshold — the same set as threshold-then-top-k. probs (N, K),
    boxes (N, 4) -> (boxes (M, 4), scores (M,), labels (M,)), by decreasing score."""
    n, k = probs.shape
    scores, idx = probs.reshape(-1).topk(min(pre_nms, n * k))
    keep = scores > conf
    scores, idx = scores[keep], idx[keep]
    b, labels = boxes[idx // k], idx % k
    kept = batched_nms(b, scores, labels, iou)[:max_det]
    return b[kept], scores[kept], labels[kept]


def postprocess(probs: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, metas: list[dict],
                input_hw: tuple[int, int], names: list[str], category_ids: list[int], conf: float, iou: float,
                max_det: int, classes: list[int] | None = None) -> list[Detections]:
    """probs (B, N, K) foreground probabilities, deltas (B, N, 4) -> B Detections in
    original pixels."""
    boxes = clip_boxes_to_image(decode_boxes(deltas.float(), anchors), tuple(input_hw))
    return [to_original(*select(p, bx, conf, iou, max_det, classes), meta, names, category_ids)
            for p, bx, meta in zip(probs, boxes, metas)]
