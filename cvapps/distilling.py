"""``cvapps distill``: train a student from a teacher's outputs on unlabelled images
(knowledge distillation), optionally mixed with labelled ones.

Classification: the teacher's logits on every image are computed once (the teacher is frozen
and sees each image as it was trained to: its own preprocessing) and kept in memory (N x C
floats); the student — any backbone, input size or head — learns the temperature-softened
distribution (KL, times T²) and, where an image also has a label, the label (cross-entropy,
weight ``alpha``). Other tasks are not built yet and say so."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from .api import _model, create_model, evaluate, load, map_images
from .data.classification import ClassificationData, ImageDataset, load_split
from .data.io import is_image
from .data.sources import expand_sources
from .data.transforms import EvalTransform, train_augment
from .errors import ConfigError, DataError
from .tasks import TASKS
from .training.trainer import TrainConfig, Trainer, seed_everything


def teacher_logits(teacher, paths: list[Path], batch_size: int = 32, console: Console | None = None) -> torch.Tensor:
    """(N, C) float32 logits of ``teacher`` on ``paths`` (in order; an unreadable image raises)."""
    return map_images(teacher, paths, lambda x: teacher(x).logits.float(), "teacher outputs", batch_size, console)


def distill(task: str, teacher, data, *, labels: str | None = None, val: str | None = None,
            backbone: str | None = None, weights: str | None = None, img_size=None, head: dict | None = None,
            temperature: float = 4.0, alpha: float = 0.5, out: str = "runs/distill",
            console: Console | None = None, **train_options) -> dict:
    """Train a ``task`` student on the images of ``data`` (folders, globs, lists: no labels
    needed) from ``teacher`` (a model file, weights name or model), plus the labelled set
    ``labels`` (a classification root / CSV whose classes are the teacher's) if given;
    ``val``: a labelled validation set. ``train_options``: TrainConfig fields (epochs, lr,
    freeze, augment — off by default: the teacher's outputs are for the unaugmented image).
    Writes out/ like ``train``; returns its summary, with ``val`` given also the best
    student's metrics ("val") and the teacher's ("teacher_val") on it."""
    console = console or Console(stderr=True, markup=False)
    if not TASKS.get(task).distillation:
        built = ", ".join(n for n in TASKS.names() if TASKS.get(n).distillation)
        raise ConfigError(f"distillation is built for {built} so far, not {task}",
                          hint="detection / segmentation / keypoint distillation are planned (issue #16)")
    t_model = _model(teacher, task, train_options.get("device", "cpu"))
    if t_model.config["head"].get("kind", "multiclass") != "multiclass":
        raise ConfigError("the teacher must be a multiclass classifier (softmax over its labels)")
    names = list(t_model.labels)
    paths = [p for p in expand_sources(data if isinstance(data, (list, tuple)) else [data])
             if isinstance(p, Path) and is_image(p)]
    hard: list[int] = [-1] * len(paths)
    if labels:
        lab = load_split(Path(labels), None, "multiclass", None)
        unknown = sorted(set(lab.labels) - set(names))
        if unknown:
            raise DataError(f"labelled classes {unknown} are not among the teacher's", path=labels,
                            hint="distillation trains the teacher's classes")
        paths += list(lab.paths)
        hard += [names.index(lab.labels[t]) for t in lab.targets]
    if not paths:
        raise DataError("no images to distil on", path=str(data))
    logits = teacher_logits(t_model, paths, console=console)
    targets = torch.cat([logits, torch.tensor(hard, dtype=torch.float32)[:, None]], 1)  # (N, C + 1)
    cfg = TrainConfig.parse({"epochs": 10, "batch_size": 32, "lr": 1e-3, "augment": False, **train_options},
                            out_dir=str(out))
    seed_everything(cfg.seed)
    student = create_model(task, backbone, weights, labels=names, img_size=img_size,
                           **{"kd_temperature": temperature, "kd_alpha": alpha, **(head or {})})
    pre = student.config["preprocessing"]
    evalt = EvalTransform.from_config(pre)
    pool = ClassificationData(paths, [0] * len(paths), names, "multiclass", str(data))

    def make_train(augment: bool) -> ImageDataset:
        ds = ImageDataset(pool, evalt, train_augment(pre) if augment else None)
        ds.targets = targets
        return ds

    val_ds = ImageDataset(load_split(Path(val), names, "multiclass", None), evalt) if val else None
    console.print(f"distilling {len(paths)} images ({sum(h >= 0 for h in hard)} labelled) from the teacher "
                  f"({t_model.config['backbone']}) into {student.config['backbone']}, T={temperature}, "
                  f"alpha={alpha}", highlight=False, markup=False)
    result = Trainer(student, cfg, make_train, val_ds, console).fit()
    if val_ds is not None:
        best = load(Path(out) / "best.safetensors")
        result["val"] = evaluate(best, val)
        result["teacher_val"] = evaluate(t_model, val)
    return result
