"""The `cvapps` commands that learn beyond plain training: distill, self-train, al-simulate, adapt,
pretrain, train-bundle
(registered on cvapps.cli's app; thin, like every command: the work is in cvapps.distilling,
cvapps.selftraining, cvapps.adapting, cvapps.pretraining, cvapps.multitask and cvapps.api)."""

from __future__ import annotations

from typing import List, Optional

import typer

from ..errors import ConfigError
from ..options import split_list
from . import DATA, DEVICE, PRECISION, TRAIN, WORKERS, _api, _json, _print_train_result, _size, app, err

# how a landmark / pose teacher (distill) or the previous round's model (self-train) finds its instances
INSTANCES = {
    "boxes": typer.Option(None, help="landmarks / pose: boxes of the unlabelled images (COCO JSON) instead of "
                                     "the teacher's default detector"),
    "detector": typer.Option(None, help="landmarks / pose: the detector boxing the unlabelled images"),
    "whole_image": typer.Option(False, help="landmarks / pose: one instance per image, the whole frame"),
}


def _instances(boxes, detector, whole_image) -> dict:
    return {k: v for k, v in dict(boxes=boxes, detector=detector, whole_image=whole_image or None).items()
            if v is not None}


@app.command()
def distill(
    task: str = typer.Argument("classify", help="classify | detect | segment | landmarks | pose"),
    teacher: str = typer.Option(..., help="the teacher: model file or weights name"),
    data: List[str] = typer.Option(..., help="unlabelled images: folder, glob, .txt list (repeatable)"),
    labels: Optional[str] = typer.Option(None, help="labelled images too: class folders or a CSV (classify); "
                                                     "annotations with --label-images (detect, landmarks, pose); "
                                                     "a CamVid root, COCO JSON or mask folder (segment)"),
    label_images: Optional[str] = typer.Option(None, help="the image folder of --labels"),
    palette: Optional[str] = typer.Option(None, help="segment: colour table (JSON) of colour masks in --labels"),
    val_data: Optional[str] = TRAIN["val_data"][1],
    val_images: Optional[str] = TRAIN["val_images"][1],
    backbone: Optional[str] = TRAIN["backbone"][1], weights: Optional[str] = TRAIN["weights"][1],
    img_size: Optional[str] = TRAIN["img_size"][1],
    init: str = typer.Option("auto", help="teacher: start from the teacher's feature layers (its backbone); "
                                          "weights: from --weights; auto: teacher when the backbones agree"),
    temperature: float = typer.Option(4.0, help="classify: softening temperature T of both distributions"),
    alpha: float = typer.Option(0.5, help="classify: weight of the cross-entropy on labelled images (KL: 1 - alpha)"),
    conf: Optional[float] = typer.Option(None, help="detect: teacher score that makes a box (default: the "
                                                    "teacher's threshold; from half of it boxes are ignored); "
                                                    "segment: pixels less sure are ignored; landmarks / pose: "
                                                    "instances kept (default 0.3)"),
    classes: Optional[str] = typer.Option(None, help="detect: the student's classes, a subset of the teacher's "
                                                     "(comma-separated or a names file; VOC/COCO synonyms map)"),
    boxes: Optional[str] = INSTANCES["boxes"], detector: Optional[str] = INSTANCES["detector"],
    whole_image: bool = INSTANCES["whole_image"],
    epochs: Optional[int] = TRAIN["epochs"][1], batch_size: Optional[int] = TRAIN["batch_size"][1],
    lr: Optional[float] = TRAIN["lr"][1], freeze: Optional[str] = TRAIN["freeze"][1],
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="augment the student's view "
                                           "(default: on for detect; classify's targets stay those of the image)"),
    out_dir: str = typer.Option("runs/distill", "--out"), workers: Optional[int] = WORKERS["workers"][1],
    device: str = DEVICE["device"][1],
) -> None:
    """Train a student on unlabelled images from a teacher's outputs (knowledge distillation),
    with labelled images mixed in if given; writes OUT/ like `train`."""
    from ..distilling import distill as run

    opts = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, freeze=freeze, augment=augment,
                                  workers=workers).items() if v is not None}
    r = run(task, teacher, list(data), labels=labels, label_images=label_images, val=val_data, val_images=val_images,
            backbone=backbone, weights=weights, img_size=_size(img_size), init=init, temperature=temperature,
            alpha=alpha, conf=conf, classes=classes, palette=palette, out=out_dir, console=err, device=device,
            teacher_options=_instances(boxes, detector, whole_image), **opts)
    _print_train_result(r)


