"""The one batched inference step: prepared uint8 inputs -> a normalised batch -> the
model -> predictions. ``TaskModel.predict``, the streaming predict loop, ``select``,
pseudo-labelling and embeddings all go through ``to_batch`` / ``run_batch``.

A preprocessor has ``prepare(image, source="", frame=None) -> (uint8 input, meta)`` (run
in the decode thread; ``source``/``frame`` let top-down box sources look boxes up) and
``normalize(batch_u8) -> float batch``, and optionally ``refine(prediction, image) ->
prediction``: a second look at each image's prediction with its pixels (e.g. the face
check of cvapps.tasks.landmarks.verify)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from ..data.io import as_rgb, read_image
from ..data.remote import is_remote_image, read_remote_image
from ..data.sources import Frame, expand_sources, frame_batches
from ..errors import DataError
from ..runtime import autocast
from ..tracking import Overlay, Tracking, TrackingOptions


def stack_inputs(u8: list[torch.Tensor]) -> tuple[torch.Tensor, list[int] | None]:
    """Per-image inputs -> one batch: (3, H, W) inputs are stacked; top-down tasks' (N, 3, H, W)
    crop stacks are concatenated and their counts per image returned (else None)."""
    if u8[0].dim() == 4:
        return torch.cat(u8), [len(u) for u in u8]
    return torch.stack(u8), None


def memory_format(model) -> torch.memory_format:
    """The batch layout ``model`` reads fastest: its ``memory_format`` (ONNX Runtime: NCHW
    contiguous), else channels_last (PyTorch's CPU convolutions)."""
    return getattr(model, "memory_format", torch.channels_last)


def prepare_threads(model) -> int | None:
    """Torch threads of each decode thread feeding ``model``: one when the model computes on
    torch's CPU pool (a second pool would fight it), else None — the caller's count (ONNX
    Runtime has its own threads; CUDA models leave the CPU to decoding)."""
    return 1 if isinstance(model, torch.nn.Module) and model.device.type == "cpu" else None


def to_batch(pre, u8: list[torch.Tensor], device: torch.device,
             memory_format: torch.memory_format = torch.channels_last) -> tuple[torch.Tensor, list[int] | None]:
    """Prepared inputs -> (normalised (B, 3, H, W) float batch on ``device`` in ``memory_format``
    (the model's: channels_last for PyTorch's convolutions, contiguous for ONNX Runtime), crops
    per image for top-down inputs else None)."""
    x, counts = stack_inputs(u8)
    return pre.normalize(x.to(device)).contiguous(memory_format=memory_format), counts


@torch.inference_mode()
def run_batch(model, u8: list[torch.Tensor], metas: list[dict], precision: str = "fp32", pre=None, **post) -> list:
    """u8: per image a (3, S, S) uint8 input, or for top-down tasks an (N, 3, H, W) stack of
    its instance crops (N may be 0) -> one prediction per image."""
    if getattr(model, "is_bundle", False):
        return model.run_batch(u8, metas, precision, **post)
    pre = pre or model.preprocessor()
    if sum(len(u) if u.dim() == 4 else 1 for u in u8) == 0:  # no instance in any image of the batch
        return model.postprocess(None, metas, **post)
    x, _ = to_batch(pre, u8, model.device, memory_format(model))
    with autocast(x.device, precision):
        raw = model.infer(x, **post)
    return model.postprocess(raw, metas, **post)


def load_input(item, index: int) -> tuple[np.ndarray, str]:
    """A path, an image URL or an array -> ((H, W, 3) uint8 RGB, source name)."""
    if isinstance(item, np.ndarray):
        return as_rgb(item, f"input {index}"), f"<array {index}>"
    if isinstance(item, str) and is_remote_image(item):
        return read_remote_image(item), item
    if not isinstance(item, str) and not hasattr(item, "__fspath__"):
        raise DataError(f"input {index} must be a path, an image URL or an (H, W, 3) array, got "
                        f"{type(item).__name__}")
    return read_image(item), str(item)


def predict_inputs(model, inputs, batch_size: int = 16, precision: str = "fp32", pre=None, **post) -> list:
    """TaskModel.predict: paths / image URLs / arrays (one or a list) -> one prediction per
    input, in order. ``pre``: a configured preprocessor (default: the model's)."""
    if inputs is None:
        raise DataError("no input given: pass a path, an image URL or an (H, W, 3) array (or a list of them)")
    if isinstance(inputs, (str, np.ndarray)) or hasattr(inputs, "__fspath__"):
        inputs = [inputs]
    inputs = list(inputs)
    model.eval()
    pre = pre or model.preprocessor()
    out: list = []
    for i in range(0, len(inputs), batch_size):
        prepared, images = [], []
        for k, item in enumerate(inputs[i : i + batch_size], start=i):
            image, source = load_input(item, k)
            prepared.append(pre.prepare(image, source, k))
            images.append(image)
        preds = run_batch(model, [p[0] for p in prepared], [p[1] for p in prepared], precision, pre, **post)
        out.extend(refined(pre, preds, images))
    return out


def refined(pre, preds: list, images: list[np.ndarray]) -> list:
    """The predictions after the preprocessor's ``refine`` (when it has one)."""
    refine = getattr(pre, "refine", None)
    return preds if refine is None else [refine(p, im) for p, im in zip(preds, images)]


@dataclass
class FrameResult:
    """One image's or video frame's result. ``image``: (H, W, 3) uint8 RGB as decoded;
    ``frame``: the video frame index (None for still images); ``counts``: line / zone
    counts when counting; ``overlay``: tracking's trails and counters for ``draw``."""

    source: str
    frame: int | None
    prediction: Any
    image: np.ndarray
    overlay: Overlay | None = None
    counts: dict | None = None

    def draw(self, image: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB: the prediction (and trails / counters) drawn on the image."""
        out = self.prediction.draw(self.image if image is None else image)
        return self.overlay.draw(out) if self.overlay is not None else out

    def to_dict(self, task: str) -> dict:
        h, w = self.image.shape[:2]
        rec = {"source": self.source, "frame": self.frame, "task": task, "width": w, "height": h,
               "predictions": self.prediction.to_dict()}
        if self.counts is not None:
            rec["counts"] = self.counts
        return rec


def stream_predictions(model, items: list, pre=None, batch_size: int = 16, vid_stride: int = 1,
                       precision: str = "fp32", tracking: TrackingOptions | None = None,
                       on_error: Callable[[Frame], None] | None = None, reconnect: int = 0,
                       concurrent: bool | None = None, frames=None, **post) -> Iterator[FrameResult]:
    """Expanded source ``items`` -> one FrameResult per image / frame, in order, decoded and
    prepared ahead in a thread; memory stays flat however long the video. ``tracking``:
    track (and smooth, count) objects over each video. Frames that fail go to ``on_error``
    (default: raise their DataError). ``concurrent``: see cvapps.data.sources.iter_frames.
    ``frames``: Frames read elsewhere, in place of ``items``'."""
    pre = pre or model.preprocessor()
    model.eval()
    tracker = Tracking(tracking) if tracking is not None else None

    def fail(f: Frame) -> None:
        raise f.error

    for good in frame_batches(items, pre, batch_size, vid_stride, on_error or fail, reconnect,
                              torch_threads=prepare_threads(model), concurrent=concurrent, frames=frames):
        preds = run_batch(model, [f.payload[0] for f in good], [f.payload[1] for f in good], precision, pre, **post)
        for f, p in zip(good, refined(pre, preds, [f.image for f in good])):
            overlay = counts = None
            if tracker is not None:
                p, overlay, counts = tracker.step(p, f.source, f.frame, f.fps, f.image)
            yield FrameResult(f.source, f.frame, p, f.image, overlay, counts)


def stream(model, sources: Iterable, batch_size: int = 16, vid_stride: int = 1, precision: str = "fp32",
           track: bool | TrackingOptions = False, reconnect: int = 0, **post) -> Iterator[FrameResult]:
    """TaskModel.stream: sources (paths, folders, videos, camera indices, stream URLs,
    arrays) -> FrameResults one at a time. ``track``: True (default settings) or a
    TrackingOptions to give objects identities over each video."""
    if isinstance(sources, (str, np.ndarray, int)) or hasattr(sources, "__fspath__"):
        sources = [sources]
    tracking = TrackingOptions() if track is True else (track or None)
    yield from stream_predictions(model, expand_sources(sources), model.preprocessor(), batch_size, vid_stride,
                                  precision, tracking, reconnect=reconnect, **post)
