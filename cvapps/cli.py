"""The `cvapps` command: parses arguments, calls cvapps.api, prints. No logic here."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Column, Table

from . import api, cli_keypoints
from .errors import CvappsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Computer-vision applications on shared pretrained backbones.")
weights_app = typer.Typer(no_args_is_help=True, help="Known pretrained weights.")
predict_app = typer.Typer(no_args_is_help=True, help="Run a model on images, folders, globs, lists or videos.")
train_app = typer.Typer(no_args_is_help=True, help="Fine-tune a model on your labelled data.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate a model; prints a JSON object of metrics last.")
app.add_typer(weights_app, name="weights")
app.add_typer(predict_app, name="predict")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")

out = Console()
err = Console(stderr=True)

Device = typer.Option("cpu", help="cpu, cuda, cuda:1 ...")
Precision = typer.Option("fp32", help="fp32 or bf16 (autocast; fast on CPUs with AMX/AVX-512 bf16)")
Backend = typer.Option("torch", help="torch, or onnxruntime for an exported --model FILE.onnx (extra [onnx])")


@app.command()
def backbones() -> None:
    """List backbones: feature strides, channels, parameters, available weights."""
    t = Table(*(Column(c, overflow="fold") for c in ("strides", "channels", "params", "weights", "pool idx")))
    t.columns.insert(0, Column("name", no_wrap=True))
    for r in api.backbone_table():
        t.add_row(r["name"], ",".join(map(str, r["strides"])), ",".join(map(str, r["channels"])),
                  f"{r['params'] / 1e6:.1f}M", ", ".join(r["weights"]) or "-", "yes" if r["pool_indices"] else "")
    out.print(t)


@weights_app.command("list")
def weights_list() -> None:
    """List known weights and where they come from."""
    t = Table(*(Column(c, overflow="fold") for c in ("backbone", "top-1", "sources")))
    t.columns.insert(0, Column("name", no_wrap=True))
    for r in api.weights_table():
        t.add_row(r["name"], r["backbone"], str(r["top1"] or "-"), "\n".join(r["sources"]))
    out.print(t)


@weights_app.command("pull")
def weights_pull(name: str, file: Optional[str] = typer.Option(None, help="a local copy of the file to verify and cache")) -> None:
    """Download (or find) weights NAME, verify its sha256, cache it; prints the path."""
    out.print(str(api.pull_weights(name, file)))


@predict_app.command("classify")
def predict_classify(
    sources: List[str] = typer.Argument(..., help="images, folders, globs, .txt lists of paths, videos, camera index"),
    model: Optional[str] = typer.Option(None, help="model file or weights name (default: mobilenet_v2.imagenet1k)"),
    out_dir: Optional[str] = typer.Option(None, "--out", help="write annotated images/videos here"),
    save_json: Optional[str] = typer.Option(None, help="write JSON Lines (one object per image/frame)"),
    top_k: int = typer.Option(5, help="labels per prediction"),
    batch_size: int = typer.Option(16),
    vid_stride: int = typer.Option(1, help="use every N-th video frame"),
    device: str = Device, precision: str = Precision, backend: str = Backend,
) -> None:
    """Classify images and videos; prints the top-1 label per image."""
    s = api.predict(model, sources, task="classify", out_dir=out_dir, save_json=save_json, top_k=top_k,
                    batch_size=batch_size, vid_stride=vid_stride, device=device, precision=precision, console=err,
                    backend=backend)
    if s.errors and not s.processed:
        raise s.errors[0]
    _print_summary(s, out_dir, save_json)


def _print_summary(s, out_dir, save_json) -> None:
    for src, text in s.summaries:
        print(f"{src}\t{text}")
    err.print(f"{s.processed} predicted, {len(s.failed)} skipped"
              + (f"; outputs in {out_dir}" if out_dir else "") + (f"; JSON Lines in {save_json}" if save_json else ""))


def _print_train_result(result: dict) -> None:
    """One JSON line: output folder, epochs run and the scalar validation metrics (rank 0
    only under torchrun, so a distributed run prints it once)."""
    if result["rank"] != 0:
        return
    val_metrics = result.get("val", {})
    summary = {k: v for k, v in val_metrics.items() if not isinstance(v, (list, dict))}
    print(json.dumps({"out_dir": result["out_dir"], "epochs_run": result["epochs_run"], **summary}))


@predict_app.command("detect")
def predict_detect(
    sources: List[str] = typer.Argument(..., help="images, folders, globs, .txt lists of paths, videos, camera index"),
    model: str = typer.Option(..., help="detection model file"),
    out_dir: Optional[str] = typer.Option(None, "--out", help="write images/videos with boxes drawn here"),
    save_json: Optional[str] = typer.Option(None, help="write JSON Lines (one object per image/frame)"),
    save_coco: Optional[str] = typer.Option(None, help="write one COCO results file for all still images"),
    coco_gt: Optional[str] = typer.Option(None, help="COCO ground truth whose image ids --save-coco should use"),
    conf: Optional[float] = typer.Option(None, help="score threshold (default: the model's, 0.25)"),
    iou: Optional[float] = typer.Option(None, help="NMS IoU threshold (default: the model's)"),
    max_det: Optional[int] = typer.Option(None, help="detections per image"),
    classes: Optional[str] = typer.Option(None, help="keep only these classes: names or indices, comma-separated"),
    batch_size: int = typer.Option(8), vid_stride: int = typer.Option(1, help="use every N-th video frame"),
    device: str = Device, precision: str = Precision, backend: str = Backend,
) -> None:
    """Detect objects; prints a line per image; boxes drawn with --out."""
    s = api.predict_detect(model, sources, out_dir=out_dir, save_json=save_json, save_coco=save_coco,
                           coco_gt=coco_gt, conf=conf, iou=iou, max_det=max_det, classes=classes,
                           batch_size=batch_size, vid_stride=vid_stride, device=device, precision=precision,
                           console=err, backend=backend)
    if s.errors and not s.processed:
        raise s.errors[0]
    _print_summary(s, out_dir, save_json)


@train_app.command("classify")
def train_classify(
    data: Optional[str] = typer.Option(None, help="root with train/ and val/ (class folders) or train.csv/val.csv"),
    train: Optional[str] = typer.Option(None, help="training class-folder tree or CSV"),
    val: Optional[str] = typer.Option(None, help="validation class-folder tree or CSV"),
    images: Optional[str] = typer.Option(None, help="folder CSV image paths are relative to"),
    kind: Optional[str] = typer.Option(None, help="multiclass | multilabel | regression | binned (default: inferred)"),
    bins: Optional[str] = typer.Option(None, help="binned regression: LOW,HIGH,N"),
    backbone: Optional[str] = typer.Option(None, help="default: the weights' backbone, else mobilenet_v2"),
    weights: Optional[str] = typer.Option(None, help="pretrained weights, e.g. mobilenet_v2.imagenet1k"),
    out_dir: str = typer.Option("runs/classify", "--out"),
    epochs: int = typer.Option(10), batch_size: int = typer.Option(32), lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(1e-4), warmup_epochs: float = typer.Option(1.0),
    freeze: Optional[str] = typer.Option(None, help="backbone | stage:N | regex over module names"),
    unfreeze_at: Optional[int] = typer.Option(None, help="gradual unfreeze: from this epoch, one stage per epoch"),
    backbone_lr_ratio: float = typer.Option(0.1, help="backbone lr = lr x ratio"),
    label_smoothing: Optional[float] = typer.Option(None),
    img_size: Optional[int] = typer.Option(None, help="input size (default: the weights')"),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="default: on unless --freeze backbone"),
    patience: Optional[int] = typer.Option(None, help="early stopping patience in epochs"),
    clip_grad: Optional[float] = typer.Option(5.0), seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint.pt"),
    skip_bad: bool = typer.Option(False, help="skip unreadable images (counted) instead of stopping"),
    device: str = Device, precision: str = Precision,
) -> None:
    """Fine-tune a classifier; writes best/last model files, checkpoint, metrics.jsonl, curves.png."""
    bins_list = [float(b) for b in bins.split(",")] if bins else None
    result = api.train("classify", data, train=train, val=val, images=images, kind=kind, bins=bins_list,
                       backbone=backbone, weights=weights, out=out_dir, label_smoothing=label_smoothing,
                       img_size=img_size, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       warmup_epochs=warmup_epochs, freeze=freeze, unfreeze_at=unfreeze_at,
                       backbone_lr_ratio=backbone_lr_ratio, augment=augment, patience=patience,
                       clip_grad=clip_grad, seed=seed, resume=resume, skip_bad=skip_bad, device=device,
                       precision=precision, console=err)
    _print_train_result(result)


@train_app.command("detect")
def train_detect(
    data: str = typer.Option(..., help="annotations: COCO JSON, a VOC XML folder or a YOLO txt folder"),
    images: str = typer.Option(..., help="image folder"),
    fmt: Optional[str] = typer.Option(None, "--format", help="coco | voc | yolo (default: from --data)"),
    val_data: Optional[str] = typer.Option(None, help="validation annotations (same format)"),
    val_images: Optional[str] = typer.Option(None, help="validation images (default: --images)"),
    val_fraction: float = typer.Option(0.0, help="without --val-data: hold out every k-th image (e.g. 0.2)"),
    backbone: Optional[str] = typer.Option(None, help="default: the weights' backbone, else mobilenet_v2"),
    weights: Optional[str] = typer.Option(None, help="pretrained backbone weights, e.g. mobilenet_v2.imagenet1k"),
    head: str = typer.Option("ssd", help="ssd (single-stage anchors) or fasterrcnn (two-stage, FPN)"),
    cls_loss: str = typer.Option("ce", help="ssd: ce (hard negative mining 3:1) or focal"),
    box_loss: str = typer.Option("smooth_l1", help="ssd: smooth_l1 or giou"),
    img_size: int = typer.Option(320), out_dir: str = typer.Option("runs/detect", "--out"),
    epochs: int = typer.Option(30), batch_size: int = typer.Option(16), lr: float = typer.Option(2e-3),
    weight_decay: float = typer.Option(1e-4), warmup_epochs: float = typer.Option(1.0),
    freeze: Optional[str] = typer.Option(None, help="backbone | stage:N | regex"),
    unfreeze_at: Optional[int] = typer.Option(None), backbone_lr_ratio: float = typer.Option(0.1),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment"),
    patience: Optional[int] = typer.Option(None), clip_grad: Optional[float] = typer.Option(10.0),
    seed: int = typer.Option(0), resume: bool = typer.Option(False),
    skip_bad: bool = typer.Option(False, help="skip bad boxes/images (counted) instead of stopping"),
    device: str = Device, precision: str = Precision,
) -> None:
    """Train a detector; writes best/last model files, checkpoint, metrics.jsonl, curves.png."""
    head_cfg = {"kind": head} if head == "fasterrcnn" else {"kind": head, "cls_loss": cls_loss, "box_loss": box_loss}
    result = api.train("detect", data, images=images, fmt=fmt, val=val_data, val_images=val_images,
                       val_fraction=val_fraction, backbone=backbone, weights=weights, head=head_cfg,
                       img_size=img_size, out=out_dir, epochs=epochs, batch_size=batch_size, lr=lr,
                       weight_decay=weight_decay, warmup_epochs=warmup_epochs, freeze=freeze,
                       unfreeze_at=unfreeze_at, backbone_lr_ratio=backbone_lr_ratio, augment=augment,
                       patience=patience, clip_grad=clip_grad, seed=seed, resume=resume, skip_bad=skip_bad,
                       device=device, precision=precision, console=err)
    _print_train_result(result)


@eval_app.command("detect")
def eval_detect(
    data: str = typer.Option(..., help="ground truth: COCO JSON (or VOC/YOLO folder with --format)"),
    model: Optional[str] = typer.Option(None, help="detection model file"),
    images: Optional[str] = typer.Option(None, help="image folder (with --model)"),
    results: Optional[str] = typer.Option(None, help="evaluate this COCO results file instead of a model"),
    fmt: Optional[str] = typer.Option(None, "--format", help="coco | voc | yolo"),
    metric: str = typer.Option("coco", help="coco (pycocotools COCOeval) or voc"),
    iou: float = typer.Option(0.5, help="voc: IoU threshold"),
    eleven_point: bool = typer.Option(False, help="voc: VOC2007 11-point interpolation (default all-point)"),
    save_results: Optional[str] = typer.Option(None, help="write the model's COCO results file"),
    batch_size: int = typer.Option(8), skip_bad: bool = typer.Option(False), precision: str = Precision,
) -> None:
    """Detection metrics (JSON, last line): AP, AP50, AP75, AP/AR by size, per_class; or VOC mAP."""
    if results:
        m = api.evaluate_results(results, data, metric, iou, eleven_point)
    elif model:
        m = api.evaluate(model, data, images=images, fmt=fmt, metric=metric, iou=iou, eleven_point=eleven_point,
                         save_results=save_results, batch_size=batch_size, skip_bad=skip_bad, precision=precision)
    else:
        raise CvappsError("pass --model (with --images) or --results", hint="see `cvapps eval detect --help`")
    print(json.dumps(m))


@predict_app.command("segment")
def predict_segment(
    sources: List[str] = typer.Argument(..., help="images, folders, globs, .txt lists of paths, videos"),
    model: str = typer.Option(..., help="segmentation model file"),
    out_dir: Optional[str] = typer.Option(None, "--out", help="overlays (with legend) + masks/<name>.png label maps"),
    save_json: Optional[str] = typer.Option(None, help="JSON Lines: mask path and per-class pixel counts"),
    batch_size: int = typer.Option(4), vid_stride: int = typer.Option(1),
    device: str = Device, precision: str = Precision, backend: str = Backend,
) -> None:
    """Segment images and videos at their full resolution."""
    s = api.predict(model, sources, task="segment", out_dir=out_dir, save_json=save_json, batch_size=batch_size,
                    vid_stride=vid_stride, device=device, precision=precision, console=err, backend=backend)
    if s.errors and not s.processed:
        raise s.errors[0]
    _print_summary(s, out_dir, save_json)


@train_app.command("segment")
def train_segment(
    data: Optional[str] = typer.Option(None, help="CamVid-style root (train/, trainannot/, val/, valannot/) or COCO JSON"),
    images: Optional[str] = typer.Option(None, help="image folder (with --masks, or with a COCO --data)"),
    masks: Optional[str] = typer.Option(None, help="mask folder: label PNGs (or colour PNGs with --palette)"),
    val_images: Optional[str] = typer.Option(None), val_masks: Optional[str] = typer.Option(None),
    classes: Optional[str] = typer.Option(None, help="class names, comma-separated (label-map masks)"),
    palette: Optional[str] = typer.Option(None, help='JSON {"classes": [{"name", "color": [r,g,b]}]}'),
    ignore_index: Optional[int] = typer.Option(None, help="void label (default: CamVid 11, else 255)"),
    head: str = typer.Option("fcn8s", help="fcn32s | fcn16s | fcn8s | segnet"),
    bilinear: bool = typer.Option(False, help="FCN: fixed bilinear upsampling instead of learned"),
    class_weights: str = typer.Option("none", help="none | median (median-frequency balancing, SegNet paper)"),
    dice: float = typer.Option(0.0, help="weight of an added soft Dice loss"),
    backbone: Optional[str] = typer.Option(None), weights: Optional[str] = typer.Option(None),
    img_size: str = typer.Option("512", help="S (square) or HxW, e.g. 360x480; images are letterboxed"),
    out_dir: str = typer.Option("runs/segment", "--out"),
    epochs: int = typer.Option(30), batch_size: int = typer.Option(8), lr: float = typer.Option(2e-3),
    weight_decay: float = typer.Option(1e-4), warmup_epochs: float = typer.Option(1.0),
    freeze: Optional[str] = typer.Option(None), unfreeze_at: Optional[int] = typer.Option(None),
    backbone_lr_ratio: float = typer.Option(0.1), augment: Optional[bool] = typer.Option(None, "--augment/--no-augment"),
    patience: Optional[int] = typer.Option(None), seed: int = typer.Option(0), resume: bool = typer.Option(False),
    skip_bad: bool = typer.Option(False), device: str = Device, precision: str = Precision,
) -> None:
    """Train FCN or SegNet; writes best/last model files, checkpoint, metrics.jsonl, curves.png."""
    h = {"kind": head, "masks": masks, "val_masks": val_masks, "palette": palette, "dice": dice,
         "classes": classes.split(",") if classes else None, "median_frequency": class_weights == "median"}
    if ignore_index is not None:
        h["ignore_index"] = ignore_index
    if head != "segnet":
        h["learned_upsampling"] = not bilinear
    result = api.train("segment", data, images=images,
                       val_images=val_images, backbone=backbone, weights=weights, head=h,
                       img_size=[int(v) for v in img_size.lower().split("x")] if "x" in img_size.lower() else int(img_size),
                       out=out_dir, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       warmup_epochs=warmup_epochs, freeze=freeze, unfreeze_at=unfreeze_at,
                       backbone_lr_ratio=backbone_lr_ratio, augment=augment, patience=patience, seed=seed,
                       resume=resume, skip_bad=skip_bad, device=device, precision=precision, console=err)
    _print_train_result(result)


@eval_app.command("segment")
def eval_segment(
    data: Optional[str] = typer.Option(None, help="CamVid-style root (uses --split) or COCO JSON"),
    model: Optional[str] = typer.Option(None, help="segmentation model file"),
    results: Optional[str] = typer.Option(None, help="folder of predicted label-map PNGs named like the images"),
    images: Optional[str] = typer.Option(None), masks: Optional[str] = typer.Option(None),
    split: str = typer.Option("val", help="val | test (CamVid layout)"),
    classes: Optional[str] = typer.Option(None, help="with --results: class names (default: CamVid's)"),
    ignore_index: int = typer.Option(11, help="with --results: void label"),
    batch_size: int = typer.Option(4), skip_bad: bool = typer.Option(False), precision: str = Precision,
) -> None:
    """mIoU, pixel_acc, mean_class_acc, per_class_iou (JSON, last line); void never counts."""
    if results:
        m = api.evaluate_segmentation_results(results, data, images, masks, split,
                                              classes.split(",") if classes else None, ignore_index)
    elif model:
        m = api.evaluate(model, data, images=images, masks=masks, split=split, batch_size=batch_size,
                         skip_bad=skip_bad, precision=precision)
    else:
        raise CvappsError("pass --model or --results", hint="see `cvapps eval segment --help`")
    print(json.dumps(m))


@eval_app.command("classify")
def eval_classify(
    model: str = typer.Option(..., help="model file or weights name"),
    data: str = typer.Option(..., help="folder of class folders, a root with val/, or a CSV"),
    images: Optional[str] = typer.Option(None, help="folder CSV image paths are relative to"),
    out_dir: Optional[str] = typer.Option(None, "--out", help="also write confusion.png here"),
    batch_size: int = typer.Option(32), skip_bad: bool = typer.Option(False), precision: str = Precision,
) -> None:
    """Evaluate a classifier: top1, top5, per_class, confusion_matrix, count (JSON, last line)."""
    m = api.evaluate(model, data, images=images, out=out_dir, batch_size=batch_size, skip_bad=skip_bad,
                     precision=precision, console=err)
    print(json.dumps(m))


@predict_app.command("multi", hidden=True)
def predict_multi(
    tasks: str = typer.Option(..., help="comma-separated tasks, e.g. detect,segment"),
    sources: List[str] = typer.Argument(..., help="images, folders, globs, .txt lists of paths, videos"),
    model: List[str] = typer.Option(..., help="one model file per task (repeat --model)"),
    out_dir: Optional[str] = typer.Option(None, "--out", help="write annotated images/videos here"),
    save_json: Optional[str] = typer.Option(None, help="JSON Lines: every task's output per image/frame"),
    batch_size: int = typer.Option(8), vid_stride: int = typer.Option(1),
    device: str = Device, precision: str = Precision,
) -> None:
    """`cvapps predict detect,segment SOURCES --model det --model seg`: several heads, one
    backbone pass per frame when their backbones (and weights) match."""
    s = api.predict_bundle(list(model), sources, tasks=tasks.split(","), out_dir=out_dir, save_json=save_json,
                           batch_size=batch_size, vid_stride=vid_stride, device=device, precision=precision,
                           console=err)
    if s.errors and not s.processed:
        raise s.errors[0]
    _print_summary(s, out_dir, save_json)


@app.command()
def export(
    model: str = typer.Option(..., help="model file, or a weights name such as mobilenet_v2.imagenet1k"),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript"),
    out_file: str = typer.Option(..., "--out", help="output file (.onnx / .pt)"),
    dynamic_batch: bool = typer.Option(False, help="a variable batch dimension (default: batch 1)"),
    img_size: Optional[str] = typer.Option(None, help="input size S or H,W (default: the model's)"),
) -> None:
    """Export the network up to its raw outputs; postprocessing (NMS, un-letterboxing, crop
    inverse) stays in Python. The config (labels, preprocessing) goes into the metadata."""
    size = [int(v) for v in img_size.split(",")] if img_size else None
    path = api.export(model, out_file, fmt, dynamic_batch, size[0] if size and len(size) == 1 else size)
    print(str(path))


@app.command()
def select(
    model: str = typer.Option(..., help="model file (any task) or weights name"),
    pool: List[str] = typer.Option(..., help="unlabelled images: folder, glob or .txt list (repeatable)"),
    budget: int = typer.Option(..., help="how many images to pick"),
    strategy: str = typer.Option("entropy", help="random | least_confidence | margin | entropy | bald | coreset | hybrid"),
    exclude: Optional[str] = typer.Option(None, help="text file of already-labelled paths to leave out"),
    out_dir: str = typer.Option("runs/select", "--out", help="scores.csv, selection.csv/.json, contact_sheet.png"),
    copy_to: Optional[str] = typer.Option(None, help="copy the picks here, prefixed with their rank"),
    link: bool = typer.Option(False, help="with --copy-to: symbolic links instead of copies"),
    batch_size: int = typer.Option(16), mc_passes: int = typer.Option(10, help="bald: MC-dropout passes"),
    k: int = typer.Option(5, help="hybrid: uncertainty pre-filter to k x budget"), seed: int = typer.Option(0),
    pseudo_label: Optional[float] = typer.Option(None, help="also write confident predictions (>= this) as labels"),
    device: str = Device,
) -> None:
    """Rank unlabelled images by how much labelling them should teach the model. Re-running
    with the same arguments skips images already scored."""
    sel = api.select(model, list(pool), budget, strategy, exclude=exclude, out=out_dir, copy_to=copy_to, link=link,
                     batch_size=batch_size, mc_passes=mc_passes, k=k, seed=seed, pseudo_label=pseudo_label,
                     device=device, console=err)
    for row in sel:
        print(f"{row['rank']}\t{row['score']:.4f}\t{row['path']}")
    err.print(f"selected {len(sel)}; see {out_dir}/selection.csv and {out_dir}/contact_sheet.png")


@app.command("al-simulate")
def al_simulate(
    task: str = typer.Argument("classify", help="classify | detect | segment | landmarks | pose"),
    data: str = typer.Option(..., help="classify: a root with train/ and val/; segment: a root with train/ "
                                       "(and val/, else --val-fraction holds out); others: annotations"),
    images: Optional[str] = typer.Option(None, help="image folder (detect, landmarks, pose)"),
    fmt: Optional[str] = typer.Option(None, "--format", help="annotation format, as for `cvapps train`"),
    val_data: Optional[str] = typer.Option(None, help="validation annotations (default: hold out --val-fraction)"),
    val_images: Optional[str] = typer.Option(None), val_fraction: float = typer.Option(0.2),
    initial: int = typer.Option(100), step: int = typer.Option(100), rounds: int = typer.Option(5),
    strategies: Optional[str] = typer.Option(None, help="default classify: random,entropy,margin,bald,coreset; "
                                                        "others: random,least_confidence,coreset"),
    seeds: int = typer.Option(3), epochs: int = typer.Option(5, help="non-classify: head epochs per round"),
    batch_size: int = typer.Option(8), lr: float = typer.Option(2e-3),
    backbone: Optional[str] = typer.Option(None), weights: Optional[str] = typer.Option(None),
    img_size: Optional[int] = typer.Option(None), out_dir: str = typer.Option("runs/al-simulate", "--out"),
) -> None:
    """Replay active learning on a labelled set; writes curves.json and learning_curves.png."""
    c = api.simulate(task, data, backbone=backbone, weights=weights, img_size=img_size, initial=initial, step=step,
                     rounds=rounds, strategies=strategies.split(",") if strategies else None, seeds=seeds,
                     out=out_dir, images=images, fmt=fmt, val=val_data, val_images=val_images,
                     val_fraction=val_fraction, epochs=epochs, batch_size=batch_size, lr=lr, console=err)
    last = {k: round(v["mean"][-1], 4) for k, v in c["strategies"].items()}
    print(json.dumps({"labels": c["labels"][-1], "metric": c["metric"], "final": last, "out_dir": out_dir}))


cli_keypoints.register(predict_app, train_app, eval_app, Device, Precision, Backend, err, _print_summary,
                       _print_train_result)


def _sources_as_arguments(argv: list[str]) -> list[str]:
    """``predict ... --source 0`` (the Ultralytics spelling) = ``predict ... 0``: every predict
    command takes its sources as arguments, so --source/-s values are moved there."""
    out, moved, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--source", "-s") and i + 1 < len(argv):
            moved.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--source="):
            moved.append(a.split("=", 1)[1])
        else:
            out.append(a)
        i += 1
    if not moved:
        return out
    return out + moved if "--" in out else out + ["--", *moved]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    if len(argv) > 1 and argv[0] == "predict" and "," in argv[1]:  # predict detect,segment ... (a bundle)
        argv = ["predict", "multi", "--tasks", argv[1], *argv[2:]]
    if argv[:1] == ["predict"]:
        argv = _sources_as_arguments(argv)
    try:
        app(args=argv, prog_name="cvapps")
    except CvappsError as e:
        if debug:
            raise
        err.print(f"[red]error:[/red] {e.one_line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
