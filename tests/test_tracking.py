"""Tracking: the Kalman filter on hand-computed values, ByteTrack association through
occlusion and crossings, line / zone counting on scripted trajectories, the One-Euro filter
on hand-computed values, and tracking through the predict pipeline (CLI, API stream)."""

from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli

import cvapps
from cvapps.errors import ConfigError
from cvapps.tracking import ByteTracker, LineCounter, OneEuro, SmoothOptions, TrackOptions, ZoneCounter
from cvapps.tracking.kalman import KalmanBox


def test_kalman_predict_and_update_equal_hand_computed_values():
    kf = KalmanBox(np.array([0.0, 0.0, 10.0, 20.0]))  # centre (5, 10), aspect 0.5, height 20
    np.testing.assert_allclose(kf.mean, [5, 10, 0.5, 20, 0, 0, 0, 0])
    # initial std: position 2 * h / 20 = 2, velocity 10 * h / 160 = 1.25
    assert kf.cov[0, 0] == pytest.approx(4.0) and kf.cov[4, 4] == pytest.approx(1.5625)
    kf.predict()
    # x' = x + v: var(x) = 4 + 1.5625 + (h / 20)^2 = 6.5625; cov(x, v) = 1.5625; var(v) += (h / 160)^2
    assert kf.cov[0, 0] == pytest.approx(6.5625)
    assert kf.cov[0, 4] == pytest.approx(1.5625)
    assert kf.cov[4, 4] == pytest.approx(1.5625 + 0.125**2)
    kf.update(np.array([2.0, 0.0, 12.0, 20.0]))  # measured centre x 7: innovation 2, R = (h / 20)^2 = 1
    s = 6.5625 + 1.0
    assert kf.mean[0] == pytest.approx(5 + 2 * 6.5625 / s)
    assert kf.mean[4] == pytest.approx(2 * 1.5625 / s)  # the velocity learns from the position error
    assert kf.mean[1] == pytest.approx(10) and kf.mean[3] == pytest.approx(20)
    assert kf.cov[0, 0] == pytest.approx(6.5625 - 6.5625**2 / s)


def _box(cx: float, cy: float, w: float = 40, h: float = 80) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _run(tracker: ByteTracker, frames: list[list[tuple[str, list[float], float]]]) -> list[dict[str, int]]:
    """frames: per frame (object name, box, score) -> per frame {object name: track id}."""
    out = []
    for f in frames:
        names = [n for n, _, _ in f]
        boxes = np.array([b for _, b, _ in f], np.float64).reshape(-1, 4)
        ids = tracker.update(boxes, np.array([s for _, _, s in f]), np.zeros(len(f), np.int64))
        out.append({n: int(i) for n, i in zip(names, ids)})
    return out


def test_ids_survive_a_two_frame_occlusion():
    frames = []
    for t in range(12):
        f = [("a", _box(50 + 6 * t, 100), 0.9), ("b", _box(300, 100 + 3 * t), 0.85)]
        if t in (5, 6):  # a is hidden: no detection at all for two frames
            f = f[1:]
        frames.append(f)
    ids = _run(ByteTracker(), frames)
    assert ids[0]["a"] > 0 and ids[0]["b"] > 0 and ids[0]["a"] != ids[0]["b"]
    assert all(r["a"] == ids[0]["a"] for r in ids if "a" in r)  # re-found where the motion model expected it
    assert all(r["b"] == ids[0]["b"] for r in ids)


