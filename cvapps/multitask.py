"""Multi-task training (``cvapps train-bundle``): one backbone learns several task heads from
several datasets at once, and the result is a bundle — one model file per task, all with the
same backbone weights and input — that ``predict`` runs in one backbone pass.

Schedule: every step takes one batch of ``--batch-size`` images from *each* task (each with its
own reader, augmentation and loss) and adds their weighted losses, so each head learns only
from its task's images and the backbone from all. An epoch is the largest training set once;
smaller ones repeat within it (the epoch's shuffled index i takes task t's image i mod n_t).
Weighting (``--weighting``): ``magnitude`` (default: each task's loss divided by its running
mean, so every task contributes ~1 whatever its loss's scale — an SSD loss of ~9 no longer drowns
a segmentation cross-entropy of ~0.3; best of the three on benchmarks/multitask.py),
``uncertainty`` (Kendall et al. 2018: sum over tasks of exp(-s_t) L_t + s_t, with s_t learnt —
noisier tasks get less weight), ``equal`` (sum), or one fixed weight per task. The checkpoint,
``--resume`` (exact), ``--freeze``, ``--ema``, DDP, workers and ``--precision`` are the ordinary
trainer's (cvapps.training.trainer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from .data.dataset import Skipped, TaskDataset
from .data.remote import staged
from .errors import ConfigError
from .loading import create_model
from .modelfile import save_model
from .options import DataOptions, split_options
from .tasks import TASKS
from .training.trainer import TrainConfig, Trainer, evaluate_dataset, seed_everything, to_device

WEIGHTINGS = ("uncertainty", "equal", "magnitude")
MAGNITUDE_DECAY = 0.9  # "magnitude": each task's loss divided by its running mean (this decay per step)


def parse_task(text: str) -> tuple[str, str | None, dict]:
    """``TASK:DATA[,key=value,...]`` (``--task``) -> (task, data or None, options); values
    are JSON where they parse (numbers, true / false), lists where they hold ``|`` (a|b|c),
    else strings."""
    task, _, rest = text.partition(":")
    if task not in TASKS.names():
        raise ConfigError(f"--task {text!r}: unknown task {task!r}", hint=f"tasks: {', '.join(TASKS.names())}")
    parts = [p for p in rest.split(",") if p] if rest else []
    data = parts.pop(0) if parts and "=" not in parts[0] else None
    opts = {}
    for p in parts:
        k, eq, v = p.partition("=")
        if not eq:
            raise ConfigError(f"--task {text!r}: {p!r} is not key=value", hint="e.g. segment:camvid/train,masks=...")
        try:
            value = json.loads(v)
        except ValueError:
            value = v.split("|") if "|" in v else v  # lists (class names) with |: commas part the options
        opts[k.strip().replace("-", "_")] = value
    return task, data, opts


class JointDataset(TaskDataset):
    """Items: (x (T, 3, H, W) uint8 — task t's image i mod n_t —, {"tasks": {task: its
    target}, "counts": the tasks' tallies}); a task's bad sample skips the item."""

    def __init__(self, parts: dict[str, TaskDataset]):
        self.parts = parts
        super().__init__(next(iter(parts.values())).data)
        self.n = max(len(d) for d in parts.values())

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        xs, targets, counts = [], {}, {}
        for k, (task, ds) in enumerate(self.parts.items()):
            item = ds[(i % len(ds), (seed + k) % 2 ** 32) if seed is not None else i % len(ds)]
            if isinstance(item, Skipped):
                return Skipped(f"{task}: {item}")
            x, t = item
            if isinstance(t, dict) and "counts" in t:
                for name, v in t.pop("counts").items():
                    counts[name] = counts.get(name, 0) + v
            xs.append(x)
            targets[task] = t
        return torch.stack(xs), {"tasks": targets, "counts": counts}  # one input size: checked by train_bundle

    def on_worker(self, workers: int) -> None:  # a loader worker process starts: tell the tasks' datasets
        for ds in self.parts.values():
            if hasattr(ds, "on_worker"):
                ds.on_worker(workers)

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        return torch.stack([ds.normalize(batch_u8[:, k]) for k, ds in enumerate(self.parts.values())], 1)


def task_targets(targets: list[dict], task: str, device) -> object:
    """One task's targets of a joint batch, collated as its own loader would (tensors stacked)."""
    ts = [t["tasks"][task] for t in targets]
    return torch.stack(ts).to(device) if isinstance(ts[0], torch.Tensor) else to_device(ts, device)


