"""Sliced inference for small objects (SAHI: Akyon et al., "Slicing Aided Hyper Inference and
Fine-tuning for Small Object Detection", 2022): besides the whole image, the detector sees R x C
overlapping tiles of it, each resized to its full input size, so a far person of 60 px is seen
as one of 110 px. The passes' detections are merged in the original image: per-class NMS at the
detector's IoU; then a tile's box that ends at one of the tile's inner edges (a cut through an
object) and lies mostly inside a better-scoring box of the same class from another pass is a
part of that object and goes. Nothing else is suppressed beyond NMS: a child standing in front
of an adult, each boxed whole in some pass, stays two boxes. (SAHI merges any boxes whose
intersection over the smaller reaches 0.5, which fuses such pairs.)"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms

from ...errors import ConfigError

OVERLAP = 0.2  # neighbouring tiles share this fraction of a tile's side (SAHI's default)
CONTAINED = 0.5  # part of another pass's box: this much of its area inside it (SAHI's IOS match threshold)
EDGE = 0.01  # a box ending within this fraction of the tile's side from an inner edge was cut by it


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


def merge(parts: list, windows_: list[tuple[int, int, int, int]], width: int, height: int, iou: float,
          max_det: int, contained: float = CONTAINED):
    """One image's per-pass Detections (each in its window's pixels; the first pass the whole
    ``width`` x ``height`` image) -> one Detections in the image's pixels: shifted into place,
    per-class NMS at ``iou``; then, in score order, a tile's box cut by the tile's inner edge
    goes when ``contained`` of its area (or of the other's, the smaller) lies inside a kept box
    of the same class from another pass. At most ``max_det``, by score."""
    scores = np.concatenate([p.scores for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    source = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
    boxes = np.concatenate([p.boxes.reshape(-1, 4) + np.array([w[0], w[1], w[0], w[1]], np.float32)
                            for p, w in zip(parts, windows_)])
    # the whole image's window has no inner edge: its boxes are never cut
    cut = np.concatenate([cut_by_tile(boxes[source == k], w, width, height) for k, w in enumerate(windows_)])
    order = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), iou).numpy()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    for i in order:  # by decreasing score
        if cut[i] and kept:
            k = np.array(kept)
            k = k[(labels[k] == labels[i]) & (source[k] != source[i])]
            iw = np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0])
            ih = np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1])
            inside = np.clip(iw, 0, None) * np.clip(ih, 0, None) / np.maximum(np.minimum(area[k], area[i]), 1e-9)
            if (inside >= contained).any():
                continue
        kept.append(int(i))
        if len(kept) == max_det:
            break
    keep = np.array(kept, np.int64)
    first = parts[0]
    return type(first)(boxes[keep].astype(np.float32), scores[keep], labels[keep], first.names, first.category_ids)