def test_crossing_tracks_keep_their_ids_and_low_scores_bridge_the_overlap():
    frames = []
    for t in range(30):  # a goes right, b goes left, 20 px apart vertically: their boxes overlap mid-way
        a, b = _box(40 + 8 * t, 100), _box(272 - 8 * t, 120)
        overlap = abs((40 + 8 * t) - (272 - 8 * t)) < 40
        frames.append([("a", a, 0.9), ("b", b, 0.3 if overlap else 0.9)])  # the one behind scores low
    ids = _run(ByteTracker(), frames)
    assert ids[0]["a"] != ids[0]["b"]
    assert [r["a"] for r in ids] == [ids[0]["a"]] * 30
    assert [r["b"] for r in ids] == [ids[0]["b"]] * 30  # low-score boxes continued b (second stage)
    # without the second stage (low threshold above the occluded score) b is lost during the overlap
    ids_hi_only = _run(ByteTracker(TrackOptions(low=0.5)), frames)
    assert any(r["b"] == -1 for r in ids_hi_only)


def test_births_need_confirmation_and_lost_tracks_expire():
    tr = ByteTracker(TrackOptions(buffer=3))
    first = _run(tr, [[("a", _box(50, 50), 0.9)]])[0]
    assert first["a"] == 1  # the first frame confirms at once
    later = _run(tr, [[("a", _box(50, 50), 0.9), ("c", _box(300, 300), 0.9)],
                      [("a", _box(50, 50), 0.9), ("c", _box(300, 300), 0.9)]])
    assert later[0]["c"] == -1 and later[1]["c"] == 2  # born unconfirmed, confirmed when seen again
    assert _run(tr, [[("weak", _box(500, 500), 0.55)], [("weak", _box(500, 500), 0.55)]])[1]["weak"] == -1  # < new
    _run(tr, [[] for _ in range(5)])  # longer than the buffer
    assert _run(tr, [[("a", _box(50, 50), 0.9)]])[0]["a"] == -1  # a new object now, unconfirmed


def _unit(*v: float) -> np.ndarray:
    x = np.zeros(8, np.float32)
    x[: len(v)] = v
    return x / np.linalg.norm(x)


def _behind_pillar(t: int) -> tuple[list[float], float] | None:
    """A person 40 px wide walking right at 4 px/frame behind a pillar (x 200-320): (box, score)
    of what a detector sees at frame t — the visible part, scoring low while partly hidden."""
    x0, x1 = 50 + 4 * t, 90 + 4 * t
    if x1 <= 200 or x0 >= 320:
        return [x0, 100, x1, 180], 0.9
    if x0 < 200:
        return [x0, 100, 200, 180], 0.3
    if x1 > 320:
        return [320, 100, x1, 180], 0.3
    return None


def _pillar_run(options: TrackOptions, frames: int, extra=None, emerging=None, after=None) -> dict:
    """-> {(name, frame): track id}. ``emerging``: (score, look) of the person while coming
    out from behind the pillar, instead of a low score and their own look; ``after``: their
    look once out."""
    tr, ids, look = ByteTracker(options), {}, _unit(1, 0.05)
    for t in range(frames):
        seen = [("a", *_behind_pillar(t), look)] if _behind_pillar(t) else []
        if seen and emerging and seen[0][1][0] == 320:
            seen = [("a", seen[0][1], *emerging)]
        elif seen and after is not None and seen[0][1][0] > 320:
            seen = [("a", seen[0][1], seen[0][2], after)]
        seen += extra(t) if extra else []
        out = tr.update(np.array([b for _, b, _, _ in seen], float).reshape(-1, 4), np.array([s for _, _, s, _ in seen]),
                        np.zeros(len(seen), np.int64), t, np.array([f for *_, f in seen], np.float32).reshape(-1, 8))
        ids.update({(n, t): int(i) for (n, *_), i in zip(seen, out)})
    return ids


def test_a_lost_track_refinds_its_object_by_looks_after_a_long_occlusion():
    """Hidden for 20 frames, after boxes that shrink and slow the Kalman state: the person is
    re-found where its earlier, confident motion says; a look-alike far away is not."""
    alike = lambda t: [("c", [560, 300, 600, 380], 0.9, _unit(1, 0.06))] if t == 50 else []  # noqa: E731
    ids = _pillar_run(TrackOptions(), 80, alike)
    first = ids[("a", 0)]
    assert first > 0 and [ids[("a", t)] for t in range(70, 80)] == [first] * 10
    assert ids[("c", 50)] != first
    # IoU alone (no re-finding) loses it: the slowed prediction no longer overlaps the person
    plain = _pillar_run(TrackOptions(reid=0), 80)
    assert plain[("a", 79)] not in (-1, first)


