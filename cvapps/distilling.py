"""``cvapps distill``: train a student from a teacher's outputs on unlabelled images
(knowledge distillation), optionally mixed with labelled ones.

The teacher is frozen; its outputs on every image are computed once, seeing each image as it
was trained to (its own preprocessing), and kept in memory. What the student learns from
them is the task's (TaskSpec.distill_data): classification the temperature-softened logits
(KL times T², plus cross-entropy on labelled images), detection the teacher's detections as
boxes with its class probabilities as soft targets, segmentation its per-pixel distribution,
landmarks / pose its points. A student of the teacher's backbone starts from the teacher
(``init="auto"``: its feature layers and, where they fit, its predictors); its head kind,
classes and input size are its own."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from .api import _model, check_outputs, create_model, evaluate, load, map_images, predict
from .data.sources import image_files
from .errors import ConfigError, DataError
from .options import DataOptions
from .progress import note
from .tasks import TASKS
from .training.trainer import TrainConfig, Trainer, seed_everything

INIT = ("auto", "teacher", "weights")
INHERIT_LR = 0.1  # the default lr of a student that starts from the teacher: this times the task's


class TeacherRunner:
    """How a task's distill_data runs the teacher (TaskSpec.distill_data)."""

    def __init__(self, teacher, console: Console):
        self.teacher, self.console = teacher, console

    def outputs(self, paths: list[Path], fn) -> tuple[torch.Tensor, list[int]]:
        """``fn(x)`` of every readable image (x normalised for the teacher; (B, ...) a fixed
        size per image) concatenated in order, and the indices into ``paths`` of those images:
        an unreadable image is reported (one line naming it) and left out, as ``predictions``
        does — one bad file in a pool does not throw away the teacher's work on the others."""
        bad: set[str] = set()

        def skip(frame) -> None:
            bad.add(str(frame.source))
            note(self.console, "skipped", frame.error.one_line())

        out = map_images(self.teacher, paths, fn, "teacher outputs", 16, self.console, on_error=skip)
        kept = [i for i, p in enumerate(paths) if str(p) not in bad]
        if paths and not kept:
            raise DataError(f"none of the {len(paths)} images could be read", path=str(paths[0]))
        return out, kept

    def predictions(self, paths: list[Path], **options):
        """The teacher's predictions as ``cvapps predict`` makes them (top-down keypoint models
        on their default detector's boxes): one FrameResult (source, prediction, image) per
        readable image, in order, made as they are consumed; unreadable images are reported
        and left out."""
        return predict(self.teacher, paths, task=self.teacher.task, backend="torch", stream=True,
                       console=self.console, **options)


