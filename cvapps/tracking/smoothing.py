"""The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012): a low-pass filter whose cutoff
rises with speed, so a still point stops jittering while a moving one lags little.

Per value and step: dx = (x - x̂_prev) / dt; dx̂ = lowpass(dx, d_cutoff);
cutoff = min_cutoff + beta * |dx̂| / scale; x̂ = lowpass(x, cutoff), where
lowpass(v, fc) = x̂_prev + a (v - x̂_prev) with a = 1 / (1 + 1 / (2 pi fc dt)).
``scale`` makes beta independent of image size: speed is counted in object sizes per
second (MediaPipe's landmark smoothing does the same)."""

from __future__ import annotations

import math

import numpy as np

from ..options import SmoothOptions


def alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    return 1.0 / (1.0 + 1.0 / (2 * math.pi * np.asarray(cutoff) * dt))


class OneEuro:
    """Filters an array of values (any shape) over time."""

    def __init__(self, options: SmoothOptions | None = None):
        self.o = options or SmoothOptions()
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    def __call__(self, x: np.ndarray, t: float, scale: float | np.ndarray = 1.0) -> np.ndarray:
        """x at time ``t`` (seconds) -> filtered x. ``scale``: the object's size in x's units
        (broadcast against x)."""
        x = np.asarray(x, np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self.t
        dx = (x - self.x) / dt
        self.dx = self.dx + alpha(self.o.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.o.min_cutoff + self.o.beta * np.abs(self.dx) / np.maximum(scale, 1e-9)
        self.x = self.x + alpha(cutoff, dt) * (x - self.x)
        self.t = t
        return self.x.copy()


class TrackSmoother:
    """One filter per track id; filters of tracks not seen for ``forget`` seconds are dropped."""

    def __init__(self, options: SmoothOptions | None = None, forget: float = 2.0):
        self.o, self.forget = options or SmoothOptions(), forget
        self.filters: dict[int, OneEuro] = {}

    def __call__(self, ids: np.ndarray, values: np.ndarray, t: float, scales: np.ndarray) -> np.ndarray:
        """ids (N,), values (N, ...), scales (N,) -> smoothed values (N, ...); id -1 passes through."""
        out = np.array(values, np.float64, copy=True)
        for i, (tid, v, s) in enumerate(zip(ids.tolist(), values, scales.tolist())):
            if tid < 0:
                continue
            f = self.filters.setdefault(tid, OneEuro(self.o))
            out[i] = f(v, t, s)
        self.filters = {k: f for k, f in self.filters.items() if f.t is not None and t - f.t <= self.forget}
        return out
