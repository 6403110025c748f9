"""cvapps's side of a federated run: a Site trains the global model on its own data with the
Trainer for one round; the Coordinator (the server's) holds the global model, evaluates and
writes it after every round; partitions split one dataset over simulated clients."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from ..data.classification import ClassificationData
from ..data.dataset import TaskDataset
from ..errors import ConfigError
from ..modelfile import save_model
from ..tasks import TASKS
from ..tasks.base import model_class
from ..training.plots import plot_curves
from ..training.trainer import TrainConfig, Trainer, evaluate_dataset


def travelling(model: nn.Module) -> list[str]:
    """The tensors that travel, in state_dict order: every float one (weights, BatchNorm's
    affine parameters and running statistics); integer counters stay."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point()]


def norm_tensors(model: nn.Module) -> set[str]:
    """State names of the normalisation layers (FedBN keeps them local)."""
    return {f"{name}.{k}" if name else k for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) for k in m.state_dict()}


def get_arrays(model: nn.Module) -> list[np.ndarray]:
    state = model.state_dict()
    return [state[k].detach().float().cpu().numpy() for k in travelling(model)]


def set_arrays(model: nn.Module, arrays: list[np.ndarray], keep: set[str] = frozenset()) -> None:
    """Load travelling ``arrays`` into ``model``, except the names in ``keep``."""
    names, state = travelling(model), model.state_dict()
    if len(arrays) != len(names) or any(tuple(a.shape) != tuple(state[k].shape) for k, a in zip(names, arrays)):
        raise ConfigError(f"the server's weights ({len(arrays)} tensors) do not fit this model ({len(names)})",
                          hint="server and clients must run the same cvapps version and task")
    for k, a in zip(names, arrays):
        if k not in keep:
            if k.endswith("running_var"):  # DP noise or SecAgg+ quantisation may push a small variance below 0
                a = np.maximum(a, 0.0)
            state[k] = torch.from_numpy(np.ascontiguousarray(a)).to(state[k].dtype)
    model.load_state_dict(state)


def partition(data, clients: int, how: str, seed: int = 0, min_size: int = 2) -> list[list[int]]:
    """Index lists of ``data`` for ``clients`` simulated sites. ``iid``: a shuffled even split;
    ``dirichlet:A``: each class's images are spread over the sites in proportions drawn from
    Dir(A) (Hsu et al. 2019; small A: each site sees few classes), drawn again until every site
    has ``min_size`` images. Dirichlet needs one class per image (single-label classification)."""
    rng = np.random.default_rng(seed)
    n = len(data)
    if clients < 1 or clients > n:
        raise ConfigError(f"--clients {clients}: must be 1 to the {n} images")
    if how == "iid":
        return [sorted(p.tolist()) for p in np.array_split(rng.permutation(n), clients)]
    kind, _, alpha = how.partition(":")
    try:
        alpha = float(alpha)
    except ValueError:
        alpha = -1.0
    if kind != "dirichlet" or not alpha > 0:
        raise ConfigError(f"--partition {how!r}: expected iid or dirichlet:ALPHA (ALPHA > 0, e.g. dirichlet:0.3)")
    if not isinstance(data, ClassificationData) or data.kind != "multiclass":
        raise ConfigError("--partition dirichlet needs single-label classification data (one class per image)",
                          hint="use --partition iid")
    targets = np.asarray(data.targets)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(targets):
            idx = rng.permutation(np.flatnonzero(targets == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k] += chunk.tolist()
        if min(len(p) for p in parts) >= min_size:
            return [sorted(p) for p in parts]
    raise ConfigError(f"--partition {how}: could not give every one of {clients} sites {min_size} images",
                      hint="fewer --clients or a larger ALPHA")


def conform(data, labels: list[str], what: str):
    """``data`` over the model's ``labels``: a site may lack classes (a classifier's folders are
    matched by name); other tasks must carry the same class list."""
    if list(data.labels) == list(labels):
        return data
    missing = [c for c in data.labels if c not in labels]
    if missing:
        raise ConfigError(f"{what}: classes {missing[:5]} are not the federated model's {labels[:10]}")
    if isinstance(data, ClassificationData) and data.kind == "multiclass":
        targets = [labels.index(data.labels[t]) for t in data.targets]
        return ClassificationData(data.paths, targets, list(labels), data.kind, data.source, data.skipped)
    raise ConfigError(f"{what}: its classes {list(data.labels)[:10]} differ from the federated model's "
                      f"{list(labels)[:10]}", hint="give every site the same class list (--classes)")


class Chunk(TaskDataset):
    """The images ``index`` of a task dataset ``base`` (a round's share of a site's data): seeded
    augmentation, normalisation and tallies are the base's."""

    def __init__(self, base: TaskDataset, index: list[int]):
        super().__init__(base.data, base.skip_bad)
        self.base, self.index, self.counts = base, list(index), base.counts

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):  # i or (i, seed), as TaskDataset
        return self.base[(self.index[key[0]], key[1])] if isinstance(key, tuple) else self.base[self.index[key]]

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        return self.base.normalize(batch_u8)

    def __getattr__(self, name: str):  # the rest of the task dataset (on_worker, ...)
        if name == "base":  # unpickling in a worker, before __dict__ is back
            raise AttributeError(name)
        return getattr(self.base, name)