def test_an_object_first_seen_again_as_someone_else_gets_its_old_id_back():
    """Coming out from behind the pillar the person is detected confidently but looks
    different (only a part shows: 40 degrees away from their look before, as unit colour
    vectors), so a new track starts and follows them; once they look like themselves again
    (15 degrees) the old id takes over and the young track ends. A look-alike standing
    nearby the whole time coexisted with the person, so it is never merged with them."""
    deg = lambda a: _unit(math.cos(math.radians(a)), math.sin(math.radians(a)))  # noqa: E731
    still = lambda t: [("d", [400, 100, 440, 180], 0.9, _unit(1, 0.07))]  # noqa: E731
    ids = _pillar_run(TrackOptions(), 85, still, emerging=(0.9, deg(40)), after=deg(15))
    first, young = ids[("a", 0)], ids[("a", 64)]
    assert young not in (-1, first)  # the partial view started its own track
    assert [ids[("a", t)] for t in range(70, 85)] == [first] * 15
    assert {ids[("d", t)] for t in range(1, 85)} == {ids[("d", 1)]} and ids[("d", 1)] not in (first, young)


def test_a_second_box_on_a_tracked_person_does_not_start_a_twin_track():
    """Detectors often give a partly covered person two boxes (here IoU 0.6 with each other):
    the second one, looking like the tracked person, starts no track of its own — a twin
    would trade the person with the first. Someone who looks different in the same place
    does get a track."""
    def run(second_look):
        tr, out = ByteTracker(), []
        for t in range(12):
            boxes = [_box(100, 100, 60, 120)] + ([_box(115, 100, 40, 120)] if t >= 2 else [])
            feats = [_unit(1)] + ([second_look] if t >= 2 else [])
            out.append(tr.update(np.array(boxes, float), np.array([0.9, 0.8][: len(boxes)]),
                                 np.zeros(len(boxes), np.int64), t, np.array(feats, np.float32)).tolist())
        return out
    twin = run(_unit(1, 0.1))
    assert all(r[0] == twin[0][0] for r in twin) and all(r[1] == -1 for r in twin[2:])
    other = run(_unit(0, 1))
    assert all(r[0] == other[0][0] for r in other) and other[3][1] not in (-1, other[0][0])


def test_a_detection_that_looks_clearly_different_does_not_continue_a_track():
    """A vanishes and B, dressed differently, steps into A's predicted box: IoU alone hands
    B A's id; with the appearance gate B starts its own track."""
    def run(options):
        tr = ByteTracker(options)
        out = []
        for t in range(14):
            f = _unit(1) if t < 8 else _unit(0, 1)  # A until frame 7, then B in the same place
            out.append(int(tr.update(np.array([_box(100 + 4 * t, 100)]), np.array([0.9]), np.array([0]), t,
                                     f[None])[0]))
        return out
    gated, iou_only = run(TrackOptions()), run(TrackOptions(reid=0))
    assert iou_only == [iou_only[0]] * 14
    assert gated[:8] == [gated[0]] * 8 and gated[8] == -1 and gated[9] not in (-1, gated[0])
    assert gated[9:] == [gated[9]] * 5


def test_labels_are_not_mixed():
    tr = ByteTracker()
    ids = tr.update(np.array([_box(50, 50)]), np.array([0.9]), np.array([0]))
    again = tr.update(np.array([_box(50, 50)]), np.array([0.9]), np.array([1]))  # same place, another class
    assert ids[0] > 0 and again[0] != ids[0]


