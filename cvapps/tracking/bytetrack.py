"""ByteTrack-style multi-object tracking (Zhang et al., 2022): a Kalman motion model per
track and two association stages per frame — confident detections first, then the
low-score ones, which keep tracks alive through partial occlusion instead of being thrown
away. Assignment is SciPy's ``linear_sum_assignment`` on an IoU cost.

Association is class-aware: a detection only continues a track of its own label. With
appearance features (``appearance.colour_features``; BoT-SORT and DeepSORT add appearance
the same way) the confident stages also weigh how alike a detection looks to the track's
running feature, and refuse pairs that look clearly different (``reid``): boxes that overlap
while two objects cross are told apart by colour. A lost track also re-finds its object by
looks where the motion since its last confident detection allows (DeepSORT's appearance
matching behind a motion gate): after a long occlusion the Kalman prediction, slowed by the
shrinking boxes of the object going out of sight, no longer overlaps it. A second box on an
object already tracked that looks like it starts no twin track."""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..options import TrackOptions
from .appearance import distance
from .kalman import KalmanBox

NEW, TRACKED, LOST = "new", "tracked", "lost"
SEEN = 25  # confident detections a track keeps for its re-finding velocity (about a second)


@dataclass
class Track:
    id: int
    label: int
    kf: KalmanBox
    score: float
    state: str
    last_frame: int
    start_frame: int
    hits: int = 1
    feature: np.ndarray | None = None
    seen: deque = dataclasses.field(default_factory=lambda: deque(maxlen=SEEN))  # (frame, cx, cy, h), confident

    def box(self) -> np.ndarray:
        return self.kf.box()


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) xyxy -> (N, M) IoU. NumPy rather than torchvision's box_iou: for the
    handful of boxes of a frame, tensor set-up costs ten times the arithmetic."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _slope(t: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Least-squares velocity: t (K,), xy (K, 2) -> (2,) per unit of t; 0 without a time span."""
    dt = t - t.mean()
    den = float(dt @ dt)
    return dt @ (xy - xy.mean(0)) / den if den > 0 else np.zeros(2)


def _detections_of(tracks: list[Track], ids: np.ndarray) -> np.ndarray:
    """(T,) indices of the detections the tracks took this frame (``ids``: track id per detection)."""
    return np.array([int(np.flatnonzero(ids == t.id)[0]) for t in tracks], np.int64)


