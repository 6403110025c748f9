"""Learning-curve PNG from metrics.jsonl records."""

from __future__ import annotations

from pathlib import Path


def plot_curves(records: list[dict], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in records]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    trained = [r for r in records if "train_loss" in r]  # epoch 0 (the starting model) has no training loss
    a.plot([r["epoch"] for r in trained], [r["train_loss"] for r in trained], "o-", label="train loss")
    if any("val_loss" in r for r in records):
        a.plot(ep, [r.get("val_loss") for r in records], "o-", label="val loss")
    a.set_xlabel("epoch")
    a.set_title("loss")
    a.legend()
    if any(metric in r for r in records):
        b.plot(ep, [r.get(metric) for r in records], "o-", color="tab:green")
    b.set_xlabel("epoch")
    b.set_title(f"val {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
