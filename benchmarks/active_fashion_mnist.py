"""Active learning on Fashion-MNIST (../shared/data/fashion-mnist, IDX files): a pool of
training images with hidden labels, the 10k test set as the fixed validation set, the
frozen-backbone recipe of cvapps.active.simulate (ImageNet MobileNetV2 features at 64x64,
MLP head retrained each round). Prints one JSON object: accuracy per strategy at each label
count (mean over seeds) and ``gain_vs_random`` = best uncertainty strategy minus random at
the last count (1,000 labels by default), as a fraction. Also writes curves.json and
learning_curves.png to --out."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import cvapps
from cvapps.active import simulate as sim

from _common import data_root, require


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--pool", type=int, default=20000, help="training images in the unlabelled pool")
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--step", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategies", default="random,least_confidence,margin,entropy,bald,coreset,hybrid")
    ap.add_argument("--out", default="runs/al-fashion-mnist")
    ap.add_argument("--features", default=None, help="cache of the embeddings (default OUT/features.pt)")
    args = ap.parse_args()
    root = require(Path(args.data) if args.data else data_root() / "fashion-mnist", "fashion-mnist")
    t0 = time.perf_counter()
    xtr = read_idx(next(root.glob("train-images*")))[: args.pool]
    ytr = torch.from_numpy(read_idx(next(root.glob("train-labels*")))[: args.pool].astype(np.int64))
    xte = read_idx(next(root.glob("t10k-images*")))
    yte = torch.from_numpy(read_idx(next(root.glob("t10k-labels*"))).astype(np.int64))
    rgb = lambda a: np.repeat(a[..., None], 3, axis=-1)  # noqa: E731  (grey -> 3 channels)
    cache = Path(args.features or Path(args.out) / "features.pt")
    if cache.is_file() and torch.load(cache, weights_only=True)["pool"] == args.pool:
        feats = torch.load(cache, weights_only=True)
        x, xv = feats["x"], feats["xv"]
    else:
        model = cvapps.create_model("classify", "mobilenet_v2", "mobilenet_v2.imagenet1k",
                                    labels=[str(i) for i in range(10)], img_size=64)
        quiet = Console(file=io.StringIO())
        x = cvapps.api.embed(model, [rgb(a) for a in xtr], batch_size=256, console=quiet)
        xv = cvapps.api.embed(model, [rgb(a) for a in xte], batch_size=256, console=quiet)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": x, "xv": xv, "pool": args.pool}, cache)
    t_embed = time.perf_counter() - t0
    strategies = args.strategies.split(",")
    curves = sim.simulate_features(x, ytr, xv, yte, 10, args.initial, args.step, args.rounds, strategies, args.seeds)
    sim.save(curves, Path(args.out))
    final = {s: c["mean"][-1] for s, c in curves["strategies"].items()}
    uncertainty = [s for s in ("least_confidence", "margin", "entropy", "bald") if s in final]
    best = max(uncertainty, key=final.get) if uncertainty else None
    print(json.dumps({
        "pool": len(x), "val": len(xv), "labels": curves["labels"], "seeds": args.seeds,
        "accuracy": {s: [round(v, 4) for v in c["mean"]] for s, c in curves["strategies"].items()},
        "std_at_last": {s: round(c["std"][-1], 4) for s, c in curves["strategies"].items()},
        "best_uncertainty_strategy": best,
        "gain_vs_random": round(final[best] - final["random"], 4) if best and "random" in final else None,
        "embed_s": round(t_embed, 1), "wall_s": round(time.perf_counter() - t0, 1),
        "curves_png": str(Path(args.out) / "learning_curves.png"),
    }))


if __name__ == "__main__":
    main()
