"""Self-training input: write a model's confident predictions on unlabelled images in its
task's training format (the task spec's writer: classification CSV, detection COCO JSON,
segmentation label maps with low-confidence pixels void, COCO keypoints)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..data.sources import frame_batches
from ..tasks.batch import refined, run_batch


@torch.inference_mode()
def write_pseudo_labels(model, paths: list[Path], threshold: float, out_dir: Path, batch_size: int = 16,
                        pre=None) -> dict:
    """Streams ``paths`` through ``model`` (``pre``: a configured preprocessor, default the
    model's); returns {"written": n images, "file": path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pre = pre or model.preprocessor()
    model.eval()
    writer = model.spec.pseudo_labels(model, out_dir, threshold)
    if paths:  # names relative to the images' common folder: `train --images ROOT` finds them, and only them
        writer.root = Path(os.path.commonpath([os.path.abspath(p) for p in paths]))
        if len(paths) == 1:
            writer.root = writer.root.parent
    post = model.spec.pseudo_options(threshold)
    try:
        for good in frame_batches(paths, pre, batch_size):
            metas = [fr.payload[1] for fr in good]
            preds = refined(pre, run_batch(model, [fr.payload[0] for fr in good], metas, pre=pre, **post),
                            [fr.image for fr in good])
            for fr, p, meta in zip(good, preds, metas):
                writer.add(fr.source, p, meta)
    finally:
        info = writer.close()
    return info
