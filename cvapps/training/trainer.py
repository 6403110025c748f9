"""One Trainer for every task: the task model supplies loss and metrics."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from rich.console import Console
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import TensorDataset

from ..data.loader import make_loader
from ..errors import ConfigError, CvappsError, DataError
from ..modelfile import save_model
from ..options import Options, opt
from ..progress import Phase, note
from ..runs import RunLock, stale_note
from ..runtime import PRECISIONS, autocast, resolve_device
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .freezing import count_parameters, freeze, frozen_state, param_groups, restore_frozen_state, unfreeze_schedule
from .plots import plot_curves


class TrainingError(CvappsError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class TrainConfig(Options):
    """The training recipe (the same defaults for every task and in the CLI)."""

    what: ClassVar[str] = "training"
    epochs: int = opt(10, low=1)
    batch_size: int = opt(32, low=1)
    lr: float = opt(1e-3, low=0.0, low_open=True)
    weight_decay: float = opt(1e-4, low=0.0)
    warmup_epochs: float = opt(1.0, low=0.0)
    # after the warm-up: "cosine" decay to 0 over the run, or "constant" (a federated round's local epochs:
    # the server decays the rate over the rounds)
    lr_schedule: str = opt("cosine", choices=("cosine", "constant"))
    backbone_lr_ratio: float = opt(0.1, low=0.0)
    freeze: str | None = None  # "backbone" | "stage:N" | a regex over module names | "none"
    unfreeze_at: int | None = opt(None, low=0)
    patience: int | None = opt(None, low=1)
    precision: str = opt("fp32", choices=PRECISIONS)
    clip_grad: float | None = opt(5.0, low=0.0, low_open=True)
    seed: int = 0
    workers: int | None = opt(None, low=0)  # data-loading processes; None: cvapps.data.loader.default_workers
    augment: bool | None = None  # None: on unless the backbone is frozen
    out_dir: str = opt("runs/train", cli="--out")
    resume: bool = False
    overwrite: bool = False  # train into an out_dir that already holds a trained model
    skip_bad: bool = False
    keep_classes: bool = False  # learning without forgetting (see cvapps.api.train)
    # an exponential moving average of the weights (decay per step): evaluated and saved instead of the
    # raw weights; steadies fine-tuning of pretrained models on small sets
    ema: float | None = opt(None, low=0.0, high=1.0, low_open=True)
    # "fixed": every norm layer keeps its running statistics (eval mode) while the weights, its affine
    # parameters included, train — detectors fine-tuned with small batches keep what they learnt
    norm_stats: str = opt("update", choices=("update", "fixed"))
    time_limit_min: float | None = opt(None, low=0.0, low_open=True)  # stop after the epoch crossing it
    # semi-supervised (train(..., unlabelled=...)): confidence a pseudo-label needs, unlabelled images per
    # labelled one in a step, weight of their loss (FixMatch's 0.95, 7, 1; tasks set their own), share of
    # the epochs trained on the labels alone first (a mean teacher's burn-in)
    unlabelled_threshold: float = opt(0.95, low=0.0, high=1.0)
    unlabelled_ratio: int = opt(7, low=1)
    unlabelled_weight: float = opt(1.0, low=0.0)
    unlabelled_warmup: float = opt(0.0, low=0.0, high=0.9)
    device: str = "cpu"

    def validate(self) -> None:
        resolve_device(self.device)
        if self.freeze in ("none", ""):  # overrides a weights' recipe that freezes
            self.freeze = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(t, device: torch.device):
    """Targets: a tensor, or a list of per-image dicts of tensors (detection, keypoints)."""
    if isinstance(t, torch.Tensor):
        return t.to(device)
    return [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in d.items()} for d in t]


def evaluate_dataset(model, ds, batch_size: int = 32, precision: str = "fp32", forward=None, evaluator=None,
                     workers: int | None = None, loader=None) -> dict:
    """Loss and task metrics of ``model`` over ``ds`` (items (x, target)); the task's
    evaluator (``model.make_evaluator``) accumulates raw outputs and computes the metrics.
    ``loader``: reuse one (its worker processes) across calls; else one with ``workers``."""
    model.eval()
    forward = forward or model
    ev = evaluator or model.make_evaluator(ds)
    loss_sum, n = 0.0, 0
    with torch.inference_mode():
        for x, t in loader or make_loader(ds, batch_size, workers=workers, device=model.device):
            with autocast(model.device, precision):
                raw = forward(x.to(model.device))
            if model.has_eval_loss:
                loss_sum += float(model.loss(raw, to_device(t, model.device))["loss"]) * x.shape[0]
            ev.add(raw, t)
            n += x.shape[0]
    if not n:
        raise DataError("no readable evaluation images")
    result = ev.compute()
    if model.has_eval_loss:
        result["loss"] = loss_sum / n
    return result


class Trainer:
    """``model``: a TaskModel. ``train_ds``/``val_ds``: datasets yielding (x (3,S,S), target)
    (see cvapps.data). ``make_train_ds(augment)`` lets the trainer pick the pipeline."""

    def __init__(self, model, cfg: TrainConfig, make_train_ds, val_ds, console: Console | None = None,
                 evaluate_start: bool = False, unlabelled=None, penalty=None, optimizer_state: dict | None = None,
                 model_files: bool = True):
        """``evaluate_start``: the model already works (a pretrained task model being fine-tuned):
        it is evaluated as epoch 0 and stays best.safetensors unless an epoch beats it.
        ``unlabelled``: a cvapps.tasks.spec.SemiSupervised (its images join every step).
        ``penalty(model)``: a scalar added to every step's loss (FedProx's proximal term).
        ``optimizer_state``: AdamW's per-parameter state (moments) of an earlier run of this model
        to start from (a federated site's next round); the run's end state is left in
        ``self.optimizer_state``. ``model_files`` False: the caller takes the model from memory
        — no best / last / checkpoint files or curves are written (metrics.jsonl is)."""
        self.model, self.cfg, self.val_ds, self.evaluate_start = model, cfg, val_ds, evaluate_start
        self.unlabelled, self.penalty = unlabelled, penalty
        self.optimizer_state, self.model_files = optimizer_state, model_files
        self.dist, device = distributed.setup(cfg.device)
        # only rank 0 talks, logs and writes files
        self.console = (console or Console(stderr=True, markup=False)) if self.dist.main else Console(quiet=True)
        if cfg.batch_size % self.dist.world:
            raise ConfigError(f"--batch-size {cfg.batch_size} is the global batch: it must divide by the "
                              f"{self.dist.world} processes")
        self.out = Path(cfg.out_dir)
        self.lock = RunLock(self.out, "training run") if self.dist.main else None
        stale = self.lock.acquire() if self.lock is not None else None  # before looking: two runs never both start
        try:
            done = [f for f in ("best.safetensors", "checkpoint.pt") if (self.out / f).exists()]
            if done and not (cfg.resume or cfg.overwrite):
                raise ConfigError(f"{self.out} already holds a trained model ({', '.join(done)})", path=str(self.out),
                                  hint="pass --resume to continue it, --overwrite to replace it, or another --out")
            if stale:
                note(self.console, "note:", stale_note(self.out, stale), style="yellow")
            self.resume_state = None
            if cfg.resume:
                self.resume_state = load_checkpoint(self.out / "checkpoint.pt")
                self._check_resume(self.resume_state, self.out / "checkpoint.pt")
        except BaseException:
            self.release()
            raise
        self.device = torch.device(device)
        seed_everything(cfg.seed)
        if cfg.freeze:
            freeze(model, cfg.freeze)
        model.fixed_norm_stats = cfg.norm_stats == "fixed"
        self.augment = cfg.augment if cfg.augment is not None else cfg.freeze != "backbone"
        # frozen backbone, no random augmentation, no later unfreeze: features are fixed (single
        # process only: under DDP every rank runs its shard through the frozen backbone)
        self.cache = (cfg.freeze == "backbone" and not self.augment and cfg.unfreeze_at is None
                      and model.supports_feature_cache and not self.dist.enabled
                      and model.teacher is None  # --keep-classes: the teacher sees the images
                      and unlabelled is None)
        self.train_ds = make_train_ds(self.augment)
        self.metric, self.mode = model.primary_metric()
        self.records: list[dict] = []

    def release(self) -> None:
        """Let other runs into the folder (fit does, when it ends in any way)."""
        if self.lock is not None:
            self.lock.release()

    # ------------------------------------------------------------------------------------
    def _loader(self, ds, shuffle: bool):
        """Made once per dataset and run: the worker processes persist across epochs."""
        if not shuffle:
            return make_loader(ds, self.cfg.batch_size, workers=self.cfg.workers, device=self.device)
        return make_loader(ds, self.cfg.batch_size // self.dist.world, True, self.cfg.seed * 1000,
                           self.dist.rank, self.dist.world, self.cfg.workers, self.device)

    @torch.inference_mode()
    def _cache_features(self, ds, what: str) -> TensorDataset:
        """Run the frozen backbone once; keep what the head needs (task-defined)."""
        self.model.eval()
        feats, targets = [], []
        with Phase(self.console, f"caching {what} features", len(ds)) as bar:
            for x, t in self._loader(ds, False):
                with autocast(self.device, self.cfg.precision):
                    f = self.model.cache_features(self.model.forward_features(x.to(self.device)))
                feats.append(f.float().cpu())
                targets.append(t)
                bar.advance(len(x))
        return TensorDataset(torch.cat(feats), torch.cat(targets))

    def save(self, model, path: Path) -> None:
        """Write the kept model (best / last); a trainer of something else writes its own files."""
        save_model(model, path)

    def evaluate(self, ds, loader=None, model=None) -> dict:
        """Metrics of ``model`` (default the trained one) on ``ds``."""
        m = model if model is not None else self.model
        return evaluate_dataset(m, ds, self.cfg.batch_size, self.cfg.precision,
                                m.forward_cached if self.cache else m, loader=loader or self._loader(ds, False))

    # ------------------------------------------------------------------------------------
    def fit(self) -> dict:
        finished = False
        try:
            result = self._fit()
            finished = True
            return result
        except KeyboardInterrupt:
            done = len(self.records)
            self.console.print(f"interrupted during epoch {done + 1}: " + (
                f"{self.out}/checkpoint.pt, best.safetensors and last.safetensors hold epoch {done}; continue with "
                f"--resume" if done else "no epoch had finished, nothing was saved"), highlight=False, markup=False)
            raise
        finally:
            self.release()
            distributed.teardown(self.dist, finished)

    def _check_resume(self, state: dict, path: Path) -> None:
        """A checkpoint of another model (classes, backbone, head, input) stops in one line."""
        saved = json.loads(state["model_config"]) if "model_config" in state else None
        if saved is None:  # older checkpoints: compare the tensors
            own = self.model.state_dict()
            if set(own) != set(state["model"]) or any(own[k].shape != v.shape for k, v in state["model"].items()):
                raise ConfigError("the checkpoint holds a different model (its tensors do not fit this one)",
                                  path=str(path), hint="use the same backbone / classes / head, or another --out")
            return
        differ = [k for k in ("task", "backbone", "labels", "head", "preprocessing", "schema")
                  if json.dumps(saved.get(k), sort_keys=True) != json.dumps(self.model.config.get(k), sort_keys=True)]
        if differ:
            k = differ[0]
            show = (lambda v: v if len(str(v)) < 80 else str(v)[:77] + "...")
            raise ConfigError(f"the checkpoint was trained with {k} {show(saved.get(k))}, this run has "
                              f"{show(self.model.config.get(k))}", path=str(path),
                              hint="resume with the same data and model options, or train into another --out")

    def _fit(self) -> dict:
        cfg, model = self.cfg, self.model.to(self.device)
        train_ds, val_ds = self.train_ds, self.val_ds
        if self.cache:
            train_ds = self._cache_features(train_ds, "train")
            val_ds = self._cache_features(val_ds, "val") if val_ds is not None else None
        trainable, frozen = count_parameters(model)
        self.console.print(f"parameters: {trainable:,} trainable, {frozen:,} frozen"
                           + (" (training the head on cached backbone features)" if self.cache else "")
                           + (f"; DDP over {self.dist.world} processes, {cfg.batch_size // self.dist.world} "
                              f"images per process per step" if self.dist.enabled else ""))
        opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.backbone_lr_ratio, cfg.weight_decay), lr=cfg.lr)
        if self.optimizer_state is not None:  # the moments only: this run's rates and schedule stand
            opt.load_state_dict({**opt.state_dict(), "state": self.optimizer_state})
        train_loader = self._loader(train_ds, True)
        semi = self.unlabelled
        u_loader = make_loader(semi.dataset, max(1, cfg.batch_size * semi.ratio // self.dist.world), True,
                               cfg.seed * 1000 + 1, self.dist.rank, self.dist.world, cfg.workers,
                               self.device) if semi is not None else None
        val_loader = self._loader(val_ds, False) if val_ds is not None and self.dist.main else None
        steps_per_epoch = max(1, len(train_loader))  # this rank's batches per epoch
        total, warm = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)

        def lr_lambda(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if cfg.lr_schedule == "constant":
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        # with --ema the averaged weights are what is evaluated and saved (the raw ones train on); a mean
        # teacher is that average
        decay = cfg.ema or (semi.teacher if semi is not None else None)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay else None
        teacher = ema.module if semi is not None and semi.teacher else None
        u_start = math.ceil(cfg.unlabelled_warmup * cfg.epochs) if semi is not None else 0
        kept = (lambda: ema.module) if ema is not None else (lambda: model)
        start, best, best_loss, bad_epochs, best_epoch = 0, None, math.inf, 0, None
        ckpt_path = self.out / "checkpoint.pt"
        if self.resume_state is not None:
            state = self.resume_state
            model.load_state_dict(state["model"])
            restore_frozen_state(model, state["frozen"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start, best, bad_epochs = state["epoch"] + 1, state["best"], state["bad_epochs"]
            best_loss, best_epoch = state["best_loss"], state.get("best_epoch")
            if ema is not None:
                if "ema" not in state:
                    raise ConfigError("the checkpoint was trained without --ema (or a mean teacher)",
                                      path=str(ckpt_path),
                                      hint="resume with the same options")
                ema.load_state_dict(state["ema"])
            self.records = [json.loads(r) for r in state["records"]]
            self.console.print(f"resumed from {ckpt_path} at epoch {start}")
        elif self.evaluate_start and val_ds is not None:  # the start is a candidate: fine-tuning may not beat it
            rec = {"epoch": 0}
            if self.dist.main:
                rec.update({f"val_{k}" if k == "loss" else k: v for k, v in self.evaluate(val_ds, val_loader).items()
                            if not isinstance(v, (list, dict))})
                self.save(model, self.out / "best.safetensors")
            rec = distributed.from_main(self.dist, rec)
            best, best_loss, best_epoch = rec.get(self.metric), rec.get("val_loss", math.inf), 0
            if best is None:  # no metric to compare: training decides
                best, best_epoch = None, None
            self.records.append(rec)
            self.console.print("epoch 0 (the starting model): " + " ".join(
                f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in rec.items() if k != "epoch") + " *best*")
        self._write_records()

        t_start = time.time()
        step_fn = distributed.wrap(model, self.dist, self.device, semi.loss if semi else None, teacher)
        for epoch in range(start, cfg.epochs):
            if unfreeze_schedule(model, epoch, cfg.unfreeze_at):
                t, f = count_parameters(model)
                self.console.print(f"epoch {epoch}: unfroze a backbone stage -> {t:,} trainable, {f:,} frozen")
                # the new trainable set
                step_fn = distributed.wrap(model, self.dist, self.device, semi.loss if semi else None, teacher)
            seed_everything(cfg.seed * 1000 + epoch)  # each epoch's randomness is fixed: exact resume
            train_loader.sampler.set_epoch(epoch)  # the order and each sample's augmentation seed
            model.train()
            t0, loss_sum, n_seen = time.time(), 0.0, 0
            u_batches, u_logs = self._unlabelled_batches(u_loader if epoch >= u_start else None, epoch), {}
            if teacher is not None and epoch == u_start and u_start:  # burn-in over: the teacher is the student
                teacher.load_state_dict(model.state_dict())
            with Phase(self.console, f"epoch {epoch + 1}/{cfg.epochs}", len(train_ds)) as bar:
                for step, (x, t) in enumerate(train_loader):
                    x, t = x.to(self.device), to_device(t, self.device)
                    u, info = next(u_batches) if u_batches is not None else (None, None)
                    with autocast(self.device, cfg.precision):
                        out = step_fn(x, t, self.cache, u.to(self.device), to_device(info, self.device)) \
                            if u is not None else step_fn(x, t, self.cache)
                        loss = out["loss"] if self.penalty is None else out["loss"] + self.penalty(model)
                    for k in semi.logs if semi is not None else ():
                        if k in out:
                            u_logs[k] = u_logs.get(k, 0.0) + float(out[k]) * x.shape[0]
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last good "
                            f"checkpoint is {ckpt_path}", hint="lower --lr, or use --precision fp32")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.clip_grad:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    opt.step()
                    sched.step()
                    if ema is not None:
                        ema.update_parameters(model)
                    loss_sum += loss.item() * x.shape[0]
                    n_seen += x.shape[0]
                    bar.advance(x.shape[0])
            head_lr = max(g["lr"] for g in opt.param_groups)  # group 0 may be the slower backbone
            elapsed = time.time() - t0
            loss_sum, n_seen = distributed.sum_all(self.dist, loss_sum, n_seen)
            rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, n_seen), "lr": head_lr,
                   "train_time_s": round(elapsed, 2), "images_per_s": round(n_seen / elapsed, 1)}
            for k, v in u_logs.items():  # semi-supervised: its loss, the share of confident pseudo-labels ...
                rec[k] = distributed.sum_all(self.dist, v, 0)[0] / max(1, n_seen)
            if val_ds is not None and self.dist.main:  # rank 0 evaluates the whole set: exact metrics
                m = self.evaluate(val_ds, val_loader, kept())
                rec.update({f"val_{k}" if k == "loss" else k: v for k, v in m.items()
                            if not isinstance(v, (list, dict))})
            rec = distributed.from_main(self.dist, rec)
            score = rec.get(self.metric, -rec["train_loss"] if self.mode == "max" else rec["train_loss"])
            # ties on the metric (common on small val sets) go to the lower validation loss
            vloss = rec.get("val_loss", rec["train_loss"])
            improved = best is None or (score > best if self.mode == "max" else score < best) or (
                score == best and vloss < best_loss)
            if improved:
                best, best_loss, bad_epochs, best_epoch = score, vloss, 0, epoch + 1
            else:
                bad_epochs += 1
            self.records.append(rec)
            if self.dist.main and not self.model_files:
                self._write_records()
            elif self.dist.main:
                if improved:
                    self.save(kept(), self.out / "best.safetensors")
                self.save(kept(), self.out / "last.safetensors")
                self._write_records()
                save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(),
                                scheduler=sched.state_dict(), epoch=epoch, best=best, best_loss=best_loss,
                                best_epoch=best_epoch, bad_epochs=bad_epochs, frozen=frozen_state(model),
                                model_config=json.dumps(model.config),
                                records=[json.dumps(r) for r in self.records], config=json.dumps(asdict(cfg)),
                                **({"ema": ema.state_dict()} if ema is not None else {}))
            distributed.barrier(self.dist)
            shown = {k: (f"{v:.2e}" if k == "lr" else round(v, 4)) if isinstance(v, float) else v
                     for k, v in rec.items()}
            self.console.print(f"epoch {epoch + 1}: " + " ".join(f"{k}={v}" for k, v in shown.items())
                               + (" *best*" if improved else ""))
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                self.console.print(f"early stop: no {self.metric} improvement for {cfg.patience} epochs")
                break
            if distributed.from_main(self.dist, cfg.time_limit_min is not None
                                     and time.time() - t_start > 60 * cfg.time_limit_min):
                self.console.print(f"time limit of {cfg.time_limit_min} min reached after epoch {epoch + 1}")
                break
        self.optimizer_state = opt.state_dict()["state"]
        if best_epoch == 0:
            note(self.console, "note:", f"no epoch beat the starting model ({self.metric} {round(best, 4)}): "
                                        f"{self.out}/best.safetensors is the starting model, last.safetensors the "
                                        "last epoch's (a lower --lr, fewer epochs or more data may help)",
                 style="yellow")
        return {"best": best, "metric": self.metric, "best_epoch": best_epoch,
                "epochs_run": sum(r["epoch"] > 0 for r in self.records), "out_dir": str(self.out),
                "rank": self.dist.rank, "world_size": self.dist.world}

    @staticmethod
    def _unlabelled_batches(loader, epoch: int):
        """Unlabelled batches for one epoch, as many as asked: the loader's order is fixed by the
        epoch (exact resume), started again (next seed) when the labelled steps outlast it."""
        if loader is None:
            return None

        def batches():
            k = 0
            while True:
                loader.sampler.set_epoch(epoch * 1000 + k)
                for u, info in loader:
                    yield u, info
                k += 1

        return batches()

    def _write_records(self) -> None:
        if not self.dist.main:
            return
        with open(self.out / "metrics.jsonl", "w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        if self.records and self.model_files:
            plot_curves(self.records, self.out / "curves.png", self.metric)
