"""The one dataset base and collate function every task's training data uses: items are
(x (3, H, W) float32, target), a bad sample (DataError) stops the run naming the file, or
with ``skip_bad`` is recorded in ``data.skipped`` and dropped by ``collate``."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..errors import DataError


class TaskDataset(Dataset):
    """Subclasses implement ``load(i) -> (x, target)``; ``data`` has a ``skipped`` list."""

    def __init__(self, data, skip_bad: bool = False):
        self.data, self.skip_bad = data, skip_bad

    def __len__(self) -> int:
        return len(self.data)

    def load(self, i: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int):
        try:
            return self.load(i)
        except DataError as e:
            if not self.skip_bad:
                skip = "pass --skip-bad to skip bad samples (counted)"
                e.hint = f"{e.hint}; or {skip}" if e.hint else f"fix or remove the file, or {skip}"
                raise
            self.data.skipped.append(str(e))
            return None


def collate(batch: list):
    """[(x, target) | None] -> (x (B, ...), targets): tensors are stacked, other targets
    (per-image dicts) kept as a list; None items (skipped samples) are dropped; an all-None
    batch gives None (the loops skip it)."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    targets = [b[1] for b in batch]
    return torch.stack([b[0] for b in batch]), (torch.stack(targets) if isinstance(targets[0], torch.Tensor)
                                                else targets)
