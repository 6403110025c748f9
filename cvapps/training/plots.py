"""Learning-curve PNG from metrics.jsonl records."""

from __future__ import annotations

from pathlib import Path


def plot_curves(records: list[dict], path: Path, metric: str, step: str = "epoch") -> None:
    """``step``: what a record is (the x axis), "epoch" or a federated "round"; a series skips
    the records without it (a round not evaluated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str):
        kept = [r for r in records if r.get(key) is not None]  # epoch 0 (the starting model) has no training loss
        return [r["epoch"] for r in kept], [r[key] for r in kept]

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(*series("train_loss"), "o-", label="train loss")
    if any("val_loss" in r for r in records):
        a.plot(*series("val_loss"), "o-", label="val loss")
    a.set_xlabel(step)
    a.set_title("loss")
    a.legend()
    if any(metric in r for r in records):
        b.plot(*series(metric), "o-", color="tab:green")
    b.set_xlabel(step)
    b.set_title(f"val {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