def associate(tracks: list[Track], boxes: np.ndarray, labels: np.ndarray, min_iou: float,
              scores: np.ndarray | None = None, features: np.ndarray | None = None,
              weight: float = 0.0, max_app: float | None = None) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Optimal one-to-one matching of tracks (predicted boxes) to detections by IoU (weighted
    by the detection score when ``scores`` is given, as ByteTrack's first stage does), less
    ``weight`` x the appearance distance when ``features`` (N, D) are given. Pairs below
    ``min_iou``, or (with features) farther apart in looks than ``max_app``, never match.
    -> (matches (track index, detection index), unmatched tracks, unmatched detections)."""
    if not tracks or len(boxes) == 0:
        return [], list(range(len(tracks))), list(range(len(boxes)))
    ov = iou(np.stack([t.box() for t in tracks]), boxes)
    ov[np.array([t.label for t in tracks])[:, None] != labels[None, :]] = 0  # class-aware
    sim = ov * scores[None, :] if scores is not None else ov.copy()
    allowed = ov >= min_iou
    if features is not None and weight > 0:
        own = np.stack([t.feature if t.feature is not None else np.zeros(features.shape[1], np.float32)
                        for t in tracks])
        app = distance(own, features)
        sim -= weight * app
        if max_app is not None:
            allowed &= app <= max_app
    sim[~allowed] = -1e6  # gated: the solver must not trade a valid pair for it
    rows, cols = linear_sum_assignment(-sim)
    matches = [(r, c) for r, c in zip(rows, cols) if allowed[r, c]]
    mt, md = {r for r, _ in matches}, {c for _, c in matches}
    return matches, [i for i in range(len(tracks)) if i not in mt], [j for j in range(len(boxes)) if j not in md]


class ByteTracker:
    """Tracks the objects of one video. ``update`` once per processed frame."""

    SECOND_IOU = 0.5  # low-score detections must overlap their track well (ByteTrack's value)
    NEW_IOU = 0.3  # a track seen once must overlap its second detection (ByteTrack's 0.7 distance)
    DUPLICATE_IOU = 0.85  # a lost track re-found as a new one: the younger copy goes

    def __init__(self, options: TrackOptions | None = None):
        self.o = options or TrackOptions()
        self.tracks: list[Track] = []
        self.next_id = 1
        self.frame: int | None = None
        self.updates = 0
        self.feats: np.ndarray | None = None

    FEATURE_MOMENTUM = 0.9  # a track's appearance: running average over its confident detections (BoT-SORT)

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
               frame: int | None = None, features: np.ndarray | None = None) -> np.ndarray:
        """boxes (N, 4) xyxy, scores (N,), labels (N,) int of this frame -> (N,) int64 track id
        of each detection, -1 where it belongs to no confirmed track. ``frame``: the video
        frame index (gaps from a frame stride count towards the lost-track buffer).
        ``features``: (N, D) appearance rows (appearance.colour_features) or None."""
        self.frame = (self.frame + 1 if self.frame is not None else 0) if frame is None else frame
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores, labels = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).reshape(-1).astype(np.int64)
        ids = np.full(len(boxes), -1, np.int64)
        for t in self.tracks:
            if t.state != TRACKED:
                t.kf.mean[7] = 0  # an unseen object keeps moving but stops growing (as ByteTrack does)
            t.kf.predict()
        hi = np.flatnonzero(scores >= self.o.high)
        lo = np.flatnonzero((scores >= self.o.low) & (scores < self.o.high))
        confirmed = [t for t in self.tracks if t.state in (TRACKED, LOST)]
        fresh = [t for t in self.tracks if t.state == NEW]

        feats = np.asarray(features, np.float32) if features is not None else None
        fw = self.o.appearance if feats is not None else 0.0
        self.feats = feats
        looks = bool(fw) and self.o.reid > 0  # colour gates, re-finding and twin boxes (--track-reid)
        gate = self.o.reid if looks else None
        # 1: confident detections against confirmed tracks (lost ones included: re-identification)
        m, left_t, left_d = associate(confirmed, boxes[hi], labels[hi], self.o.iou, scores[hi],
                                      feats[hi] if fw else None, fw, gate)
        for ti, di in m:
            self._continue(confirmed[ti], hi[di], boxes, scores, ids)
        # 2: low-score detections against tracks that were tracked until now
        still = [confirmed[i] for i in left_t if confirmed[i].state == TRACKED]
        m2, left2, _ = associate(still, boxes[lo], labels[lo], self.SECOND_IOU)
        for ti, di in m2:
            self._continue(still[ti], lo[di], boxes, scores, ids)
        for i in left2:
            still[i].state = LOST
        rest = hi[left_d]
        if looks:  # 2b: lost tracks re-find their objects by looks, where motion allows
            rest = self._refind(rest, boxes, scores, labels, ids)
        # 3: tracks born last frame against the confident detections still free
        m3, left3, left_d3 = associate(fresh, boxes[rest], labels[rest], self.NEW_IOU, None,
                                       feats[rest] if fw else None, fw, gate)
        for ti, di in m3:
            self._continue(fresh[ti], rest[di], boxes, scores, ids)
        dead = {id(fresh[i]) for i in left3}
        # 4: births; on the first frame tracks are confirmed at once (nothing to confirm against)
        first = self.updates == 0
        self.updates += 1
        born = rest[left_d3]
        born = born[scores[born] >= self.o.new]
        if looks and len(born):
            born = born[~self._seen_already(born, boxes, labels, ids)]
        for di in born:
            t = Track(self.next_id, int(labels[di]), KalmanBox(boxes[di]), float(scores[di]),
                      TRACKED if first else NEW, self.frame, self.frame,
                      feature=feats[di].copy() if feats is not None else None)
            self.next_id += 1
            self.tracks.append(t)
            if first:
                ids[di] = t.id
        # 5: deaths: unconfirmed tracks not seen again, lost tracks past their buffer
        self.tracks = [t for t in self.tracks if id(t) not in dead
                       and not (t.state == LOST and self.frame - t.last_frame > self.o.buffer)]
        self._drop_duplicates(ids)
        return ids

    def _refind(self, rest: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                ids: np.ndarray) -> np.ndarray:
        """Lost tracks against the confident detections ``rest`` no track took, and against
        those taken by tracks born after the lost one was last seen (an object coming back
        into view is often first seen partly, looking different, and gets a new track before
        its old one recognises it; two tracks that never coexisted may be one object). A
        pair is possible when the detection lies within reach of the track's last confident
        position moved on at its confident velocity (least squares over its last SEEN
        confident detections) — half the object's height plus half the distance travelled
        since, as speed and direction may change while unseen — and when it looks alike
        (colour difference <= ``reid``). The most alike pairs win; a younger track that loses
        its detection this way ends, the older id goes on. -> the detections of ``rest`` left."""
        lost = [t for t in self.tracks if t.state == LOST and len(t.seen) >= 2 and t.feature is not None]
        if not lost:
            return rest
        young = [t for t in self.tracks if t.state == TRACKED and t.last_frame == self.frame
                 and t.start_frame > min(x.last_frame for x in lost)]
        held = _detections_of(young, ids)
        sure = scores[held] >= self.o.high  # a low-score (occluded) box's looks are not to be trusted
        young, held = [t for t, k in zip(young, sure) if k], held[sure]
        cand = np.concatenate([rest, held]).astype(np.int64)
        if len(cand) == 0:
            return rest
        cost = distance(np.stack([t.feature for t in lost]), self.feats[cand]).astype(np.float64)
        cost[:, ~self.feats[cand].any(1)] = 2.0  # looks are the evidence here: none, no match
        centres = (boxes[cand, :2] + boxes[cand, 2:]) / 2
        born = np.array([-1] * len(rest) + [t.start_frame for t in young])
        moves = []
        for i, t in enumerate(lost):
            seen = np.array(t.seen)
            f, c, h = seen[-1, 0], seen[-1, 1:3], seen[-1, 3]
            v = _slope(seen[:, 0], seen[:, 1:3])
            gap = self.frame - f
            reach = 0.5 * h + 0.5 * np.hypot(*v) * gap
            far = np.hypot(*(centres - (c + v * gap)).T) > reach
            coexisted = (born >= 0) & (born <= t.last_frame)
            cost[i, far | coexisted | (labels[cand] != t.label)] = 2.0
            moves.append(v)
        cost[cost > self.o.reid] = 2.0
        rows, cols = linear_sum_assignment(cost)
        taken = set()
        for r, c in zip(rows, cols):
            if cost[r, c] <= self.o.reid:
                t, di = lost[r], int(cand[c])
                if c >= len(rest):  # the younger track was this object: it ends, the old id goes on
                    gone = young[c - len(rest)]
                    self.tracks = [x for x in self.tracks if x is not gone]
                t.kf = KalmanBox(boxes[di])  # restart at the object, moving as it last did
                t.kf.mean[4:6] = moves[r]
                self._continue(t, di, boxes, scores, ids)
                taken.add(c)
        return np.array([d for j, d in enumerate(rest) if j not in taken], np.int64)

    DUPLICATE_VIEW_IOU = 0.5

    def _seen_already(self, cand: np.ndarray, boxes: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(K,) detections about to start tracks -> (K,) bool: the detection overlaps a box a
        track took this frame (IoU >= DUPLICATE_VIEW_IOU) and looks like that track — a
        second box on an object already followed (detectors give partly covered people two
        boxes), which would otherwise start a twin track that trades the object with it."""
        active = [t for t in self.tracks if t.state == TRACKED and t.last_frame == self.frame and t.feature is not None]
        if not active:
            return np.zeros(len(cand), bool)
        twin = iou(boxes[cand], boxes[_detections_of(active, ids)]) >= self.DUPLICATE_VIEW_IOU
        twin &= distance(self.feats[cand], np.stack([t.feature for t in active])) <= self.o.reid
        twin &= labels[cand][:, None] == np.array([t.label for t in active])[None, :]
        return twin.any(1) & self.feats[cand].any(1)

    def _continue(self, t: Track, di: int, boxes: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> None:
        t.kf.update(boxes[di])
        f = self.feats[di] if self.feats is not None else None
        if f is not None and f.any() and scores[di] >= self.o.high:  # occluded (low-score) looks are not learnt
            mixed = f if t.feature is None else self.FEATURE_MOMENTUM * t.feature + (1 - self.FEATURE_MOMENTUM) * f
            t.feature = mixed / max(float(np.linalg.norm(mixed)), 1e-9)
        if scores[di] >= self.o.high:
            b = boxes[di]
            t.seen.append((self.frame, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[3] - b[1]))
        t.score, t.last_frame, t.hits, t.state = float(scores[di]), self.frame, t.hits + 1, TRACKED
        ids[di] = t.id

    def _drop_duplicates(self, ids: np.ndarray) -> None:
        """A lost track whose predicted box sits on an active track's box is the same object:
        keep whichever is older (ByteTrack's remove_duplicate_stracks) — unless they look
        clearly different (someone else stepped into the lost one's place)."""
        active = [t for t in self.tracks if t.state == TRACKED]
        lost = [t for t in self.tracks if t.state == LOST]
        if not active or not lost:
            return
        ov = iou(np.stack([t.box() for t in active]), np.stack([t.box() for t in lost]))
        gone: set[int] = set()
        for a, b in zip(*np.nonzero(ov > self.DUPLICATE_IOU)):
            ta, tb = active[a], lost[b]
            if ta.label != tb.label or self._unlike(ta, tb):
                continue
            older_lost = (tb.last_frame - tb.start_frame) > (ta.last_frame - ta.start_frame)
            gone.add(id(ta) if older_lost else id(tb))
            if older_lost:  # the lost one lives on under its old id: hand it the new one's detection
                ids[ids == ta.id] = tb.id
                tb.kf, tb.state, tb.last_frame, tb.score = ta.kf, TRACKED, ta.last_frame, ta.score
                tb.feature = ta.feature if ta.feature is not None else tb.feature
        self.tracks = [t for t in self.tracks if id(t) not in gone]

    def _unlike(self, a: Track, b: Track) -> bool:
        if self.o.reid <= 0 or a.feature is None or b.feature is None:
            return False
        return bool(distance(a.feature[None], b.feature[None])[0, 0] > self.o.reid)

    def active(self) -> list[Track]:
        """Confirmed tracks matched in the latest frame."""
        return [t for t in self.tracks if t.state == TRACKED and t.last_frame == self.frame]