def test_track_options_are_checked(capsys, tmp_path):
    with pytest.raises(ConfigError, match="--track-low 0.6 must not exceed --track-high 0.5"):
        TrackOptions.parse({"low": 0.6})
    with pytest.raises(ConfigError, match="--track-high"):
        TrackOptions.parse({"high": 1.5})
    # every tracker / smoother setting is a CLI option with the group's own default, and reaches it
    code, out, _ = run_cli(capsys, "predict", "pose", "--help")
    text = " ".join(out.split())
    for group in (TrackOptions, SmoothOptions):
        for kw, name in group.keywords().items():
            default = next(f.default for f in dataclasses.fields(group) if f.name == name)
            assert f"--{kw.replace('_', '-')} <" in text and f"(default {default})" in text
    code, _, err = run_cli(capsys, "track", tmp_path / "none.mp4", "--track-reid", "1.5")
    assert code != 0 and "--track-reid must be at most 1" in err
    code, _, err = run_cli(capsys, "predict", "pose", tmp_path / "none.mp4", "--smooth-d-cutoff", "0")
    assert code != 0 and "--smooth-d-cutoff must be above 0" in err


def test_line_counts_each_crossing_once_per_direction():
    line = LineCounter([0, 100], [200, 100])  # drawn left to right: moving down is "in"
    path = {1: [(50, 80), (50, 95), (50, 105), (50, 99), (50, 101), (50, 130), (50, 60)],  # in, jitter, out
            2: [(150, 150), (150, 120), (150, 90)],  # up: out
            3: [(300, 80), (300, 130)]}  # crosses the infinite line beyond the segment's end: not counted
    for t in range(7):
        ids = [k for k, v in path.items() if t < len(v)]
        line.update(np.array(ids), np.array([path[k][t] for k in ids], float), ["person"] * len(ids))
    assert line.to_dict() == {"in": {"person": 1}, "out": {"person": 2}}


def test_zone_occupancy_and_visitors():
    zone = ZoneCounter([[0, 0], [100, 0], [100, 100], [0, 100]])
    zone.update(np.array([1, 2, -1]), np.array([[50, 50], [150, 50], [20, 20]], float), ["car", "car", "car"])
    assert zone.to_dict() == {"occupancy": {"car": 1}, "visitors": {"car": 1}}  # untracked (-1) not counted
    zone.update(np.array([2]), np.array([[60, 60]], float), ["car"])
    assert zone.to_dict() == {"occupancy": {"car": 1}, "visitors": {"car": 2}}


def test_one_euro_equals_hand_computed_values():
    o = SmoothOptions(min_cutoff=1.0, beta=0.5, d_cutoff=1.0)
    f = OneEuro(o)
    dt = 0.1
    assert f(np.array([0.0]), 0.0)[0] == 0.0  # the first sample passes through

    def alpha(fc):
        return 1 / (1 + 1 / (2 * math.pi * fc * dt))

    x1 = 1.0  # step 1: dx = 10 /s
    dx1 = alpha(1.0) * 10.0
    xh1 = alpha(1.0 + 0.5 * dx1) * x1
    assert f(np.array([x1]), 0.1)[0] == pytest.approx(xh1)
    x2 = 1.0  # step 2: the speed estimate decays, the value converges
    dx2 = dx1 + alpha(1.0) * ((x2 - xh1) / dt - dx1)
    xh2 = xh1 + alpha(1.0 + 0.5 * abs(dx2)) * (x2 - xh1)
    assert f(np.array([x2]), 0.2)[0] == pytest.approx(xh2)
    # speed in object sizes: the same motion of a 10x larger object is smoothed like a 10x smaller motion
    g, h = OneEuro(o), OneEuro(o)
    g(np.array([0.0]), 0.0), h(np.array([0.0]), 0.0)
    assert g(np.array([10.0]), 0.1, scale=10)[0] / 10 == pytest.approx(h(np.array([1.0]), 0.1)[0])


