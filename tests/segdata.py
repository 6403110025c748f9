"""Tiny synthetic segmentation sets: background 0, a bar (1), a disc (2), a void border."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from conftest import write_image

CLASSES = ["bg", "bar", "disc"]
COLORS = [[0, 0, 0], [200, 30, 30], [30, 30, 200]]


def make_sample(k: int, h: int = 48, w: int = 64, void: int = 255):
    rng = np.random.default_rng(k)
    img = rng.integers(60, 120, (h, w, 3)).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    x0 = 5 + 7 * k
    mask[:, x0 : x0 + 10] = 1
    cv2.circle(mask, (w - 18 - 3 * k, h // 2), 9, 2, -1)
    img[mask == 1] = (200, 60, 60)
    img[mask == 2] = (60, 60, 200)
    mask[:2] = void  # an unlabelled strip
    return img, mask


def make_seg_set(root: Path, n: int = 4, void: int = 255) -> Path:
    for split in ("train", "val"):
        for k in range(n):
            img, mask = make_sample(k if split == "train" else k + 1, void=void)
            write_image(root / split / f"s{k}.png", img)
            (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / f"{split}annot" / f"s{k}.png"), mask)
    return root
