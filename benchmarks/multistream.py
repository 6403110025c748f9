"""Several video streams at once: total fps of `predict --concurrent` over 4 videos against
one video alone (same process, the default detector on its default runtime), and whether
each stream's records equal its single-stream run's.

The videos are made from the shared VOC photos (each frame a photo, 640x480), so the
detector has real work; on this 2-core machine the bound is the model's own images/s.

    CVAPPS_HOME=... .venv/bin/python benchmarks/multistream.py [--frames 60 --streams 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402


def make_videos(photos: list[Path], folder: Path, streams: int, frames: int) -> list[Path]:
    out = []
    for s in range(streams):
        path = folder / f"cam{s}.mp4"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
        for i in range(frames):
            img = cv2.imread(str(photos[(s * frames + i) % len(photos)]))
            w.write(cv2.resize(img, (640, 480)))
        w.release()
        out.append(path)
    return out


def run(model, videos, concurrent: bool, jsonl: Path) -> tuple[float, list[dict]]:
    t = time.perf_counter()
    s = cvapps.predict(model, [str(v) for v in videos], task="detect", save_json=jsonl, progress=False,
                       concurrent=concurrent)
    dt = time.perf_counter() - t
    return s.processed / dt, [json.loads(ln) for ln in jsonl.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--streams", type=int, default=4)
    args = ap.parse_args()
    photos = sorted(require(data_root() / "voc-detection" / "images", "voc-detection").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = make_videos(photos, tmp, args.streams, args.frames)
        model = "ssd_mobilenet_v2.coco"
        cvapps.predict(model, [str(videos[0])], task="detect", progress=False)  # warm: the runtime's graph is built once
        singles, fps_one = [], []
        for v in videos:
            fps, recs = run(model, [v], False, tmp / "one.jsonl")
            fps_one.append(fps)
            singles += recs
        fps_all, together = run(model, videos, True, tmp / "all.jsonl")
        fps_seq, _ = run(model, videos, False, tmp / "seq.jsonl")
    key = lambda r: (r["source"], r["frame"])  # noqa: E731
    a, b = sorted(singles, key=key), sorted(together, key=key)
    same = [key(x) for x in a] == [key(x) for x in b]
    worst = 0.0
    labels_same = True
    for x, y in zip(a, b):
        labels_same &= [p["label"] for p in x["predictions"]] == [p["label"] for p in y["predictions"]]
        if labels_same and x["predictions"]:
            worst = max(worst, float(np.abs(np.array([p["bbox"] for p in x["predictions"]]) -
                                            np.array([p["bbox"] for p in y["predictions"]])).max()))
    out = {"streams": args.streams, "frames_each": args.frames, "one_stream_fps": round(float(np.mean(fps_one)), 1),
           "concurrent_total_fps": round(fps_all, 1), "one_after_another_fps": round(fps_seq, 1),
           "concurrent_vs_one": round(fps_all / float(np.mean(fps_one)), 2),
           "records_same_frames": same, "labels_same": labels_same, "max_box_difference_px": round(worst, 5)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
