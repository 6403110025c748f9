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
from ..training.trainer import TrainConfig, Trainer
from .select import select, supported
from .simulate import summarise


def simulate_task(make_model, pool, val, initial: int, step: int, rounds: int, strategies: list[str],
                  seeds: int = 3, epochs: int = 5, batch_size: int = 8, lr: float = 2e-3, mc_passes: int = 10,
                  progress=None, workers: int | None = None) -> dict:
    """``make_model()`` -> a fresh TaskModel (called after seeding); ``pool`` / ``val``: the
    task's data (as its spec reads it). Returns the curves {"labels", "metric", "strategies":
    {name: {"mean", "std", "runs"}}}. ``workers``: data-loading processes for each round's
    training and threads for its scoring (default: the machine's)."""
    probe = make_model()
    spec = probe.spec
    metric, _ = probe.primary_metric()
    ok = supported(probe)
    bad = [s for s in strategies if s not in ok]
    if bad:
        raise ConfigError(f"strategies {bad} do not apply to {spec.name} models", hint=f"supported: {', '.join(ok)}")
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
                make_train, val_ds = spec.datasets(model, pool.subset(sorted(labelled.tolist())), val)
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = TrainConfig(out_dir=tmp, epochs=epochs, batch_size=batch_size, lr=lr, freeze="backbone",
                                      augment=False, warmup_epochs=0, seed=seed, workers=workers)
                    trainer = Trainer(model, cfg, make_train, val_ds, quiet)
                    trainer.fit()
                    scores.append(float(trainer.records[-1][metric]))
                    if r < rounds:
                        rest = [paths[i] for i in np.setdiff1d(np.arange(n), labelled)]
                        sel = select(model, rest, step, s, out=str(Path(tmp) / "select"), seed=seed * 100 + r,
                                     mc_passes=mc_passes, workers=workers, console=quiet)
                        labelled = np.concatenate([labelled, [index[row["path"]] for row in sel]])
                if progress:
                    progress()
            runs.append(scores)
        out["strategies"][s] = summarise(runs)
    return out
