"""A cheap appearance cue for association: colour histograms of each box's upper and lower
half (clothes above and below the waist), hue x saturation x value in HSV, compared with
the Hellinger distance. Value (brightness) matters: black, grey and white clothes all have
low saturation and arbitrary hue, so hue x saturation alone cannot tell them apart. It
separates people and vehicles whose boxes overlap while they cross, where IoU alone cannot
tell them apart, at ~0.05 ms per box (no extra network pass)."""

from __future__ import annotations

import cv2
import numpy as np

BINS = (8, 3, 3)  # hue x saturation x value
RANGES = [0, 180, 0, 256, 0, 256]  # OpenCV's 8-bit HSV
PATCH = (24, 48)  # (w, h) the inner box is resized to before counting
FEATURE_SIZE = 2 * int(np.prod(BINS))


def colour_features(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """image (H, W, 3) uint8 RGB, boxes (N, 4) xyxy -> (N, 2 * 8 * 3 * 3) float32 rows of unit
    length (square roots of the normalised histograms, so dot products are Bhattacharyya
    coefficients). The box's central part is used (a fifth trimmed on each side, a tenth
    top and bottom) to count less background."""
    h, w = image.shape[:2]
    out = np.zeros((len(boxes), FEATURE_SIZE), np.float32)
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        bw, bh = x1 - x0, y1 - y0
        xa, xb = int(max(0, x0 + 0.2 * bw)), int(min(w, x1 - 0.2 * bw))
        ya, yb = int(max(0, y0 + 0.1 * bh)), int(min(h, y1 - 0.1 * bh))
        if xb - xa < 2 or yb - ya < 4:
            continue
        hsv = cv2.cvtColor(cv2.resize(image[ya:yb, xa:xb], PATCH, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
        half = PATCH[1] // 2
        parts = [cv2.calcHist([p], [0, 1, 2], None, list(BINS), RANGES).ravel() for p in (hsv[:half], hsv[half:])]
        v = np.sqrt(np.concatenate([p / max(p.sum(), 1) for p in parts]) / 2)
        out[i] = v / max(np.linalg.norm(v), 1e-9)
    return out


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D), (M, D) unit rows -> (N, M) Hellinger-style distance in [0, 1]; 0 for rows
    without a feature (zeros), so a missing cue neither helps nor hurts."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    d = 1 - np.clip(a @ b.T, 0, 1)
    d[~a.any(1)] = 0
    d[:, ~b.any(1)] = 0
    return d
