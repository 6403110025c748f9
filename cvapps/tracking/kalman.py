"""A constant-velocity Kalman filter on boxes, as SORT / ByteTrack use it: state
(cx, cy, a, h, vcx, vcy, va, vh) with a = w / h; measurement (cx, cy, a, h). Noise scales
with the box height, so small and large objects are tracked alike."""

from __future__ import annotations

import numpy as np

STD_POS, STD_VEL = 1 / 20, 1 / 160  # per unit of box height (ByteTrack's weights)


def xyxy_to_xyah(b: np.ndarray) -> np.ndarray:
    """(..., 4) xyxy -> (..., 4) centre x, centre y, aspect w / h, height."""
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return np.stack([b[..., 0] + w / 2, b[..., 1] + h / 2, w / np.maximum(h, 1e-6), h], -1)


def xyah_to_xyxy(s: np.ndarray) -> np.ndarray:
    if s.ndim == 1:  # one box: plain arithmetic (np.stack costs more than the maths)
        w, h = s[2] * s[3], s[3]
        return np.array([s[0] - w / 2, s[1] - h / 2, s[0] + w / 2, s[1] + h / 2])
    w = s[..., 2] * s[..., 3]
    return np.stack([s[..., 0] - w / 2, s[..., 1] - s[..., 3] / 2, s[..., 0] + w / 2, s[..., 1] + s[..., 3] / 2], -1)


class KalmanBox:
    """One track's filter. ``mean`` (8,), ``cov`` (8, 8)."""

    def __init__(self, box_xyxy: np.ndarray):
        z = xyxy_to_xyah(np.asarray(box_xyxy, np.float64))
        self.mean = np.r_[z, np.zeros(4)]
        h = z[3]
        std = np.array([2 * STD_POS * h, 2 * STD_POS * h, 1e-2, 2 * STD_POS * h,
                        10 * STD_VEL * h, 10 * STD_VEL * h, 1e-5, 10 * STD_VEL * h])
        self.cov = np.diag(std**2)
        self._box: np.ndarray | None = None
        self._box_of: np.ndarray | None = None

    _Q_PER_H = np.array([STD_POS, STD_POS, 0, STD_POS, STD_VEL, STD_VEL, 0, STD_VEL]) ** 2
    _Q_FIXED = np.array([0, 0, 1e-2, 0, 0, 0, 1e-5, 0]) ** 2
    _R_PER_H = np.array([STD_POS, STD_POS, 0, STD_POS]) ** 2
    _R_FIXED = np.array([0, 0, 1e-1, 0]) ** 2

    def _q(self) -> np.ndarray:
        return np.diag(self._Q_PER_H * self.mean[3] ** 2 + self._Q_FIXED)

    def _r(self) -> np.ndarray:
        return np.diag(self._R_PER_H * self.mean[3] ** 2 + self._R_FIXED)

    # transition F = [[I, I], [0, I]] (x' = x + v, one frame) and measurement H = [I, 0], in
    # 4 x 4 blocks: the products below are F P F' + Q and the gain with H written out by block
    def predict(self) -> np.ndarray:
        """Advance one frame; -> the predicted box (4,) xyxy."""
        m, p = self.mean.copy(), self.cov.copy()
        m[:4] += m[4:]
        p[:4] += p[4:]  # F P
        p[:, :4] += p[:, 4:]  # (F P) F'
        self.mean, self.cov = m, p + self._q()
        self._box = None
        return self.box()

    def update(self, box_xyxy: np.ndarray) -> np.ndarray:
        """Correct with a measured box; -> the filtered box (4,) xyxy."""
        z = xyxy_to_xyah(np.asarray(box_xyxy, np.float64))
        s = self.cov[:4, :4] + self._r()  # H P H' + R
        k = np.linalg.solve(s, self.cov[:4]).T  # P H' S^-1 (S and P symmetric)
        self.mean = self.mean + k @ (z - self.mean[:4])
        self.cov = self.cov - k @ self.cov[:4]  # (I - K H) P
        self._box = None
        return self.box()

    def box(self) -> np.ndarray:
        if self._box is None or self.mean is not self._box_of:  # cached until the state changes
            self._box, self._box_of = xyah_to_xyxy(self.mean[:4]), self.mean
        return self._box
