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
from .writers import AnnotatedWriter, BackgroundDrawer, CocoResultsWriter, JsonlWriter


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked (fast on CPUs with AMX/AVX-512 bf16); fp32 otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def stack_inputs(u8: list[torch.Tensor]) -> tuple[torch.Tensor, list[int] | None]:
    """Per-image inputs -> one batch: (3, H, W) inputs are stacked; top-down tasks' (N, 3, H, W)
    crop stacks are concatenated and their counts per image returned (else None)."""
    if u8[0].dim() == 4:
        return torch.cat(u8), [len(u) for u in u8]
    return torch.stack(u8), None


@torch.inference_mode()
def run_batch(model, u8: list[torch.Tensor], metas: list[dict], precision: str = "fp32", pre=None, **post) -> list:
    """u8: per image a (3, S, S) uint8 input, or for top-down tasks an (N, 3, H, W) stack of
    its instance crops (N may be 0) -> predictions (normalisation happens batched)."""
    if getattr(model, "is_bundle", False):
        return model.run_batch(u8, metas, precision, **post)
    pre = pre or model.preprocessor()
    x, _ = stack_inputs(u8)
    if x.shape[0] == 0:  # no instance in any image of the batch
        return model.postprocess(None, metas, **post)
    x = pre.normalize(x.to(model.device)).contiguous(memory_format=torch.channels_last)
    with autocast(x.device, precision):
        raw = model.infer(x, **post)
    return model.postprocess(raw, metas, **post)


def predict_arrays(model, arrays: list[np.ndarray], batch_size: int = 16, precision: str = "fp32", pre=None,
                   **post) -> list:
    model.eval()
    pre = pre or model.preprocessor()
    out: list = []
    for i in range(0, len(arrays), batch_size):
        prepared = [pre.prepare(a) for a in arrays[i : i + batch_size]]
        out.extend(run_batch(model, [p[0] for p in prepared], [p[1] for p in prepared], precision, pre, **post))
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
                console: Console | None = None, progress: bool = True, pre=None, **post) -> RunSummary:
    """Stream ``sources`` through ``model``. A bad image is reported and skipped; every good
    image still gets its JSON line (flushed immediately) and annotated output. ``pre``: the
    model's preprocessor, or a configured one (top-down tasks: with their box source)."""
    console = console or Console(stderr=True)
    items = expand_sources(sources)
    announce = len(items) > 1  # a single bad input is the caller's error to raise, not a skip
    pre = pre or model.preprocessor()
    model.eval()
    frames = prefetch(iter_frames(items, vid_stride), pre, maxsize=max(8, 2 * batch_size))
    annotated = AnnotatedWriter(out_dir)
    jsonl, coco = JsonlWriter(save_json), CocoResultsWriter(save_coco, coco_ids)
    drawn = BackgroundDrawer(annotated) if out_dir else None
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
                bar.advance(tid, len(batch))
    finally:
        jsonl.close()
        if drawn is not None:
            drawn.close()
        coco.close()
    summary.outputs = [str(p) for p in annotated.written]
    return summary
