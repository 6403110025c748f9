"""TaskSpec: everything the API, the CLI, active learning and export need to know about a
task, in one object registered beside the task's model class (``@register_task(name,
Spec)``). None of those layers compares task names: they ask the spec.

Adding a task = a TaskModel subclass + a TaskSpec subclass (+ its CLI commands)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from ..errors import ConfigError, DataError
from ..options import DataOptions, EvalOptions
from ..progress import count

IMAGENET_PRE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": 224,
                "resize_size": 256, "interpolation": "bilinear"}


def split_every_kth(data, val_fraction: float):
    """Deterministic hold-out of any task data with len() and subset(): every k-th image
    (k = round(1 / val_fraction)) goes to val. -> (train, val | None)."""
    if not val_fraction:
        return data, None
    k = max(2, round(1 / val_fraction))
    if len(data) < k:
        raise DataError(f"--val-fraction {val_fraction} holds out every {k}th image, and there are only "
                        f"{len(data)}: no validation image", path=getattr(data, "source", None),
                        hint=f"use --val-fraction {1 / max(len(data), 2):.2g} or more, or pass --val-data")
    idx = range(len(data))
    return data.subset([i for i in idx if i % k != k - 1]), data.subset([i for i in idx if i % k == k - 1])


class PseudoLabelWriter:
    """Writes a model's confident predictions on unlabelled images in the task's training
    format. ``add`` one prediction per image; ``close`` -> {"written", "file", "images"}.
    ``root``: the folder image names are written relative to (the pool images' common
    folder: train on the file with ``--images ROOT``)."""

    file: Path
    written: int = 0
    root: Path | None = None

    def add(self, source: str, pred, meta: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def name(self, source: str) -> str:
        """How the file names the image ``source``: relative to ``root`` (else its name)."""
        return os.path.relpath(source, self.root) if self.root is not None else Path(source).name

    def close(self) -> dict:
        return {"written": self.written, "file": str(self.file), "images": str(self.root or "")}


@dataclass
class SemiSupervised:
    """What the trainer needs for semi-supervised training: the unlabelled dataset (batches of
    (B, ...) inputs, per-image info), images per labelled image in a step (``ratio``) and
    ``loss(model, u, info, teacher) -> {"loss_u": the weighted loss to add, values to log ...}``
    (``logs``: their names). ``teacher``: the loss needs a mean teacher — the trainer keeps the
    EMA of the student with this decay per step (--ema wins) and passes it; None: no teacher."""

    dataset: object
    ratio: int
    loss: Callable
    teacher: float | None = None
    logs: tuple = ("unlabelled_loss", "mask_rate")


class TaskSpec:
    """One per task. ``model``: its TaskModel class; ``default_weights``: the model `predict`
    uses without --model (None: the user must train or name one)."""

    default_weights: ClassVar[str | None] = None
    default_kind: ClassVar[str] = ""
    # the task's training recipe where it differs from TrainConfig's defaults (API and CLI alike)
    train_defaults: ClassVar[dict] = {"epochs": 30, "batch_size": 16, "lr": 2e-3}
    feature_simulation: ClassVar[bool] = False  # al-simulate on cached pooled features (fast recipe)
    distillation: ClassVar[bool] = False  # cvapps distill: a student learns a teacher's outputs (distill_data)
    distill_augment: ClassVar[bool] = False  # the targets stay right under augmentation (boxes move with it)
    self_training: ClassVar[bool] = False  # cvapps self-train: labels + pseudo-labels combine (cvapps.selftraining)
    # task-specific CLI options of `cvapps predict|train|eval TASK` (see cvapps.options.CliOption)
    cli_options: ClassVar[dict[str, tuple]] = {}
    # video: predictions have boxes tracking can follow (Prediction.track_boxes); videos are
    # tracked without being asked; predictions have points to smooth over time
    tracks: ClassVar[bool] = False
    track_video: ClassVar[bool] = False
    smooths: ClassVar[bool] = False

    def __init__(self, name: str, model: type):
        self.name, self.model = name, model

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # models ---------------------------------------------------------------------------
    def make_config(self, backbone: str, weights, kind: str | None, img_size, head: dict, **data_args) -> dict:
        """The config of a new model (``weights``: a WeightsSpec or None; ``data_args``: what
        the data says — labels, category ids, colours, schema)."""
        raise NotImplementedError  # pragma: no cover

    def pretrained_config(self, weights) -> dict:
        """The config of a whole pretrained model of this task (a model started from it keeps
        its head kind, input size, ... unless told otherwise), else {}."""
        return weights.config if weights is not None and weights.kind == "model" and weights.task == self.name else {}

    def keep_classes(self, weights, train, val, opts=None):
        """``--keep-classes``: (train, val over the pretrained model's classes + the data's new
        ones, the model's classes that learn from the frozen original's predictions). ``opts``:
        the DataOptions (e.g. classification's ``negatives``)."""
        raise ConfigError(f"--keep-classes is not available for {self.name} models",
                          hint="it is for detection and classification, e.g. cvapps train detect --weights ssd_mobilenet_v2.coco --keep-classes")

    def semi_supervised(self, model, paths: list[Path], cfg, skip_bad: bool = False):
        """``train(..., unlabelled=...)``: a SemiSupervised for ``paths``
        (unlabelled images) under the TrainConfig ``cfg`` (its unlabelled_* fields)."""
        raise ConfigError(f"semi-supervised training (--unlabelled) is built for classify, detect and segment, "
                          f"not {self.name}", hint="cvapps self-train uses unlabelled images with every task")

    # distillation (cvapps.distilling) --------------------------------------------------------
    def distill_data(self, teacher, paths: list[Path], run, opts: dict):
        """(the student's training data — ``paths`` with the teacher's outputs as targets, plus
        the labelled images ``opts["labels"]`` if given —, create_model keyword arguments the
        teacher determines: labels, loss options). ``run``: runs the teacher once over images
        (cvapps.distilling.TeacherRunner: ``outputs(paths, fn)`` per batch, ``predictions(paths)``
        as predict makes them). ``opts``: the options of cvapps.distilling.distill, with "out"."""
        raise ConfigError(f"distillation is not built for {self.name}")  # pragma: no cover

    def inherit_args(self, teacher) -> dict:
        """create_model keyword arguments under which a student of the teacher's backbone has
        the teacher's feature layers (so they can start from its weights)."""
        return {"backbone_options": teacher.config.get("backbone_options")}

    def preprocessing(self, weights) -> dict:
        """Normalisation of the pretrained weights (ImageNet statistics without weights)."""
        return dict(weights.preprocessing()) if weights is not None else dict(IMAGENET_PRE)

    # data -----------------------------------------------------------------------------
    def read_train(self, opts: DataOptions, kind: str | None = None):
        """(train data, validation data | None) as `cvapps train` reads them."""
        raise NotImplementedError  # pragma: no cover

    def model_args(self, data, opts: DataOptions, console=None) -> dict:
        """create_model keyword arguments the training data determines."""
        return {"labels": data.labels}

    def describe(self, data) -> str:
        return count(len(data.labels), "class", "classes")

    def describe_outputs(self, model) -> str:
        """What the model's label list names, counted ("80 classes"; keypoint models: "17 keypoints")."""
        return count(len(model.labels), "class", "classes")

    def datasets(self, model, train, val, skip_bad: bool = False):
        """(make_train(augment) -> dataset, validation dataset | None)."""
        raise NotImplementedError  # pragma: no cover

    def eval_dataset(self, model, data, skip_bad: bool = False):
        return self.datasets(model, data, data, skip_bad)[1]

    def read_eval(self, model, opts: DataOptions):
        """The evaluation data for ``model`` (labels mapped / checked against the model's)."""
        raise NotImplementedError  # pragma: no cover

    def evaluate_predicted(self, model, data, opts: DataOptions, eval_opts: EvalOptions, load) -> dict | None:
        """Metrics computed from what ``predict`` finds (``load``: the helper-model loader
        predict uses), for models or options that need it; None: evaluate the usual way."""
        return None

    def finish_eval(self, model, data, evaluator, metrics: dict, opts: EvalOptions) -> dict:
        """Task-specific extras after the metrics (other metric kinds, results files, pictures)."""
        return metrics

    def evaluate_results(self, results: str, opts: DataOptions, eval_opts: EvalOptions) -> dict:
        """Metrics of a results file (no model) against the ground truth in ``opts``."""
        raise ConfigError(f"{self.name} has no results-file evaluation")  # pragma: no cover

    # labels (cvapps labels convert, select --to) -----------------------------------------
    # formats `labels convert --to` writes besides the labelling tools' (label-studio, cvat)
    label_writers: ClassVar[tuple[str, ...]] = ()

    def tool_labels(self, model) -> dict[str, list[str]]:
        """What ``model``'s predictions give a labelling tool (``Prediction.to_labels``): one
        of {"choices" | "boxes" | "masks": class names} or {"pointsets": [instance class],
        "points": point names}."""
        raise ConfigError(f"{self.name} models give no labels")  # pragma: no cover

    def read_labelled(self, opts: DataOptions):
        """The labelled set ``opts`` names, whole (no validation split), in any format it reads."""
        raise ConfigError(f"{self.name} labels cannot be converted")  # pragma: no cover

    def labels_of(self, data):
        """The task's data as a cvapps.data.labels.LabelSet."""
        raise ConfigError(f"{self.name} labels cannot be converted")  # pragma: no cover

    def write_native(self, data, fmt: str, out: Path) -> list[Path]:
        """``data`` as ``fmt`` (one of ``label_writers``) at ``out``."""
        raise ConfigError(f"{self.name} labels are not written as {fmt}")  # pragma: no cover

    # predict --------------------------------------------------------------------------
    def pick_model(self, options: dict, items=None) -> str | None:
        """The pretrained model a predict option chooses (taking that option out of
        ``options``) or, with no --model, the inputs do (``items``: the expanded sources, when
        known), else None: the caller's --model or ``default_weights``."""
        return None

    def predict_setup(self, model, load, items=(), **options) -> tuple[Any, dict]:
        """(preprocessor, postprocess keyword arguments) for the predict options of this task.
        ``load(name_or_path, task)`` loads another model an option names (e.g. a detector);
        ``items``: the expanded inputs (paths, camera indices, arrays), to check options against."""
        if options:
            raise ConfigError(f"unknown {self.name} predict options {sorted(options)}")
        return model.preprocessor(), {}

    def category_ids(self, model, coco_gt: dict) -> dict[str, int] | None:
        """Model label -> the category id of a COCO ground truth (None: keep the model's)."""
        return None

    def can_track(self, options: dict) -> bool:
        """Whether predictions with these predict ``options`` have boxes to track."""
        return self.tracks

    def track_post(self, post: dict, low: float) -> dict:
        """Postprocess options while tracking; ``low``: the tracker's lowest useful score."""
        return post

    # active learning ------------------------------------------------------------------
    def strategies(self, model) -> list[str]:
        """Selection strategies this model's outputs support."""
        return ["random", "coreset"]

    def scores(self, model, x: torch.Tensor, metas: list[dict], strategy: str, mc_passes: int) -> torch.Tensor:
        """(N,) uncertainty per input row of ``x`` (higher = label first); top-down tasks
        score crops, which select reduces per image."""
        raise NotImplementedError  # pragma: no cover

    def pseudo_labels(self, model, out_dir: Path, threshold: float) -> PseudoLabelWriter:
        raise ConfigError(f"{self.name} models cannot write pseudo-labels")  # pragma: no cover

    def pseudo_options(self, threshold: float) -> dict:
        """Postprocess options while pseudo-labelling (e.g. a detector's score threshold)."""
        return {}


def mc_dropout(dropout: torch.nn.Module, passes: int, run) -> torch.Tensor:
    """(T, ...) outputs of ``run()`` over ``passes`` passes with only ``dropout`` (a head's
    dropout module) stochastic: the caller ran the backbone once, outside."""
    dropout.train()
    try:
        return torch.stack([run() for _ in range(passes)])
    finally:
        dropout.eval()
