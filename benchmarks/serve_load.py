"""Load test of `cvapps serve` on loopback: requests/s and p50 / p99 latency at concurrency
1, 4 and 16 (a bounded number of requests each), failed requests, and a corrupt upload in
the middle (it must get a 4xx and the server must keep serving). The server runs in its own
process (`cvapps serve`), the client is this one (urllib, one thread per concurrent user).

    python benchmarks/serve_load.py [--model mobilenet_v2.imagenet1k] [--requests 96]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_root  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, data: bytes) -> tuple[int, float]:
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=120) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        e.read()
        code = e.code
    except OSError:
        code = 0  # connection refused / reset: a failed request
    return code, time.perf_counter() - t


def images(n: int) -> list[bytes]:
    """Real photos when the data folder has them (hymenoptera val, VOC), else noise PNGs."""
    import cv2

    root = data_root()
    files = sorted((root / "hymenoptera" / "val").rglob("*.jpg")) + sorted((root / "voc-detection" / "images").glob("*.jpg"))
    if files:
        return [f.read_bytes() for f in files[:n]]
    rng = np.random.default_rng(0)
    return [cv2.imencode(".png", rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))[1].tobytes() for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mobilenet_v2.imagenet1k")
    ap.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    args = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "cvapps", "serve", "--model", args.model, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        pics = images(32)
        post(base + "/predict", pics[0])  # warm
        out: dict = {"model": args.model, "requests_per_level": args.requests, "levels": {}}
        for conc in (1, 4, 16):
            bodies = [pics[i % len(pics)] for i in range(args.requests)]
            corrupt_at = len(bodies) // 2
            bodies[corrupt_at] = b"\xff\xd8 not really a jpeg"
            t = time.perf_counter()
            with ThreadPoolExecutor(conc) as pool:
                res = list(pool.map(lambda b: post(base + "/predict", b), bodies))
            wall = time.perf_counter() - t
            good = [lat for i, (code, lat) in enumerate(res) if i != corrupt_at and code == 200]
            out["levels"][conc] = {
                "requests_per_s": round(len(res) / wall, 1), "p50_ms": round(1000 * float(np.percentile(good, 50)), 1),
                "p99_ms": round(1000 * float(np.percentile(good, 99)), 1),
                "failed": sum(1 for i, (code, _) in enumerate(res) if i != corrupt_at and code != 200),
                "corrupt_upload_status": res[corrupt_at][0]}
            print(json.dumps({conc: out["levels"][conc]}), file=sys.stderr)
        models = json.loads(urllib.request.urlopen(base + "/models").read())
        out["backend"], out["mean_batch"] = models[0]["backend"], round(models[0]["requests"] / models[0]["batches"], 2)
        out["healthy_after"] = json.loads(urllib.request.urlopen(base + "/health").read())["status"] == "ok"
        print(json.dumps(out))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
