"""Text and colours for the pictures cvapps draws. Text goes through Pillow with DejaVu Sans
(shipped inside matplotlib, a dependency) so class names in any script are drawn, not "???"
(OpenCV's Hershey fonts are ASCII only). A core module: every prediction type uses it."""

from __future__ import annotations

import colorsys
import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` pixels (Pillow's built-in font if matplotlib's file is missing)."""
    import matplotlib  # only its data path: no plotting backend is loaded

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    try:
        return ImageFont.truetype(path, max(6, int(size)))
    except OSError:
        return ImageFont.load_default()


def text_size(image_hw: tuple[int, int], scale: float = 1.0) -> int:
    """A legible font size for an image of this size: ~1/40 of the shorter side, at least 11 px."""
    return max(11, int(min(image_hw) / 40 * scale))


def labels(image: np.ndarray, items: list[tuple[str, int, int, tuple[int, int, int]]], size: int,
           fg: tuple[int, int, int] | None = None, above: bool = True) -> np.ndarray:
    """Draw each (text, x, y, background colour) as a filled tag at (x, y) (its bottom-left
    when ``above``, else its top-left), kept inside the image; a tag that would cover an
    earlier one moves down below it. RGB uint8 in, a copy out."""
    if not items:
        return image
    pil = Image.fromarray(np.ascontiguousarray(image))
    d = ImageDraw.Draw(pil)
    f = font(size)
    h, w = image.shape[:2]
    placed: list[tuple[int, int, int, int]] = []
    for text, x, y, bg in items:
        left, top, right, bottom = d.textbbox((0, 0), text, font=f)
        tw, th = right - left + 6, bottom - top + 4
        x0 = int(min(max(0, x), max(0, w - tw)))
        y0 = min(max(0, int(y - th if above else y)), max(0, h - th))
        for _ in range(len(placed)):
            hit = [r for r in placed if x0 < r[2] and r[0] < x0 + tw and y0 < r[3] and r[1] < y0 + th]
            if not hit:
                break
            y0 = min(max(r[3] for r in hit) + 1, max(0, h - th))
        placed.append((x0, y0, x0 + tw, y0 + th))
        d.rectangle([x0, y0, x0 + tw, y0 + th], fill=tuple(int(c) for c in bg))
        d.text((x0 + 3 - left, y0 + 2 - top), text, font=f, fill=fg if fg is not None else contrast(bg))
    return np.asarray(pil).copy()


def contrast(colour) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``colour``."""
    r, g, b = (int(c) for c in colour)
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def palette(n: int) -> list[list[int]]:
    """``n`` well-separated RGB colours (golden-angle hues, alternating lightness), the same
    for the same ``n``; index 0 (often background) is black."""
    out = [[0, 0, 0]]
    for i in range(1, n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.7)
        out.append([int(r * 255), int(g * 255), int(b * 255)])
    return out[:n]


def colour(i: int) -> tuple[int, int, int]:
    """The i-th class colour for boxes and points."""
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)