def distill(task: str, teacher, data, *, labels: str | None = None, label_images: str | None = None,
            val: str | None = None, val_images: str | None = None, backbone: str | None = None,
            weights: str | None = None, img_size=None, head: dict | None = None, init: str = "auto",
            temperature: float = 4.0, alpha: float = 0.5, conf: float | None = None, classes=None,
            palette: str | None = None, teacher_options: dict | None = None, out: str = "runs/distill",
            console: Console | None = None, evaluate_teacher: bool = True,
            **train_options) -> dict:
    """Train a ``task`` student on the images of ``data`` (folders, globs, lists: no labels
    needed) from ``teacher`` (a model file, weights name or model).

    ``labels``: labelled images too (classification: a root / CSV of the teacher's classes;
    detection, landmarks, pose: annotations, with ``label_images``; segmentation: a
    CamVid-style root, a COCO JSON or a mask folder with ``label_images``; colour masks with
    ``palette``, the JSON colour table).
    ``val`` (+ ``val_images``): a labelled validation set. ``init``: "teacher" — the student
    has the teacher's backbone and feature layers (detection: also its extra levels, anchors
    and class scoring), normalisation and norm statistics, and starts from its weights
    (predictors where they fit); "weights" — from ``weights`` (e.g. ImageNet), like
    ``train``; "auto" — "teacher" when the student's backbone is the teacher's and no
    ``weights`` are given. Classification: ``temperature``, ``alpha`` (weight of the labels'
    cross-entropy). Detection: ``conf`` the teacher's score that makes a box (default: its
    own threshold), ``classes`` the student's classes (a subset of the teacher's, by name;
    VOC / COCO synonyms map). Segmentation: the teacher's per-pixel probabilities (``conf``:
    pixels less sure are ignored). Landmarks / pose: the teacher's points on its instances
    scored >= ``conf`` (default 0.3) are the labels; ``teacher_options``: its predict
    options (boxes, detector, whole_image, ...; default: its default detector).
    ``train_options``: TrainConfig fields (epochs, lr, freeze, augment — on by default where
    the targets move with the image: detection, segmentation, keypoints; off for
    classification, whose targets are the teacher's outputs for the unaugmented image).
    Writes out/ like ``train``; returns its summary, with ``val`` also the best student's
    metrics ("val") and, unless ``evaluate_teacher`` is False, the teacher's ("teacher_val")."""
    console = console or Console(stderr=True, markup=False)
    spec = TASKS.get(task)
    if not spec.distillation:
        built = ", ".join(n for n in TASKS.names() if TASKS.get(n).distillation)
        raise ConfigError(f"distillation is built for {built} so far, not {task}",
                          hint="a task without it takes no teacher")
    if init not in INIT:
        raise ConfigError(f"init {init!r} is not one of {', '.join(INIT)}")
    check_outputs({"--out": out})
    t_model = _model(teacher, task, train_options.get("device", "cpu"))
    listed = image_files(data)
    paths = list(dict.fromkeys(Path(p).resolve() for p in listed))  # an image given twice is one image
    if not paths:
        raise DataError("no images to distil on", path=str(data))
    if len(paths) < len(listed):
        note(console, "note:", f"{len(listed) - len(paths)} of the {len(listed)} images given were given before: "
                               "each is distilled once", style="yellow")
    opts = {"labels": labels, "label_images": label_images, "temperature": temperature, "alpha": alpha,
            "conf": conf, "classes": classes, "palette": palette, "out": Path(out),
            "teacher_options": dict(teacher_options or {})}
    t_backbone = t_model.config["backbone"]
    if backbone is None and not weights:
        backbone = t_backbone
    inherit = init == "teacher" or (init == "auto" and not weights and backbone == t_backbone)
    if inherit and (backbone not in (None, t_backbone) or weights):
        raise ConfigError(f"a student that starts from the teacher has its backbone {t_backbone!r} and weights",
                          hint="leave out --backbone / --weights, or pass --init weights")
    train_data, model_args = spec.distill_data(t_model, paths, TeacherRunner(t_model, console), opts)
    defaults = {**spec.train_defaults, "augment": spec.distill_augment}
    if inherit:  # fine-tuning: at detection's 2e-3 the student from the COCO detector fell from AP50 0.74 to 0.41
        defaults["lr"] = defaults["lr"] * INHERIT_LR
    cfg = TrainConfig.parse({**defaults, **train_options}, out_dir=str(out))
    seed_everything(cfg.seed)
    student = create_model(task, backbone, None if inherit else weights, img_size=img_size,
                           **{**(spec.inherit_args(t_model) if inherit else {}), **model_args, **(head or {})})
    if inherit:  # the normalisation and resizing the teacher's layers expect
        t_pre, pre = t_model.config["preprocessing"], student.config["preprocessing"]
        pre.update({k: t_pre[k] for k in ("mean", "std", "resize") if k in t_pre})
        # norm layers keep the teacher's statistics (their affine parameters train): batch
        # statistics of a small pool would move the features the student starts from
        student.config["fixed_norms"] = True
        loaded = student.load_pretrained(t_model.state_dict(), list(t_model.labels), "the teacher's weights")
        student.config["weights"] = t_model.config.get("weights")
        console.print(f"the student starts from the teacher: {loaded['backbone']} backbone and {loaded['head']} "
                      f"head tensors", highlight=False, markup=False)
    val_data = spec.read_eval(student, DataOptions.parse({"images": val_images}, data=val)) if val else None
    make_train, val_ds = spec.datasets(student, train_data, val_data)
    console.print(f"distilling {len(train_data)} images from the teacher ({t_model.config['backbone']}, "
                  f"{spec.describe_outputs(t_model)}) into {student.config['backbone']} "
                  f"({spec.describe_outputs(student)})", highlight=False, markup=False)
    # a student started from the teacher already works: it is epoch 0, best unless training beats it
    result = Trainer(student, cfg, make_train, val_ds, console, evaluate_start=inherit).fit()
    if val:
        kw = {"images": val_images} if val_images else {}
        result["val"] = evaluate(load(Path(out) / "best.safetensors"), val, **kw)
        if evaluate_teacher:  # self-training's rounds know their teacher's figures already
            result["teacher_val"] = evaluate(t_model, val, **kw)
    return result
