"""The streaming predict loop behind ``cvapps predict``: sources -> decode-ahead thread ->
batches -> ``run_batch`` (-> tracking) -> JSON Lines, annotated images / videos, COCO results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch
from rich.console import Console

from ..data.sources import Frame, count_frames, expand_sources
from ..progress import Phase, note
from ..tasks.batch import FrameResult, stream_predictions
from ..tracking import TrackingOptions
from .writers import AnnotatedWriter, BackgroundDrawer, CocoResultsWriter, JsonlWriter




@dataclass
class RunSummary:
    processed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    errors: list = field(default_factory=list)  # the DataErrors, first ones kept
    outputs: list[str] = field(default_factory=list)
    # (source, prediction.summary()) of still images, for the console; capped
    summaries: list[tuple[str, str]] = field(default_factory=list)


def save_mask(out_dir: str | Path, r: FrameResult) -> None:
    """Segmentation: the label-map PNG beside the overlay (out/masks/<stem>[_<frame>].png)."""
    if hasattr(r.prediction, "save"):
        stem = Path(r.source).stem if r.frame is None else f"{Path(r.source).stem}_{r.frame:06d}"
        r.prediction.save(Path(out_dir) / "masks" / f"{stem}.png")


def iter_predict(model, sources: Iterable, *, batch_size: int = 16, out_dir: str | Path | None = None,
                 save_json: str | Path | None = None, precision: str = "fp32", vid_stride: int = 1,
                 save_coco: str | Path | None = None, coco_ids: dict[str, int] | None = None,
                 coco_categories: dict[str, int] | None = None, console: Console | None = None,
                 progress: bool = True, pre=None, threads: int | None = None, tracking: TrackingOptions | None = None,
                 reconnect: int = 0, summary: RunSummary | None = None, concurrent: bool | None = None,
                 **post) -> Iterator[FrameResult]:
    """Stream ``sources`` through ``model``, writing the outputs asked for, and yield each
    FrameResult. A bad image is reported and skipped; every good image still gets its JSON
    line (flushed immediately) and annotated output. ``pre``: the model's preprocessor, or
    a configured one (top-down tasks: with their box source). ``threads``: torch's CPU
    threads (default: torch's, one per core). ``tracking``: object identities over video.
    ``concurrent``: read every video / stream at once (cvapps.data.sources.iter_frames)."""
    console = console or Console(stderr=True, markup=False)
    items = expand_sources(sources)
    announce = len(items) > 1  # a single bad input is the caller's error to raise, not a skip
    pre = pre or model.preprocessor()
    annotated = AnnotatedWriter(out_dir)
    jsonl, coco = JsonlWriter(save_json), CocoResultsWriter(save_coco, coco_ids, coco_categories)
    drawn = BackgroundDrawer(annotated) if out_dir else None
    summary = summary if summary is not None else RunSummary()
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
            for r in stream_predictions(model, items, pre, batch_size, vid_stride, precision, tracking, failed,
                                        reconnect, concurrent, **post):
                if out_dir:
                    save_mask(out_dir, r)
                record = r.to_dict(model.task)
                jsonl.write(record)
                coco.add(r.source, r.frame, record["predictions"])
                if drawn is not None:
                    drawn.put(r.source, r.frame, r, r.image)
                if r.frame is None and len(summary.summaries) < 10000:
                    summary.summaries.append((r.source, r.prediction.summary()))
                summary.processed += 1
                bar.advance(1)
                yield r
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
        if coco.not_in_ids:
            missing = coco.not_in_ids
            note(console, "note", f"{len(missing)} images are not in the --coco-gt file, their detections are left out "
                                  f"of {save_coco}: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
        summary.outputs = [str(p) for p in annotated.written]


def run_predict(model, sources: Iterable, **options) -> RunSummary:
    """``iter_predict`` run to the end (see there for the options) -> its RunSummary."""
    summary = RunSummary()
    for _ in iter_predict(model, sources, summary=summary, **options):
        pass
    return summary
