"""``cvapps adapt``: a trained model adapted to new conditions — a camera at dusk, another site
— from unlabelled images of them (the target); the task stays, the data changes.

- ``adabn`` (Li et al. 2016, "Revisiting batch normalization for practical domain
  adaptation"): every BatchNorm's running mean and variance re-estimated on the target images
  (one pass, the exact average over all of them), every weight unchanged. Cheap (one forward
  pass), no labels, no threshold; it helps where the shift is in low-level statistics
  (brightness, colour, contrast, noise).
- ``self-train``: the model labels the target images and is fine-tuned on its own confident
  labels (its task's distillation data with the model as its own teacher, as ``cvapps
  self-train`` does: classification soft targets, detection boxes scored >= ``threshold``,
  segmentation pixels at least that sure, keypoint instances).
- ``both``: AdaBN, then self-training from the adapted model (so its labels come from it).

Writes OUT/best.safetensors (the adapted model; ``both`` also OUT/adabn.safetensors) and
OUT/adapt.json; with ``val`` (labelled images of the target, or any labelled set) the
metrics before and after."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch
from rich.console import Console
from torch.nn.modules.batchnorm import _BatchNorm

from .api import check_outputs, evaluate
from .data.sources import image_files
from .distilling import distill
from .errors import ConfigError
from .loading import load, save
from .progress import Phase
from .tasks.batch import load_input, to_batch

METHODS = ("adabn", "self-train", "both")


def norm_layers(model) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def adabn(model, images: list, batch_size: int = 16, console: Console | None = None):
    """``model`` (a TaskModel of a whole-image task) with every BatchNorm's running statistics
    re-estimated on ``images`` (paths or arrays, preprocessed as for prediction); weights and
    every other tensor untouched. Returns the model (changed in place), in eval mode."""
    layers = norm_layers(model)
    if not layers:
        raise ConfigError(f"{model.config.get('weights') or 'the model'} has no BatchNorm layers: AdaBN has no "
                          "statistics to re-estimate", hint="use --method self-train")
    if model.config.get("fixed_norms"):
        raise ConfigError(f"{model.config.get('weights') or 'the model'} was converted with its BatchNorm folded into "
                          "the convolutions (identity norms): it has no statistics of its own to re-estimate",
                          hint="fine-tune it on your source data first, or use --method self-train")
    if not model.whole_image:
        raise ConfigError(f"AdaBN runs on whole images; a {model.task} model reads instance crops",
                          hint="use --method self-train")
    if not images:
        raise ConfigError("no target images to adapt on")
    pre = model.preprocessor()
    saved = [(m.momentum, m.training) for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative: the average over every batch, not an exponential one
        m.train()
    try:
        with Phase(console or Console(quiet=True), "re-estimating BatchNorm statistics", len(images)) as bar:
            for i in range(0, len(images), batch_size):
                u8 = [pre.prepare(load_input(item, k)[0], "", k)[0] for k, item in enumerate(images[i : i + batch_size],
                                                                                            start=i)]
                x, _ = to_batch(pre, u8, model.device)
                model(x.float())
                bar.advance(len(u8))
    finally:
        for m, (momentum, _) in zip(layers, saved):
            m.momentum = momentum
        model.eval()
    return model


def adapt(model, data, *, out: str = "runs/adapt", method: str = "adabn", val: str | None = None,
          val_options: dict | None = None, threshold: float | None = None, batch_size: int = 16, device: str = "cpu",
          console: Console | None = None, **train_options) -> dict:
    """Adapt ``model`` (a model file, weights name or TaskModel) to the unlabelled images of
    ``data`` (folders, globs, lists) by ``method`` (see the module). ``val`` + ``val_options``
    (``evaluate``'s data options: images, masks, split, ...): a labelled set scored before and
    after — never used to adapt or to pick an epoch. ``threshold``: self-training's confidence
    (default the task's distillation default); ``train_options``: its TrainConfig fields
    (epochs, lr, freeze, ...; the last epoch's model is kept). Returns {"method", "images",
    "before", "after", "out_dir", ...}."""
    console = console or Console(stderr=True, markup=False)
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    check_outputs({"--out": out})
    out_dir = Path(out)
    images = [str(p) for p in image_files(data)]
    if not images:
        raise ConfigError("the target has no images", path=str(data))
    m = load(model, device=device) if not isinstance(model, torch.nn.Module) else model
    task = m.task
    scoring = dict(val_options or {})
    record: dict = {"method": method, "task": task, "images": len(images)}
    if val:
        record["before"] = _metrics(evaluate(m, val, task=task, device=device, **scoring))
    out_dir.mkdir(parents=True, exist_ok=True)
    if method in ("adabn", "both"):
        adabn(m, images, batch_size, console)
        save(m, out_dir / ("adabn.safetensors" if method == "both" else "best.safetensors"))
        if method == "both" and val:
            record["after_adabn"] = _metrics(evaluate(m, val, task=task, device=device, **scoring))
    if method in ("self-train", "both"):
        quiet = Console(file=io.StringIO())
        if (out_dir / "self-train").exists():
            shutil.rmtree(out_dir / "self-train")
        r = distill(task, m, images, init="teacher", conf=threshold, out=str(out_dir / "self-train"), console=quiet,
                    evaluate_teacher=False, device=device, **train_options)
        shutil.copyfile(out_dir / "self-train" / "last.safetensors", out_dir / "best.safetensors")
        record["self_train_epochs"] = r.get("epochs_run")
    if val:
        record["after"] = _metrics(evaluate(load(out_dir / "best.safetensors", device=device), val, task=task,
                                            device=device, **scoring))
    record["out_dir"] = str(out_dir)
    (out_dir / "adapt.json").write_text(json.dumps(record, indent=1))
    return record


def _metrics(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, (int, float))}
