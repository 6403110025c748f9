"""Tracking applied to a stream of predictions: one tracker (and smoother, counters, trails)
per video or image sequence. Predictions take part through two methods (any task can
implement them; see ``Trackable``):

- ``prediction.track_boxes() -> Trackable | None``: what can be tracked in this frame;
- ``prediction.with_tracks(keep, ids, smooth) -> prediction``: the tracked objects only
  (indices ``keep``, their ``ids``); ``smooth(values (N, ...), scales (N,))`` smooths
  per-object values (keypoints) by track, or is None."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import draw
from ..errors import ConfigError
from .appearance import FEATURE_SIZE, colour_features
from .bytetrack import ByteTracker, TrackOptions
from .counting import LineCounter, ZoneCounter, parse_points
from .smoothing import SmoothOptions, TrackSmoother

COUNT_AT = ("centre", "bottom")
TRAIL = 30  # centres kept per track for the drawn trail
DEFAULT_FPS = 30.0  # image sequences and streams that do not state a frame rate


@dataclass
class Trackable:
    """boxes (N, 4) xyxy, scores (N,), labels (N,) int, names: label index -> name;
    ``features`` (N, D) unit rows: the prediction's own appearance cue (a face descriptor),
    used in place of colour histograms."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: list[str]
    features: np.ndarray | None = None

    def name(self, i: int) -> str:
        lab = int(self.labels[i])
        return self.names[lab] if lab < len(self.names) else str(lab)


@dataclass
class TrackingOptions:
    """Everything ``predict --track`` / ``cvapps track`` configures."""

    track: TrackOptions = field(default_factory=TrackOptions)
    smooth: SmoothOptions | None = field(default_factory=SmoothOptions)  # None: points are not smoothed
    lines: list[str] = field(default_factory=list)  # 'x1,y1,x2,y2'
    zones: list[str] = field(default_factory=list)  # 'x1,y1,x2,y2,x3,y3,...'
    sequences: bool = False  # still images of one folder form a sequence (MOT-style image folders)
    count_at: str = "centre"  # the point of a box that counts: centre, or bottom (feet / wheels on the ground)

    def __post_init__(self):
        if self.count_at not in COUNT_AT:
            raise ConfigError(f"--count-at {self.count_at!r} is not one of {', '.join(COUNT_AT)}")
        for i, t in enumerate(self.lines):
            parse_points(t, f"--line {i + 1}", 2)
        for i, t in enumerate(self.zones):
            parse_points(t, f"--zone {i + 1}")


