"""Active-learning loop simulator on a fully labelled classification set: hide the labels,
start from a random labelled subset, then each round select ``step`` more with a strategy,
reveal them, retrain with a fixed recipe and evaluate on a fixed validation set.

Recipe (fast enough to replay strategies x seeds x rounds on CPU): the backbone is frozen and
its pooled features are computed once; each round trains a fresh MLP head (D -> 256 -> C,
dropout 0.3, AdamW) on the labelled features. MC-dropout uses that head's dropout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .strategies import bald, entropy, hybrid, k_center_greedy, least_confidence, margin, rank

SIM_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "bald", "coreset", "hybrid")


def _head(d: int, c: int, hidden: int = 256, dropout: float = 0.3) -> nn.Module:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, c))


def train_head(x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int, steps: int = 300,
               batch: int = 128, lr: float = 2e-3) -> nn.Module:
    """x (N, D) standardised features, y (N,) -> a trained head (fixed number of steps)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = _head(x.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-3)
    head.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=g)
        loss = F.cross_entropy(head(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@torch.no_grad()
def _pick(strategy: str, head: nn.Module, x: torch.Tensor, pool: np.ndarray, labelled: np.ndarray, step: int,
          rng: np.random.Generator, mc_passes: int, k: int) -> np.ndarray:
    if strategy == "random":
        return rng.choice(pool, step, replace=False)
    if strategy == "coreset":
        sub = torch.cat([x[pool], x[labelled]])
        return pool[k_center_greedy(sub, step, list(range(len(pool), len(sub))))]
    probs = head(x[pool]).softmax(1)
    if strategy == "bald":
        head.train()
        mc = torch.stack([head(x[pool]).softmax(1) for _ in range(mc_passes)])
        head.eval()
        return pool[rank(bald(mc), step)]
    if strategy == "hybrid":
        sub = torch.cat([x[pool], x[labelled]])
        scores = torch.cat([entropy(probs), torch.full((len(labelled),), -1.0)])
        chosen = hybrid(scores, sub, step, k, labelled=list(range(len(pool), len(sub))))
        return pool[[c for c in chosen if c < len(pool)]]
    fn = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}[strategy]
    return pool[rank(fn(probs), step)]


def simulate_features(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, num_classes: int,
                      initial: int, step: int, rounds: int, strategies: list[str], seeds: int = 3,
                      mc_passes: int = 10, k: int = 5, progress=None) -> dict:
    """x (N, D) pool features with labels y (hidden until selected); xv, yv validation.
    Returns {"labels": [n per round], "strategies": {name: {"mean", "std", "runs"}}}."""
    unknown = [s for s in strategies if s not in SIM_STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}", hint=f"choose from {', '.join(SIM_STRATEGIES)}")
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = (x - mu) / sd, (xv - mu) / sd
    counts = [initial + r * step for r in range(rounds + 1)]
    out = {"labels": counts, "strategies": {}}
    for s in strategies:
        runs = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            labelled = rng.choice(len(x), initial, replace=False)  # same start for every strategy
            accs = []
            for r in range(rounds + 1):
                head = train_head(x[labelled], y[labelled], num_classes, seed * 100 + r)
                with torch.no_grad():
                    accs.append(float((head(xv).argmax(1) == yv).float().mean()))
                if r < rounds:
                    pool = np.setdiff1d(np.arange(len(x)), labelled)
                    labelled = np.concatenate([labelled, _pick(s, head, x, pool, labelled, step, rng, mc_passes, k)])
                if progress:
                    progress()
            runs.append(accs)
        out["strategies"][s] = summarise(runs)
    return out


def summarise(runs: list[list[float]]) -> dict:
    """Per-seed curves (seeds, rounds + 1) -> their mean and std per labelled count."""
    a = np.array(runs)
    return {"mean": a.mean(0).tolist(), "std": a.std(0).tolist(), "runs": runs}


def plot_curves(curves: dict, path: Path, metric: str = "val accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = curves["labels"]
    for name, c in curves["strategies"].items():
        m, s = np.array(c["mean"]), np.array(c["std"])
        ax.plot(n, m, "o-", label=name, lw=2.5 if name == "random" else 1.5, color="black" if name == "random" else None)
        ax.fill_between(n, m - s, m + s, alpha=0.15)
    ax.set_xlabel("labelled images")
    ax.set_ylabel(metric)
    ax.set_title(f"active learning, mean ± std over {len(next(iter(curves['strategies'].values()))['runs'])} seeds")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save(curves: dict, out: Path, metric: str = "val accuracy") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(curves, indent=1))
    plot_curves(curves, out / "learning_curves.png", f"val {metric}" if metric != "val accuracy" else metric)
