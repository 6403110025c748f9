"""Model files: one .safetensors with the tensors, a JSON config and the sha256 of the
tensors in its metadata. Loading never unpickles, verifies the digest (a flipped byte is a
one-line error, not a silently different model) and checks the config against the tensors
before any allocation; writes are atomic (temp file, then rename)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .data.io import atomic_write
from .errors import ConfigError, CvappsWarning, DataError, WeightsError
from .tasks import model_class

FORMAT_VERSION = 1
_META_KEY = "cvapps"
DIGEST_KEY = "cvapps_tensors_sha256"  # tensor_digest of the saved tensors (files from cvapps 0.3 on)


def save_model(model, path: str | os.PathLike, extra: dict[str, str] | None = None) -> Path:
    """Write ``model`` (a TaskModel) to ``path``; ``extra``: more metadata strings (see
    ``read_metadata``)."""
    if getattr(model, "folded", False):
        raise ConfigError("this model's BatchNorm layers were folded for inference: it cannot be saved",
                          hint="save the model before calling fold_batchnorm()")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {**(extra or {}), _META_KEY: json.dumps({"format_version": FORMAT_VERSION, "config": model.config}),
            DIGEST_KEY: tensor_digest(tensors)}
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
    try:
        info = json.loads(meta[_META_KEY])
        version = int(info.get("format_version", 0))
        config = info["config"]
    except (json.JSONDecodeError, TypeError, ValueError, KeyError, AttributeError):
        raise ConfigError("the cvapps metadata of this file is not a valid config", path=str(p)) from None
    if version > FORMAT_VERSION:
        raise ConfigError(f"model file format {version} is newer than this cvapps supports ({FORMAT_VERSION})",
                          path=str(p), hint="upgrade cvapps")
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise ConfigError("the model file's config names no task", path=str(p))
    return config


def check_task(found: str, wanted: str | None, path: str) -> None:
    """A model of another task stops with one line saying what the file is."""
    if wanted is not None and found != wanted:
        raise ConfigError(f"is a {found} model, not a {wanted} model (the file is for task {found!r}, "
                          f"not {wanted!r})", path=path,
                          hint=f"use `cvapps predict {found}` / `cvapps eval {found}` for it, or pass a {wanted} model")


def _shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors header (no tensor is read)."""
    with safe_open(path, framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def check_against_tensors(config: dict, path: str) -> None:
    """The model ``config`` describes, built on PyTorch's meta device (no memory), must have
    exactly the file's tensor names and shapes: a config edited to 10^9 outputs or a
    100000-pixel input is refused here instead of allocating gigabytes."""
    cls = model_class(config["task"])
    try:
        with torch.device("meta"):
            skeleton = cls.from_config(config)
    except ConfigError as e:
        raise ConfigError(f"its config is not a valid {config['task']} model: {e}", path=path,
                          hint=e.hint or "the file was edited or damaged: use the file training wrote") from None
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = _shapes(path)
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = [k for k in want if k in have and want[k] != have[k]]
    if missing or extra or wrong:
        detail = (f"{wrong[0]} is {list(have[wrong[0]])} in the file, {list(want[wrong[0]])} by the config" if wrong
                  else f"missing {missing[:3]}, unexpected {extra[:3]}")
        raise ConfigError(f"the model file's tensors do not match its config: {detail}", path=path,
                          hint="the file was edited or damaged: use the file training wrote")


def verify_tensors(state: dict, meta: dict, path: str) -> None:
    """Compare the tensors' digest with the one saved beside them (WeightsError when they
    differ); files written before digests were stored load with a note, once per file."""
    saved = meta.get(DIGEST_KEY)
    if saved is None:
        warnings.warn(f"{path}: written before model files carried a digest of their tensors; loaded without "
                      "verifying them (save it again to add one)", CvappsWarning, stacklevel=3)
        return
    if tensor_digest(state) != saved:
        raise WeightsError("the model file's tensors differ from those it was saved with (sha256 mismatch): the "
                           "file is damaged or was altered", path=path,
                           hint="use an intact copy (re-download, or the run's last.safetensors / checkpoint)")


def load_model(path: str | os.PathLike, task: str | None = None, device: str | torch.device = "cpu"):
    """Rebuild the TaskModel stored in ``path``. ``task`` (if given) must match the file's.
    The config is checked against the tensors' shapes before anything is allocated, and the
    tensors against their saved digest."""
    config = read_config(path)
    check_task(config.get("task"), task, str(path))
    check_against_tensors(config, str(path))
    model = model_class(config["task"]).from_config(config)
    state = load_file(str(path))
    verify_tensors(state, read_metadata(path), str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