@app.command("self-train")
def self_train(
    task: str = typer.Argument("classify", help="classify | detect | segment | landmarks | pose"),
    data: Optional[str] = typer.Option(None, help="the labelled images: class folders or a CSV (classify); "
                                                  "annotations with --images (detect, landmarks, pose); a "
                                                  "CamVid-style root or COCO JSON (segment)"),
    images: Optional[str] = DATA["images"][1],
    masks: Optional[str] = typer.Option(None, help="segment: index-PNG masks beside --images (with --classes), "
                                                   "or colour PNGs (with --palette)"),
    classes: Optional[str] = typer.Option(None, help="segment: class names of --masks, comma-separated"),
    palette: Optional[str] = typer.Option(None, help="segment: colour table (JSON) of colour --masks"),
    pool: List[str] = typer.Option(..., help="unlabelled images: folder, glob, .txt list (repeatable)"),
    val_data: str = typer.Option(..., "--val-data", "--val", help="the validation set every round is scored on"),
    val_images: Optional[str] = TRAIN["val_images"][1],
    rounds: int = typer.Option(3, help="pseudo-labelling rounds after the labelled-only round 0"),
    threshold: float = typer.Option(0.9, help="keep pool predictions at least this confident (detect: box "
                                              "score; segment: pixel; landmarks / pose: instance)"),
    boxes: Optional[str] = INSTANCES["boxes"], detector: Optional[str] = INSTANCES["detector"],
    whole_image: bool = INSTANCES["whole_image"],
    backbone: Optional[str] = TRAIN["backbone"][1], weights: Optional[str] = TRAIN["weights"][1],
    img_size: Optional[str] = TRAIN["img_size"][1],
    epochs: Optional[int] = TRAIN["epochs"][1], batch_size: Optional[int] = TRAIN["batch_size"][1],
    lr: Optional[float] = TRAIN["lr"][1], freeze: Optional[str] = TRAIN["freeze"][1],
    out_dir: str = typer.Option("runs/self-train", "--out"), workers: Optional[int] = WORKERS["workers"][1],
    device: str = DEVICE["device"][1],
) -> None:
    """Self-training: train on the labelled images, pseudo-label the pool with the model's
    confident predictions, retrain on both; per round the validation metric (OUT/self_training.png)."""
    from ..selftraining import self_train as run

    if data is None and masks is None:
        raise ConfigError("self-train needs the labelled images: --data (or --images with --masks for segment)")
    opts = {k: v for k, v in dict(backbone=backbone, weights=weights, img_size=_size(img_size), epochs=epochs,
                                  batch_size=batch_size, lr=lr, freeze=freeze, workers=workers, masks=masks,
                                  classes=split_list(classes) if classes else None, palette=palette).items()
            if v is not None}
    print(_json(run(task, data, list(pool), val=val_data, val_images=val_images, images=images, rounds=rounds,
                    threshold=threshold, teacher_options=_instances(boxes, detector, whole_image), out=out_dir,
                    console=err, device=device, **opts)))


