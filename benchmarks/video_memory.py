"""Resident memory over a long video: generates a 640x480 video (default 10,000 frames,
moving shapes), runs the full predict pipeline on it (decode thread, batching, model,
JSON Lines, annotated output video written by the writer thread) and samples RSS at
frames 100, 1,000 and 10,000. Target: growth from frame 100 to the end < 50 MB.
Then the same video through the streaming API (``cvapps.predict(..., stream=True)``, a
generator of results, here with tracking when the task tracks): its RSS the same way, and
whether every frame's prediction equals the JSON line the list-returning run wrote.
Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from _common import RssSampler, rss_mb

import cvapps


def make_video(path: Path, frames: int) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 60, (480, 640, 3), dtype=np.uint8)
    for i in range(frames):
        f = bg.copy()
        cv2.circle(f, (int(320 + 250 * np.sin(i / 40)), 240), 60, (40, 200, 240), -1)
        cv2.rectangle(f, (i % 600, 50), (i % 600 + 40, 120), (200, 60, 60), -1)
        w.write(f)
    w.release()


def lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--model", default="mobilenet_v2.imagenet1k")
    ap.add_argument("--task", default="classify")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video, out, js = Path(tmp) / "long.mp4", Path(tmp) / "out", Path(tmp) / "p.jsonl"
        t = time.perf_counter()
        make_video(video, args.frames)
        made = time.perf_counter() - t
        model = cvapps.load(args.model)
        base = rss_mb()
        t = time.perf_counter()
        with RssSampler(lambda: lines(js), 0.2) as rss:  # the exit sample is the end of the run
            s = cvapps.predict(model, [str(video)], task=args.task, out_dir=str(out), save_json=str(js),
                               batch_size=16, progress=False)
        wall = time.perf_counter() - t
        samples = rss.samples
        at = rss.at((100, 1000, 10000), args.frames)
        end = round(samples[-1][1], 1)
        first = at.get("100", end)
        after = [r for n, r in samples if n >= 100]
        out_video = next(out.glob("*.mp4"))
        cap = cv2.VideoCapture(str(out_video))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps_out, n_out = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        print(json.dumps({"frames": s.processed, "video_write_s": round(made, 1), "rss_before_mb": round(base, 1),
                          "rss_at_frame_mb": at, "rss_end_mb": end,
                          "growth_frame_100_to_end_mb": round(end - first, 1),
                          "max_after_frame_100_mb": round(max(after), 1),
                          "peak_before_frame_100_mb": round(max(r for n, r in samples if n < 100), 1),
                          "pipeline_fps": round(s.processed / wall, 1),
                          "output_video": {"size": list(size), "fps": fps_out, "frames": n_out},
                          "stream": stream_run(model, video, js, args)}))


def stream_run(model, video: Path, js: Path, args) -> dict:
    """The generator API over the same video: flat memory, and the same predictions."""
    import json as _json

    lines_iter = iter(Path(js).read_text().splitlines())
    seen, same = [0], [0]
    with RssSampler(lambda: seen[0], 0.2) as rss:
        for r in cvapps.predict(model, [str(video)], task=args.task, stream=True, batch_size=16, progress=False):
            want = _json.loads(next(lines_iter))["predictions"]
            same[0] += _json.loads(_json.dumps(r.prediction.to_dict())) == want
            seen[0] += 1
    at = rss.at((100, 1000, 10000), args.frames)
    end = round(rss.samples[-1][1], 1)
    return {"frames": seen[0], "equal_to_predict": same[0], "rss_at_frame_mb": at,
            "growth_frame_100_to_end_mb": round(end - at.get("100", end), 1)}


if __name__ == "__main__":
    main()