def test_one_euro_steadies_a_still_point_and_follows_a_moving_one():
    rng = np.random.default_rng(0)
    f, g = OneEuro(), OneEuro()
    still = 100 + rng.normal(0, 1.0, 120)
    out = np.array([f(np.array([v]), i / 30, 50)[0] for i, v in enumerate(still)])
    assert np.std(np.diff(out[30:])) < 0.5 * np.std(np.diff(still[30:]))  # jitter falls by more than half
    moving = np.arange(120) * 5.0  # 150 px/s, 3 object sizes per second
    out = np.array([g(np.array([v]), i / 30, 50)[0] for i, v in enumerate(moving)])
    assert np.max(np.abs(out[30:] - moving[30:])) < 10  # lag stays under two frames of motion


# the pipeline --------------------------------------------------------------------------
def _still_video(path, frames=8, size=(96, 128)):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size[1], size[0]))
    for _ in range(frames):
        w.write(img)
    w.release()
    return path


def test_track_cli_gives_stable_ids_on_a_still_scene_and_draws_them(tmp_path, capsys, tiny_detector):
    model = cvapps.save(tiny_detector, tmp_path / "det.safetensors")
    video = _still_video(tmp_path / "still.mp4")
    code, _, err = run_cli(capsys, "track", video, "--model", model, "--track-high", "0.3", "--track-new", "0.3",
                           "--track-low", "0.05", "--save-json", tmp_path / "t.jsonl", "--out", tmp_path / "drawn",
                           "--line", "0,48,128,48", "--zone", "0,0,64,0,64,96,0,96")
    assert code == 0, err
    recs = [json.loads(ln) for ln in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(recs) == 8
    ids = [sorted(p["track_id"] for p in r["predictions"]) for r in recs]
    assert ids[0] and all(i == ids[0] for i in ids)  # the same objects keep their ids on every frame
    assert recs[0]["counts"]["line1"] == {"in": {}, "out": {}}  # nothing moves, nothing crosses
    assert sum(recs[-1]["counts"]["zone1"]["occupancy"].values()) >= 0
    assert (tmp_path / "drawn" / "still.mp4").stat().st_size > 0


def test_stream_equals_predict_and_tracks_through_the_api(tmp_path, tiny_detector):
    video = _still_video(tmp_path / "v.mp4", frames=5)
    streamed = list(tiny_detector.stream(video, batch_size=2, conf=0.1))
    assert [r.frame for r in streamed] == [0, 1, 2, 3, 4] and streamed[0].image.shape == (96, 128, 3)
    frames = [r.image for r in streamed]
    listed = tiny_detector.predict(frames, conf=0.1, batch_size=2)  # the same batches: the same numbers
    for s, p in zip(streamed, listed):
        np.testing.assert_array_equal(s.prediction.boxes, p.boxes)
    tracked = list(cvapps.predict(tiny_detector, [video], task="detect", stream=True, track=True, track_high=0.3,
                                  track_new=0.3, progress=False))
    assert all(p.get("track_id", 0) > 0 for r in tracked for p in r.prediction.to_dict())
    assert len({tuple(r.prediction.track_ids.tolist()) for r in tracked[1:]}) == 1


def test_tracking_options_are_refused_where_they_cannot_work(tmp_path, capsys, tiny_model_file):
    video = _still_video(tmp_path / "v.mp4", frames=2)
    code, _, err = run_cli(capsys, "track", video, "--line", "1,2,3")
    assert code == 2 and "--line 1 '1,2,3' is not 2 points: x1,y1,x2,y2" in err
    code, _, err = run_cli(capsys, "predict", "detect", video, "--no-track", "--line", "0,0,5,5")
    assert code == 2 and "need tracking" in err
    with pytest.raises(ConfigError, match="classify predictions have no boxes to track"):
        cvapps.predict(str(tiny_model_file), [video], task="classify", track=True)


def test_a_stream_url_that_cannot_be_opened_is_one_line(capsys, monkeypatch, tiny_model_file):
    import cvapps.data.sources as sources

    monkeypatch.setattr(sources, "RECONNECT_WAIT", 0.0)
    code, _, err = run_cli(capsys, "predict", "classify", "rtsp://127.0.0.1:9/none", "--model", tiny_model_file,
                           "--reconnect", "1")
    assert code == 2 and "rtsp://127.0.0.1:9/none: cannot open stream (tried 2 times)" in err


def test_a_dropped_stream_reconnects_and_numbering_continues(monkeypatch):
    import cvapps.data.sources as sources

    monkeypatch.setattr(sources, "RECONNECT_WAIT", 0.0)
    img = np.zeros((8, 8, 3), np.uint8)
    script = iter([[img, img], [], [img]])  # opens: 2 frames then drops; a failed reopen; 1 more frame

    class FakeCapture:
        def __init__(self, *_):
            self.frames = next(script, None)

        def isOpened(self):
            return bool(self.frames)

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

        def get(self, prop):
            return 0

        def release(self):
            pass

    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    frames = list(sources.iter_frames(["rtsp://cam/1"], reconnect=2))
    assert [f.frame for f in frames if f.error is None] == [0, 1, 2]
    assert frames[-1].error is not None and "did not come back after 2 reconnect attempts" in frames[-1].error.one_line()


def test_pose_on_video_is_tracked_and_smoothed_unless_asked_not_to(tmp_path, capsys):
    torch.manual_seed(0)
    pose = cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64])
    pose.train()
    with torch.no_grad():
        pose(torch.rand(4, 3, 64, 64))
    model = cvapps.save(pose.eval(), tmp_path / "pose.safetensors")
    video = _still_video(tmp_path / "walk.mp4", frames=12, size=(120, 160))
    rng = np.random.default_rng(0)  # a detector's jittery box around a still person
    boxes = [{"source": "walk.mp4", "frame": t, "bbox": [40 + rng.normal(0, 3), 10 + rng.normal(0, 3), 60, 100],
              "score": 0.9} for t in range(12)]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    points = {}
    for flag in ("--smooth", "--no-smooth"):
        out = tmp_path / f"{flag}.jsonl"
        code, _, err = run_cli(capsys, "predict", "pose", video, "--model", model, "--boxes", tmp_path / "boxes.json",
                               flag, "--smooth-beta", "0", "--save-json", out)
        assert code == 0, err
        recs = [json.loads(ln) for ln in out.read_text().splitlines()]
        assert [p["track_id"] for r in recs for p in r["predictions"]] == [1] * 12  # tracked by default
        points[flag] = np.array([r["predictions"][0]["keypoints"] for r in recs]).reshape(12, -1, 3)[..., :2]
    jitter = {k: np.abs(np.diff(v, axis=0)).mean() for k, v in points.items()}
    assert jitter["--smooth"] < 0.6 * jitter["--no-smooth"]
    np.testing.assert_allclose(points["--smooth"][0], points["--no-smooth"][0], atol=0.01)  # same start


