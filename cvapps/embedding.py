"""Image embeddings: the backbone's pooled last-stage features of images (what core-set
selection compares), for ``cvapps embed``, distillation and users' own search or dedup."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from rich.console import Console

from .data.io import atomic_write, is_video, out_file
from .data.sources import expand_sources, frame_batches
from .errors import ConfigError
from .loading import _model
from .progress import Phase, note
from .tasks import TaskModel
from .tasks.batch import memory_format, to_batch


@torch.inference_mode()
def map_images(model, images, fn, what: str, batch_size: int = 64, console: Console | None = None,
               workers: int | None = None, on_error=None) -> torch.Tensor:
    """``fn(x)`` of every image (paths or RGB arrays, prepared and normalised as ``model``
    expects, in batches) concatenated in order, on the CPU; an unreadable image raises, or
    with ``on_error(frame)`` is passed to it and left out. ``what``: the progress label;
    ``workers``: threads reading images ahead."""
    model.eval()
    pre = model.preprocessor()
    out = []

    def fail(frame):
        raise frame.error

    with Phase(console or Console(stderr=True, markup=False), what, len(images)) as bar:
        for good in frame_batches(list(images), pre, batch_size, on_error=on_error or fail, threads=workers):
            x, _ = to_batch(pre, [f.payload[0] for f in good], model.device, memory_format(model))
            out.append(fn(x).cpu())
            bar.advance(len(good))
    return torch.cat(out)


def embed(model: TaskModel, images, batch_size: int = 64, console: Console | None = None,
          workers: int | None = None) -> torch.Tensor:
    """Pooled last-stage backbone features (N, D) float32 of paths or RGB arrays (in order;
    an unreadable image raises). ``workers``: threads reading images ahead."""
    return map_images(model, images, model.embed, "embedding", batch_size, console, workers)


def embed_sources(model, sources: Iterable, *, device: str = "cpu", batch_size: int = 64,
                  console: Console | None = None, workers: int | None = None) \
        -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Embeddings of the still images of ``sources`` (paths, folders, globs, lists, URLs) ->
    (their names in order, (N, D) float32, (name, reason) of the unreadable ones, left out
    and said)."""
    console = console or Console(stderr=True, markup=False)
    m = _model(model, None, device)
    items = expand_sources(sources)
    if any(is_video(p) for p in items if isinstance(p, Path)):
        raise ConfigError("embed takes still images", hint="sample a video's frames with `cvapps select` first")
    failed: list[tuple[str, str]] = []

    def skip(frame):
        failed.append((frame.source, frame.error.one_line()))
        note(console, "skipped", frame.error.one_line())

    emb = map_images(m, items, m.embed, "embedding", batch_size, console, workers, on_error=skip)
    bad = {s for s, _ in failed}
    return [str(p) for p in items if str(p) not in bad], emb.float().numpy(), failed


def save_embeddings(out: str | Path, names: list[str], emb) -> Path:
    """``out`` (.npy added if missing): the (N, D) float32 rows; beside it the .csv naming them."""
    path = out_file(out if str(out).endswith(".npy") else f"{out}.npy", "--out")

    def write_rows(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # np.save(name) would add its own .npy to the temporary name
            np.save(f, np.asarray(emb, np.float32))

    def write_names(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["row", "image"])
            w.writerows(enumerate(names))

    atomic_write(path, write_rows)
    atomic_write(path.with_suffix(".csv"), write_names)
    return path


