"""Resumable training checkpoints (separate from model files): model + optimizer +
scheduler + epoch + freeze state. Written atomically; read with weights_only=True."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from ..data.io import atomic_write


def save_checkpoint(path: Path, **state) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DataError("no checkpoint to resume from", path=str(p), hint="run without --resume first")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read checkpoint: {e}", path=str(p)) from None
