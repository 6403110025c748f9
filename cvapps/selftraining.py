"""``cvapps self-train``: the model labels the unlabelled pool and is trained on its own
confident labels (self-training / pseudo-labelling), round after round.

Round 0 trains on the labelled data alone; each later round pseudo-labels the whole pool with
the previous round's best model (its task's pseudo-label writer: predictions at or above
``threshold``, cvapps.active.pseudo) and trains a fresh model on the labelled data + those
labels, from the same starting weights. Every round is scored on the same validation set;
OUT/self_training.jsonl and OUT/self_training.png keep the curve. Classification only so far
(the labelled set and the pseudo-labels combine as one CSV)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console

from .active.pseudo import write_pseudo_labels
from .api import load, train
from .data.classification import load_split
from .data.io import is_image
from .data.sources import expand_sources
from .errors import ConfigError
from .tasks import TASKS


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)


def plot_rounds(records: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [r["round"] for r in records]
    ax.plot(rounds, [r[metric] for r in records], "o-", label="self-training")
    ax.axhline(records[0][metric], color="grey", ls="--", label="labelled only (round 0)")
    for r in records[1:]:
        ax.annotate(f"+{r['pseudo']} pseudo", (r["round"], r[metric]), textcoords="offset points", xytext=(4, -12),
                    fontsize=8)
    ax.set_xlabel("round")
    ax.set_ylabel(f"val {metric}")
    ax.set_xticks(rounds)
    ax.set_xlim(-0.3, rounds[-1] + 0.7)  # room for the last annotation
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def self_train(task: str, data: str, pool, *, val: str, rounds: int = 3, threshold: float = 0.9,
               out: str = "runs/self-train", console: Console | None = None, **train_options) -> dict:
    """``data``: the labelled set (a classification root with class folders or a CSV);
    ``pool``: unlabelled images (folders, globs, lists); ``val``: the fixed validation set.
    ``train_options``: `train`'s options (weights, backbone, epochs, lr, freeze, ...), the same
    for every round. Returns {"rounds": [{"round", "labelled", "pseudo", metric, ...}], ...}."""
    console = console or Console(stderr=True, markup=False)
    if not TASKS.get(task).self_training:
        built = ", ".join(n for n in TASKS.names() if TASKS.get(n).self_training)
        raise ConfigError(f"self-training is built for {built} so far, not {task}",
                          hint="the pseudo-label writers exist for every task (cvapps select --pseudo-label); "
                               "combining them with your labels per round is planned (issue #16)")
    if not 0.0 < threshold <= 1.0 or rounds < 1:
        raise ConfigError(f"--threshold must be in (0, 1] and --rounds at least 1, got {threshold} / {rounds}")
    labelled = load_split(Path(data), None, "multiclass", None)
    # absolute paths: the round's CSV lives elsewhere than the caller's (relative paths resolve from a CSV's folder)
    rows = [(str(Path(p).resolve()), labelled.labels[t]) for p, t in zip(labelled.paths, labelled.targets)]
    mine = {p for p, _ in rows}
    pool_paths = [p.resolve() for p in expand_sources(pool if isinstance(pool, (list, tuple)) else [pool])
                  if isinstance(p, Path) and is_image(p) and str(p.resolve()) not in mine]
    if not pool_paths:
        raise ConfigError("the unlabelled pool has no images (other than the labelled ones)")
    out_dir = Path(out)
    records: list[dict] = []
    pseudo: list[tuple[str, str]] = []
    metric = None
    for r in range(rounds + 1):
        folder = out_dir / f"round{r}"
        _write_csv(folder / "train.csv", rows + pseudo)
        console.print(f"round {r}: {len(rows)} labelled + {len(pseudo)} pseudo-labelled images", highlight=False)
        res = train(task, train=str(folder / "train.csv"), val=val, out=str(folder),
                    console=Console(file=io.StringIO()), **train_options)
        best = load(folder / "best.safetensors")
        metric = metric or best.primary_metric()[0]
        rec = {"round": r, "labelled": len(rows), "pseudo": len(pseudo), metric: round(float(res["val"][metric]), 4)}
        records.append(rec)
        console.print(f"round {r}: val {metric} {rec[metric]}", highlight=False)
        if r == rounds:
            break
        info = write_pseudo_labels(best, pool_paths, threshold, out_dir / f"round{r + 1}")
        with open(info["file"], newline="") as f:
            pseudo = [(row["path"], row["label"]) for row in csv.DictReader(f)]
    (out_dir / "self_training.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_rounds(records, metric, out_dir / "self_training.png")
    return {"rounds": records, "metric": metric, "threshold": threshold, "pool": len(pool_paths),
            "out_dir": str(out_dir), "curve": str(out_dir / "self_training.png")}
