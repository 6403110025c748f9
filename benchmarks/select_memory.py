"""Resident memory while `cvapps.select` scores a 20,000-image pool from disk.

Generates N (default 20,000) 160x120 JPEGs, scores them with core-set (the worst case:
it also streams float16 embeddings to disk) and entropy, sampling RSS every 50 ms.
Prints one JSON object: RSS after model load, at 1k / 5k / 10k / 20k scored images, the
peak, and the documented bound (baseline + prefetch queue + one batch + the N x D
float32 embedding matrix the final k-centre greedy pass reads back)."""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from _common import RssSampler, rss_mb

import cvapps


def make_pool(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for i in range(n):
        img = np.roll(base, i % 160, axis=1) // (1 + i % 3)
        cv2.imwrite(str(root / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 80])


def scored(out: Path) -> int:
    f = out / "scores.csv"
    if not f.is_file():
        return 0
    with open(f, newline="") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--strategies", default="coreset,entropy")
    args = ap.parse_args()
    result: dict = {"images": args.images}
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool"
        pool.mkdir()
        t = time.perf_counter()
        make_pool(pool, args.images)
        result["pool_write_s"] = round(time.perf_counter() - t, 1)
        model = cvapps.create_model("classify", "mobilenet_v3_small", labels=[str(i) for i in range(10)], img_size=96)
        for strategy in args.strategies.split(","):
            out = Path(tmp) / f"sel_{strategy}"
            base = rss_mb()
            t = time.perf_counter()
            with RssSampler(lambda: scored(out), 0.05) as rss:
                cvapps.select(model, str(pool), 100, strategy, out=str(out), batch_size=32)
            wall = time.perf_counter() - t
            samples = rss.samples
            at = rss.at((1000, 5000, 10000, 20000), args.images)
            scoring = [r for n, r in samples if 0 < n < args.images]
            d = model.backbone.out_channels
            bound = base + 250 + args.images * d * 4 / 2**20
            result[strategy] = {"rss_before_mb": round(base, 1), "rss_at_scored_mb": at,
                                "peak_rss_while_scoring_mb": round(max(scoring), 1) if scoring else None,
                                "peak_rss_mb": round(max(r for _, r in samples), 1),
                                "growth_1k_to_end_of_scoring_mb": round(scoring[-1] - at["1000"], 1)
                                if "1000" in at and scoring else None,
                                "documented_bound_mb": round(bound, 1), "images_per_s": round(args.images / wall, 1),
                                "embeddings_file_mb": round((out / "embeddings.f16").stat().st_size / 2**20, 1)}
            with open(out / "selection.csv", newline="") as f:
                assert len(list(csv.DictReader(f))) == 100
    print(json.dumps(result))


if __name__ == "__main__":
    main()
