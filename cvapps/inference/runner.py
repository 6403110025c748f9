"""The predict loop shared by ``TaskModel.predict`` and ``cvapps predict``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .sources import Frame, batched, count_frames, expand_sources, iter_frames, prefetch
from .writers import AnnotatedWriter, CocoResultsWriter, JsonlWriter


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked (fast on CPUs with AMX/AVX-512 bf16); fp32 otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def run_batch(model, u8: list[torch.Tensor], metas: list[dict], precision: str = "fp32", **post) -> list:
    """u8: list of (3, S, S) uint8 crops -> predictions (normalisation happens batched)."""
    pre = model.preprocessor()
    x = pre.normalize(torch.stack(u8).to(model.device))
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, precision):
        raw = model(x)
    return model.postprocess(raw, metas, **post)


def predict_arrays(model, arrays: list[np.ndarray], batch_size: int = 16, precision: str = "fp32", **post) -> list:
    model.eval()
    pre = model.preprocessor()
    out: list = []
    for i in range(0, len(arrays), batch_size):
        prepared = [pre.prepare(a) for a in arrays[i : i + batch_size]]
        out.extend(run_batch(model, [p[0] for p in prepared], [p[1] for p in prepared], precision, **post))
    return out


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
                console: Console | None = None, progress: bool = True, **post) -> RunSummary:
    """Stream ``sources`` through ``model``. A bad image is reported and skipped; every good
    image still gets its JSON line (flushed immediately) and annotated output."""
    console = console or Console(stderr=True)
    items = expand_sources(sources)
    announce = len(items) > 1  # a single bad input is the caller's error to raise, not a skip
    pre = model.preprocessor()
    model.eval()
    frames = prefetch(iter_frames(items, vid_stride), hook=pre.prepare, maxsize=max(8, 2 * batch_size))
    jsonl, drawn, coco = JsonlWriter(save_json), AnnotatedWriter(out_dir), CocoResultsWriter(save_coco, coco_ids)
    summary = RunSummary()
    bar = Progress(TextColumn("[bold]predict {task.fields[task_name]}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress, transient=True)
    try:
        with bar:
            tid = bar.add_task("predict", total=count_frames(items, vid_stride), task_name=model.task)
            for batch in batched(frames, batch_size):
                good: list[Frame] = []
                for f in batch:
                    if f.error is not None:
                        summary.failed.append((f.source, f.error.one_line()))
                        if len(summary.errors) < 100:
                            summary.errors.append(f.error)
                        if announce:
                            console.print(f"[red]skipped[/red] {f.error.one_line()}", highlight=False)
                    else:
                        good.append(f)
                if good:
                    metas = [f.payload[1] for f in good]
                    preds = run_batch(model, [f.payload[0] for f in good], metas, precision, **post)
                    for f, p, m in zip(good, preds, metas):
                        if out_dir and hasattr(p, "save"):  # segmentation: label-map PNG beside the overlay
                            stem = Path(f.source).stem if f.frame is None else f"{Path(f.source).stem}_{f.frame:06d}"
                            p.save(Path(out_dir) / "masks" / f"{stem}.png")
                        records = p.to_dict()
                        jsonl.write({"source": f.source, "frame": f.frame, "task": model.task,
                                     "width": m["width"], "height": m["height"], "predictions": records})
                        coco.add(f.source, f.frame, records)
                        if out_dir:
                            drawn.write(f.source, f.frame, p.draw(f.image))
                        if f.frame is None and len(summary.summaries) < 10000:
                            summary.summaries.append((f.source, p.summary()))
                    summary.processed += len(good)
                bar.advance(tid, len(batch))
    finally:
        jsonl.close()
        drawn.close()
        coco.close()
    summary.outputs = [str(p) for p in drawn.written]
    return summary
