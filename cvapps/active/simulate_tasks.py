"""The active-learning loop simulator for detection, segmentation, landmarks and pose.

Recipe per round (fixed, so strategies compare fairly): a fresh model from the same
pretrained backbone weights and a seeded head, backbone frozen, no augmentation, trained
for ``epochs`` on the labelled images with the Trainer; the task's primary metric on the
fixed validation set is recorded; then ``cvapps.select`` (the same scoring users run)
picks ``step`` more images of the pool with the strategy, and their labels are revealed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from ..errors import ConfigError
from .simulate import summarise


def load_task_data(task: str, data: str, images: str | None, fmt: str | None, val: str | None,
                   val_images: str | None, val_fraction: float):
    """(pool data, validation data, model kwargs) as `cvapps train` would read them."""
    from ..tasks.detection.workflow import split

    if task == "detect":
        from ..data.detection import read_detection

        if not images:
            raise ConfigError("detection needs --images DIR")
        tr = read_detection(data, images, fmt)
        va = read_detection(val, val_images or images, fmt, tr.labels if fmt != "coco" else None) if val else None
        kw = {"labels": tr.labels, "category_ids": tr.category_ids}
    elif task in ("landmarks", "pose"):
        from ..data.keypoints import read_keypoints

        tr = read_keypoints(data, images, fmt)
        va = read_keypoints(val, val_images or images, fmt) if val else None
        kw = {"schema": tr.schema}
    elif task == "segment":
        from ..tasks.segmentation import workflow as seg

        tr = seg.load(data, images, None, "train")
        va = seg.load(data, None, None, "val", tr.labels, None, tr.ignore_index) if (Path(data) / "val").is_dir() \
            else None
        kw = {"labels": tr.labels, "colors": tr.colors, "ignore_index": tr.ignore_index}
    else:
        raise ConfigError(f"no simulator for task {task!r}", hint="classify, detect, segment, landmarks, pose")
    if va is None:  # hold out every k-th image
        tr, va = split(tr, val_fraction or 0.2)
    return tr, va, kw


def datasets_for(task: str, model, train, val):
    if task == "detect":
        from ..tasks.detection.workflow import datasets
    elif task == "segment":
        from ..tasks.segmentation.workflow import datasets as seg_datasets

        return seg_datasets(model, train, val, False)
    else:
        from ..tasks.keypoints.workflow import datasets
    return datasets(model, train, val)


def simulate_task(task: str, make_model, pool, val, initial: int, step: int, rounds: int, strategies: list[str],
                  seeds: int = 3, epochs: int = 5, batch_size: int = 8, lr: float = 2e-3, mc_passes: int = 10,
                  progress=None) -> dict:
    """``make_model()`` -> a fresh TaskModel (called after seeding). Returns the curves
    {"labels", "metric", "strategies": {name: {"mean", "std", "runs"}}}."""
    from ..training.trainer import TrainConfig, Trainer
    from .select import select, supported

    probe = make_model()
    metric, _ = probe.primary_metric()
    ok = supported(probe)
    bad = [s for s in strategies if s not in ok]
    if bad:
        raise ConfigError(f"strategies {bad} do not apply to {task} models", hint=f"supported: {', '.join(ok)}")
    paths = [str(p) for p in pool.paths]
    n = len(paths)
    if initial + rounds * step > n:
        raise ConfigError(f"{initial} + {rounds} x {step} labels exceed the pool of {n} images")
    index = {p: i for i, p in enumerate(paths)}
    quiet = Console(quiet=True)
    out = {"labels": [initial + r * step for r in range(rounds + 1)], "metric": metric, "strategies": {}}
    for s in strategies:
        runs = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            labelled = rng.choice(n, initial, replace=False)  # the same start for every strategy
            scores = []
            for r in range(rounds + 1):
                torch.manual_seed(seed * 100 + r)
                model = make_model()
                make_train, val_ds = datasets_for(task, model, pool.subset(sorted(labelled.tolist())), val)
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = TrainConfig(out_dir=tmp, epochs=epochs, batch_size=batch_size, lr=lr, freeze="backbone",
                                      augment=False, warmup_epochs=0, seed=seed)
                    trainer = Trainer(model, cfg, make_train, val_ds, quiet)
                    trainer.fit()
                    scores.append(float(trainer.records[-1][metric]))
                    if r < rounds:
                        rest = [paths[i] for i in np.setdiff1d(np.arange(n), labelled)]
                        sel = select(model, rest, step, s, out=str(Path(tmp) / "select"), seed=seed * 100 + r,
                                     mc_passes=mc_passes, console=quiet)
                        labelled = np.concatenate([labelled, [index[row["path"]] for row in sel]])
                if progress:
                    progress()
            runs.append(scores)
        out["strategies"][s] = summarise(runs)
    return out