@app.command("al-simulate")
def al_simulate(
    task: str = typer.Argument("classify", help="classify | detect | segment | landmarks | pose"),
    data: str = typer.Option(..., help="classify: a root with train/ (and val/); segment: a root with train/ "
                                       "(and val/); others: annotations"),
    images: Optional[str] = DATA["images"][1], fmt: Optional[str] = DATA["fmt"][1],
    val_data: Optional[str] = TRAIN["val_data"][1], val_images: Optional[str] = TRAIN["val_images"][1],
    val_fraction: float = typer.Option(0.2, help="without a validation split: hold out every k-th image"),
    initial: int = typer.Option(100), step: int = typer.Option(100), rounds: int = typer.Option(5),
    strategies: Optional[str] = typer.Option(None, help="default classify: random,entropy,margin,bald,coreset; "
                                                        "others: random,least_confidence,coreset"),
    seeds: int = typer.Option(3), epochs: int = typer.Option(5, help="non-classify: head epochs per round"),
    batch_size: int = typer.Option(8), lr: float = typer.Option(2e-3),
    backbone: Optional[str] = TRAIN["backbone"][1], weights: Optional[str] = TRAIN["weights"][1],
    img_size: Optional[str] = TRAIN["img_size"][1], out_dir: str = typer.Option("runs/al-simulate", "--out"),
    workers: Optional[int] = WORKERS["workers"][1],
) -> None:
    """Replay active learning on a labelled set; writes curves.json and learning_curves.png."""
    opts = {k: v for k, v in dict(images=images, fmt=fmt, val=val_data, val_images=val_images).items() if v}
    c = _api().simulate(task, data, backbone=backbone, weights=weights, img_size=_size(img_size), initial=initial,
                        step=step, rounds=rounds, strategies=strategies.split(",") if strategies else None, seeds=seeds,
                        out=out_dir, epochs=epochs, batch_size=batch_size, lr=lr, console=err,
                        val_fraction=val_fraction, workers=workers, **opts)
    last = {k: round(v["mean"][-1], 4) for k, v in c["strategies"].items()}
    print(_json({"labels": c["labels"][-1], "metric": c["metric"], "final": last, "out_dir": out_dir}))


@app.command()
def adapt(
    data: List[str] = typer.Argument(..., help="unlabelled images of the new conditions: folders, globs, .txt "
                                              "lists"),
    model: str = typer.Option(..., help="the trained model: a model file or weights name"),
    method: str = typer.Option("adabn", help="adabn (re-estimate BatchNorm statistics) | self-train (fine-tune "
                                             "on its own confident labels) | both"),
    out_dir: str = typer.Option("runs/adapt", "--out"),
    val_data: Optional[str] = typer.Option(None, "--val-data", "--val", help="a labelled set scored before and "
                                                                            "after (never used to adapt)"),
    val_images: Optional[str] = TRAIN["val_images"][1],
    val_masks: Optional[str] = typer.Option(None, help="segment: masks of --val-images (index PNGs)"),
    threshold: Optional[float] = typer.Option(None, help="self-train: the confidence a label needs (default the "
                                                         "task's)"),
    epochs: Optional[int] = TRAIN["epochs"][1], batch_size: int = typer.Option(16),
    lr: Optional[float] = TRAIN["lr"][1], freeze: Optional[str] = TRAIN["freeze"][1],
    workers: Optional[int] = WORKERS["workers"][1], device: str = DEVICE["device"][1],
) -> None:
    """Adapt a trained model to new conditions (a camera at dusk, another site) from unlabelled
    images of them; OUT/best.safetensors is the adapted model, OUT/adapt.json the record."""
    from ..adapting import adapt as run

    val = {k: v for k, v in dict(images=val_images, masks=val_masks).items() if v}
    train = {k: v for k, v in dict(epochs=epochs, lr=lr, freeze=freeze, workers=workers).items() if v is not None}
    print(_json(run(model, list(data), out=out_dir, method=method, val=val_data, val_options=val,
                    threshold=threshold, batch_size=batch_size, device=device, console=err, **train)))


