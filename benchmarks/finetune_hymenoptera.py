"""Fine-tune MobileNetV2 (ImageNet weights) on hymenoptera (ants vs bees): (a) frozen
backbone with cached features, (b) full fine-tune with augmentation. Prints one JSON object
with val accuracy, wall time and training images/s for each."""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from rich.console import Console

import cvapps

from _common import data_root, require


def run(name: str, data: Path, out: Path, **kw) -> dict:
    t0 = time.perf_counter()
    r = cvapps.train("classify", str(data), backbone="mobilenet_v2", weights="mobilenet_v2.imagenet1k",
                     out=str(out / name), console=Console(file=io.StringIO()), **kw)
    wall = time.perf_counter() - t0
    recs = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    return {"val_top1": round(r["val"]["top1"], 4), "val_count": r["val"]["count"], "wall_s": round(wall, 1),
            "epochs": len(recs), "train_images_per_s": round(sum(x["images_per_s"] for x in recs) / len(recs), 1),
            "options": kw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="runs/bench-hymenoptera")
    args = ap.parse_args()
    data = require(Path(args.data) if args.data else data_root() / "hymenoptera", "hymenoptera")
    out = Path(args.out)
    res = {"frozen_cached": run("frozen", data, out, freeze="backbone"),
           "full_finetune": run("full", data, out)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
