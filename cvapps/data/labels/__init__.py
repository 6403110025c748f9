"""Labels as labelling tools hold them, apart from any task: per image its class choices,
boxes, polygons, masks and point sets, in pixels of the original image. Label Studio JSON
and CVAT XML read into this model and are written from it (``read_labels`` /
``write_labels``, by format name); each task's data module converts it to and from its own
records (``from_labelset`` / ``to_labelset``), so any format cvapps reads converts to any it
writes (``cvapps labels convert``).

Coordinates: pixels, x right, y down, (0, 0) the top-left corner of the top-left pixel —
as COCO and cvapps's records. Classes are matched by name."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...registry import Registry
from ..io import RecordCheck


@dataclass
class Box:
    label: str
    xyxy: np.ndarray  # (4,) float64 pixels
    score: float | None = None


@dataclass
class Polygon:
    label: str
    points: np.ndarray  # (N, 2) float64 pixels, N >= 3
    score: float | None = None


@dataclass
class Mask:
    label: str
    mask: np.ndarray  # (H, W) bool, the image's size
    score: float | None = None


@dataclass
class PointSet:
    """One instance's points: ``points`` (K, 3) x, y, v in the LabelSet's ``point_names``
    order (v: 0 not labelled, 1 labelled but hidden, 2 visible); ``box`` its box (xyxy) or
    None; ``label`` the instance's class (e.g. "person", "face")."""

    label: str
    points: np.ndarray
    box: np.ndarray | None = None
    score: float | None = None


@dataclass
class LabelImage:
    """One image: ``name`` as the labels file writes it, ``path`` the local file (None when
    it could not be resolved and no pixels are needed)."""

    name: str
    path: Path | None
    width: int
    height: int
    choices: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    polygons: list[Polygon] = field(default_factory=list)
    masks: list[Mask] = field(default_factory=list)
    pointsets: list[PointSet] = field(default_factory=list)
    score: float | None = None  # e.g. a selection score (Label Studio's task score)
    ref: dict = field(default_factory=dict)  # the tool's own ids (task id, frame), kept for a write back

    def is_empty(self) -> bool:
        return not (self.choices or self.boxes or self.polygons or self.masks or self.pointsets)


@dataclass
class LabelSet:
    """Images with their labels. ``classes``: every class name (choices, boxes, polygons,
    masks, instance classes) in the order declared or first seen; ``point_names``: the
    points of a point set, in order; ``skeleton``: 0-based pairs of point indices."""

    images: list[LabelImage]
    classes: list[str]
    source: str
    point_names: list[str] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)  # what a writer or a task could not hold, by kind

    def notes(self) -> list[str]:
        """What was read but not kept, as lines for a data set's ``skipped``."""
        return list(self.skipped) + [f"{n} {what} left out" for what, n in self.dropped.items() if n]

    def add_class(self, name: str) -> None:
        if name not in self.classes:
            self.classes.append(name)


@dataclass(frozen=True)
class LabelFormat:
    """A labels file format: ``read(path, images, check) -> LabelSet`` (``check`` a
    cvapps.data.io.RecordCheck) and ``write(labelset, out, **options) -> list[Path]``."""

    name: str
    read: object
    write: object
    suffix: str  # what its files end with (".json", ".xml")
    holds: frozenset  # what it can hold: choices, boxes, polygons, masks, pointsets


FORMATS: Registry = Registry("labels format")


def register_format(fmt: LabelFormat) -> LabelFormat:
    return FORMATS.register(fmt.name, fmt)


def tool_formats() -> list[str]:
    return FORMATS.names()


def drop_unheld(labels: LabelSet, holds: frozenset, target: str) -> LabelSet:
    """``labels`` without what ``target`` cannot hold, counted in ``labels.dropped``."""
    for im in labels.images:
        for kind in ("choices", "boxes", "polygons", "masks", "pointsets"):
            items = getattr(im, kind)
            if items and kind not in holds:
                labels.dropped[f"{kind} ({target} holds none)"] += len(items)
                setattr(im, kind, [])
    return labels


def points_in_order(named: dict[str, tuple[float, float, int]], names: list[str]) -> np.ndarray:
    """{point name: (x, y, v)} -> (K, 3) in ``names`` order; absent points are (0, 0, 0)."""
    out = np.zeros((len(names), 3), np.float64)
    for i, n in enumerate(names):
        if n in named:
            out[i] = named[n]
    return out


def sniff(path: str | Path) -> str | None:
    """The labelling tool whose file ``path`` is, from its content: a JSON list (Label Studio
    tasks; COCO files are objects) or an XML file whose root is <annotations> (CVAT); else None."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in (".json", ".xml"):
        return None
    with open(p, "rb") as f:
        head = f.read(4096).lstrip()
    if p.suffix.lower() == ".json":
        return "label-studio" if head.startswith(b"[") else None
    text = head.decode("utf-8", "replace")
    text = text.split("?>", 1)[1].lstrip() if text.startswith("<?xml") else text
    return "cvat" if text.startswith("<annotations") else None


def read_labels(fmt: str, path: str | Path, images: str | Path | None = None, skip_bad: bool = False,
                allow_outside: bool = False, **options) -> LabelSet:
    """A labels file of format ``fmt`` (label-studio | cvat) -> LabelSet; bad records raise a
    one-line DataError naming the file and the record, or with ``skip_bad`` are counted."""
    if not Path(path).exists():
        raise DataError(f"no such {fmt} file", path=str(path))
    images = Path(images) if images is not None else Path(path).parent  # (as CSV lists: beside the file)
    return FORMATS.get(fmt).read(path, images, RecordCheck(str(path), skip_bad, allow_outside), **options)


def write_labels(fmt: str, labels: LabelSet, out: str | Path, **options) -> list[Path]:
    """``labels`` as ``fmt`` at ``out`` (what the format cannot hold is counted in ``labels.dropped``)."""
    f = FORMATS.get(fmt)
    return f.write(drop_unheld(labels, f.holds, fmt), out, **options)


from . import cvat, labelstudio  # noqa: E402,F401 - each registers its format
