"""``--engine ray``: predict, select, embed and evaluate with the model on a pool of Ray
actors (cvapps.scaleout.cluster), writing what the same command writes on one machine.

Each actor builds its model exactly as the local command does (``api.predict_pipeline``,
``api.select_pipeline``: the runtime room's choice, the task's setup over the whole source
list), so a record depends only on its image, never on which actor ran it. The driver
sorts what comes back into the sources' order before writing, so the outputs equal a local
run's line for line."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from rich.console import Console

from .. import api
from ..active.select import local_scores
from ..data.io import is_video, json_dumps, load_json
from ..data.loader import collate
from ..data.remote import staged
from ..data.sources import count_frames, expand_sources, frame_batches, is_stream, source_name
from ..errors import ConfigError, DataError
from ..inference.runner import RunSummary, save_mask
from ..inference.writers import AnnotatedWriter, CocoResultsWriter, JsonlWriter
from ..options import DataOptions, EvalOptions, split_options
from ..progress import note
from ..runtimes import GraphModel, default_precision
from ..tasks import TaskModel
from ..tasks.batch import memory_format, stream_predictions, to_batch
from ..runtime import autocast
from ..training.trainer import to_device
from .cluster import NO_FRAME, VIDEO_DONE, BatchRows, batch_frames, connect, run, shutdown


def _work_rows(items: list) -> list[dict]:
    """One row of work per still image or video (live sources have no end: refused)."""
    live = [it for it in items if is_stream(it) and not isinstance(it, Path)]
    if live:
        raise ConfigError(f"{source_name(live[0])} is a live camera or stream: it has no end to share out",
                          hint="run live sources without --engine ray (several at once: --concurrent)")
    arrays = [it for it in items if isinstance(it, np.ndarray)]
    if arrays:
        raise ConfigError("--engine ray reads sources by name (paths, globs, lists, URLs, object storage), "
                          "not in-memory arrays")
    return [{"i": i, "source": str(it), "video": bool(isinstance(it, Path) and is_video(it))}
            for i, it in enumerate(items)]


def _engine(address, console, fn):
    cluster = connect(address, console)
    try:
        return fn()
    finally:
        shutdown(cluster)


# predict ----------------------------------------------------------------------------------
def _predict_worker(job: dict, items: list):
    """In an actor: the model as ``predict`` prepares it, and the function of a batch."""
    model, pre, post, precision = api.predict_pipeline(job["model"], items, job["task"], job["device"],
                                                       job["backend"], job["precision"], **job["task_options"])
    out_dir, names = job["out_dir"], job["names"]

    def work(batch: dict) -> dict:
        rows = BatchRows(batch, text=("record", "summary"))
        writer = AnnotatedWriter(out_dir) if out_dir else None
        fail = lambda f: rows.add(rows.index(f.source), f.frame, f.error.one_line())  # noqa: E731
        for r in stream_predictions(model, [], pre, job["batch_size"], job["vid_stride"], precision, None, fail,
                                    frames=batch_frames(batch, job["vid_stride"]), **post):
            i = rows.index(r.source) if r.frame is None else rows.videos[r.source]
            if out_dir:
                save_mask(out_dir, r)
                writer.write(r.source, r.frame, r.draw(), path=Path(names[i]))
            rows.add(i, r.frame, record=json_dumps(r.to_dict(model.task)),
                     summary=r.prediction.summary() if r.frame is None else "")
        if writer is not None:
            writer.close()
        return rows.columns()

    return work


def predict(model, sources: Iterable, task: str | None = None, *, device: str = "cpu", backend: str = "auto",
            actors: int | None = None, gpus_per_actor: float = 0.0, cpus_per_actor: float | None = None,
            address: str | None = None, batch_size: int = 16, out_dir: str | None = None,
            save_json: str | None = None, save_coco: str | None = None, coco_gt: str | None = None,
            precision: str | None = None, vid_stride: int = 1, console: Console | None = None,
            progress: bool = True, **task_options) -> RunSummary:
    """``api.predict`` on a Ray cluster: the same JSON Lines (in the sources' order), COCO
    results, masks and annotated images / videos. Still images are spread over the actors in
    batches (each actor reads its own, ahead of its model); each video goes whole to one
    actor, which decodes it in order. ``actors``: model copies (default one per CPU of the
    cluster, see cvapps.scaleout.cluster.run); ``address``: a running cluster (default
    $RAY_ADDRESS, else one started here). Tracking follows a video frame by frame and stays local."""
    console = console or Console(stderr=True, markup=False)
    if any(task_options.get(k) for k in ("track", "line", "zone", "sequences")):
        raise ConfigError("--engine ray does not track: tracking follows each video frame by frame in one process",
                          hint="run tracking without --engine ray")
    for k in (*api.TRACK_KEYS, "threads", "reconnect", "concurrent"):  # an actor's threads are its CPUs
        task_options.pop(k, None)
    api.check_outputs({"--out": out_dir}, {"--save-json": save_json, "--save-coco": save_coco})
    precision = precision or default_precision()
    # on the driver first: options are checked (one-line errors before a cluster starts) and
    # exports the actors then find in the cache are made once
    notes: list[str] = []
    items = expand_sources(sources, notes)
    api.tell_notes(console, notes)
    model = api.choose_model(model, task, task_options, items)
    ours = not isinstance(model, (TaskModel, GraphModel))
    local = api.load(model, task=task, device=device, compile=False) if ours else model
    rows = _work_rows(items)
    local, _, _, _ = api.predict_pipeline(local, items, task, device, backend, precision, None, console,
                                          ours=ours, **task_options)
    names: list[str] = []
    if out_dir:
        w = AnnotatedWriter(out_dir)
        names = [str(w.name_for(r["source"], 0 if r["video"] else None)) for r in rows]
    job = {"model": model, "task": local.task, "device": device, "backend": backend, "precision": precision,
           "task_options": task_options, "out_dir": out_dir, "names": names, "batch_size": batch_size,
           "vid_stride": vid_stride}
    gt = load_json(coco_gt) if coco_gt else None
    coco = CocoResultsWriter(save_coco, {i["file_name"]: i["id"] for i in gt.get("images", [])} if gt else None,
                             local.spec.category_ids(local, gt) if gt else None)
    summary = RunSummary()
    got: list[tuple[int, int, str, str]] = []
    partial = Path(f"{save_json}.partial") if save_json else None
    spool = open(partial, "w", encoding="utf-8") if partial else None  # an interrupted run keeps its records

    def collect():
        for row in run(rows, functools.partial(_predict_worker, job), items, actors=actors, batch_size=batch_size,
                       gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor, what=f"predict {local.task}",
                       total=count_frames(items, vid_stride), console=console, progress=progress):
            i, frame = int(row["i"]), int(row["frame"])
            if frame == VIDEO_DONE:
                continue
            if row["error"]:
                summary.failed.append((rows[i]["source"], str(row["error"])))
                summary.errors.append(DataError(str(row["error"])))
                note(console, "skipped", str(row["error"]))
                continue
            got.append((i, frame, str(row["record"]), str(row["summary"])))
            if spool:
                spool.write(str(row["record"]) + "\n")
                spool.flush()

    try:
        _engine(address, console, collect)
    finally:
        if spool:
            spool.close()
    got.sort(key=lambda t: t[:2])
    jsonl = JsonlWriter(save_json)
    for i, frame, line, said in got:
        jsonl.write_line(line)
        if save_coco:
            rec = json.loads(line)
            coco.add(rec["source"], rec["frame"], rec["predictions"])
        if said and len(summary.summaries) < 10000:
            summary.summaries.append((rows[i]["source"], said))
    jsonl.close()
    coco.close()
    if partial:
        partial.unlink(missing_ok=True)
    summary.processed = len(got)
    summary.outputs = [names[i] for i in dict.fromkeys(i for i, *_ in got)] if names else []  # as written
    return summary


# select -----------------------------------------------------------------------------------
def _select_worker(job: dict, items: list):
    """In an actor: the model as ``select`` prepares it; a batch -> scores (and embeddings)."""
    model, pre = api.select_pipeline(job["model"], items, job["strategy"], job["device"], job["backend"],
                                     **job["asked"])

    def work(batch: dict) -> dict:
        rows = BatchRows(batch, numbers=("score",), blobs=("emb",))
        skipped = lambda source, message: rows.add(rows.index(source), None, message)  # noqa: E731
        for keys, s, emb, _ in local_scores(model, pre, [], set(), job["strategy"], job["mc_passes"], job["need_emb"],
                                            skipped, batch_size=job["batch_size"], vid_stride=job["vid_stride"],
                                            workers=None, frames=batch_frames(batch, job["vid_stride"])):
            for j, (src, fr) in enumerate(keys):
                rows.add(rows.index(src), fr, score=float(s[j]),
                         emb=emb[j].astype(np.float16).tobytes() if emb is not None else b"")
        return rows.columns()

    return work


def _ray_scorer(job: dict, items: list, engine: dict, console: Console, chunk: int = 256):
    """``active.select.select``'s ``scorer``: the pool scored by the actors, handed over in
    chunks of ``chunk`` frames (the order does not matter: ``scored`` restores the pool's)."""

    def score(todo, done, strategy, mc_passes, need_emb, skipped):
        rows = _work_rows(todo)
        spec = {**job, "strategy": strategy, "mc_passes": mc_passes, "need_emb": need_emb}
        keys, s, emb, seen = [], [], [], 0
        for row in run(rows, functools.partial(_select_worker, spec), items, console=console, progress=False,
                       what="scoring", **engine):
            i, frame = int(row["i"]), int(row["frame"])
            if frame == VIDEO_DONE:
                continue
            source = str(todo[i])
            if row["error"]:  # said (and counted) by ``skipped``
                skipped(source, str(row["error"]))
                continue
            seen += 1
            key = (source, None if frame == NO_FRAME else frame)
            if key in done:  # a resumed video's frames scored before
                continue
            keys.append(key)
            s.append(float(row["score"]))
            if need_emb:
                emb.append(np.frombuffer(row["emb"], np.float16))
            if len(keys) >= chunk:
                yield keys, torch.tensor(s), np.stack(emb) if need_emb else None, seen
                keys, s, emb, seen = [], [], [], 0
        if keys or seen:
            yield keys, torch.tensor(s), np.stack(emb) if need_emb and emb else None, seen

    return score


def select(model, pool, budget: int, strategy: str | None = None, *, device: str = "cpu", backend: str = "auto",
           actors: int | None = None, gpus_per_actor: float = 0.0, cpus_per_actor: float | None = None,
           address: str | None = None, console: Console | None = None, **kwargs) -> list[dict]:
    """``api.select`` with the pool scored on a Ray cluster (scores and, for core-set /
    hybrid, embeddings, in parallel); the picks are made here, from the same scores.csv /
    embeddings.f16 a local run writes (so a run resumes on either engine), and equal a local
    run's for the same strategy and seed."""
    console = console or Console(stderr=True, markup=False)
    engine = {"actors": actors, "gpus_per_actor": gpus_per_actor, "cpus_per_actor": cpus_per_actor,
              "batch_size": kwargs.get("batch_size", 16)}

    def make_scorer(items: list, asked: dict):  # what api.select expanded and took as the task's options
        job = {"model": model, "device": device, "backend": backend, "asked": asked,
               "batch_size": engine["batch_size"], "vid_stride": kwargs.get("vid_stride", 10)}
        return _ray_scorer(job, items, engine, console)

    return _engine(address, console, lambda: api.select(model, pool, budget, strategy, device, backend,
                                                        console=console, make_scorer=make_scorer, **kwargs))


# embed ------------------------------------------------------------------------------------
def _embed_worker(job: dict, _items):
    model = api.load(job["model"], device=job["device"]).eval()
    pre = model.preprocessor()

    def work(batch: dict) -> dict:
        rows = BatchRows(batch, blobs=("emb",))
        fail = lambda f: rows.add(rows.index(f.source), None, f.error.one_line())  # noqa: E731
        with torch.inference_mode():
            for good in frame_batches([], pre, job["batch_size"], on_error=fail, frames=batch_frames(batch, 1)):
                x, _ = to_batch(pre, [f.payload[0] for f in good], model.device, memory_format(model))
                for f, e in zip(good, model.embed(x).float().cpu().numpy()):
                    rows.add(rows.index(f.source), None, emb=e.tobytes())
        return rows.columns()

    return work


def embed_sources(model, sources: Iterable, *, device: str = "cpu", batch_size: int = 64,
                  actors: int | None = None, gpus_per_actor: float = 0.0, cpus_per_actor: float | None = None,
                  address: str | None = None, console: Console | None = None, **_local) \
        -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """``api.embed_sources`` on a Ray cluster (``_local``: options of the local run, e.g.
    its reading threads, which actors do not take)."""
    console = console or Console(stderr=True, markup=False)
    items = expand_sources(sources)
    rows = _work_rows(items)
    if any(r["video"] for r in rows):
        raise ConfigError("embed takes still images", hint="sample a video's frames with `cvapps select` or "
                                                           "ffmpeg first")
    got, failed = {}, []

    def collect():
        for row in run(rows, functools.partial(_embed_worker, {"model": model, "device": device,
                                                               "batch_size": batch_size}), None,
                       actors=actors, batch_size=batch_size, gpus_per_actor=gpus_per_actor,
                       cpus_per_actor=cpus_per_actor, what="embedding", total=len(rows), console=console):
            i = int(row["i"])
            if row["error"]:
                failed.append((rows[i]["source"], str(row["error"])))
                note(console, "skipped", str(row["error"]))
            else:
                got[i] = np.frombuffer(row["emb"], np.float32)

    _engine(address, console, collect)
    order = sorted(got)
    if not order:
        raise DataError("no readable images to embed")
    return [rows[i]["source"] for i in order], np.stack([got[i] for i in order]), failed


# evaluate ---------------------------------------------------------------------------------
def _eval_worker(job: dict, _items):
    """In an actor: the model and the evaluation dataset; a batch of index ranges -> the raw
    outputs and targets (torch tensors, serialised for the driver's evaluator)."""
    model = api.load(job["model"], task=job["task"], device=job["device"]).eval()
    va = model.spec.read_eval(model, job["opts"])
    ds = model.spec.eval_dataset(model, va, job["opts"].skip_bad)

    def work(batch: dict) -> dict:
        rows = BatchRows(batch, blobs=("out",))
        for i, start, stop in zip(batch["i"], batch["start"], batch["stop"]):
            x, t, notes = collate([ds[j] for j in range(int(start), int(stop))])  # as the Loader does
            part = {"skipped": [str(m) for m in notes["skipped"]], "counts": dict(notes["counts"]), "n": 0}
            if x is not None:  # else every sample of the range was skipped (--skip-bad)
                x = ds.normalize(x.to(model.device)) if x.dtype == torch.uint8 else x.to(model.device)
                with torch.inference_mode(), autocast(model.device, job["precision"]):
                    raw = model(x)
                    loss = float(model.loss(raw, to_device(t, model.device))["loss"]) if model.has_eval_loss else 0.
                part.update(raw=raw, t=t, loss=loss * x.shape[0], n=x.shape[0])
            buf = io.BytesIO()
            torch.save(part, buf)
            rows.add(int(i), None, out=buf.getvalue())
        return rows.columns()

    return work


def _load_part(blob: bytes) -> dict:
    """A worker's outputs: tensors, plain values and cvapps's own output records (named
    tuples / dataclasses of tensors, e.g. a detector's raw outputs), nothing else executes."""
    names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(blob))
    allowed = []
    for name in names:
        module, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module), attr, None) if module.startswith("cvapps.") else None
        if not (isinstance(cls, type) and (issubclass(cls, tuple) or dataclasses.is_dataclass(cls))):
            raise DataError(f"a worker's outputs hold {name}, which is not an output record of cvapps")
        allowed.append(cls)
    with torch.serialization.safe_globals(allowed):
        return torch.load(io.BytesIO(blob), weights_only=True)