@dataclass
class Overlay:
    """What tracking adds to a frame's drawing (a snapshot; drawn later in the writer thread)."""

    trails: list[tuple[int, list[np.ndarray]]]  # (track id, [(P, 2) centres of each unbroken stretch])
    lines: list[tuple[np.ndarray, np.ndarray, dict]]
    zones: list[tuple[np.ndarray, dict]]

    def draw(self, image: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(image)
        t = max(1, round(min(out.shape[:2]) / 300))
        for tid, parts in self.trails:
            lines = [p.round().astype(np.int32) for p in parts if len(p) > 1]
            if lines:
                cv2.polylines(out, lines, False, draw.colour(tid), t, cv2.LINE_AA)
        tags = []
        for poly, counts in self.zones:
            cv2.polylines(out, [poly.round().astype(np.int32)], True, (255, 215, 0), t + 1, cv2.LINE_AA)
            occ = ", ".join(f"{k} {v}" for k, v in sorted(counts["occupancy"].items())) or "empty"
            tags.append((f"zone: {occ}", int(poly[:, 0].min()), int(poly[:, 1].min()), (255, 215, 0)))
        for p1, p2, counts in self.lines:
            a, b = tuple(int(v) for v in p1.round()), tuple(int(v) for v in p2.round())
            cv2.line(out, a, b, (255, 255, 255), t + 2, cv2.LINE_AA)
            cv2.line(out, a, b, (220, 20, 60), t, cv2.LINE_AA)
            n_in, n_out = sum(counts["in"].values()), sum(counts["out"].values())
            tags.append((f"in {n_in}  out {n_out}", min(a[0], b[0]), min(a[1], b[1]), (220, 20, 60)))
        return draw.labels(out, tags, draw.text_size(out.shape[:2], 1.0)) if tags else out


def trail_parts(trail) -> list[np.ndarray]:
    """(frame, centre) points of a track -> the centres of each stretch it was seen without a
    break ((P, 2) arrays): frames the track missed (behind something, undetected) cut the
    trail instead of a straight line being drawn across where it was not seen. The step
    between frames is the trail's smallest (a --vid-stride video's step is not a miss)."""
    frames = np.array([f for f, _ in trail])
    centres = np.array([c for _, c in trail], np.float64).reshape(-1, 2)
    if len(frames) < 2:
        return [centres]
    gaps = np.diff(frames)
    cuts = np.flatnonzero(gaps > gaps.min()) + 1
    return np.split(centres, cuts)


class SequenceTracker:
    """The tracking state of one video / image sequence."""

    def __init__(self, options: TrackingOptions):
        self.o = options
        self.tracker = ByteTracker(options.track)
        self.smoother = TrackSmoother(options.smooth) if options.smooth is not None else None
        self.lines = [LineCounter(*parse_points(t, "--line", 2)) for t in options.lines]
        self.zones = [ZoneCounter(parse_points(t, "--zone")) for t in options.zones]
        self.trails: dict[int, deque] = {}

    def step(self, pred, frame: int, t: float, image: np.ndarray | None = None):
        """-> (the prediction with track ids, its Overlay, counts dict or None). ``image``:
        the frame (RGB), for the appearance cue."""
        tb = pred.track_boxes()
        if tb is None:
            return pred, None, None
        feats = None
        if (image is not None or tb.features is not None) and self.o.track.appearance > 0:
            sure = np.asarray(tb.scores) >= self.o.track.high  # only confident boxes' looks are used
            own = tb.features is not None
            feats = np.zeros((len(tb.boxes), tb.features.shape[1] if own else FEATURE_SIZE), np.float32)
            feats[sure] = tb.features[sure] if own else colour_features(image, np.asarray(tb.boxes)[sure])
        ids = self.tracker.update(tb.boxes, tb.scores, tb.labels, frame, feats)
        keep = np.flatnonzero(ids >= 0)
        boxes, kept_ids = tb.boxes[keep], ids[keep]
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(keep) else np.zeros(0)
        smooth = None
        if self.smoother is not None:
            smooth = lambda values, scales=sizes: self.smoother(kept_ids, values, t, scales)  # noqa: E731
        tracked = pred.with_tracks(keep, kept_ids, smooth)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 if len(keep) else np.zeros((0, 2))
        names = [tb.name(i) for i in keep]
        for tid, c in zip(kept_ids.tolist(), centres):
            self.trails.setdefault(tid, deque(maxlen=TRAIL)).append((frame, c))
        alive = {tr.id for tr in self.tracker.tracks}
        self.trails = {k: v for k, v in self.trails.items() if k in alive}
        points = centres
        if self.o.count_at == "bottom" and len(keep):  # in perspective, where an object stands is its box's bottom
            points = np.stack([centres[:, 0], boxes[:, 3]], 1)
        for c in self.lines:
            c.update(kept_ids, points, names)
        for z in self.zones:
            z.update(kept_ids, points, names)
        line_counts, zone_counts = [c.to_dict() for c in self.lines], [z.to_dict() for z in self.zones]
        counts = None
        if self.lines or self.zones:
            counts = {**{f"line{i + 1}": d for i, d in enumerate(line_counts)},
                      **{f"zone{i + 1}": d for i, d in enumerate(zone_counts)}}
        overlay = Overlay([(k, trail_parts(self.trails[k])) for k in kept_ids.tolist()],
                          [(c.p1, c.p2, d) for c, d in zip(self.lines, line_counts)],
                          [(z.poly, d) for z, d in zip(self.zones, zone_counts)])
        return tracked, overlay, counts


class Tracking:
    """Routes frames to their sequence's tracker. Video frames form a sequence per video;
    still images do too when ``sequences`` is set (per folder, in name order), else they
    are passed through untracked."""

    def __init__(self, options: TrackingOptions | None = None):
        self.o = options or TrackingOptions()
        self.key: str | None = None
        self.seq: SequenceTracker | None = None
        self.index = 0

    def step(self, pred, source: str, frame: int | None, fps: float | None = None, image: np.ndarray | None = None):
        """-> (prediction, Overlay | None, counts | None)."""
        if frame is None and not self.o.sequences:
            return pred, None, None
        key = source if frame is not None else str(Path(source).parent)
        if key != self.key:
            self.key, self.seq, self.index = key, SequenceTracker(self.o), 0
        idx = frame if frame is not None else self.index
        self.index += 1
        return self.seq.step(pred, idx, idx / (fps or DEFAULT_FPS), image)