def test_tracking_through_a_bundle_and_onnxruntime(tmp_path, capsys, tiny_detector):
    pytest.importorskip("onnxruntime")
    det = cvapps.save(tiny_detector, tmp_path / "det.safetensors")
    seg_model = cvapps.create_model("segment", "mobilenet_v3_small", labels=["x", "y"], img_size=96)
    seg_model.backbone.load_state_dict(tiny_detector.backbone.state_dict())
    seg = cvapps.save(seg_model.eval(), tmp_path / "seg.safetensors")
    video = _still_video(tmp_path / "v.mp4", frames=4)
    track = ["--track-high", "0.3", "--track-new", "0.3", "--track-low", "0.05"]
    code, _, err = run_cli(capsys, "track", video, "--model", det, *track, "--save-json", tmp_path / "torch.jsonl")
    assert code == 0, err
    torch_recs = [json.loads(ln) for ln in (tmp_path / "torch.jsonl").read_text().splitlines()]
    code, _, err = run_cli(capsys, "predict", "detect,segment", video, "--model", det, "--model", seg, "--track",
                           *track, "--save-json", tmp_path / "bundle.jsonl")
    assert code == 0, err
    recs = [json.loads(ln) for ln in (tmp_path / "bundle.jsonl").read_text().splitlines()]
    assert all(p["track_id"] > 0 for r in recs for p in r["predictions"]["detect"])
    assert recs[-1]["predictions"]["detect"] and "segment" in recs[-1]["predictions"]
    onnx = cvapps.export(tiny_detector, tmp_path / "det.onnx")
    code, _, err = run_cli(capsys, "track", video, "--model", onnx, "--backend", "onnxruntime", *track,
                           "--save-json", tmp_path / "ort.jsonl")
    assert code == 0, err
    ort_recs = [json.loads(ln) for ln in (tmp_path / "ort.jsonl").read_text().splitlines()]
    ids = lambda rs: [[p["track_id"] for p in r["predictions"]] for r in rs]  # noqa: E731
    assert ids(ort_recs) == ids(torch_recs) and ids(torch_recs)[0]


