"""Counting tracked objects: crossings of a line (per direction and class) and occupancy of
a polygon zone (per frame and class). An object's position is its box centre, or with
``count_at="bottom"`` (``--count-at bottom``) the middle of its box's bottom edge — where a
person or a car stands on the ground, which is what a line painted on the ground means in a
perspective view.

Direction: walking along the line from (x1, y1) to (x2, y2), ``in`` is a crossing from the
left-hand side to the right-hand side (on screen, y pointing down): for a horizontal line
drawn left to right, objects moving down the image count as ``in``."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ConfigError


def parse_points(text: str, what: str, n: int | None = None) -> np.ndarray:
    """'x1,y1,x2,y2,...' -> (P, 2) float; ``n``: the exact number of points wanted."""
    try:
        v = [float(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        v = []
    if not v or len(v) % 2 or (n is not None and len(v) != 2 * n) or (n is None and len(v) < 6):
        want = f"{n} points: " + ",".join(f"x{i},y{i}" for i in range(1, n + 1)) if n else \
            "at least 3 points: x1,y1,x2,y2,x3,y3,..."
        raise ConfigError(f"{what} {text!r} is not {want}", hint="pixels of the original frame, comma-separated")
    return np.asarray(v, np.float64).reshape(-1, 2)


def side(p1: np.ndarray, p2: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) -> (N,) sign of the cross product: > 0 on the right-hand side of p1 -> p2 (y down)."""
    d = p2 - p1
    return np.sign(d[0] * (pts[:, 1] - p1[1]) - d[1] * (pts[:, 0] - p1[0]))


def segments_cross(a: np.ndarray, b: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> bool:
    """Does the move a -> b cross the segment p1 -> p2 (not just the infinite line)?"""
    s1, s2 = side(p1, p2, np.stack([a, b]))
    t1, t2 = side(a, b, np.stack([p1, p2]))
    return bool(s1 * s2 < 0 and t1 * t2 <= 0)


class LineCounter:
    """Counts tracks whose centre moves across the segment. A track counts at most once per
    direction, so an object jittering on the line is not counted again and again."""

    def __init__(self, p1, p2, name: str = "line"):
        self.p1, self.p2, self.name = np.asarray(p1, np.float64), np.asarray(p2, np.float64), name
        self.last: dict[int, np.ndarray] = {}
        self.counted: set[tuple[int, str]] = set()
        self.counts: dict[str, dict[str, int]] = {"in": {}, "out": {}}

    def update(self, ids: np.ndarray, centres: np.ndarray, labels: list[str]) -> list[tuple[int, str]]:
        """ids (N,), centres (N, 2), labels (N,) names of this frame's tracked objects ->
        the crossings of this frame as (track id, 'in' | 'out')."""
        events = []
        for tid, c, lab in zip(ids.tolist(), centres, labels):
            if tid < 0:
                continue
            prev = self.last.get(tid)
            self.last[tid] = c
            if prev is None or not segments_cross(prev, c, self.p1, self.p2):
                continue
            direction = "in" if side(self.p1, self.p2, c[None])[0] > 0 else "out"
            if (tid, direction) in self.counted:
                continue
            self.counted.add((tid, direction))
            self.counts[direction][lab] = self.counts[direction].get(lab, 0) + 1
            events.append((tid, direction))
        return events

    def to_dict(self) -> dict:
        return {"in": dict(self.counts["in"]), "out": dict(self.counts["out"])}


class ZoneCounter:
    """Occupancy of a polygon: tracked objects whose centre is inside, per class, this frame;
    ``visitors``: distinct track ids seen inside so far."""

    def __init__(self, polygon, name: str = "zone"):
        self.poly = np.asarray(polygon, np.float32).reshape(-1, 2)
        self.name = name
        self.occupancy: dict[str, int] = {}
        self.seen: dict[str, set[int]] = {}

    def inside(self, pts: np.ndarray) -> np.ndarray:
        return np.array([cv2.pointPolygonTest(self.poly, (float(x), float(y)), False) >= 0 for x, y in pts], bool)

    def update(self, ids: np.ndarray, centres: np.ndarray, labels: list[str]) -> dict[str, int]:
        occ: dict[str, int] = {}
        for tid, ok, lab in zip(ids.tolist(), self.inside(centres) if len(centres) else [], labels):
            if tid >= 0 and ok:
                occ[lab] = occ.get(lab, 0) + 1
                self.seen.setdefault(lab, set()).add(tid)
        self.occupancy = occ
        return occ

    def to_dict(self) -> dict:
        return {"occupancy": dict(self.occupancy), "visitors": {k: len(v) for k, v in self.seen.items()}}
