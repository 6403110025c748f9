"""Model files: one .safetensors with the tensors and a JSON config in its metadata.
Loading never unpickles; writes are atomic (temp file, then rename)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .data.io import atomic_write
from .errors import ConfigError, DataError
from .tasks import model_class

FORMAT_VERSION = 1
_META_KEY = "cvapps"


def save_model(model, path: str | os.PathLike, extra: dict[str, str] | None = None) -> Path:
    """Write ``model`` (a TaskModel) to ``path``; ``extra``: more metadata strings (see
    ``read_metadata``)."""
    if getattr(model, "folded", False):
        raise ConfigError("this model's BatchNorm layers were folded for inference: it cannot be saved",
                          hint="save the model before calling fold_batchnorm()")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {**(extra or {}), _META_KEY: json.dumps({"format_version": FORMAT_VERSION, "config": model.config})}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return Path(path)


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors (names, dtypes, shapes, bytes; sorted by name): what a model
    computes, independent of the config text stored beside it."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A safetensors file's metadata strings ({} when it has none or cannot be read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}


def read_config(path: str | os.PathLike) -> dict:
    """Return the config stored in a model file, with clear errors for foreign files."""
    p = Path(path)
    if not p.is_file():
        raise DataError("no such model file", path=str(p))
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"not a cvapps model file (safetensors could not read it: {e})", path=str(p),
                          hint="model files are .safetensors written by `cvapps train`") from None
    if _META_KEY not in meta:
        raise ConfigError("a safetensors file without cvapps metadata", path=str(p),
                          hint="model files are written by `cvapps train` or cvapps.save")
    info = json.loads(meta[_META_KEY])
    version = int(info.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise ConfigError(f"model file format {version} is newer than this cvapps supports ({FORMAT_VERSION})",
                          path=str(p), hint="upgrade cvapps")
    return info["config"]


def check_task(found: str, wanted: str | None, path: str) -> None:
    """A model of another task stops with one line saying what the file is."""
    if wanted is not None and found != wanted:
        raise ConfigError(f"is a {found} model, not a {wanted} model (the file is for task {found!r}, "
                          f"not {wanted!r})", path=path,
                          hint=f"use `cvapps predict {found}` / `cvapps eval {found}` for it, or pass a {wanted} model")


def load_model(path: str | os.PathLike, task: str | None = None, device: str | torch.device = "cpu"):
    """Rebuild the TaskModel stored in ``path``. ``task`` (if given) must match the file's."""
    config = read_config(path)
    check_task(config.get("task"), task, str(path))
    model = model_class(config["task"]).from_config(config)
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"model file tensors do not match its config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})", path=str(path))
    return model.to(device).eval()
