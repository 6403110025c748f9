"""Keypoints over time: what the One-Euro smoothing of tracked points does to real models'
outputs on video. Prints one JSON object.

For pose (the default pipeline: COCO person detector + MoveNet) and landmarks (RetinaFace's
5 face points), a real photo (keypoints/coco, keypoints/300w) is turned into two 90-frame
videos at 25 fps, each frame re-noised (Gaussian sensor noise, sigma 2, and a JPEG round
trip) so the models' outputs jitter as they do on camera footage:
- static: the subject does not move. Jitter = mean frame-to-frame movement of the points
  (px), raw (``smooth=False``) against smoothed (the default);
- moving: the camera pans 3 px per frame, so every point truly moves along a straight
  line. Each point's true track is the least-squares line through its raw positions; error
  = mean distance to it (raw: the models' noise; smoothed: noise left + lag), lag = mean
  signed error along the motion (px; positive: behind).
Points with a score below 0.3 are left out. Issue #15's asks: jitter on a static subject
falls, lag on a moving one stays bounded."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts, as `cvapps` does

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402

W, H, FPS, FRAMES, PAN = 640, 480, 25, 90, 3
MIN_SCORE = 0.3


def subject(task: str, data: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """-> (RGB photo scaled so the subject is ~60% of the frame's height, subject centre)."""
    kp = require(data / "keypoints", "keypoints")
    if task == "pose":
        d = json.loads((kp / "coco" / "test_coco.json").read_text())
        a = max((a for a in d["annotations"] if a.get("num_keypoints", 0) >= 12), key=lambda a: a["area"])
        name = next(i["file_name"] for i in d["images"] if i["id"] == a["image_id"])
        path, (x, y, w, h) = kp / "coco" / name, a["bbox"]
    else:
        d = json.loads((kp / "300w" / "test_300w.json").read_text())
        a = d["annotations"][0]
        name = next(i["file_name"] for i in d["images"] if i["id"] == a["image_id"])
        path, (x, y, w, h) = kp / "300w" / name, a["bbox"]
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    s = 0.6 * H / h if task == "pose" else 0.35 * H / h
    rgb = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    pad = W + FRAMES * PAN  # room to pan over
    grey = [int(v) for v in rgb.reshape(-1, 3).mean(0)]  # plain: a reflected border would add people / faces
    rgb = cv2.copyMakeBorder(rgb, H, H, pad, pad, cv2.BORDER_CONSTANT, value=grey)
    return rgb, (pad + (x + w / 2) * s, H + (y + h / 2) * s)


def write(photo: np.ndarray, centre: tuple[float, float], pan: int, path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    x0, y0 = int(centre[0] - W / 2), int(centre[1] - H / 2)
    for t in range(FRAMES):
        x = x0 + pan * t - pan * FRAMES // 2  # the window moves right: the subject moves left
        f = photo[y0 : y0 + H, x : x + W].astype(np.float32) + rng.normal(0, 2, (H, W, 3))
        f = cv2.cvtColor(np.clip(f, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        f = cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR)
        out.write(f)
    out.release()


def points(task: str, video: Path, smooth: bool) -> tuple[np.ndarray, np.ndarray]:
    """-> (T, K, 2) points and (T, K) scores of the subject per frame: the most confident
    instance at first, then the one nearest to where the subject was (NaN where none)."""
    pts, sc, at = [], [], None
    for r in cvapps.predict(None, [video], task=task, stream=True, smooth=smooth, progress=False):
        p = r.prediction
        if len(p) == 0:
            pts.append(None), sc.append(None)
            continue
        centres = (np.asarray(p.boxes)[:, :2] + np.asarray(p.boxes)[:, 2:]) / 2
        i = int(np.argmax(p.box_scores)) if at is None else int(np.argmin(np.linalg.norm(centres - at, axis=1)))
        at = centres[i]
        pts.append(np.asarray(p.points[i], np.float64)), sc.append(np.asarray(p.scores[i], np.float64))
    k = next(x.shape[0] for x in pts if x is not None)
    P = np.stack([x if x is not None else np.full((k, 2), np.nan) for x in pts])
    S = np.stack([x if x is not None else np.zeros(k) for x in sc])
    return P, S


def jitter(P: np.ndarray, ok: np.ndarray) -> float:
    step = np.linalg.norm(np.diff(P, axis=0), axis=2)
    both = ok[1:] & ok[:-1]
    return float(np.nanmean(step[both]))


def line_errors(P_raw, P, ok, direction) -> tuple[float, float]:
    """Distance to each point's least-squares line through its raw positions, and the mean
    signed error along ``direction`` (positive: behind the motion)."""
    t = np.arange(len(P_raw), dtype=np.float64)
    err, lag = [], []
    for k in range(P_raw.shape[1]):
        m = ok[:, k] & np.isfinite(P_raw[:, k, 0]) & np.isfinite(P[:, k, 0])
        if m.sum() < 10:
            continue
        fit = np.stack([np.polyval(np.polyfit(t[m], P_raw[m, k, j], 1), t[m]) for j in range(2)], 1)
        d = P[m, k] - fit
        err.append(np.linalg.norm(d, axis=1))
        lag.append(-(d @ direction))
    return float(np.mean(np.concatenate(err))), float(np.mean(np.concatenate(lag)))


def run(task: str, data: Path, out: Path) -> dict:
    photo, centre = subject(task, data)
    res = {}
    for kind, pan in (("static", 0), ("moving", PAN)):
        video = out / f"{task}_{kind}.mp4"
        write(photo, centre, pan, video)
        raw, s_raw = points(task, video, smooth=False)
        smo, _ = points(task, video, smooth=True)
        ok = s_raw >= MIN_SCORE
        ok[:5] = False  # the filter's start-up
        if kind == "static":
            res[kind] = {"jitter_px_per_frame": {"raw": round(jitter(raw, ok), 3), "smoothed": round(jitter(smo, ok), 3)}}
        else:
            e_raw, _ = line_errors(raw, raw, ok, np.array([-1.0, 0.0]))
            e_smo, lag = line_errors(raw, smo, ok, np.array([-1.0, 0.0]))
            res[kind] = {"speed_px_per_frame": PAN, "error_to_true_line_px": {"raw": round(e_raw, 3),
                                                                              "smoothed": round(e_smo, 3)},
                         "smoothed_lag_px": round(lag, 3)}
        res[kind]["frames_with_the_subject"] = int(np.isfinite(raw[:, 0, 0]).sum())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="where the videos go (default: a temp dir)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cvapps_smoothing_"))
    out.mkdir(parents=True, exist_ok=True)
    data = data_root()
    print(json.dumps({task: run(task, data, out) for task in ("pose", "landmarks")}))


if __name__ == "__main__":
    main()
