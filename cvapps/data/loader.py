"""Data loaders for training and evaluation. Worker processes decode and augment while the
model runs; each sample's augmentation is seeded from (epoch seed, sample index), so the
batches of a run are the same with any number of workers, after ``--resume`` and under DDP
(rank r of N sees exactly the samples one process sees at positions r, r + N, ...)."""

from __future__ import annotations

import os
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset, get_worker_info

from ..errors import ConfigError
from ..runtime import cores
from .dataset import TaskDataset, collate

WORKERS_ENV = "CVAPPS_WORKERS"
MAX_WORKERS = 8


def default_workers(world: int = 1) -> int:
    """Worker processes per training process: the cores this process may use (``cores /
    world`` under DDP) but one, which runs the model; at most 8; none with fewer than 2 to
    give (on 2 cores OpenCV's own threads already load both, and a worker only competes with
    the model: benchmarks/train_throughput.py). ``CVAPPS_WORKERS`` overrides."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        if not env.isdigit():
            raise ConfigError(f"{WORKERS_ENV}={env!r} is not a number of worker processes (0, 1, 2, ...)")
        return int(env)
    spare = cores() // max(1, world) - 1
    return min(MAX_WORKERS, spare) if spare >= 2 else 0


def sample_seed(epoch_seed: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch (independent of order and worker)."""
    return int(np.random.SeedSequence([epoch_seed, index]).generate_state(1)[0])


class SeededSampler(Sampler):
    """Yields (index, seed) for a TaskDataset: the order is DistributedSampler's (``shuffle``,
    seed ``seed`` + epoch, every ``world``-th sample from ``rank``), the seed ``sample_seed``."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1):
        self.order = DistributedSampler(range(n), world, rank, shuffle=True, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch_seed = self.order.seed + self.order.epoch
        return ((i, sample_seed(epoch_seed, i)) for i in self.order)


def _worker_init(_: int) -> None:
    # one worker, one core: OpenCV's own pool would oversubscribe. 0 (no pool), not 1: resizing the
    # pool a forked child inherited from a parent that used it deadlocks
    cv2.setNumThreads(0)
    info = get_worker_info()
    if hasattr(info.dataset, "on_worker"):
        info.dataset.on_worker(info.num_workers)


class Loader(DataLoader):
    """A DataLoader yielding (x (B, ...) float32, targets) batches: TaskDataset images arrive
    as uint8, move to ``device`` as they are (a quarter of float32's bytes to copy) and are
    normalised there; skipped samples are dropped and recorded in ``dataset.data.skipped``, and
    the samples' tallies added to ``dataset.counts`` (in the main process, whichever worker
    loaded them)."""

    device = torch.device("cpu")

    def __iter__(self):
        skipped = getattr(getattr(self.dataset, "data", None), "skipped", None)
        for b in super().__iter__():
            if len(b) == 3:  # TaskDataset batches: (x, targets, notes)
                x, t, notes = b
                if skipped is not None:
                    skipped.extend(m for m in notes["skipped"] if m not in skipped)
                self.dataset.counts.update(notes["counts"])
                if x is None:
                    continue
                if x.dtype == torch.uint8:
                    x = self.dataset.normalize(x.to(self.device, non_blocking=True))
                b = (x, t)
            yield b


def make_loader(ds, batch_size: int, shuffle: bool = False, seed: int = 0, rank: int = 0, world: int = 1,
                workers: int | None = None, device: str | torch.device = "cpu") -> Loader:
    """Training loaders (``shuffle``) permute with seed ``seed`` + epoch (``loader.sampler.
    set_epoch``) and give this rank every world-th sample, so N ranks x batch B see exactly
    the samples one process sees with batch N x B. ``workers``: worker processes (None:
    ``default_workers``, none when the data is one batch); they persist across epochs."""
    tensors = isinstance(ds, TensorDataset)  # cached features: in memory, nothing to load
    sampler = SeededSampler(len(ds), seed, rank, world) if shuffle and isinstance(ds, TaskDataset) else (
        DistributedSampler(ds, world, rank, shuffle=True, seed=seed) if shuffle else None)
    n = len(sampler) if sampler is not None else len(ds)
    if workers is None:
        workers = 0 if tensors or n <= batch_size else default_workers(world)
    # a training batch of one breaks BatchNorm: drop such a remainder
    drop_last = shuffle and n > batch_size and n % batch_size == 1
    cuda = torch.device(device).type == "cuda"
    # its own generator: making an iterator draws the workers' base seed, which must not move the
    # global RNG (the model's dropout) differently in a resumed run, whose workers start later
    loader = Loader(ds, batch_size=batch_size, sampler=sampler, collate_fn=None if tensors else collate,
                    generator=torch.Generator().manual_seed(seed), drop_last=drop_last, num_workers=workers,
                    persistent_workers=workers > 0,
                    worker_init_fn=_worker_init if workers else None, pin_memory=cuda and workers > 0,
                    prefetch_factor=2 if workers else None)
    loader.device = torch.device(device)
    return loader
