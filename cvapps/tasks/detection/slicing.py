"""Sliced inference for small objects (SAHI: Akyon et al., "Slicing Aided Hyper Inference and
Fine-tuning for Small Object Detection", 2022): besides the whole image, the detector sees R x C
overlapping tiles of it, each resized to its full input size, so a far person of 60 px is seen
as one of 110 px. The passes' detections are merged in the original image. A tile's box that
ends at one of the tile's inner edges is *cut*: the tile saw part of an object (a man's upper
body, one end of a train), and such a part often scores higher than the whole object does
in the whole image. So whole boxes (the whole image's, and tiles' boxes inside their tile) are
merged first, by per-class NMS at the detector's IoU; a cut box then goes when it is the
same object as a kept box from another pass — of its class, mostly inside it or overlapping it
at the NMS IoU; of another class, scoring higher, with 70% of the cut box inside it (a part
the tile named wrongly) — and the cut boxes left are merged by NMS among themselves. A cut box thus
never suppresses or outscores the whole box of its object; an object seen only in parts keeps
its best part. Nothing else is suppressed beyond NMS: a child standing in front of an adult,
each boxed whole in some pass, stays two boxes. (SAHI merges any boxes whose intersection
over the smaller reaches 0.5, which fuses such pairs.)"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms

from ...errors import ConfigError

OVERLAP = 0.2  # neighbouring tiles share this fraction of a tile's side (SAHI's default)
CONTAINED = 0.5  # part of another pass's box: this much of its area inside it (SAHI's IOS match threshold)
# a cut box this much inside a better-scoring box of another class (a part the tile named wrongly:
# a cat's back end called "dog") is that box's object too; measured on the VOC photos, 0.5-0.9 alike
OTHER_CLASS = 0.7
EDGE = 0.02  # a box ending within this fraction of the tile's side from an inner edge was cut by it


def parse_tiles(value) -> tuple[int, int] | None:
    """"RxC" (rows x columns, e.g. "2x2"; "1x2" for wide frames) or (R, C) -> (R, C); None / "" -> None."""
    if value is None or value == "":
        return None
    try:
        rows, cols = (int(v) for v in (value.lower().split("x") if isinstance(value, str) else value))
    except (ValueError, TypeError):
        raise ConfigError(f"--tiles takes rows x columns such as 2x2, got {value!r}") from None
    if not (1 <= rows <= 8 and 1 <= cols <= 8) or rows * cols < 2:
        raise ConfigError(f"--tiles must give 2 to 64 tiles, at most 8 a side (e.g. 2x2, 1x2), got {value!r}")
    return rows, cols


def windows(height: int, width: int, rows: int, cols: int, overlap: float = OVERLAP) -> list[tuple[int, int, int, int]]:
    """The tiles of a ``height`` x ``width`` image, row by row: (x0, y0, x1, y1) pixel windows of
    equal size that cover it, neighbours overlapping by ``overlap`` of a tile's side."""
    th, tw = height / (rows - (rows - 1) * overlap), width / (cols - (cols - 1) * overlap)
    out = []
    for r in range(rows):
        for c in range(cols):
            x0, y0 = round(c * tw * (1 - overlap)), round(r * th * (1 - overlap))
            out.append((x0, y0, min(width, round(x0 + tw)), min(height, round(y0 + th))))
    return out


@dataclass(frozen=True)
class Sliced:
    """Wraps a detector's preprocessor: ``prepare`` gives the whole image and its R x C tiles
    as one (1 + R*C, 3, H, W) uint8 stack; the meta's "passes" hold each one's own meta and
    "window" (x0, y0, x1, y1) in the image."""

    inner: object
    rows: int
    cols: int
    not_for_select = "--tiles is for predict and track: select scores each image as the model sees it whole"

    def prepare(self, image: np.ndarray, source: str = "", frame: int | None = None) -> tuple[torch.Tensor, dict]:
        h, w = image.shape[:2]
        inputs, passes = [], []
        for x0, y0, x1, y1 in [(0, 0, w, h)] + windows(h, w, self.rows, self.cols):
            u8, meta = self.inner.prepare(np.ascontiguousarray(image[y0:y1, x0:x1]), source, frame)
            inputs.append(u8)
            passes.append({**meta, "window": (x0, y0, x1, y1)})
        return torch.stack(inputs), {"width": w, "height": h, "passes": passes}

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        return self.inner.normalize(batch_u8)


def cut_by_tile(boxes: np.ndarray, window: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """boxes (N, 4) xyxy image pixels found in ``window`` -> (N,) bool: the box ends at one of
    the window's edges that lie inside the ``width`` x ``height`` image (the tile cut it there)."""
    x0, y0, x1, y1 = window
    mx, my = EDGE * (x1 - x0), EDGE * (y1 - y0)
    return (((boxes[:, 0] <= x0 + mx) & (x0 > 0)) | ((boxes[:, 1] <= y0 + my) & (y0 > 0))
            | ((boxes[:, 2] >= x1 - mx) & (x1 < width)) | ((boxes[:, 3] >= y1 - my) & (y1 < height)))


def _nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, idx: np.ndarray, iou: float) -> np.ndarray:
    """Per-class NMS among the rows ``idx`` -> the kept rows, by decreasing score."""
    if not len(idx):
        return idx
    kept = batched_nms(torch.from_numpy(boxes[idx]), torch.from_numpy(scores[idx]), torch.from_numpy(labels[idx]), iou)
    return idx[kept.numpy()]


def merge(parts: list, windows_: list[tuple[int, int, int, int]], width: int, height: int, iou: float,
          max_det: int, contained: float = CONTAINED):
    """One image's per-pass Detections (each in its window's pixels; the first pass the whole
    ``width`` x ``height`` image) -> one Detections in the image's pixels: shifted into place;
    whole boxes merged by per-class NMS at ``iou``; then, in score order, a cut box (a tile's
    box ending at the tile's inner edge) goes when ``contained`` of its area (or of the other's,
    the smaller) lies inside a kept box of its class from another pass, or it overlaps one at
    ``iou``, or OTHER_CLASS of it lies inside a better-scoring kept box of another class from
    another pass; the cut boxes left are merged by NMS. At most ``max_det``, by score."""
    scores = np.concatenate([p.scores for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    source = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
    boxes = np.concatenate([p.boxes.reshape(-1, 4) + np.array([w[0], w[1], w[0], w[1]], np.float32)
                            for p, w in zip(parts, windows_)])
    # the whole image's window has no inner edge: its boxes are never cut
    cut = np.concatenate([cut_by_tile(boxes[source == k], w, width, height) for k, w in enumerate(windows_)])
    rows = np.arange(len(scores))
    kept = list(_nms(boxes, scores, labels, rows[~cut], iou))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in _nms(boxes, scores, labels, rows[cut], iou):  # by decreasing score
        k = np.array(kept, np.int64)
        k = k[source[k] != source[i]]
        iw = np.clip(np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]), 0, None)
        inter = iw * ih
        inside = inter / np.maximum(np.minimum(area[k], area[i]), 1e-9)
        overlap = inter / np.maximum(area[k] + area[i] - inter, 1e-9)
        same = labels[k] == labels[i]
        other = ~same & (scores[k] >= scores[i]) & (inter / np.maximum(area[i], 1e-9) >= OTHER_CLASS)
        if not ((same & ((inside >= contained) | (overlap >= iou))) | other).any():
            kept.append(int(i))
    keep = np.array(sorted(kept, key=lambda j: -scores[j])[:max_det], np.int64)
    first = parts[0]
    return type(first)(boxes[keep].astype(np.float32), scores[keep], labels[keep], first.names, first.category_ids)
