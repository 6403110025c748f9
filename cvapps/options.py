"""Typed option groups and the one place they are validated.

An option group is a dataclass whose fields say their allowed values (``opt(choices=...)``,
``opt(low=..., high=...)``); ``Group.parse(values, what)`` rejects unknown names and bad
values with one line naming the option, so a typo (``--head faster-rcnn``) never turns into
silently different behaviour. Head options, data options and training options all use it."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, ClassVar

from .errors import ConfigError


def opt(default: Any = None, *, choices: tuple | None = None, low: float | None = None, high: float | None = None,
        low_open: bool = False, cli: str | None = None, doc: str = "") -> Any:
    """A dataclass field with its constraints: ``choices`` (allowed values), ``low``/``high``
    (inclusive bounds; ``low_open``: strictly above ``low``). ``cli`` is the option's CLI
    spelling used in messages (default: --name-with-dashes)."""
    meta = {"choices": choices, "low": low, "high": high, "low_open": low_open, "cli": cli, "doc": doc}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def cli_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_value(name: str, value: Any, meta: dict, what: str = "") -> Any:
    """Validate one value against a field's metadata; returns it (ints/floats coerced)."""
    label = meta.get("cli") or cli_name(name)
    where = f"{what} option {label}" if what else label
    if value is None:
        return None
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where} {value!r} is not one of: {', '.join(map(str, choices))}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None or high is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if low is not None and (value <= low if meta.get("low_open") else value < low):
            bound = f"above {low}" if meta.get("low_open") else f"at least {low}"
            raise ConfigError(f"{where} must be {bound}" + (f" and at most {high}" if high is not None else "")
                              + f", got {value}")
        if high is not None and value > high:
            raise ConfigError(f"{where} must be at most {high}, got {value}")
    return value


class Options:
    """Base for option dataclasses (subclasses are ``@dataclasses.dataclass``)."""

    what: ClassVar[str] = ""  # the group's name in messages, e.g. "detection head"

    @classmethod
    def parse(cls, values: "dict | Options | None" = None, what: str | None = None, **overrides):
        """values (+ overrides) -> a validated instance. Unknown names raise, naming the known."""
        if isinstance(values, cls):
            values = values.to_dict()
        merged = {**(values or {}), **overrides}
        what = what or cls.what
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - set(known))
        if unknown:
            raise ConfigError(f"unknown {what} options {unknown}", hint=f"known: {', '.join(sorted(known))}")
        kwargs = {k: check_value(k, v, known[k].metadata, what) for k, v in merged.items()}
        obj = cls(**kwargs)
        obj.validate()
        return obj

    def validate(self) -> None:
        """Checks that involve several fields (subclasses override)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def keywords(cls) -> dict[str, str]:
        """API keyword -> field name; the keyword is the CLI flag's spelling (``--track-high``:
        ``track_high``), so the CLI, ``cvapps.predict(**kw)`` and messages agree."""
        return {(f.metadata.get("cli") or cli_name(f.name))[2:].replace("-", "_"): f.name
                for f in dataclasses.fields(cls)}

    @classmethod
    def from_keywords(cls, kw: dict):
        """The group's keywords among ``kw`` (None: the default) -> a validated instance."""
        names = cls.keywords()
        return cls.parse({names[k]: v for k, v in kw.items() if k in names and v is not None})


def split_options(values: dict, *groups: type[Options]) -> list[dict]:
    """Distribute keyword arguments over option groups; a name no group knows raises."""
    out: list[dict] = [{} for _ in groups]
    for k, v in values.items():
        for i, g in enumerate(groups):
            if k in g.names():
                out[i][k] = v
                break
        else:
            known = sorted(set().union(*(g.names() for g in groups)))
            raise ConfigError(f"unknown option {k!r}", hint=f"known: {', '.join(known)}")
    return out


def parse_size(value: Any, what: str = "--img-size") -> int | list[int] | None:
    """An input size: S (square), 'HxW', 'H,W', [H, W] or (H, W) -> S or [H, W] (positive ints)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in re.split(r"[x,X]", value.strip())]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"{what} {value!r} is not a size", hint="S (square), HxW or H,W, e.g. 320 or 360x480") \
                from None
    elif isinstance(value, (list, tuple)):
        nums = [int(v) for v in value]
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} {value!r} is not a size", hint="S (square), HxW or H,W")
    else:
        nums = [int(value)]
    if len(nums) not in (1, 2) or any(n <= 0 for n in nums):
        raise ConfigError(f"{what} {value!r} must be one or two positive integers", hint="e.g. 320, 360x480 or 360,480")
    return nums[0] if len(nums) == 1 else nums


@dataclasses.dataclass
class DataOptions(Options):
    """Where a task's labelled data is and how to read it (every task reads what it needs).

    ``data``: the annotations / dataset root; ``images``: the image folder; ``fmt``: the
    annotation format (default: guessed); ``val`` / ``val_images``: a validation set, else
    ``val_fraction`` holds out every k-th image; segmentation: ``masks`` / ``val_masks``,
    ``classes``, ``palette``, ``ignore_index``, ``median_frequency``; classification: explicit
    ``train`` / ``val`` trees or CSVs, ``negatives`` (images of none of the classes, for
    ``--keep-classes``); evaluation: ``split``, detection's ``class_map`` (a JSON
    file mapping dataset class names onto a model's)."""

    what: ClassVar[str] = "data"
    data: str | None = None
    images: str | None = None
    fmt: str | None = opt(None, choices=("coco", "voc", "yolo", "pts", "csv", "label-studio", "cvat"), cli="--format")
    train: str | None = None
    val: str | None = opt(None, cli="--val-data")
    val_images: str | None = None
    val_fraction: float = opt(0.0, low=0.0, high=0.9)
    masks: str | None = None
    val_masks: str | None = None
    classes: list | None = None
    palette: str | None = None
    ignore_index: int | None = opt(None, low=0, high=65535)
    median_frequency: bool = False
    class_map: str | None = None
    negatives: str | None = None
    split: str = "val"
    skip_bad: bool = False
    # image names in annotation files may point outside --images (absolute paths, ..): off, so a
    # downloaded annotation file cannot make cvapps open /etc/passwd or ../../secret.jpg
    allow_outside: bool = opt(False, cli="--allow-outside-images")

    def validate(self) -> None:
        if isinstance(self.classes, str):
            self.classes = [c.strip() for c in self.classes.split(",") if c.strip()]


