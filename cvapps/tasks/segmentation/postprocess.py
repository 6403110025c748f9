"""SegMask prediction: full-resolution label map, overlay drawing, mask files."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ... import draw
from ...data.labels import Mask
from ..base import Prediction


@dataclass
class SegMask(Prediction):
    """mask: (H, W) class indices at the original image size, uint8 (uint16 beyond 256
    classes); scores: optional (H, W) float32 max class probability. ``path``: where the
    label-map PNG was written, if any."""

    draw_order = 0

    mask: np.ndarray
    scores: np.ndarray | None = None
    names: list[str] = field(default_factory=list, repr=False)
    colors: list[list[int]] = field(default_factory=list, repr=False)
    path: str | None = None

    def agreement(self, other: "SegMask") -> tuple[int, int]:
        """Pixels of the same class."""
        return int((self.mask == other.mask).sum()), int(self.mask.size)

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.mask.ravel(), minlength=len(self.names))
        return {self.names[i] if i < len(self.names) else str(i): int(n) for i, n in enumerate(c) if n}

    def to_labels(self) -> dict[str, list]:
        """One mask per class present but the background (class 0 named background: what no mask covers)."""
        keep = [c for c in np.unique(self.mask).tolist()
                if not (c == 0 and self.names and self.names[0].lower() == "background")]
        return {"masks": [Mask(self.names[c] if c < len(self.names) else str(c), self.mask == c,
                               float(self.scores[self.mask == c].mean()) if self.scores is not None else None)
                          for c in keep]}

    def to_dict(self) -> list[dict]:
        return [{"mask": self.path, "pixels": self.counts()}]

    def summary(self) -> str:
        top = sorted(self.counts().items(), key=lambda kv: -kv[1])[:4]
        total = self.mask.size
        return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in top)

    def save(self, path: str | Path) -> str:
        """Write the label map as a PNG (uint8 when < 256 classes) and remember its path."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), self.mask.astype(np.uint8 if self.mask.max(initial=0) < 256 else np.uint16))
        self.path = str(path)
        return self.path

    def colorize(self) -> np.ndarray:
        lut = np.array(self.colors + [[0, 0, 0]] * max(0, int(self.mask.max(initial=0)) + 1 - len(self.colors)),
                       np.uint8)
        return lut[self.mask]

    def draw_base(self, image: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """RGB (H, W, 3) -> the class colours blended over the image."""
        return cv2.addWeighted(np.ascontiguousarray(image), 1 - alpha, self.colorize(), alpha, 0)

    def draw_top(self, image: np.ndarray) -> np.ndarray:
        """A legend of the classes present, top-left (drawn last in a bundle, above boxes)."""
        size = draw.text_size(image.shape[:2], 0.8)
        items = []
        for k, name in enumerate(self.counts()):
            i = self.names.index(name) if name in self.names else 0
            col = tuple(int(v) for v in self.colors[i])
            items.append((f"\u25a0 {name}", 4, 4 + k * int(size * 1.5), col))
        return draw.labels(image, items, size, fg=(255, 255, 255), above=False) if items else image

    def draw(self, image: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """RGB (H, W, 3) -> overlay of class colours plus a legend of the classes present."""
        return self.draw_top(self.draw_base(image, alpha))

    def resized(self, sx: float, sy: float) -> "SegMask":
        h, w = self.mask.shape
        size = (max(1, round(w * sx)), max(1, round(h * sy)))
        return replace(self, mask=cv2.resize(self.mask, size, interpolation=cv2.INTER_NEAREST), scores=None)
