"""Classification data: ImageFolder trees and CSV files -> samples; torch Datasets."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from ..errors import ConfigError, DataError
from .dataset import TaskDataset
from .io import RecordCheck, atomic_write, image_size, is_image, list_images, read_image
from .labels import LabelImage, LabelSet, read_labels


@dataclass
class ClassificationData:
    """paths[i] with targets[i]: multiclass int, multilabel list[int], regression float."""

    paths: list[Path]
    targets: list[Any]
    labels: list[str]
    kind: str
    source: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: list[int]) -> "ClassificationData":
        return ClassificationData([self.paths[i] for i in idx], [self.targets[i] for i in idx], self.labels,
                                  self.kind, self.source, self.skipped)

    def target_tensor(self) -> torch.Tensor:
        if self.kind == "multilabel":
            t = torch.zeros(len(self.targets), len(self.labels))
            for i, idx in enumerate(self.targets):
                t[i, idx] = 1.0
            return t
        if self.kind in ("regression", "binned", "distill"):  # distill: (C + 1) rows, see ClassificationSpec
            return torch.tensor(self.targets, dtype=torch.float32)
        return torch.tensor(self.targets, dtype=torch.int64)


def image_folder(root: str | Path, labels: list[str] | None = None) -> ClassificationData:
    """``root/<class>/*.jpg``. With ``labels`` given (e.g. from the training split), a class
    folder not among them raises DataError."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("no such folder", path=str(root))
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError("no class folders found", path=str(root), hint="expected ROOT/<class>/<image files>")
    if labels is None:
        labels = classes
    paths, targets = [], []
    for c in classes:
        if c not in labels:
            raise DataError(f"class folder {c!r} is not one of the model's classes {labels}", path=str(root / c))
        for p in list_images(root / c):
            paths.append(p)
            targets.append(labels.index(c))
    return ClassificationData(paths, targets, list(labels), "multiclass", str(root))


def _infer_kind(values: list[str]) -> str:
    if any(";" in v for v in values):
        return "multilabel"
    try:
        [float(v) for v in values]
    except ValueError:
        return "multiclass"
    return "regression"


def read_csv(path: str | Path, images_root: str | Path | None = None, labels: list[str] | None = None,
             kind: str | None = None, allow_outside: bool = False) -> ClassificationData:
    """CSV rows ``path,label`` | ``path,label1;label2`` | ``path,value`` (a header row is
    allowed). Image paths are resolved against ``images_root`` (default: the CSV's folder)
    and must stay inside it unless ``allow_outside``. With ``labels`` fixed, an unknown
    class raises DataError naming file and row."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such CSV file", path=str(path))
    base = Path(images_root) if images_root else path.parent
    rows: list[tuple[int, str, str]] = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise DataError(f"row {lineno}: expected 'path,label', got {row!r}", path=str(path))
            if lineno == 1 and not is_image(row[0]) and row[0].strip().lower() in ("path", "file", "image", "filename"):
                continue
            rows.append((lineno, row[0].strip(), row[1].strip()))
    if not rows:
        raise DataError("CSV has no rows", path=str(path))
    kind = kind or _infer_kind([r[2] for r in rows])
    if kind in ("regression", "binned"):
        targets = []
        for lineno, _, v in rows:
            try:
                targets.append(float(v))
            except ValueError:
                raise DataError(f"row {lineno}: value {v!r} is not a number", path=str(path)) from None
        out_labels = labels or ["value"]
    else:
        split = (lambda v: [x.strip() for x in v.split(";") if x.strip()]) if kind == "multilabel" else (lambda v: [v])
        fixed = labels is not None
        out_labels = list(labels) if fixed else sorted({x for _, _, v in rows for x in split(v)})
        targets = []
        for lineno, _, v in rows:
            names = split(v)
            unknown = [x for x in names if x not in out_labels]
            if unknown:
                raise DataError(f"row {lineno}: unknown class {unknown[0]!r}", path=str(path),
                                hint=f"known classes: {', '.join(out_labels)}")
            idx = [out_labels.index(x) for x in names]
            targets.append(idx if kind == "multilabel" else idx[0])
    check = RecordCheck(str(path), False, allow_outside)
    paths = [check.image_path(base, p, f"row {lineno}") for lineno, p, _ in rows]
    return ClassificationData(paths, targets, out_labels, kind, str(path))


def load_split(spec: str | Path, labels: list[str] | None = None, kind: str | None = None,
               images_root: str | Path | None = None, allow_outside: bool = False) -> ClassificationData:
    p = Path(spec)
    if p.suffix.lower() == ".csv":
        return read_csv(p, images_root, labels, kind, allow_outside)
    if p.suffix.lower() in TOOL_SUFFIXES and p.is_file():
        return from_labelset(read_labels(TOOL_SUFFIXES[p.suffix.lower()], p, images_root, allow_outside=allow_outside),
                             labels, kind)
    if kind not in (None, "multiclass"):
        raise ConfigError(f"an ImageFolder tree is multiclass; kind {kind!r} needs a CSV", path=str(p))
    return image_folder(p, labels)


def resolve_dataset(data: str | None = None, train: str | None = None, val: str | None = None,
                    kind: str | None = None, images_root: str | None = None, allow_outside: bool = False):
    """``data`` = a root with train/ and val/ (ImageFolder or train.csv/val.csv), or explicit
    ``train``/``val``. Returns (train, val|None); val uses train's label list."""
    if data and Path(data).suffix.lower() in TOOL_SUFFIXES:
        train, data = data, None
    if data:
        root = Path(data)
        if not root.is_dir():
            raise DataError("no such dataset folder", path=str(root))
        for tr, va in (("train", "val"), ("train.csv", "val.csv")):
            if (root / tr).exists():
                train = train or str(root / tr)
                if val is None and (root / va).exists():
                    val = str(root / va)
                break
        else:
            raise DataError("dataset folder has no train/ or train.csv", path=str(root),
                            hint="pass --train and --val explicitly")
    if not train:
        raise ConfigError("no training data", hint="pass --data ROOT or --train PATH")
    tr = load_split(train, None, kind, images_root, allow_outside)
    va = load_split(val, tr.labels, tr.kind, images_root, allow_outside) if val else None
    return tr, va


TOOL_SUFFIXES = {".json": "label-studio", ".xml": "cvat"}  # the labelling tools' files that hold choices


def from_labelset(ls: LabelSet, labels: list[str] | None = None, kind: str | None = None) -> ClassificationData:
    """Each image's choices: multiclass when every image has exactly one, else multilabel
    (``kind`` fixes it); classes ``labels``, else the file's in order. An unknown class, or an
    image without its one class in a multiclass set, is one line naming the image."""
    kind = kind or ("multiclass" if all(len(im.choices) == 1 for im in ls.images) else "multilabel")
    if kind not in ("multiclass", "multilabel"):
        raise ConfigError(f"{ls.source}: labelling tools' choices are classes, not {kind} values")
    classes = list(labels) if labels is not None else list(dict.fromkeys(c for im in ls.images for c in im.choices))
    paths, targets = [], []
    for im in ls.images:
        unknown = [c for c in im.choices if c not in classes]
        if unknown:
            raise DataError(f"image {im.name}: unknown class {unknown[0]!r}", path=ls.source,
                            hint=f"known classes: {', '.join(classes)}")
        if kind == "multiclass" and len(im.choices) != 1:
            raise DataError(f"image {im.name}: {len(im.choices)} classes chosen, a multiclass set needs one",
                            path=ls.source)
        idx = [classes.index(c) for c in im.choices]
        paths.append(im.path)
        targets.append(idx[0] if kind == "multiclass" else idx)
    if not paths:
        raise DataError("no labelled images", path=ls.source)
    return ClassificationData(paths, targets, classes, kind, ls.source, ls.notes())


def write_csv(data: ClassificationData, out: str | Path, root: str | Path | None = None) -> list[Path]:
    """``path,label`` rows (multilabel: labels joined by ";"), paths relative to ``root``
    (default: the CSV's folder) — what ``read_csv`` reads."""
    out = Path(out)
    base = Path(root) if root else out.parent
    rows = ["path,label"]
    for p, t in zip(data.paths, data.targets):
        name = os.path.relpath(Path(p).resolve(), base.resolve())
        label = data.labels[t] if data.kind == "multiclass" else ";".join(data.labels[i] for i in t) \
            if data.kind == "multilabel" else repr(float(t))
        rows.append(f"{name},{label}")
    atomic_write(out, lambda tmp: Path(tmp).write_text("\n".join(rows) + "\n"))
    return [out]


def to_labelset(data: ClassificationData) -> LabelSet:
    if data.kind not in ("multiclass", "multilabel"):
        raise ConfigError(f"{data.source}: {data.kind} targets are values; labelling tools' choices hold classes")
    out = LabelSet([], list(data.labels), data.source)
    for p, t in zip(data.paths, data.targets):
        w, h = image_size(p)
        names = [data.labels[t]] if data.kind == "multiclass" else [data.labels[i] for i in t]
        out.images.append(LabelImage(Path(p).name, Path(p), w, h, choices=names))
    return out


class ImageDataset(TaskDataset):
    """Items: (image tensor (3, S, S) uint8, target tensor). ``pre``: the model's
    EvalTransform (resize + centre crop, and the normalisation); ``augment``: an
    albumentations Compose producing (S, S, 3) uint8 instead of the resize and crop.
    ``skip_bad``: see TaskDataset.
    ``cache_side``: keep decoded images in memory, downsized so the short side is
    ``cache_side`` (small datasets trained for many epochs decode each file once), at most
    ``cache_images`` of them over all loader processes."""

    def __init__(self, data: ClassificationData, pre, augment: Callable | None = None, skip_bad: bool = False,
                 cache_side: int | None = None, cache_images: int = 10_000):
        super().__init__(data, skip_bad)
        self.normalizer, self.augment = pre, augment
        self.targets = data.target_tensor()
        self.cache_side, self.cache_images = cache_side, cache_images
        self._cache: dict[int, np.ndarray] = {}

    def on_worker(self, workers: int) -> None:
        """In each of ``workers`` loader processes (each holds its own cache)."""
        self.cache_images //= workers

    def image(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        img = read_image(self.data.paths[i])
        if self.cache_side:
            h, w = img.shape[:2]
            s = self.cache_side / min(h, w)
            if s < 1:
                img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
            if len(self._cache) < self.cache_images:
                self._cache[i] = img
        return img

    def load(self, i: int):
        img = self.image(i)
        if self.augment is None:
            return self.normalizer.resize_crop(img), self.targets[i]
        return torch.from_numpy(self.augment(image=img)["image"]).permute(2, 0, 1), self.targets[i]  # (3, S, S)
