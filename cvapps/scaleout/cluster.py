"""The Ray side of ``--engine ray``: connect to a cluster (or start one on this machine), run
a Ray Data pipeline — rows of work (a still image, a video, a range of a dataset) ->
``map_batches`` on a pool of actors that each hold the model and read their rows' images
in reader threads -> rows of results — and hand the results to the driver exactly once.

Exactly once: Ray Data retries the block of a task or actor that died (another actor, or
the node's replacement, runs it again); a retried block's rows can reach the driver twice
only if both attempts finished, so the driver keeps the first row of every key and drops
the rest. Files the actors write themselves (annotated images, masks) have names fixed by
the driver before the run, so a retry rewrites the same file instead of adding one."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from rich.console import Console

from ..data.io import read_image
from ..data.remote import is_cloud, read_remote_image
from ..data.sources import Frame, is_url, iter_video
from ..errors import ConfigError
from ..progress import Phase

try:  # an optional extra: `pip install "cvapps[ray]"`
    import ray
    import ray.data
except ImportError:  # pragma: no cover - the message below is the user's
    ray = None

NO_FRAME, VIDEO_DONE = -1, -2  # "frame" of a still image's row; of the row closing a video


def need_ray() -> None:
    if ray is None:
        raise ConfigError("--engine ray needs Ray, which is not installed",
                          hint='pip install "cvapps[ray]" (or pip install "ray[data]")')


@dataclass
class Cluster:
    address: str  # what was connected to ("local" for a cluster started here)
    cpus: float
    gpus: float
    started: bool  # this process started it (and shuts it down)


def connect(address: str | None = None, console: Console | None = None) -> Cluster:
    """Join the cluster at ``address`` (or $RAY_ADDRESS; "auto": the one running on this
    machine), or start one here with this machine's cores. Workers import cvapps: on a
    cluster of other machines, install the same cvapps (and models' caches) on each node."""
    need_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = False
    for name in ("ray", "ray.data"):  # Ray's own notices are for its own users; ours get one line below
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": False}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(include_dashboard=False, **kwargs)
                started = True
        except ConnectionError as e:
            raise ConfigError(f"cannot reach the Ray cluster at {address}: {str(e).splitlines()[0]}",
                              hint="start it with `ray start --head` on its head node, or leave out --address "
                                   "to start one here") from None
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one rich bar
    ctx.print_on_execution_start = False
    res = ray.cluster_resources()
    c = Cluster(address or "local", float(res.get("CPU", 0)), float(res.get("GPU", 0)), started)
    if console is not None:
        console.print(f"ray: {'started a cluster on this machine' if started else 'connected to ' + c.address}, "
                      f"{c.cpus:g} CPUs, {c.gpus:g} GPUs", highlight=False, markup=False)
    return c


def shutdown(cluster: Cluster) -> None:
    if cluster.started and ray is not None and ray.is_initialized():
        ray.shutdown()


def as_item(source: str) -> Any:
    """An expanded source back from its row: URLs and object-storage names stay text."""
    return source if is_url(source) or is_cloud(source) else Path(source)


class BatchRows:
    """The rows a worker sends back, built column by column (``text``, ``numbers`` and
    ``blobs`` columns beside i / frame / error); ``index`` says which row of work a frame came
    from (a source may be listed twice)."""

    def __init__(self, batch: dict, text: tuple[str, ...] = (), numbers: tuple[str, ...] = (),
                 blobs: tuple[str, ...] = ()):
        self.empty = {**{c: "" for c in text}, **{c: 0.0 for c in numbers}, **{c: b"" for c in blobs}}
        self.cols: dict[str, list] = {"i": [], "frame": [], "error": [], **{c: [] for c in self.empty}}
        self.videos = {str(s): int(i) for s, i, v in zip(batch["source"], batch["i"], batch["video"]) if v}
        self.images: dict[str, list[int]] = {}
        for s, i, v in zip(batch["source"], batch["i"], batch["video"]):
            if not v:
                self.images.setdefault(str(s), []).append(int(i))

    def index(self, source: str) -> int:
        return self.videos[source] if source in self.videos else self.images[source].pop(0)

    def add(self, i: int, frame: int | None, error: str = "", **values) -> None:
        self.cols["i"].append(i)
        self.cols["frame"].append(NO_FRAME if frame is None else frame)
        self.cols["error"].append(error)
        for c, empty in self.empty.items():
            self.cols[c].append(values.get(c, empty))

    def columns(self) -> dict[str, np.ndarray]:
        for i in self.videos.values():
            self.add(i, VIDEO_DONE)
        return {k: np.asarray(v, dtype=np.int64 if k in ("i", "frame") else
                              np.float64 if isinstance(self.empty.get(k), float) else object)
                for k, v in self.cols.items()}


def batch_frames(batch: dict, vid_stride: int) -> Iterator[Frame]:
    """The frames of a batch of rows, in row order: still images are read by the prefetch
    threads of the loop that consumes them (overlapping the model, as on one machine);
    videos are decoded here, in order."""
    for src, video in zip(batch["source"], batch["video"]):
        item = as_item(str(src))
        if video:
            yield from iter_video(item, vid_stride)
        else:
            yield Frame(str(src), None, load=functools.partial(read_image if isinstance(item, Path)
                                                               else read_remote_image, item))


class _Actor:
    """Holds one worker: ``make(shared)`` (run once, in the actor) builds the function that
    turns a batch of rows into result columns."""

    def __init__(self, make: Callable, shared):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:
            torch.set_num_threads(max(1, int(cpus)))  # Ray's default is one thread per worker
        self.fn = make(ray.get(shared) if isinstance(shared, ray.ObjectRef) else shared)

    def __call__(self, batch: dict) -> dict:
        return self.fn(batch)


def run(rows: list[dict], make: Callable, shared: Any = None, *, actors: int | None = None, batch_size: int = 16,
        gpus_per_actor: float = 0.0, cpus_per_actor: float | None = None, what: str = "",
        total: int | None = None, console: Console | None = None, progress: bool = True,
        advance: Callable[[dict], int] | None = None) -> Iterator[dict]:
    """Each result row of ``rows`` (dicts with "i", "source", "video") put through ``make``'s
    workers on ``actors`` actors (default: one per ``cpus_per_actor`` of the cluster's CPUs;
    ``cpus_per_actor`` default: the cluster's CPUs over the actors), once each: keyed by
    ("i", "frame").
    ``shared``: a (large) value every worker's ``make`` gets, stored once in the cluster.
    Images are read inside the actors (their reader threads), not in a task stage before
    them: Ray fuses such a stage into the actors when their CPU requests match, and when they
    do not, tasks wait for CPUs the actors hold (measured: a deadlock with 2 actors x 2 CPUs
    on a 4-CPU cluster)."""
    need_ray()
    cpus = float(ray.cluster_resources().get("CPU", 1))
    if actors is not None and actors < 1:
        raise ConfigError(f"--actors must be at least 1, got {actors}")
    actors = actors or max(1, int(cpus // (cpus_per_actor or 1)))
    cpus_per_actor = cpus_per_actor or max(1.0, float(int(cpus // actors)))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
    ds = ds.map_batches(_Actor, fn_constructor_args=(make, ray.put(shared)), batch_size=batch_size,
                        # all start; down to one if nodes are lost (their blocks go to the others)
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
                        num_cpus=cpus_per_actor,
                        num_gpus=gpus_per_actor or None, batch_format="numpy")
    seen: set[tuple[int, int]] = set()
    with Phase(console or Console(stderr=True, markup=False), what, total, enabled=progress) as bar:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            n = len(batch["i"])
            for j in range(n):
                key = (int(batch["i"][j]), int(batch["frame"][j]))
                if key in seen:  # a retried block that also finished the first time
                    continue
                seen.add(key)
                row = {k: v[j] for k, v in batch.items()}
                bar.advance(advance(row) if advance is not None else int(row["frame"] != VIDEO_DONE))
                yield row
