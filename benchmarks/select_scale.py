"""Selection at scale: what picking from 1 M scored images costs on the driver.

Synthetic pool: N scores and N x D float16 embeddings (D = 576, MobileNetV3-Small's pooled
width) in a memory-mapped file, as `select` writes them. Each case runs in its own process
(peak RSS is per process) through the code `select` and `select --merge` use
(cvapps.active.select.scored + choose): the default uncertainty ranking, core-set (k-centre
greedy) and hybrid (uncertainty pre-filter to k x budget, then core-set).

    .venv/bin/python benchmarks/select_scale.py [--n 1000000 --dim 576]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_pool(folder: Path, n: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    with open(folder / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "frame", "score"])
        w.writerows([f"/pool/img{i:07d}.jpg", "", f"{s:.6g}"] for i, s in enumerate(rng.random(n)))
    emb = np.memmap(folder / "embeddings.f16", np.float16, "w+", shape=(n, dim))
    for s in range(0, n, 100_000):  # clustered, like real embeddings
        e = min(n, s + 100_000)
        centres = rng.normal(size=(64, dim)).astype(np.float32)
        emb[s:e] = (centres[rng.integers(0, 64, e - s)] + 0.3 * rng.normal(size=(e - s, dim))).astype(np.float16)
    emb.flush()


def case(folder: Path, strategy: str, budget: int, dim: int) -> dict:
    from rich.console import Console

    from cvapps.active.select import choose, scored

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    keys, scores, emb = scored(folder, None, dim if strategy in ("coreset", "hybrid") else 0)
    t_read = time.perf_counter() - t
    sel = choose(keys, scores, emb, strategy, budget, 5, 0, 30, Console(quiet=True))
    return {"strategy": strategy, "budget": budget, "picked": len(sel), "read_s": round(t_read, 1),
            "seconds": round(time.perf_counter() - t, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "rss_before_gb": round(before / 2**20, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        strategy, budget = args.case.split(":")
        print(json.dumps(case(Path(args.folder), strategy, int(budget), args.dim)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        make_pool(folder, args.n, args.dim)
        out = {"n": args.n, "dim": args.dim, "embeddings_gb": round(args.n * args.dim * 2 / 2**30, 2),
               "make_s": round(time.perf_counter() - t, 1), "cases": []}
        for c in ("entropy:1000", "hybrid:1000", "coreset:100", "coreset:1000"):
            r = subprocess.run([sys.executable, __file__, "--case", c, "--folder", str(folder), "--dim", str(args.dim)],
                               capture_output=True, text=True)
            out["cases"].append(json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else
                                {"case": c, "error": r.stderr[-500:]})
            print(json.dumps(out["cases"][-1]), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
