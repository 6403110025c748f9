"""SegMask prediction: full-resolution label map, overlay drawing, mask files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..base import Prediction


@dataclass
class SegMask(Prediction):
    """mask: (H, W) int64 class indices at the original image size; scores: optional (H, W)
    float32 max class probability. ``path``: where the label-map PNG was written, if any."""

    draw_order = 0

    mask: np.ndarray
    scores: np.ndarray | None = None
    names: list[str] = field(default_factory=list, repr=False)
    colors: list[list[int]] = field(default_factory=list, repr=False)
    path: str | None = None

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.mask.ravel(), minlength=len(self.names))
        return {self.names[i] if i < len(self.names) else str(i): int(n) for i, n in enumerate(c) if n}

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

    def draw(self, image: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """RGB (H, W, 3) -> overlay of class colours plus a legend of the classes present."""
        out = cv2.addWeighted(np.ascontiguousarray(image), 1 - alpha, self.colorize(), alpha, 0)
        scale = max(0.4, min(out.shape[:2]) / 800)
        y = 4
        for name in self.counts():
            i = self.names.index(name) if name in self.names else 0
            (tw, th), base = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            cv2.rectangle(out, (4, y), (4 + th, y + th), tuple(int(v) for v in self.colors[i]), -1)
            cv2.rectangle(out, (8 + th, y - 2), (12 + th + tw, y + th + base), (0, 0, 0), -1)
            cv2.putText(out, name, (10 + th, y + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
            y += th + base + 6
        return out