@app.command()
def pretrain(
    data: List[str] = typer.Option(..., help="unlabelled images: folder, glob, .txt list (repeatable)"),
    backbone: str = typer.Option("mobilenet_v2", help="the backbone to learn (cvapps backbones)"),
    method: str = typer.Option("simclr", help="simclr | byol | dino"),
    weights: Optional[str] = typer.Option(None, help="start from these weights (default: random)"),
    img_size: int = typer.Option(96, help="view size (pixels)"),
    epochs: int = typer.Option(20), batch_size: int = typer.Option(64),
    lr: Optional[float] = typer.Option(None, help="default 1e-3 x batch / 256"),
    out_dir: str = typer.Option("runs/pretrain", "--out"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint.pt"),
    overwrite: bool = typer.Option(False, help="replace a backbone already in --out"),
    seed: int = typer.Option(0), workers: Optional[int] = WORKERS["workers"][1], device: str = DEVICE["device"][1],
) -> None:
    """Self-supervised pretraining: learn a backbone from unlabelled images; OUT/backbone.safetensors
    is a backbone weights file for `cvapps train TASK --weights OUT/backbone.safetensors`."""
    from ..pretraining import pretrain as run

    print(_json(run(list(data), backbone=backbone, method=method, weights=weights, img_size=img_size, epochs=epochs,
                    batch_size=batch_size, lr=lr, out=out_dir, resume=resume, overwrite=overwrite, seed=seed,
                    workers=workers, device=device, console=err)))


@app.command("train-bundle")
def train_bundle(
    task: List[str] = typer.Option(..., help="TASK:DATA[,key=value,...] — one per task (repeatable), e.g. "
                                             "detect:voc.json,images=voc/,val_fraction=0.2 or "
                                             "segment:camvid/,classes=... (the task's data and head options)"),
    backbone: Optional[str] = TRAIN["backbone"][1], weights: Optional[str] = TRAIN["weights"][1],
    img_size: Optional[str] = TRAIN["img_size"][1],
    weighting: str = typer.Option("magnitude", help="magnitude (each task's loss over its running mean) | "
                                                    "uncertainty (learnt, Kendall et al.) | equal | one weight per "
                                                    "task, comma-separated"),
    out_dir: str = typer.Option("runs/bundle", "--out"),
    epochs: Optional[int] = TRAIN["epochs"][1], batch_size: Optional[int] = typer.Option(
        None, help="images per task in each step (default 8)"),
    lr: Optional[float] = TRAIN["lr"][1], freeze: Optional[str] = TRAIN["freeze"][1],
    backbone_lr_ratio: float = TRAIN["backbone_lr_ratio"][1], warmup_epochs: float = TRAIN["warmup_epochs"][1],
    ema: Optional[float] = TRAIN["ema"][1], augment: Optional[bool] = TRAIN["augment"][1],
    patience: Optional[int] = TRAIN["patience"][1], seed: int = TRAIN["seed"][1],
    resume: bool = TRAIN["resume"][1], overwrite: bool = TRAIN["overwrite"][1],
    workers: Optional[int] = WORKERS["workers"][1], device: str = DEVICE["device"][1],
    precision: str = PRECISION["precision"][1],
) -> None:
    """Multi-task training: one backbone, a head per --task, each from its own data; OUT/best/ is a
    bundle (one model file per task, one backbone pass in `cvapps predict --model F1 --model F2`)."""
    from ..multitask import train_bundle as run

    opts = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, freeze=freeze, ema=ema,
                                   augment=augment, patience=patience).items() if v is not None}
    result = run(list(task), backbone=backbone, weights=weights, img_size=_size(img_size), weighting=weighting,
                 out=out_dir, console=err, backbone_lr_ratio=backbone_lr_ratio, warmup_epochs=warmup_epochs,
                 seed=seed, resume=resume, overwrite=overwrite, workers=workers, device=device, precision=precision,
                 **opts)
    _print_train_result(result)