@dataclasses.dataclass
class EvalOptions(Options):
    """How to evaluate: metric (detection: coco | voc), VOC IoU and interpolation, where to
    write results / pictures, batch size and precision."""

    what: ClassVar[str] = "evaluation"
    metric: str = opt("coco", choices=("coco", "voc"))
    iou: float = opt(0.5, low=0.0, high=1.0, low_open=True)
    eleven_point: bool = False
    save_results: str | None = None
    out: str | None = None
    batch_size: int = opt(32, low=1)
    precision: str = opt("fp32", choices=("fp32", "bf16"))
    workers: int | None = opt(None, low=0)  # data-loading processes (None: cvapps.data.loader.default_workers)
    # keypoint tasks: "labels" crops the labelled boxes (the top-down protocol); "predict" finds the
    # instances as `predict` does and matches them to the labels (None: the model's way)
    instances: str | None = opt(None, choices=("labels", "predict"))


@dataclasses.dataclass
class TrackOptions(Options):
    """Tracker settings (cvapps.tracking.ByteTracker; the CLI's --track-* options are made from
    these fields)."""

    what = "tracking"
    high: float = opt(0.5, low=0, high=1, cli="--track-high",
                      doc="detections at or above this score are matched first and may start tracks")
    low: float = opt(0.1, low=0, high=1, cli="--track-low",
                     doc="detections between this and --track-high only continue existing tracks")
    new: float = opt(0.6, low=0, high=1, cli="--track-new", doc="score a detection needs to start a new track")
    buffer: int = opt(90, low=0, cli="--track-buffer",
                      doc="frames a lost track waits for its object to return (a person behind a pillar or a "
                          "parked car is often hidden for 2-3 s)")
    iou: float = opt(0.2, low=0, high=1, low_open=True, cli="--track-iou",
                     doc="least IoU of a confident detection with a track's predicted box")
    appearance: float = opt(1.0, low=0, cli="--track-appearance",
                            doc="weight of colour difference in matching (0: IoU alone, as ByteTrack)")
    reid: float = opt(0.14, low=0, high=1, cli="--track-reid",
                      doc="most colour difference at which a confident detection continues a track, a lost "
                          "track re-finds its object or a second box counts as the same object (0: off)")

    def validate(self) -> None:
        if self.low > self.high:
            raise ConfigError(f"--track-low {self.low} must not exceed --track-high {self.high}")


@dataclasses.dataclass
class SmoothOptions(Options):
    """One-Euro parameters (cvapps.tracking.OneEuro; the CLI's --smooth-* options are made from
    these fields)."""

    what = "smoothing"
    min_cutoff: float = opt(1.0, low=0, low_open=True, cli="--smooth-cutoff",
                            doc="Hz; lower: steadier still points, more lag at low speed")
    beta: float = opt(20.0, low=0, cli="--smooth-beta",
                      doc="how fast the cutoff rises with speed (per object size per second); higher: less lag")
    d_cutoff: float = opt(1.0, low=0, low_open=True, cli="--smooth-d-cutoff", doc="Hz; the speed estimate's cutoff")


@dataclasses.dataclass(frozen=True)
class CliOption:
    """A task-specific command-line option, declared by the task's spec (the CLI turns it into
    a typer option of ``cvapps predict|train|eval TASK``). ``dest``: the API keyword (default:
    ``name``); ``convert``: CLI value -> API value; ``flags``: spellings (default
    --name-with-dashes). None values are not passed on (the API's default applies)."""

    name: str
    type: type
    default: Any = None
    help: str = ""
    flags: tuple[str, ...] = ()
    dest: str | None = None
    convert: Callable | None = None

    def api_value(self, value) -> tuple[str, Any]:
        return self.dest or self.name, self.convert(value) if self.convert is not None and value is not None else value


def split_list(value: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']."""
    return [v.strip() for v in str(value).split(",") if v.strip()]
