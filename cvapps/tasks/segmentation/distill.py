"""Segmentation distillation (``cvapps distill segment``): the student learns the teacher's
per-pixel class distribution (KL(teacher || student) over the image's pixels). The teacher's
probabilities are kept per image on a grid of a quarter of its input resolution as uint8
(C x H/4 x W/4 bytes: ~120 KB for 11 classes at 360 x 480), mapped back to the original image
and resampled to whatever input the student has; a hard label map (the argmax per grid cell,
void below ``conf``) travels with them, so the usual augmentation and padding rules apply.
Labelled images join with their own masks (classes matched to the teacher's by name); the
dataset gives them one-hot targets, so the same KL is their cross-entropy."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ...data.io import image_size
from ...data.segmentation import SegData
from ...data.transforms import Letterbox
from ...errors import DataError

GRID = 4  # teacher probabilities kept at 1 / GRID of its input resolution


def teacher_fn(teacher):
    """fn(x) -> (B, C, H / GRID, W / GRID) uint8 softmax probabilities x 255 of ``teacher``."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        p = teacher(x).logits.float().softmax(1)
        return (F.avg_pool2d(p, GRID, ceil_mode=True) * 255).round().to(torch.uint8).cpu()
    return fn


def _valid(grid: np.ndarray, box: Letterbox, w: int, h: int) -> np.ndarray:
    """(C, h', w') grid of the teacher's input -> (gh, gw, C): the cells over the image (the
    letterbox padding cropped)."""
    sx, sy = box.scale_xy(w, h)
    gh, gw = max(1, round(h * sy / GRID)), max(1, round(w * sx / GRID))
    return np.ascontiguousarray(grid[:, :gh, :gw].transpose(1, 2, 0))


def original_probs(grid: np.ndarray, box: Letterbox, w: int, h: int) -> np.ndarray:
    """(C, h', w') uint8 grid of the teacher's input -> (H, W, C) uint8 on the original image
    (bilinear)."""
    return cv2.resize(_valid(grid, box, w, h), (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)


def hard_mask(grid: np.ndarray, box: Letterbox, w: int, h: int, conf: float, ignore: int) -> np.ndarray:
    """(H, W) int64: the teacher's argmax per grid cell (``ignore`` under ``conf``), nearest
    to the original size — the cheap companion of original_probs (the loss uses those)."""
    cells = _valid(grid, box, w, h)
    mask = cells.argmax(-1).astype(np.int32)
    mask[cells.max(-1) < conf * 255] = ignore
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)


def _mapped(data: SegData, i: int, lut: np.ndarray) -> np.ndarray:
    """The labelled mask ``i`` in the student's class indices (void: the last ``lut`` entry)."""
    m = data.load_mask(i)
    return lut[np.where(m == data.ignore_index, len(lut) - 1, np.clip(m, 0, len(lut) - 2))]


def labelled(read, opts: dict, labels: list[str], ignore: int) -> tuple[list, list]:
    """The labelled images of ``opts`` (read by ``read(data, images, masks, classes, palette)``):
    (images, mask callables in ``labels``' indices, void ``ignore``). ``opts["labels"]``: a
    CamVid-style root, a COCO JSON with ``label_images``, or a folder of masks with
    ``label_images`` — index PNGs in the teacher's class order, or colour PNGs with
    ``opts["palette"]`` (its classes matched by name)."""
    ann, images, palette = opts["labels"], opts.get("label_images"), opts.get("palette")
    if str(ann).lower().endswith(".json") or not images:
        data = read(ann, images, None, None, palette)
    else:
        data = read(None, images, ann, None if palette else labels, palette)
    unknown = [n for n in data.labels if n not in labels]
    if unknown:
        raise DataError(f"labelled classes {unknown[:5]} are not among the teacher's ({', '.join(labels[:8])}...)",
                        path=str(ann), hint="label with the teacher's class names")
    lut = np.array([labels.index(n) for n in data.labels] + [ignore], np.int64)
    return list(data.images), [partial(_mapped, data, i, lut) for i in range(len(data))]


def distill_data(teacher, paths, run, opts: dict, read):
    """SegmentationSpec.distill_data: the images with the teacher's probabilities as
    ``soft`` targets (their argmax, at ``opts["conf"]`` (default 0) or above, as the mask);
    labelled images (``opts["labels"]``, read by ``read``) with their own masks."""
    outputs, kept = run.outputs(paths, teacher_fn(teacher))
    outputs, paths = outputs.numpy(), [paths[i] for i in kept]
    box = Letterbox.from_config(teacher.config["preprocessing"])
    ignore = int(teacher.config["head"].get("ignore_index", 255))  # the student keeps the teacher's void label
    sizes = [image_size(p) for p in paths]
    softs = [partial(original_probs, grid, box, *wh) for grid, wh in zip(outputs, sizes)]
    masks = [partial(hard_mask, grid, box, *wh, opts.get("conf") or 0.0, ignore) for grid, wh in zip(outputs, sizes)]
    labels = list(teacher.labels)
    colors = teacher.config.get("colors")
    images = list(paths)
    if opts.get("labels"):
        more, their = labelled(read, opts, labels, ignore)
        images, masks, softs = images + more, masks + their, softs + [None] * len(more)
    data = SegData(images, masks, labels, colors, ignore, source="distillation", soft=softs)
    return data, {"labels": labels, "colors": colors, "ignore_index": ignore}