class Site:
    """One client: ``train`` (a task's data) trained with the Trainer each round, from the
    global weights, for the server's ``local_epochs``: whole epochs, or a share below 1 — the
    next part of a seeded pass over the site's images, so that R rounds of 0.2 are R/5 epochs
    with every image seen once per pass. ``local_optimizer`` "keep": AdamW's moments carry over
    from the site's last round (else they start again). ``options``: TrainConfig fields of this
    site (batch_size, workers, device, precision, freeze, ...); the server sets lr and epochs."""

    def __init__(self, task: str, train, out: Path, options: dict, console: Console, seed: int = 0,
                 skip_bad: bool = False):
        self.task, self.train, self.out = task, train, Path(out)
        self.options, self.console, self.seed, self.skip_bad = dict(options), console, seed, skip_bad
        self.model, self.make_train, self.pipelines = None, None, {}
        self.rounds, self.optimizer_state = 0, None
        self.order, self.passes = [], 0  # the current pass's images not yet trained on

    def _model(self, config: dict):
        if self.model is None:
            cfg = json.loads(config["model"])
            if cfg["task"] != self.task:
                raise ConfigError(f"the server trains a {cfg['task']} model, this client was started for {self.task}")
            self.model = model_class(cfg["task"]).from_config(cfg)
            labels = list(self.model.labels)
            self.train = conform(self.train, labels, "this site's data")
            self.make_train = TASKS.get(self.task).datasets(self.model, self.train, None, self.skip_bad)[0]
        return self.model

    def _round_data(self, share: float):
        """(make_train(augment) for this round, its epochs, its images)."""
        if share >= 1:
            return self.make_train, int(share), len(self.train)
        n = len(self.train)
        take = max(1, round(share * n))
        if len(self.order) < take:  # a new pass: the rest of the old one first, then a fresh order
            self.passes += 1
            self.order += np.random.default_rng([self.seed, self.passes]).permutation(n).tolist()
        chunk, self.order = self.order[:take], self.order[take:]

        def make(augment: bool):
            if augment not in self.pipelines:
                self.pipelines[augment] = self.make_train(augment)
            return Chunk(self.pipelines[augment], chunk)
        return make, 1, take

    def fit(self, arrays: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        model = self._model(config)
        local = config.get("norm") == "local" and self.rounds > 0  # FedBN: this site's BatchNorm stays
        set_arrays(model, arrays, norm_tensors(model) if local else set())
        penalty = None
        mu = float(config.get("proximal_mu", 0.0))
        if mu > 0:  # FedProx: mu/2 ||w - w_global||^2 keeps the local steps near the round's start
            ref = {k: p.detach().clone() for k, p in model.named_parameters()}

            def penalty(m):
                return mu / 2 * sum(((p - ref[k].to(p.device)) ** 2).sum()
                                    for k, p in m.named_parameters() if p.requires_grad)
        make, epochs, images = self._round_data(float(config["local_epochs"]))
        cfg = TrainConfig.parse({**self.options, "epochs": epochs, "lr": float(config["lr"]),
                                 "warmup_epochs": 0.0, "lr_schedule": "constant", "overwrite": True,
                                 "out_dir": str(self.out / "round"), "seed": self.seed * 1000 + int(config["round"])},
                                skip_bad=self.skip_bad)
        keep = config.get("local_optimizer", "reset") == "keep"
        t = time.perf_counter()
        trainer = Trainer(model, cfg, make, None, self.console, penalty=penalty, model_files=False,
                          optimizer_state=self.optimizer_state if keep else None)
        trainer.fit()
        self.optimizer_state = trainer.optimizer_state if keep else None
        self.rounds += 1
        model.cpu()
        save_model(model, self.out / "local.safetensors")  # this site's model (with its own BatchNorm under FedBN)
        loss = trainer.records[-1]["train_loss"]
        self.console.print(f"round {config['round']}: trained {images} of {len(self.train)} images for {epochs} "
                           f"epoch(s) in {time.perf_counter() - t:.1f} s, loss {loss:.4f}", highlight=False)
        return get_arrays(model), len(self.train), {"train_loss": loss}


class Coordinator:
    """The server's global model: its first weights, and after every round the aggregate —
    written to OUT/model.safetensors (an ordinary cvapps model file), evaluated on ``val`` (if
    given; every ``eval_every`` rounds and the last of ``rounds``), recorded in OUT/metrics.jsonl
    and OUT/curves.png."""

    def __init__(self, model, out: Path, val, console: Console, batch_size: int = 32, skip_bad: bool = False,
                 eval_every: int = 1, rounds: int = 0):
        """``val``: the task's labelled data (or None); its dataset is made once."""
        self.model, self.out, self.console, self.batch_size = model, Path(out), console, batch_size
        self.eval_every, self.rounds = eval_every, rounds
        self.val_ds = model.spec.eval_dataset(model, val, skip_bad) if val is not None else None
        self.records: list[dict] = []
        self.pending: dict = {}
        self.metric = model.primary_metric()[0]
        self.started = time.perf_counter()

    def aggregated(self, header: dict) -> None:
        self.pending = {"clients": header["clients"], "failures": header["failures"],
                        "examples": sum(header["examples"]), **(header.get("metrics") or {})}

    def global_round(self, rnd: int, arrays: list[np.ndarray]) -> tuple[float, dict]:
        set_arrays(self.model, arrays)
        save_model(self.model, self.out / "model.safetensors")
        rec = {"epoch": rnd, **self.pending, "time_s": round(time.perf_counter() - self.started, 1)}
        self.pending = {}
        loss, metrics = 0.0, {}
        if self.val_ds is not None and (rnd % self.eval_every == 0 or rnd == self.rounds):
            m = evaluate_dataset(self.model, self.val_ds, self.batch_size)
            metrics = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            loss = float(metrics.pop("loss", math.nan))
            rec.update({"val_loss": loss, **metrics})
        self.records.append(rec)
        with open(self.out / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)
        if self.val_ds is None or "val_loss" in rec or rnd == self.rounds:
            plot_curves(self.records, self.out / "curves.png", self.metric, "round")
        shown = " ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in rec.items() if k != "epoch")
        self.console.print(f"round {rnd}: {shown}", highlight=False)
        return loss if math.isfinite(loss) else 0.0, metrics
