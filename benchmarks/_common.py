"""Helpers shared by the benchmark scripts (not part of the package or the tests)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def data_root() -> Path:
    """$CVAPPS_DATA, else ../shared/data beside the repository; exit cleanly if absent."""
    root = Path(os.environ.get("CVAPPS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return root


def require(path: Path, what: str) -> Path:
    if not path.exists():
        print(json.dumps({"skipped": f"{what} not found at {path} (set CVAPPS_DATA)"}))
        sys.exit(0)
    return path


def matmul_peak_gflops(dtype=torch.float32, n: int = 2048, reps: int = 10) -> float:
    """Best-of-reps GFLOP/s of an n x n matmul: the machine's practical peak for ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, size, size))
    return float(fc.get_total_flops())


def rss_mb() -> float:
    """This process's resident memory (Linux /proc), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    """Context manager sampling (progress(), RSS MB) every ``interval`` s in a thread, plus a
    final sample on exit. ``at(marks)``: the RSS when progress first reached each mark."""

    def __init__(self, progress, interval: float = 0.1):
        import threading

        self.progress, self.interval = progress, interval
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((self.progress(), rss_mb()))
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((self.progress(), rss_mb()))

    def at(self, marks, limit: int) -> dict[str, float]:
        out = {}
        for mark in marks:
            hits = [r for n, r in self.samples if n >= mark]
            if hits and mark <= limit:
                out[str(mark)] = round(hits[0], 1)
        return out


def per_second(fn, x: torch.Tensor, reps: int = 6, precision: str = "fp32") -> float:
    """Best-of-reps items/s of ``fn(x)`` (one warm-up call first), inference mode."""
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        fn(x)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t)
    return x.shape[0] / best


def make_face_video(path: Path, face: np.ndarray, frames: int = 150) -> None:
    """640x480 @ 25 fps: the face image scaled to 300 px high, sliding left to right."""
    h = 300
    f = cv2.resize(face, (int(face.shape[1] * h / face.shape[0]), h))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for i in range(frames):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        x0 = int((640 - f.shape[1]) * i / max(frames - 1, 1)) if f.shape[1] < 640 else 0
        canvas[90 : 90 + h, x0 : x0 + min(f.shape[1], 640)] = f[:, : 640 - x0]
        w.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    w.release()


def make_pan_video(path: Path, image: np.ndarray, frames: int = 150) -> None:
    """640x480 @ 25 fps: a real photo seen by a slowly panning and zooming camera (the view
    covers 85-95% of the photo and drifts across it), so the scene's people move in frame."""
    h, w = image.shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for i in range(frames):
        t = i / max(frames - 1, 1)
        s = 0.95 - 0.1 * t  # fraction of the photo in view
        vw, vh = w * s, h * s
        x0, y0 = (w - vw) * t, (h - vh) * (1 - t)
        m = np.array([[640 / vw, 0, -x0 * 640 / vw], [0, 480 / vh, -y0 * 480 / vh]])
        out.write(cv2.cvtColor(cv2.warpAffine(image, m, (640, 480), flags=cv2.INTER_LINEAR), cv2.COLOR_RGB2BGR))
    out.release()
