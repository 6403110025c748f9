"""`cvapps predict|train|eval landmarks|pose`: the two top-down keypoint tasks share their
commands (registered once per task onto the apps of cvapps.cli)."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from . import api
from .errors import CvappsError

_BOXES = {"landmarks": ("--faces", "COCO-style face boxes (dataset JSON or results list)",
                        "OpenCV's Haar frontal-face cascade"),
          "pose": ("--boxes", "COCO-style person boxes (dataset JSON or detection results list)", "the whole image")}


def register(predict_app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer, device_opt, precision_opt,
             backend_opt, err, print_summary, print_train_result) -> None:
    for task in ("landmarks", "pose"):
        _register_task(task, predict_app, train_app, eval_app, (device_opt, precision_opt, backend_opt), err,
                       print_summary, print_train_result)


def _register_task(task, predict_app, train_app, eval_app, opts, err, print_summary, print_train_result) -> None:
    device_opt, precision_opt, backend_opt = opts
    flag, box_help, default_src = _BOXES[task]
    what = "facial landmarks" if task == "landmarks" else "human pose"

    def predict(
        sources: List[str] = typer.Argument(..., help="images, folders, globs, .txt lists, videos, camera index"),
        model: str = typer.Option(..., help=f"{task} model file"),
        boxes: Optional[str] = typer.Option(None, flag, help=box_help),
        detector: Optional[str] = typer.Option(None, help="a cvapps detection model file for the boxes"),
        detector_label: Optional[str] = typer.Option(None, help="detector class to keep (default face / person)"),
        box_conf: float = typer.Option(0.0, help="minimum box score (file or detector)"),
        flip_test: bool = typer.Option(False, help="average with the mirrored crop (left/right swapped)"),
        out_dir: Optional[str] = typer.Option(None, "--out", help="write annotated images/videos here"),
        save_json: Optional[str] = typer.Option(None, help="JSON Lines: COCO keypoint-results style per image"),
        batch_size: int = typer.Option(8), vid_stride: int = typer.Option(1, help="use every N-th video frame"),
        device: str = device_opt, precision: str = precision_opt, backend: str = backend_opt,
    ) -> None:
        s = api.predict_keypoints(model, sources, boxes=boxes, detector=detector, detector_label=detector_label,
                                  box_conf=box_conf, flip_test=flip_test, out_dir=out_dir, save_json=save_json,
                                  batch_size=batch_size, vid_stride=vid_stride, device=device, precision=precision,
                                  console=err, backend=backend)
        if s.errors and not s.processed:
            raise s.errors[0]
        print_summary(s, out_dir, save_json)

    predict.__doc__ = (f"Predict {what} on full images and videos; boxes from {flag}, --detector, or by default "
                       f"{default_src}. Images without any box are reported, not errors.")
    predict_app.command(task)(predict)

    def train(
        data: str = typer.Option(..., help="COCO keypoints JSON, a folder of images + .pts files, or a CSV"),
        images: Optional[str] = typer.Option(None, help="image folder (COCO; CSV paths are relative to it)"),
        fmt: Optional[str] = typer.Option(None, "--format", help="coco | pts | csv (default: from --data)"),
        val_data: Optional[str] = typer.Option(None, help="validation annotations (same format)"),
        val_images: Optional[str] = typer.Option(None, help="validation images (default: --images)"),
        val_fraction: float = typer.Option(0.0, help="without --val-data: hold out every k-th image"),
        backbone: Optional[str] = typer.Option(None, help="default: the weights' backbone, else mobilenet_v2"),
        weights: Optional[str] = typer.Option(None, help="pretrained backbone weights, e.g. mobilenet_v2.imagenet1k"),
        head: str = typer.Option("heatmap", help="heatmap (deconvolution, stride 4) or regression (direct)"),
        loss: Optional[str] = typer.Option(None, help="regression: wing | l1 | l2 (default wing faces, l1 pose)"),
        cascade: bool = typer.Option(False, help="add a stage refining each point from a patch around it"),
        sigma: float = typer.Option(2.0, help="heatmap Gaussian sigma (heatmap pixels)"),
        img_size: Optional[str] = typer.Option(None, help="crop size H,W (default 256,256 faces; 256,192 pose)"),
        out_dir: str = typer.Option(f"runs/{task}", "--out"),
        epochs: int = typer.Option(30), batch_size: int = typer.Option(16), lr: float = typer.Option(2e-3),
        weight_decay: float = typer.Option(1e-4), warmup_epochs: float = typer.Option(1.0),
        freeze: Optional[str] = typer.Option(None, help="backbone | stage:N | regex"),
        unfreeze_at: Optional[int] = typer.Option(None), backbone_lr_ratio: float = typer.Option(0.1),
        augment: Optional[bool] = typer.Option(None, "--augment/--no-augment"),
        patience: Optional[int] = typer.Option(None), clip_grad: Optional[float] = typer.Option(5.0),
        seed: int = typer.Option(0), resume: bool = typer.Option(False),
        skip_bad: bool = typer.Option(False, help="skip bad records/images (counted) instead of stopping"),
        device: str = device_opt, precision: str = precision_opt,
    ) -> None:
        size = [int(v) for v in img_size.split(",")] if img_size else None
        if size and len(size) == 1:
            size = size * 2
        h = {"kind": head, "loss": loss, "cascade": cascade, "sigma": sigma}
        result = api.train(task, data, images=images, fmt=fmt, val=val_data, val_images=val_images,
                           val_fraction=val_fraction, backbone=backbone, weights=weights, head=h, img_size=size,
                           out=out_dir, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                           warmup_epochs=warmup_epochs, freeze=freeze, unfreeze_at=unfreeze_at,
                           backbone_lr_ratio=backbone_lr_ratio, augment=augment, patience=patience,
                           clip_grad=clip_grad, seed=seed, resume=resume, skip_bad=skip_bad, device=device,
                           precision=precision, console=err)
        print_train_result(result)

    train.__doc__ = f"Train a {what} model; writes best/last model files, checkpoint, metrics.jsonl, curves.png."
    train_app.command(task)(train)

    def evaluate(
        data: str = typer.Option(..., help="ground truth: COCO keypoints JSON, .pts folder or CSV"),
        model: Optional[str] = typer.Option(None, help=f"{task} model file (crops the ground-truth boxes)"),
        images: Optional[str] = typer.Option(None, help="image folder"),
        fmt: Optional[str] = typer.Option(None, "--format", help="coco | pts | csv"),
        results: Optional[str] = typer.Option(None, help="evaluate a results file instead: COCO keypoint results "
                                                         "JSON or predict's JSON Lines"),
        batch_size: int = typer.Option(16), skip_bad: bool = typer.Option(False), precision: str = precision_opt,
    ) -> None:
        if results:
            m = api.evaluate_keypoint_results(results, data, images, fmt, task)
        elif model:
            m = api.evaluate(model, data, images=images, fmt=fmt, batch_size=batch_size, skip_bad=skip_bad,
                             precision=precision)
        else:
            raise CvappsError("pass --model (with --images) or --results", hint=f"see `cvapps eval {task} --help`")
        print(json.dumps(m))

    evaluate.__doc__ = ("Landmark metrics (JSON, last line): NME, FR@0.08, FR@0.10, AUC@0.10, count."
                        if task == "landmarks" else
                        "Pose metrics (JSON, last line): COCO OKS AP, AP50, AP75, APmedium, APlarge, AR..., PCK.")
    eval_app.command(task)(evaluate)
