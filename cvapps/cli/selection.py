"""`cvapps select`: which images and video frames to label next, on one machine or in shards
(registered on cvapps.cli's app; thin: the work is in cvapps.active and cvapps.api)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from ..errors import CvappsError
from . import DEVICE, ENGINE, _api, _engine, app, err


@app.command()
def select(
    model: Optional[str] = typer.Option(None, help="model file (any task) or weights name"),
    pool: Optional[List[str]] = typer.Option(None, help="unlabelled images and videos: folder, glob, .txt list, "
                                                        "video file (repeatable)"),
    budget: Optional[int] = typer.Option(None, help="how many images to pick"),
    strategy: Optional[str] = typer.Option(None, help="default: entropy, or the model's uncertainty score (pose, "
                                                      "landmarks: least_confidence); random | least_confidence | "
                                                      "margin | entropy | bald | variance | coreset | hybrid"),
    exclude: Optional[str] = typer.Option(None, help="text file of already-labelled paths to leave out"),
    out_dir: str = typer.Option("runs/select", "--out", help="scores.csv, selection.csv/.json, contact_sheet.png"),
    copy_to: Optional[str] = typer.Option(None, help="copy the picks here, prefixed with their rank"),
    link: bool = typer.Option(False, help="with --copy-to: symbolic links instead of copies"),
    batch_size: int = typer.Option(16), mc_passes: int = typer.Option(10, help="bald / variance: MC-dropout passes"),
    k: int = typer.Option(5, help="hybrid: uncertainty pre-filter to k x budget"), seed: int = typer.Option(0),
    pseudo_label: Optional[float] = typer.Option(None, help="also write confident predictions (>= this) as labels"),
    vid_stride: int = typer.Option(10, help="videos in the pool: score every N-th frame"),
    min_gap: int = typer.Option(30, help="videos: picked frames of one video are at least this many frames apart"),
    workers: Optional[int] = typer.Option(None, help="threads reading images ahead (default: one per core, at most 4)"),
    backend: str = typer.Option("auto", help="auto: ONNX Runtime for strategies that need only the outputs; torch"),
    boxes: Optional[str] = typer.Option(None, "--boxes", "--faces", help="top-down keypoint models: instance boxes "
                                        "(COCO-style file, or haar for faces); default as predict: the default "
                                        "detector's"),
    detector: Optional[str] = typer.Option(None, help="top-down keypoint models: a detection model for the boxes"),
    whole_image: bool = typer.Option(False, help="top-down keypoint models: one instance per image, the whole frame"),
    device: str = DEVICE["device"][1],
    to: Optional[Tuple[str, str]] = typer.Option(None, help="FORMAT FILE: hand the picks to a labelling tool with the "
                                                            "model's predictions as pre-annotations: label-studio "
                                                            "tasks.json (score = selection score) or cvat ann.xml"),
    ls_config: Optional[str] = typer.Option(None, help="--to label-studio: also write the labelling config here"),
    document_root: Optional[str] = typer.Option(None, help="--to label-studio: image URLs for Label Studio's local-"
                                                           "files storage under this LOCAL_FILES_DOCUMENT_ROOT"),
    model_version: Optional[str] = typer.Option(None, help="--to label-studio: the predictions' model_version "
                                                           "(default: the model's name)"),
    shard: Optional[str] = typer.Option(None, help="I/N: score only the I-th of N interleaved parts of the pool "
                                                   "(a batch-scheduler array task); pick with --merge"),
    merge: Optional[List[str]] = typer.Option(None, help="shard folders (repeatable): pick from their scores as "
                                                         "the unsharded run would; budget and strategy from them"),
    engine: str = ENGINE["engine"][1], actors: Optional[int] = ENGINE["actors"][1],
    cpus_per_actor: Optional[float] = ENGINE["cpus_per_actor"][1],
    gpus_per_actor: float = ENGINE["gpus_per_actor"][1], address: Optional[str] = ENGINE["address"][1],
) -> None:
    """Rank unlabelled images and video frames by how much labelling them should teach the
    model; picked video frames are written to OUT/frames/ as images. Re-running with the
    same arguments skips what was already scored."""
    if merge:
        sel = _api().select_merge(list(merge), out_dir, copy_to, link, model, console=err)
        for row in sel:
            print(f"{row['rank']}\t{'-' if row['score'] is None else format(row['score'], '.4g')}\t{row['path']}")
        err.print(f"selected {len(sel)} from {len(merge)} shards; see {out_dir}/selection.csv", highlight=False)
        return
    missing = [f"--{n}" for n, v in (("model", model), ("pool", pool), ("budget", budget)) if v is None or v == []]
    if missing:
        raise CvappsError(f"select needs {', '.join(missing)}", hint="or --merge SHARD_DIR ... to pick from shards")
    kw = {"engine": engine, "actors": actors, "cpus_per_actor": cpus_per_actor, "gpus_per_actor": gpus_per_actor,
          "address": address}
    run = _engine(kw)
    sel = run.select(model, list(pool), budget, strategy, **kw, exclude=exclude, out=out_dir, copy_to=copy_to, link=link,
                        batch_size=batch_size, mc_passes=mc_passes, k=k, seed=seed, pseudo_label=pseudo_label,
                        vid_stride=vid_stride, min_gap=min_gap, workers=workers, device=device, backend=backend,
                        boxes=boxes, detector=detector, whole_image=whole_image, console=err, to=to,
                        ls_config=ls_config, document_root=document_root,
                        model_version=model_version or (Path(model).stem if Path(model).exists() else model),
                        shard=_shard(shard))
    if shard:
        return
    for row in sel:
        print(f"{row['rank']}\t{'-' if row['score'] is None else format(row['score'], '.4g')}\t{row['path']}")
    err.print(f"selected {len(sel)}; see {out_dir}/selection.csv and {out_dir}/contact_sheet.png", highlight=False)


@app.command()
def embed(
    sources: List[str] = typer.Argument(..., help="images, folders, globs, .txt lists, URLs, object storage"),
    model: str = typer.Option(..., help="model file (any task) or weights name"),
    out: str = typer.Option(..., help="FILE.npy: (N, D) float32 embeddings; FILE.csv beside it names each row's image"),
    batch_size: int = typer.Option(64),
    workers: Optional[int] = typer.Option(None, help="threads reading images ahead (default: one per core, at most 4)"),
    device: str = DEVICE["device"][1],
    engine: str = ENGINE["engine"][1], actors: Optional[int] = ENGINE["actors"][1],
    cpus_per_actor: Optional[float] = ENGINE["cpus_per_actor"][1],
    gpus_per_actor: float = ENGINE["gpus_per_actor"][1], address: Optional[str] = ENGINE["address"][1],
) -> None:
    """The backbone's pooled last-stage features of each image (what core-set selection
    compares): for search, deduplication, clustering or your own selection."""
    kw = {"engine": engine, "actors": actors, "cpus_per_actor": cpus_per_actor, "gpus_per_actor": gpus_per_actor,
          "address": address}
    _api().check_outputs(files={"--out": out})
    run = _engine(kw)
    names, emb, failed = run.embed_sources(model, list(sources), device=device, batch_size=batch_size, console=err,
                                           workers=workers, **kw)
    path = _api().save_embeddings(out, names, emb)
    err.print(f"{len(names)} embeddings ({emb.shape[1]} values each) in {path} (rows named in "
              f"{path.with_suffix('.csv')})" + (f"; {len(failed)} unreadable images left out" if failed else ""),
              highlight=False)


def _shard(text: str | None) -> tuple[int, int] | None:
    """"I/N" -> (I, N)."""
    if not text:
        return None
    i, _, n = text.partition("/")
    if not (i.strip().isdigit() and n.strip().isdigit()):
        raise CvappsError(f"--shard {text!r}: expected I/N, e.g. 0/4")
    return int(i), int(n)
