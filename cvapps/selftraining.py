"""``cvapps self-train``: the model labels the unlabelled pool and is trained on its own
confident labels (self-training / pseudo-labelling), round after round.

Round 0 trains on the labelled data alone; each later round labels the whole pool with the
previous round's best model and trains a fresh model, from the same starting weights, on the
labelled data + those labels. Every round's best model is scored on the same validation set;
OUT/self_training.jsonl and OUT/self_training.png keep the curve.

How pool and labels combine is the task's: classification writes the confident predictions
(max probability >= ``threshold``) as CSV rows beside the labelled ones (its pseudo-label
writer, cvapps.active.pseudo); the other tasks train through their distillation data
(TaskSpec.distill_data) with the previous round's model as the teacher and ``threshold`` as
its confidence: detection boxes scored >= threshold (soft class targets, a half-threshold
band ignored), segmentation pixels, landmark / pose instances — labelled images keep their
own labels."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console

from .active.pseudo import write_pseudo_labels
from .api import check_outputs, load, train
from .data.classification import load_split
from .data.sources import image_files
from .distilling import distill
from .errors import ConfigError
from .options import DataOptions, split_options
from .progress import note
from .tasks import TASKS
from .training.trainer import TrainConfig


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


def _split(options: dict, spec) -> tuple[dict, dict]:
    """`train`-style keyword options -> (the student's model arguments for distill, TrainConfig fields)."""
    model = {k: options.pop(k) for k in ("backbone", "weights", "img_size") if k in options}
    head = dict(options.pop("head", None) or {})
    if "kind" in options:
        head["kind"] = options.pop("kind")
    group = spec.model.head_options(head.get("kind") or spec.default_kind)
    head.update({k: options.pop(k) for k in list(options) if k in group.names()})
    for k in [k for k in options if k in DataOptions.names()]:  # the labelled data's reading: distill reads it itself
        options.pop(k)
    cfg, = split_options(options, TrainConfig)
    return {**model, "head": head}, cfg


def self_train(task: str, data: str | None, pool, *, val: str, rounds: int = 3, threshold: float = 0.9,
               out: str = "runs/self-train", images: str | None = None, val_images: str | None = None,
               teacher_options: dict | None = None, console: Console | None = None, **train_options) -> dict:
    """``data``: the labelled set as `train` takes it (classification: class folders or a CSV;
    detection / landmarks / pose: annotations with ``images``; segmentation: a CamVid-style
    root, a COCO JSON with ``images``, or ``images`` with ``masks`` (a folder of index PNGs, or
    colour PNGs with ``palette``; ``data`` None)); ``pool``: unlabelled
    images (folders, globs, lists); ``val`` (+ ``val_images``): the fixed validation set.
    ``train_options``: `train`'s options (weights, backbone, img_size, epochs, lr, freeze, head
    options, ...), the same for every round. ``teacher_options``: landmarks / pose — how the
    previous round's model finds the pool's instances (``boxes`` a COCO file, ``detector``,
    ``whole_image``; default: its default detector). Returns {"rounds": [{"round", "labelled",
    "pseudo", metric, ...}], ...}; "pseudo": the pool images trained on."""
    console = console or Console(stderr=True, markup=False)
    spec = TASKS.get(task)
    if not (spec.self_training or spec.distillation):
        built = ", ".join(n for n in TASKS.names() if TASKS.get(n).self_training or TASKS.get(n).distillation)
        raise ConfigError(f"self-training is built for {built}, not {task}")
    if not 0.0 < threshold <= 1.0 or rounds < 1:
        raise ConfigError(f"--threshold must be in (0, 1] and --rounds at least 1, got {threshold} / {rounds}")
    check_outputs({"--out": out})
    val_images = val_images or images  # as in `train`
    masks = train_options.pop("masks", None)  # segmentation: a mask folder beside ``images``
    data_kw = {k: v for k, v in (("images", images), ("masks", masks)) if v}
    if spec.self_training:  # labels and pseudo-labels are rows of one CSV
        labelled = load_split(Path(data), None, "multiclass", None, train_options.get("allow_outside", False))
        # absolute paths: the round's CSV lives elsewhere than the caller's (relative paths resolve from a CSV's folder)
        rows = [(str(Path(p).resolve()), labelled.labels[t]) for p, t in zip(labelled.paths, labelled.targets)]
        mine = {p for p, _ in rows}
        n_labelled = len(rows)
    else:
        reading = {k: v for k, v in train_options.items() if k in DataOptions.names()}
        tr, va = spec.read_train(DataOptions.parse({**reading, **data_kw, "val_fraction": 0}, data=data),
                                 train_options.get("kind"))
        mine = {str(Path(p).resolve()) for p in tr.paths + (va.paths if va else [])}
        n_labelled = len(tr)  # a root's val/ split is kept out of the pool but not counted as labelled
        student, cfg = _split(dict(train_options), spec)
    pool_paths = [p.resolve() for p in image_files(pool) if str(p.resolve()) not in mine]
    if not pool_paths:
        raise ConfigError("the unlabelled pool has no images (other than the labelled ones)")
    out_dir = Path(out)
    records: list[dict] = []
    pseudo: list[tuple[str, str]] = []
    metric = None
    quiet = Console(file=io.StringIO())
    for r in range(rounds + 1):
        folder = out_dir / f"round{r}"
        if spec.self_training:
            _write_csv(folder / "train.csv", rows + pseudo)
            console.print(f"round {r}: {n_labelled} labelled + {len(pseudo)} pseudo-labelled images", highlight=False)
            res = train(task, train=str(folder / "train.csv"), val=val, out=str(folder), console=quiet,
                        **{**train_options, "allow_outside": True})  # our own CSV: absolute image paths
            n_pseudo = len(pseudo)
        elif r == 0:
            console.print(f"round 0: {n_labelled} labelled images", highlight=False)
            res = train(task, data, val=val, val_images=val_images, out=str(folder), console=quiet, **data_kw,
                        **train_options)
            n_pseudo = 0
        else:  # the previous round's model teaches: its confident outputs on the pool + the labels
            console.print(f"round {r}: {n_labelled} labelled + {len(pool_paths)} pool images labelled by round "
                          f"{r - 1}'s model", highlight=False)
            res = distill(task, out_dir / f"round{r - 1}" / "best.safetensors", [str(p) for p in pool_paths],
                          labels=masks or data, label_images=images, val=val, val_images=val_images, init="weights",
                          conf=threshold, palette=train_options.get("palette"), teacher_options=teacher_options,
                          out=str(folder), console=quiet, evaluate_teacher=False,
                          **student, **cfg)
            n_pseudo = len(pool_paths)
        best = load(folder / "best.safetensors")
        metric = metric or best.primary_metric()[0]
        rec = {"round": r, "labelled": n_labelled, "pseudo": n_pseudo, metric: round(float(res["val"][metric]), 4)}
        records.append(rec)
        console.print(f"round {r}: val {metric} {rec[metric]}", highlight=False)
        if r == rounds:
            break
        if spec.self_training:
            info = write_pseudo_labels(best, pool_paths, threshold, out_dir / f"round{r + 1}")
            with open(info["file"], newline="") as f:
                pseudo = [(str(Path(info["images"]) / row["path"]), row["label"]) for row in csv.DictReader(f)]
            if not pseudo:
                note(console, "note:", f"round {r}'s model is not {threshold} sure of any of the {len(pool_paths)} "
                                       f"pool images: round {r + 1} trains on the labels alone (lower --threshold "
                                       "to use the pool)", style="yellow")
    (out_dir / "self_training.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_rounds(records, metric, out_dir / "self_training.png")
    return {"rounds": records, "metric": metric, "threshold": threshold, "pool": len(pool_paths),
            "out_dir": str(out_dir), "curve": str(out_dir / "self_training.png")}