def test_count_at_the_bottom_counts_where_an_object_stands():
    """A box moving down whose bottom edge crosses the line y = 100 while its centre stays
    above it: counted with count_at="bottom", not at the centre; other points are refused."""
    from cvapps.tracking.session import SequenceTracker, Trackable, TrackingOptions

    class Boxes:  # the two methods tracking asks of a prediction
        def __init__(self, box):
            self.boxes = np.array([box], float)

        def track_boxes(self):
            return Trackable(self.boxes, np.array([0.9]), np.array([0]), ["person"])

        def with_tracks(self, keep, ids, smooth=None):
            return self

    path = [[50, 20 + 4 * t, 80, 90 + 4 * t] for t in range(6)]  # bottom 90 -> 110, centre 55 -> 75
    counts = {}
    for at in ("centre", "bottom"):
        seq = SequenceTracker(TrackingOptions(lines=["0,100,200,100"], count_at=at))
        for t, box in enumerate(path):
            _, _, c = seq.step(Boxes(box), t, t / 25)
        counts[at] = c["line1"]
    assert counts == {"centre": {"in": {}, "out": {}}, "bottom": {"in": {"person": 1}, "out": {}}}
    with pytest.raises(ConfigError, match="--count-at 'feet' is not one of centre, bottom"):
        TrackingOptions(count_at="feet")
    from cvapps.api import tracking_options
    from cvapps.tasks import TASKS

    opts = {"line": "0,100,200,100", "count_at": "bottom"}
    assert tracking_options([TASKS.get("detect")], opts).count_at == "bottom" and opts == {}  # the API's keyword


def test_trails_break_where_the_track_was_not_seen():
    """A track missed for frames (behind something) gets its trail cut there — no straight
    line drawn across where it was not seen; a --vid-stride step is not a miss."""
    from cvapps.tracking.session import Overlay, trail_parts

    pts = [(1, (10, 50)), (2, (20, 50)), (3, (30, 50)), (9, (90, 50)), (10, (100, 50))]
    parts = trail_parts(pts)
    assert [p.tolist() for p in parts] == [[[10, 50], [20, 50], [30, 50]], [[90, 50], [100, 50]]]
    assert len(trail_parts([(0, (0, 0)), (3, (5, 0)), (6, (10, 0))])) == 1  # every 3rd frame, none missed
    img = Overlay([(1, parts)], [], []).draw(np.zeros((100, 120, 3), np.uint8))
    assert img[50, 20].any() and img[50, 95].any() and not img[50, 60].any()  # drawn stretches, a gap between
