"""Models from names, files and configs: ``create_model`` (a new TaskModel), ``load`` (a model
file, a weights name or an exported graph), the helper models a task's setup names, ``save``.
Below ``cvapps.api`` (which re-exports these), so lower-level users — embedding, serving,
the Ray workers — load models the same way."""

from __future__ import annotations

import inspect
from pathlib import Path

from rich.console import Console
from safetensors.torch import load_file

from . import backbones as _bb
from . import pretrained
from .errors import ConfigError
from .modelfile import check_task, load_model, save_model
from .runtime import resolve_device
from .runtimes import GraphModel, check_backend, load_graph, prepare_helper
from .tasks import TASKS, TaskModel
from .weights import all_weights, get_spec, list_weights, load_into


def create_model(task: str = "classify", backbone: str | None = None, weights: str | None = None, *,
                 kind: str | None = None, img_size=None, backbone_options: dict | None = None,
                 **kwargs) -> TaskModel:
    """A new TaskModel; with ``weights`` its backbone (and matching head layers) are pretrained.
    ``kind``: the head kind (classify — multiclass | multilabel | regression | binned; detect —
    ssd | fasterrcnn; segment — fcn8s | fcn16s | fcn32s | segnet; landmarks / pose — heatmap |
    regression). ``kwargs``: what the data says (``labels`` or ``num_classes``; detection
    ``category_ids``; segmentation ``colors``; keypoints ``schema``: a built-in name such as
    coco17, ibug68, face5, or a schema dict) and head options (validated by the head).
    Without labels and with ImageNet weights, a classifier is the ImageNet classifier; with a
    pretrained task model (e.g. ``ssd_mobilenet_v2.coco``) the new model is that model's
    architecture, and classes it shares by name start from its rows (fine-tuning).
    ``backbone`` defaults to the weights' backbone, else mobilenet_v2; ``backbone_options``:
    taps, tf_same, bn_eps (see cvapps.backbones.Backbone.configure)."""
    spec = TASKS.get(task)
    wspec = get_spec(weights) if weights else None
    backbone = backbone or (wspec.backbone if wspec else "mobilenet_v2")
    _bb.BACKBONES.get(backbone)  # an unknown name raises, listing the known ones
    if wspec and wspec.backbone != backbone:
        raise ConfigError(f"weights {weights!r} are for backbone {wspec.backbone!r}, not {backbone!r}",
                          hint=f"use --backbone {wspec.backbone} or weights from `cvapps weights list`")
    data_names = set(inspect.signature(spec.make_config).parameters) - {"backbone", "weights", "kind", "img_size",
                                                                        "head"}
    data_args = {k: v for k, v in kwargs.items() if k in data_names}
    head = {k: v for k, v in kwargs.items() if k not in data_names}
    config = spec.make_config(backbone, wspec, kind, img_size, head, **data_args)
    if backbone_options is None and wspec is not None and wspec.kind == "model":
        backbone_options = wspec.config.get("backbone_options")  # e.g. TF "SAME" padding: part of the weights
    if backbone_options:
        config["backbone_options"] = dict(backbone_options)
    if wspec is not None and wspec.kind == "model" and wspec.config.get("fixed_norms"):
        config["fixed_norms"] = True  # BatchNorm folded in the source file (see TaskModel.train)
    model = spec.model.from_config(config)
    if wspec is not None and wspec.kind == "model":  # a whole pretrained task model: start from all of it
        model.load_pretrained(load_file(str(pretrained.model_file(weights))), wspec.config.get("labels"), weights)
    elif weights:
        load_into(model, weights)
    return model.eval()


def load(name_or_path: str | Path, task: str | None = None, device: str = "cpu", backend: str = "torch",
         precision: str = "fp32", compile: bool = True):
    """A model file path, or a weights name such as ``mobilenet_v2.imagenet1k``. An exported
    graph (``.onnx``, OpenVINO ``.xml``) loads on its runtime; with ``backend`` naming a
    runtime other than PyTorch (and ``compile``), a model file or weights name is compiled
    for it (cvapps.runtimes.prepare); "auto" loads like "torch" (``predict`` then picks the
    runtime)."""
    text = str(name_or_path)
    check_backend(backend)
    device = str(resolve_device(device))
    graph = load_graph(text, device, backend, precision=precision)
    if graph is not None:
        check_task(graph.task, task, text)
        return graph
    m = _load_model(text, task, device)
    if compile:
        return prepare_helper(m, backend, device, precision, named_only=True)
    return m


def _load_model(text: str, task: str | None, device: str):
    if Path(text).exists() or text.endswith(".safetensors"):
        return load_model(text, task=task, device=device)
    if text in all_weights():
        wspec = get_spec(text)
        check_task(wspec.task, task, text)
        if wspec.kind == "model":
            return load_model(pretrained.model_file(text), task=task, device=device)
        return create_model(wspec.task, wspec.backbone, weights=text).to(device)
    raise ConfigError(f"{text!r} is neither a model file nor a known weights name",
                      hint=f"known weights: {', '.join(list_weights())}")


def save(model: TaskModel, path: str | Path) -> Path:
    return save_model(model, path)


def _model(model, task: str | None, device: str = "cpu", backend: str = "torch", compile: bool = True):
    """A ready model: TaskModel / GraphModel objects pass through (their task checked), names
    and paths load."""
    if isinstance(model, (TaskModel, GraphModel)):
        check_task(model.task, task, "the model")
        return model
    return load(model, task=task, device=device, backend=backend, compile=compile)


def helper_loader(device: str = "cpu", backend: str = "auto", console: Console | None = None,
                  threads: int | None = None):
    """``load(name, task)`` for the models a task's setup needs beside the main one (a top-down
    model's box detector, the face check). With ``backend`` "auto" they run on ONNX Runtime
    when it can (the default pose pipeline's person detector: 21 -> 45 fps end to end), except
    models that find their own instances (the face detector): their test-time scales for
    photos are decided later and need PyTorch."""

    def load_helper(name, task):
        m = _model(name, task, device)
        if isinstance(m, TaskModel) and not getattr(m, "finds_instances", False):
            return prepare_helper(m, backend, device, "fp32", console=console, threads=threads)
        return m

    return load_helper