class MultiTaskModel(nn.Module):
    """TaskModels of several tasks sharing one backbone module (``self.backbone``: freezing,
    learning-rate groups and unfreezing see it once). training_step: x (B, T, 3, H, W)."""

    supports_feature_cache = False
    teacher = None
    has_eval_loss = False

    def __init__(self, models: dict[str, nn.Module], weighting="magnitude"):
        super().__init__()
        first = next(iter(models.values()))
        self.backbone = first.backbone
        for m in models.values():
            m.backbone = self.backbone
        self.parts = nn.ModuleDict(models)
        self.tasks = list(models)
        if isinstance(weighting, str) and weighting not in WEIGHTINGS:
            weighting = [float(w) for w in weighting.split(",")]
        if not isinstance(weighting, str) and len(weighting) != len(models):
            raise ConfigError(f"--weighting: {len(weighting)} weights for {len(models)} tasks",
                              hint="one weight per --task, in order, or 'magnitude' / 'uncertainty' / 'equal'")
        self.weighting = weighting
        # log variances s_t of uncertainty weighting (a parameter only then: DDP sees every one used)
        self.log_vars = nn.Parameter(torch.zeros(len(models))) if weighting == "uncertainty" else None
        if weighting == "magnitude":  # running mean of each task's loss (0: not seen yet); in the checkpoint
            self.register_buffer("loss_means", torch.zeros(len(models)))
        self.config = {"task": "bundle", "tasks": self.tasks, "backbone": first.config["backbone"],
                       "labels": {t: list(m.labels) for t, m in models.items()},
                       "head": {t: m.config["head"] for t, m in models.items()},
                       "preprocessing": {t: m.config["preprocessing"] for t, m in models.items()},
                       "weighting": weighting}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def fixed_norm_stats(self) -> bool:
        return all(m.fixed_norm_stats for m in self.parts.values())

    @fixed_norm_stats.setter
    def fixed_norm_stats(self, value: bool) -> None:
        for m in self.parts.values():
            m.fixed_norm_stats = value

    def task_weights(self) -> list[float]:
        """The weight each task's loss has now (uncertainty: exp(-s_t))."""
        if self.log_vars is not None:
            return [float(v) for v in torch.exp(-self.log_vars.detach())]
        if self.weighting == "magnitude":
            return [1.0 / float(v) if v > 0 else 1.0 for v in self.loss_means]
        return [1.0] * len(self.tasks) if self.weighting == "equal" else list(self.weighting)

    def training_step(self, x: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        total, out = 0.0, {}
        for k, (task, model) in enumerate(self.parts.items()):
            loss = model.training_step(x[:, k], task_targets(targets, task, x.device))["loss"]
            out[f"{task}_loss"] = loss.detach()
            if self.log_vars is not None:
                total = total + torch.exp(-self.log_vars[k]) * loss + self.log_vars[k]
            elif self.weighting == "magnitude":
                with torch.no_grad():
                    m = self.loss_means[k]
                    self.loss_means[k] = loss.detach().float() if m == 0 else \
                        MAGNITUDE_DECAY * m + (1 - MAGNITUDE_DECAY) * loss.detach().float()
                total = total + loss / self.loss_means[k].clamp(min=1e-8)
            else:
                total = total + (1.0 if self.weighting == "equal" else self.weighting[k]) * loss
        return {**out, "loss": total}

    def primary_metric(self) -> tuple[str, str]:
        return "score", "max"


def score(metrics: dict[str, float], models: dict[str, nn.Module]) -> float:
    """The mean over tasks of each one's primary metric (negated where lower is better)."""
    vals = []
    for task, m in models.items():
        name, mode = m.primary_metric()
        v = metrics.get(f"{task}_{name}")
        if v is not None:
            vals.append(v if mode == "max" else -v)
    return sum(vals) / len(vals) if vals else math.nan


class MultiTaskTrainer(Trainer):
    """The trainer on a MultiTaskModel: ``val_ds`` {task: its validation set}, each scored with
    its own metric (``<task>_<metric>``, and ``score``); best / last are bundles: OUT/best/
    <task>.safetensors, OUT/last/<task>.safetensors."""

    def _loader(self, ds, shuffle: bool):
        """The validation sets: one loader per task, made once (their worker processes persist)."""
        if isinstance(ds, dict):
            return {task: super(MultiTaskTrainer, self)._loader(v, False) for task, v in ds.items()}
        return super()._loader(ds, shuffle)

    def evaluate(self, ds, loader=None, model=None) -> dict:
        m = model if model is not None else self.model
        out: dict[str, float] = {}
        for task, vds in ds.items():
            part = m.parts[task]
            r = evaluate_dataset(part, vds, self.cfg.batch_size, self.cfg.precision,
                                 loader=loader[task] if loader else None, workers=self.cfg.workers)
            out.update({f"{task}_{k}": v for k, v in r.items() if not isinstance(v, (list, dict))})
        out["score"] = score(out, m.parts)
        losses = [v for k, v in out.items() if k.endswith("_loss")]
        if losses:
            out["loss"] = sum(losses)
        if m.weighting in ("uncertainty", "magnitude"):
            out.update({f"{t}_weight": w for t, w in zip(m.tasks, m.task_weights())})
        return out

    def save(self, model, path: Path) -> None:
        folder = path.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        for task, part in model.parts.items():
            save_model(part, folder / f"{task}.safetensors")


def train_bundle(tasks: list, *, backbone: str | None = None, weights: str | None = None, img_size=None,
                 weighting="magnitude", out: str = "runs/bundle", console: Console | None = None,
                 **options) -> dict:
    """Train one backbone with a head per task (see the module doc). ``tasks``: ``TASK:DATA[,
    key=value]`` strings or (task, data, {options}) tuples — each task's data options
    (cvapps.options.DataOptions) and head options; ``options``: training options shared by all
    (cvapps.training.trainer.TrainConfig). Writes OUT/best/<task>.safetensors (a bundle:
    ``cvapps.load_bundle`` / ``predict --model`` each file), OUT/last/, checkpoint.pt,
    metrics.jsonl. Returns the summary with each task's validation metrics."""
    console = console or Console(stderr=True, markup=False)
    parsed = [parse_task(t) if isinstance(t, str) else tuple(t) for t in tasks]
    names = [p[0] for p in parsed]
    if len(parsed) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"train-bundle needs two or more different tasks, got {names}",
                          hint="--task detect:DATA --task segment:DATA ... (one per task)")
    cfg = TrainConfig.parse({"epochs": 30, "batch_size": 8, "lr": 2e-3, **options}, out_dir=str(out))
    seed_everything(cfg.seed)
    models, make, vals, sizes = {}, {}, {}, {}
    for task, data, topts in parsed:
        spec = TASKS.get(task)
        if not spec.model.whole_image:
            raise ConfigError(f"a bundle takes whole-image tasks (classify, detect, segment); {task} models crop "
                              "instances first", hint=f"train it on its own with cvapps train {task}")
        topts = dict(topts or {})
        kind = topts.pop("kind", topts.pop("head", None))
        data_kw, head_kw = split_options(topts, DataOptions, spec.model.head_options(kind or spec.default_kind))
        dopts = staged(DataOptions.parse(data_kw, data=data))
        tr, va = spec.read_train(dopts, kind)
        args = spec.model_args(tr, dopts, console)
        kind = args.pop("kind", kind)
        m = create_model(task, backbone, weights, kind=kind, img_size=img_size, **args, **head_kw)
        models[task] = m
        make[task], vals[task] = spec.datasets(m, tr, va, dopts.skip_bad)
        sizes[task] = (len(tr), len(va) if va is not None else 0)
        console.print(f"{task}: {len(tr)} train images{f', {len(va)} val' if va else ''}, {spec.describe(tr)}",
                      highlight=False, markup=False)
    bb = {m.config["backbone"] for m in models.values()}
    if len(bb) > 1:  # pragma: no cover - create_model gives every task the same backbone
        raise ConfigError(f"the tasks' models have different backbones {sorted(bb)}")
    model = MultiTaskModel(models, weighting)
    inputs = {t: m.config["preprocessing"]["input_size"] for t, m in models.items()}
    if len({json.dumps(v) for v in inputs.values()}) > 1:
        raise ConfigError(f"the tasks' input sizes differ ({inputs}): a bundle's tasks share one input size",
                          hint="give --img-size")
    pres = [json.dumps(m.config["preprocessing"], sort_keys=True) for m in models.values()]
    if len(set(pres)) > 1:
        console.print("note: the tasks prepare their inputs differently (e.g. a classifier crops, a detector "
                      "letterboxes): they share the trained backbone, but predict runs a backbone pass per "
                      "preprocessing", highlight=False, markup=False)
    val_ds = {t: v for t, v in vals.items() if v is not None} or None
    trainer = MultiTaskTrainer(model, cfg, lambda aug: JointDataset({t: mk(aug) for t, mk in make.items()}),
                               val_ds, console)
    result = trainer.fit()
    result.update({"tasks": names, "images": sizes, "bundle": [str(Path(out) / "best" / f"{t}.safetensors")
                                                               for t in names]})
    if val_ds and result["rank"] == 0:
        last = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        best = next((r for r in last if r["epoch"] == result["best_epoch"]), last[-1])
        result["val"] = {k: v for k, v in best.items() if k.split("_")[0] in names or k == "score"}
    return result
