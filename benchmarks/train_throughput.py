"""Training data throughput with 0, 1 and 2 loader worker processes, on real data:
detection (voc-detection, SSD augmentation at 320) and segmentation (CamVid, image + mask
augmentation at 360x480).

For each: the data pipeline alone (decode + augment + collate, no model; images/s over two
passes, the first warming the workers) and augmented training (``cvapps.train``, images/s of
its second epoch, which the workers' start does not count against). One JSON object; ratios
are against the 0-worker rate measured in the same run.

    python benchmarks/train_throughput.py [--images 80] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps.data.loader import make_loader  # noqa: E402
from cvapps.runtime import cores  # noqa: E402
from cvapps.options import DataOptions  # noqa: E402
from cvapps.tasks import TASKS  # noqa: E402
from cvapps.training.trainer import TrainConfig, Trainer  # noqa: E402


def cases(root: Path, n: int) -> dict:
    voc = require(root / "voc-detection", "voc-detection")
    camvid = require(root / "camvid", "camvid")
    return {
        "detect": dict(data=dict(data=str(voc / "annotations" / "instances_coco.json"), images=str(voc / "images")),
                       model=dict(backbone="mobilenet_v2", img_size=320), batch_size=16),
        "segment": dict(data=dict(data=str(camvid)), model=dict(backbone="mobilenet_v2", img_size=[360, 480],
                                                                  kind="fcn8s"), batch_size=8),
    }


def subset(data, n: int):
    """The first n training images (the data classes are sliceable by index list)."""
    return data.subset(list(range(min(n, len(data)))))


def pipeline_rate(ds, batch_size: int, workers: int, epochs: int = 4) -> float:
    """Images/s of the loader alone over ``epochs`` epochs after a warm-up one (workers
    started, files in the page cache)."""
    loader = make_loader(ds, batch_size, shuffle=True, seed=0, workers=workers)
    loader.sampler.set_epoch(0)
    for _ in loader:
        pass
    t, n = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        loader.sampler.set_epoch(epoch)
        for x, _ in loader:
            n += x.shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=80, help="training images per task")
    ap.add_argument("--workers", default="0,1,2")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    out: dict = {"cores": cores(), "images": args.images}
    for task, case in cases(data_root(), args.images).items():
        spec = TASKS.get(task)
        tr, _ = spec.read_train(DataOptions.parse(case["data"]), None)
        tr = subset(tr, args.images)
        quiet = Console(file=io.StringIO())
        margs = {**case["model"], **spec.model_args(tr, DataOptions.parse(case["data"]), quiet)}
        model = cvapps.create_model(task, **margs)
        make_train, _ = spec.datasets(model, tr, None)
        ds = make_train(True)
        row: dict = {"pipeline_images_per_s": {}, "train_images_per_s": {}}
        for w in workers:
            row["pipeline_images_per_s"][w] = round(pipeline_rate(ds, case["batch_size"], w), 1)
        with tempfile.TemporaryDirectory() as tmp:
            for w in workers:
                model = cvapps.create_model(task, **margs)
                make_train, _ = spec.datasets(model, tr, None)
                cfg = TrainConfig(out_dir=f"{tmp}/{w}", epochs=2, batch_size=case["batch_size"], augment=True,
                                  workers=w)
                Trainer(model, cfg, make_train, None, quiet).fit()
                recs = [json.loads(line) for line in Path(tmp, str(w), "metrics.jsonl").read_text().splitlines()]
                row["train_images_per_s"][w] = recs[-1]["images_per_s"]
        for key in ("pipeline_images_per_s", "train_images_per_s"):
            base = row[key][workers[0]]
            row[key.replace("images_per_s", "ratio_vs_0")] = {w: round(v / base, 2) for w, v in row[key].items()}
        out[task] = row
        print(json.dumps({task: row}), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