def evaluate(model, data: str | None = None, *, task: str | None = None, device: str = "cpu",
             actors: int | None = None, gpus_per_actor: float = 0.0, cpus_per_actor: float | None = None,
             address: str | None = None, console: Console | None = None, **options) -> dict:
    """``api.evaluate`` with the model's forward passes on a Ray cluster: each actor reads
    the evaluation set itself (the data must be where every node can read it: a shared
    folder or object storage) and returns raw outputs per batch; the metric is computed here
    by the task's evaluator, in the data's order. Keypoint models evaluated on the
    instances ``predict`` finds run here, in this process."""
    console = console or Console(stderr=True, markup=False)
    data_kw, eval_kw = split_options(options, DataOptions, EvalOptions)
    eopts = EvalOptions.parse(eval_kw)
    api.check_outputs({"--out": eopts.out}, {"--save-results": eopts.save_results})
    local = api.load(model, task=task, device=device)
    spec = local.spec
    opts = staged(DataOptions.parse(data_kw, data=data))
    va = spec.read_eval(local, opts)
    predicted = spec.evaluate_predicted(local, va, opts, eopts, api.helper_loader(device, "auto", console))
    if predicted is not None:
        note(console, "note", "these metrics come from the instances predict finds, computed in this process")
        return predicted
    ds = spec.eval_dataset(local, va, opts.skip_bad)
    ev = local.make_evaluator(ds)
    bs = eopts.batch_size
    rows = [{"i": k, "source": "", "video": False, "start": a, "stop": min(a + bs, len(ds))}
            for k, a in enumerate(range(0, len(ds), bs))]
    outs: dict[int, bytes] = {}
    job = {"model": model, "task": local.task, "device": device,
           "opts": opts, "precision": eopts.precision}

    def collect():
        for row in run(rows, functools.partial(_eval_worker, job), None, actors=actors, batch_size=1,
                       gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor, what="evaluating",
                       total=len(ds), console=console, advance=lambda r: rows[int(r["i"])]["stop"]
                       - rows[int(r["i"])]["start"]):
            outs[int(row["i"])] = row["out"]

    _engine(address, console, collect)
    loss_sum, n = 0.0, 0
    for k in sorted(outs):  # the data's order: evaluators that keep per-image results keep them in order
        part = _load_part(outs[k])
        va.skipped.extend(m for m in part["skipped"] if m not in va.skipped)
        ds.counts.update(part["counts"])
        if part["n"]:
            ev.add(part["raw"], part["t"])
            loss_sum, n = loss_sum + part["loss"], n + part["n"]
    if not n:
        raise DataError("no readable evaluation images")
    metrics = ev.compute()
    if local.has_eval_loss:
        metrics["loss"] = loss_sum / n
    metrics = spec.finish_eval(local, va, ev, metrics, eopts)
    if va.skipped:
        metrics["skipped"] = sorted(set(va.skipped))
    return metrics
