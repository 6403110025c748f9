"""The one dataset base and collate function every task's training data uses: items are
(x (3, H, W) uint8, target) — a quarter of float32's bytes between loader processes; the
loader normalises whole batches (``dataset.normalize``) — a bad sample (DataError) stops the run naming the file, or
with ``skip_bad`` is dropped by ``collate`` and recorded in ``data.skipped`` by the loader
(cvapps.data.loader, also when a worker process met it). Per-sample tallies (e.g. boxes the
augmentation dropped) travel the same way into ``dataset.counts``."""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils.data import Dataset

from ..errors import DataError


class Skipped(str):
    """The one-line reason a sample was skipped (what ``__getitem__`` returns instead)."""


class TaskDataset(Dataset):
    """Subclasses implement ``load(i) -> (x (3, H, W) uint8, target)`` and set ``normalizer``
    (a preprocessor with ``normalize(batch_u8)``); ``data`` has a ``skipped`` list.
    Items are indexed by ``i`` or by ``(i, seed)``: the seed fixes the sample's random
    augmentation (``reseed``), whichever process loads it and in whichever order."""

    def __init__(self, data, skip_bad: bool = False):
        self.data, self.skip_bad = data, skip_bad
        self.counts: Counter = Counter()  # tallies of the samples loaded so far (by the loader)

    def __len__(self) -> int:
        return len(self.data)

    normalizer = None

    def load(self, i: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> float32 normalised the way the model's weights expect."""
        return self.normalizer.normalize(batch_u8)

    def reseed(self, seed: int) -> None:
        """Seed the augmentation: the albumentations pipelines (``transform`` / ``augment``)
        keep their own generators. The global RNGs are left alone: in the main process they
        drive the model's randomness (dropout), which must not depend on the worker count."""
        for name in ("transform", "augment"):
            pipeline = getattr(self, name, None)
            if hasattr(pipeline, "set_random_seed"):
                pipeline.set_random_seed(seed)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None:
            self.reseed(seed)
        try:
            return self.load(i)
        except DataError as e:
            if not self.skip_bad:
                skip = "pass --skip-bad to skip bad samples (counted)"
                e.hint = f"{e.hint}; or {skip}" if e.hint else f"fix or remove the file, or {skip}"
                raise
            return Skipped(str(e))


def collate(batch: list):
    """[(x, target) | Skipped] -> (x (B, ...) | None, targets, notes): tensors are stacked,
    other targets (per-image dicts) kept as a list; x is None when every sample was skipped
    (the loader drops such batches). notes: {"skipped": [messages], "counts": Counter} (the
    "counts" a dict target carries are taken out of it)."""
    notes = {"skipped": [b for b in batch if isinstance(b, Skipped)], "counts": Counter()}
    batch = [b for b in batch if not isinstance(b, Skipped)]
    if not batch:
        return None, None, notes
    targets = [b[1] for b in batch]
    for t in targets:
        if isinstance(t, dict) and "counts" in t:
            notes["counts"].update(t.pop("counts"))
    return (torch.stack([b[0] for b in batch]),
            torch.stack(targets) if isinstance(targets[0], torch.Tensor) else targets, notes)
