"""The streaming predict loop behind ``cvapps predict``: sources -> decode-ahead thread ->
batches -> ``run_batch`` -> JSON Lines, annotated images / videos, COCO results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch
from rich.console import Console

from ..progress import Phase, note
from ..tasks.batch import run_batch
from .sources import Frame, batched, count_frames, expand_sources, iter_frames, prefetch
from .writers import AnnotatedWriter, BackgroundDrawer, CocoResultsWriter, JsonlWriter


def frame_batches(items: list, pre, batch_size: int, vid_stride: int = 1,
                  on_error=None) -> Iterator[list[Frame]]:
    """The decoded, prepared frames of ``items`` in batches (decoding and ``pre.prepare`` run
    ahead in a thread). Frames that failed go to ``on_error(frame)`` and are left out; an
    all-bad batch yields nothing."""
    frames = prefetch(iter_frames(items, vid_stride), pre, maxsize=max(8, 2 * batch_size))
    for batch in batched(frames, batch_size):
        good = []
        for f in batch:
            if f.error is not None:
                if on_error is not None:
                    on_error(f)
            else:
                good.append(f)
        if good:
            yield good


@dataclass
class RunSummary:
    processed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    errors: list = field(default_factory=list)  # the DataErrors, first ones kept
    outputs: list[str] = field(default_factory=list)
    # (source, prediction.summary()) of still images, for the console; capped
    summaries: list[tuple[str, str]] = field(default_factory=list)


def run_predict(model, sources: Iterable, *, batch_size: int = 16, out_dir: str | Path | None = None,
                save_json: str | Path | None = None, precision: str = "fp32", vid_stride: int = 1,
                save_coco: str | Path | None = None, coco_ids: dict[str, int] | None = None,
                coco_categories: dict[str, int] | None = None,
                console: Console | None = None, progress: bool = True, pre=None, threads: int | None = None,
                **post) -> RunSummary:
    """Stream ``sources`` through ``model``. A bad image is reported and skipped; every good
    image still gets its JSON line (flushed immediately) and annotated output. ``pre``: the
    model's preprocessor, or a configured one (top-down tasks: with their box source).
    ``threads``: torch's CPU threads (default: torch's, one per core)."""
    console = console or Console(stderr=True, markup=False)
    items = expand_sources(sources)
    announce = len(items) > 1  # a single bad input is the caller's error to raise, not a skip
    pre = pre or model.preprocessor()
    model.eval()
    annotated = AnnotatedWriter(out_dir)
    jsonl, coco = JsonlWriter(save_json), CocoResultsWriter(save_coco, coco_ids, coco_categories)
    drawn = BackgroundDrawer(annotated) if out_dir else None
    summary = RunSummary()
    bar = Phase(console, f"predict {model.task}", count_frames(items, vid_stride), enabled=progress)
    if threads is not None:
        torch.set_num_threads(threads)

    def failed(f: Frame) -> None:
        summary.failed.append((f.source, f.error.one_line()))
        if len(summary.errors) < 100:
            summary.errors.append(f.error)
        if announce or summary.processed:  # a lone input that fails is the caller's one-line error
            note(console, "skipped", f.error.one_line())
        bar.advance(1)

    try:
        with bar:
            for good in frame_batches(items, pre, batch_size, vid_stride, failed):
                metas = [f.payload[1] for f in good]
                preds = run_batch(model, [f.payload[0] for f in good], metas, precision, pre, **post)
                for f, p, m in zip(good, preds, metas):
                    m = m[0] if isinstance(m, list) else m  # a bundle: every group saw the same image
                    if out_dir and hasattr(p, "save"):  # segmentation: label-map PNG beside the overlay
                        stem = Path(f.source).stem if f.frame is None else f"{Path(f.source).stem}_{f.frame:06d}"
                        p.save(Path(out_dir) / "masks" / f"{stem}.png")
                    records = p.to_dict()
                    jsonl.write({"source": f.source, "frame": f.frame, "task": model.task,
                                 "width": m["width"], "height": m["height"], "predictions": records})
                    coco.add(f.source, f.frame, records)
                    if drawn is not None:
                        drawn.put(f.source, f.frame, p, f.image)
                    if f.frame is None and len(summary.summaries) < 10000:
                        summary.summaries.append((f.source, p.summary()))
                summary.processed += len(good)
                bar.advance(len(good))
    except KeyboardInterrupt:
        kept = [what for what, on in ((f"JSON Lines in {save_json}", save_json), (f"outputs in {out_dir}", out_dir))
                if on]
        console.print(f"interrupted after {summary.processed} images / frames"
                      + (f"; their results are kept ({', '.join(kept)})" if kept else ""), highlight=False,
                      markup=False)
        raise
    finally:
        jsonl.close()
        if drawn is not None:
            drawn.close()
        coco.close()
    summary.outputs = [str(p) for p in annotated.written]
    return summary
