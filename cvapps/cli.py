"""The `cvapps` command: parses arguments, calls cvapps.api, prints. No logic here.

Options shared by several commands are defined once (the groups below) with one default;
every command takes ``--img-size`` as S, HxW or H,W. cvapps.api (and with it torch) is
imported when a command runs, so ``cvapps --help`` stays fast."""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from .errors import CvappsError
from .options import parse_size

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Computer-vision applications on shared pretrained backbones.")
weights_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Known pretrained weights.")
predict_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="Run a model on images, folders, globs, lists or videos.")
train_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Fine-tune a model on your labelled data.")
eval_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Evaluate a model or a results file; prints a JSON object of metrics last.")
app.add_typer(weights_app, name="weights")
app.add_typer(predict_app, name="predict")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")

out = Console()
err = Console(stderr=True)
TASK_NAMES = ("classify", "detect", "segment", "landmarks", "pose")


def _api():
    """cvapps.api, imported on first use: it loads torch, which `--help` does not need."""
    from . import api

    return api


def _json(obj) -> str:
    from .data.io import json_dumps  # light: no torch

    return json_dumps(obj)


# option groups -------------------------------------------------------------------------
def Opt(default: Any, *names: str, help: str = "") -> Any:
    return typer.Option(default, *names, help=help)


DEVICE = {"device": (str, Opt("cpu", help="cpu, cuda, cuda:1 ..."))}
PRECISION = {"precision": (str, Opt("fp32", help="fp32 or bf16 (autocast; fast on CPUs with AMX/AVX-512 bf16)"))}
PREDICT = {
    "sources": (List[str], typer.Argument(..., help="images, folders, globs, .txt lists of paths, videos, "
                                                    "camera index")),
    "model": (Optional[str], Opt(None, help="model file, exported .onnx or weights name (default: the task's "
                                           "pretrained model, where there is one)")),
    "out_dir": (Optional[str], Opt(None, "--out", help="write annotated images / videos here")),
    "save_json": (Optional[str], Opt(None, help="write JSON Lines (one object per image / frame)")),
    "batch_size": (int, Opt(8, help="images per forward pass")),
    "vid_stride": (int, Opt(1, help="use every N-th video frame")),
    **DEVICE, **PRECISION,
    "backend": (str, Opt("torch", help="torch, or onnxruntime for an exported --model FILE.onnx (extra: onnx)")),
}
DATA = {
    "data": (Optional[str], Opt(None, help="annotations, or a dataset root")),
    "images": (Optional[str], Opt(None, help="image folder")),
    "fmt": (Optional[str], Opt(None, "--format", help="annotation format (default: from --data)")),
    "skip_bad": (bool, Opt(False, help="skip bad images / records (counted) instead of stopping")),
}
TRAIN = {
    **DATA,
    "val_data": (Optional[str], Opt(None, "--val-data", "--val", help="validation annotations / folder / CSV")),
    "val_images": (Optional[str], Opt(None, help="validation images (default: --images)")),
    "val_fraction": (float, Opt(0.0, help="without --val-data: hold out every k-th image (e.g. 0.2)")),
    "backbone": (Optional[str], Opt(None, help="default: the weights' backbone, else mobilenet_v2")),
    "weights": (Optional[str], Opt(None, help="pretrained weights, e.g. mobilenet_v2.imagenet1k "
                                              "(default: random init, said when training starts)")),
    "img_size": (Optional[str], Opt(None, help="input size: S, HxW or H,W (default: the task's)")),
    "out_dir": (Optional[str], Opt(None, "--out", help="run folder (default: runs/TASK)")),
    "overwrite": (bool, Opt(False, help="train into an --out that already holds a trained model")),
    "epochs": (Optional[int], Opt(None, help="default: the task's recipe")),
    "batch_size": (Optional[int], Opt(None, help="global batch (default: the task's recipe)")),
    "lr": (Optional[float], Opt(None, help="head learning rate (default: the task's recipe)")),
    "weight_decay": (float, Opt(1e-4)), "warmup_epochs": (float, Opt(1.0)),
    "freeze": (Optional[str], Opt(None, help="backbone | stage:N | regex over module names")),
    "unfreeze_at": (Optional[int], Opt(None, help="gradual unfreeze: from this epoch, one stage per epoch")),
    "backbone_lr_ratio": (float, Opt(0.1, help="backbone lr = lr x ratio")),
    "augment": (Optional[bool], Opt(None, "--augment/--no-augment", help="default: on unless --freeze backbone")),
    "patience": (Optional[int], Opt(None, help="early stopping patience in epochs")),
    "clip_grad": (Optional[float], Opt(5.0, help="gradient norm clip (0: off)")),
    "time_limit": (Optional[float], Opt(None, help="stop after the epoch that crosses this many minutes")),
    "seed": (int, Opt(0)), "resume": (bool, Opt(False, help="continue from OUT/checkpoint.pt")),
    **DEVICE, **PRECISION,
}
EVAL = {
    **DATA,
    "model": (Optional[str], Opt(None, help="model file or weights name")),
    "results": (Optional[str], Opt(None, help="evaluate this results file / folder instead of a model")),
    "batch_size": (int, Opt(16)), **DEVICE, **PRECISION,
}
BOXES = {"boxes": (Optional[str], Opt(None, "--boxes", "--faces", help="COCO-style boxes (dataset JSON or "
                                                                       "detection results list)")),
         "detector": (Optional[str], Opt(None, help="a cvapps detection model file for the boxes")),
         "detector_label": (Optional[str], Opt(None, help="detector class to keep (default face / person)")),
         "box_conf": (float, Opt(0.0, help="minimum box score (file or detector)"))}
KEYPOINT_HEAD = {"head": (str, Opt("heatmap", help="heatmap (deconvolution, stride 4) or regression (direct)")),
                 "loss": (Optional[str], Opt(None, help="regression: wing | l1 | l2 (default wing faces, l1 pose)")),
                 "cascade": (bool, Opt(False, help="add a stage refining each point from a patch around it")),
                 "sigma": (float, Opt(2.0, help="heatmap Gaussian sigma (heatmap pixels)"))}
# per task: (predict extras, train extras, eval extras)
EXTRA = {
    "classify": (
        {"top_k": (int, Opt(5, help="labels per prediction"))},
        {"train": (Optional[str], Opt(None, help="training class-folder tree or CSV")),
         "kind": (Optional[str], Opt(None, help="multiclass | multilabel | regression | binned (default: inferred)")),
         "bins": (Optional[str], Opt(None, help="binned regression: LOW,HIGH,N")),
         "label_smoothing": (Optional[float], Opt(None))},
        {"out_dir": (Optional[str], Opt(None, "--out", help="also write confusion.png here"))}),
    "detect": (
        {"save_coco": (Optional[str], Opt(None, help="write one COCO results file for all still images")),
         "coco_gt": (Optional[str], Opt(None, help="COCO ground truth whose image ids --save-coco uses")),
         "conf": (Optional[float], Opt(None, help="score threshold (default: the model's)")),
         "iou": (Optional[float], Opt(None, help="NMS IoU threshold (default: the model's)")),
         "max_det": (Optional[int], Opt(None, help="detections per image")),
         "classes": (Optional[str], Opt(None, help="keep only these classes: names or indices, comma-separated"))},
        {"head": (str, Opt("ssd", help="ssd (single-stage anchors) or fasterrcnn (two-stage, FPN)")),
         "cls_loss": (Optional[str], Opt(None, help="ssd: ce (hard negative mining 3:1) or focal")),
         "box_loss": (Optional[str], Opt(None, help="ssd: smooth_l1 or giou"))},
        {"metric": (str, Opt("coco", help="coco (pycocotools COCOeval) or voc")),
         "iou": (float, Opt(0.5, help="voc: IoU threshold")),
         "eleven_point": (bool, Opt(False, help="voc: VOC2007 11-point interpolation (default all-point)")),
         "save_results": (Optional[str], Opt(None, help="write the model's COCO results file")),
         "class_map": (Optional[str], Opt(None, help="JSON {dataset class: model class} for names the synonym "
                                                     "table does not cover"))}),
    "segment": (
        {},
        {"masks": (Optional[str], Opt(None, help="mask folder: label PNGs (or colour PNGs with --palette)")),
         "val_masks": (Optional[str], Opt(None)),
         "classes": (Optional[str], Opt(None, help="class names, comma-separated (label-map masks)")),
         "palette": (Optional[str], Opt(None, help='JSON {"classes": [{"name", "color": [r,g,b]}]}')),
         "ignore_index": (Optional[int], Opt(None, help="void label (default: CamVid 11, else 255)")),
         "head": (str, Opt("fcn8s", help="fcn32s | fcn16s | fcn8s | segnet")),
         "bilinear": (bool, Opt(False, help="FCN: fixed bilinear upsampling instead of learned")),
         "class_weights": (str, Opt("none", help="none | median (median-frequency balancing, SegNet paper)")),
         "dice": (float, Opt(0.0, help="weight of an added soft Dice loss"))},
        {"masks": (Optional[str], Opt(None, help="mask folder (with --images, or alone with --results)")),
         "split": (str, Opt("val", help="val | test (CamVid layout)")),
         "classes": (Optional[str], Opt(None, help="with --results: class names (default: CamVid's)")),
         "ignore_index": (Optional[int], Opt(None, help="void label (default: the model's; results: 11)"))}),
    "landmarks": ({**BOXES, "flip_test": (bool, Opt(False, help="average with the mirrored crop"))},
                  KEYPOINT_HEAD, {}),
    "pose": ({**BOXES, "flip_test": (bool, Opt(False, help="average with the mirrored crop"))}, KEYPOINT_HEAD, {}),
}


def command(target: typer.Typer, name: str, *groups: dict, help: str):
    """Register ``fn(task-free **kwargs)`` as ``name`` with the parameters of ``groups``
    (later groups override earlier ones)."""

    def deco(fn):
        merged: dict = {}
        for g in groups:
            merged.update(g)
        params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                  for n, (a, d) in merged.items()]

        @functools.wraps(fn)
        def wrapper(**kw):
            return fn(**kw)

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {n: a for n, (a, _) in merged.items()}
        target.command(name, help=help)(wrapper)
        return fn

    return deco


def _size(img_size):
    return parse_size(img_size) if img_size is not None else None


def _print_summary(s, out_dir, save_json) -> None:
    for src, text in s.summaries:
        print(f"{src}\t{text}")
    err.print(f"{s.processed} predicted, {len(s.failed)} skipped"
              + (f"; outputs in {out_dir}" if out_dir else "") + (f"; JSON Lines in {save_json}" if save_json else ""),
              highlight=False)


def _print_train_result(result: dict) -> None:
    """One JSON line: output folder, epochs run and the scalar validation metrics (rank 0
    only under torchrun, so a distributed run prints it once)."""
    if result["rank"] != 0:
        return
    summary = {k: v for k, v in result.get("val", {}).items() if not isinstance(v, (list, dict))}
    print(_json({"out_dir": result["out_dir"], "epochs_run": result["epochs_run"], **summary}))


# per-task commands ---------------------------------------------------------------------
def _register(task: str) -> None:
    p_extra, t_extra, e_extra = EXTRA[task]

    @command(predict_app, task, PREDICT, p_extra, help=f"Run a {task} model on images and videos; prints a line per "
                                                      "image, annotated outputs with --out.")
    def predict(sources, model, backend, **kw):
        s = _api().predict(model, sources, task=task, backend=backend, console=err, **kw)
        if s.errors and not s.processed:
            raise s.errors[0]
        _print_summary(s, kw.get("out_dir"), kw.get("save_json"))

    @command(train_app, task, TRAIN, t_extra, help=f"Train a {task} model; writes best/last model files, "
                                                  "checkpoint, metrics.jsonl, curves.png.")
    def train(**kw):
        head, args = _train_args(task, kw)
        result = _api().train(task, kw.pop("data"), head=head, console=err, **args, **kw)
        _print_train_result(result)

    @command(eval_app, task, EVAL, e_extra, help=f"Evaluate a {task} model (or a results file): metrics as JSON, "
                                                "last line.")
    def evaluate(model, results, data, **kw):
        kw = {k: v for k, v in kw.items() if v is not None}
        if "classes" in kw:
            kw["classes"] = kw["classes"].split(",")
        if "out_dir" in kw:
            kw["out"] = kw.pop("out_dir")
        if results:
            for k in ("batch_size", "precision", "device", "skip_bad", "save_results", "out"):
                kw.pop(k, None)
            m = _api().evaluate_results(results, data, task=task, **kw)
        elif model:
            m = _api().evaluate(model, data, task=task, console=err, **kw)
        else:
            raise CvappsError("pass --model (with --data / --images) or --results", hint=f"see `cvapps eval {task} --help`")
        print(_json(m))


def _train_args(task: str, kw: dict) -> tuple[dict, dict]:
    """CLI spellings -> (head options, api.train keyword arguments)."""
    head = {}
    args: dict = {"img_size": _size(kw.pop("img_size")), "out": kw.pop("out_dir") or f"runs/{task}",
                  "val": kw.pop("val_data"), "time_limit_min": kw.pop("time_limit")}
    if "head" in kw:
        args["kind"] = kw.pop("head")
    for name in ("cls_loss", "box_loss", "loss", "label_smoothing", "dice"):
        if name in kw:
            head[name] = kw.pop(name)
    if kw.pop("bilinear", False):
        head["learned_upsampling"] = False
    if "cascade" in kw:
        head.update(cascade=kw.pop("cascade"), sigma=kw.pop("sigma"))
    if "class_weights" in kw:
        args["median_frequency"] = kw.pop("class_weights") == "median"
    if kw.get("bins"):
        head["bins"] = kw.pop("bins").split(",")
    kw.pop("bins", None)
    if kw.get("clip_grad") == 0:
        kw["clip_grad"] = None
    if kw.get("classes"):
        kw["classes"] = kw["classes"].split(",")
    for k in [k for k, v in kw.items() if v is None]:
        del kw[k]
    for k in [k for k, v in args.items() if v is None]:
        del args[k]
    return {k: v for k, v in head.items() if v is not None}, args


for _task in TASK_NAMES:
    _register(_task)


# other commands ------------------------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"cvapps {version('cvapps')}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="print the version and exit")) -> None:
    """Computer-vision applications on shared pretrained backbones."""


@app.command()
def backbones() -> None:
    """List backbones: feature strides, channels, parameters, available weights."""
    t = Table(*(Column(c, overflow="fold") for c in ("strides", "channels", "params", "weights", "pool idx")))
    t.columns.insert(0, Column("name", no_wrap=True))
    for r in _api().backbone_table():
        t.add_row(r["name"], ",".join(map(str, r["strides"])), ",".join(map(str, r["channels"])),
                  f"{r['params'] / 1e6:.1f}M", ", ".join(r["weights"]) or "-", "yes" if r["pool_indices"] else "")
    out.print(t)


@weights_app.command("list")
def weights_list() -> None:
    """List known weights: task, where they come from, licence, and whether they are cached."""
    t = Table(*(Column(c, overflow="fold") for c in ("task", "backbone", "metric", "licence", "cached", "sources")))
    t.columns.insert(0, Column("name", no_wrap=True))
    for r in _api().weights_table():
        metric = ", ".join(f"{k} {v}" for k, v in r["metrics"].items()) or "-"
        t.add_row(r["name"], r["task"], r["backbone"], metric, r["licence"] or "-", "yes" if r["cached"] else "no",
                  "\n".join(r["sources"]))
    out.print(t)


@weights_app.command("pull")
def weights_pull(name: str, file: Optional[str] = typer.Option(None, help="a local copy of the file to verify and "
                                                                          "cache")) -> None:
    """Download (or find) weights NAME, verify its sha256, cache it; prints the path."""
    out.print(str(_api().pull_weights(name, file)), highlight=False)


@predict_app.command("multi", hidden=True)
def predict_multi(
    tasks: str = typer.Option(..., help="comma-separated tasks, e.g. detect,segment"),
    sources: List[str] = typer.Argument(..., help="images, folders, globs, .txt lists of paths, videos"),
    model: List[str] = typer.Option(..., help="one model file per task (repeat --model)"),
    out_dir: Optional[str] = PREDICT["out_dir"][1], save_json: Optional[str] = PREDICT["save_json"][1],
    batch_size: int = PREDICT["batch_size"][1], vid_stride: int = PREDICT["vid_stride"][1],
    device: str = DEVICE["device"][1], precision: str = PRECISION["precision"][1],
) -> None:
    """`cvapps predict detect,segment SOURCES --model det --model seg`: several heads, one
    backbone pass per frame when their backbones (and weights) match."""
    s = _api().predict_bundle(list(model), sources, tasks=tasks.split(","), out_dir=out_dir, save_json=save_json,
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
    img_size: Optional[str] = TRAIN["img_size"][1],
) -> None:
    """Export the network up to its raw outputs; postprocessing (NMS, un-letterboxing, crop
    inverse) stays in Python. The config (labels, preprocessing) goes into the metadata."""
    print(str(_api().export(model, out_file, fmt, dynamic_batch, _size(img_size))))


@app.command()
def select(
    model: str = typer.Option(..., help="model file (any task) or weights name"),
    pool: List[str] = typer.Option(..., help="unlabelled images: folder, glob or .txt list (repeatable)"),
    budget: int = typer.Option(..., help="how many images to pick"),
    strategy: str = typer.Option("entropy", help="random | least_confidence | margin | entropy | bald | variance | "
                                                 "coreset | hybrid"),
    exclude: Optional[str] = typer.Option(None, help="text file of already-labelled paths to leave out"),
    out_dir: str = typer.Option("runs/select", "--out", help="scores.csv, selection.csv/.json, contact_sheet.png"),
    copy_to: Optional[str] = typer.Option(None, help="copy the picks here, prefixed with their rank"),
    link: bool = typer.Option(False, help="with --copy-to: symbolic links instead of copies"),
    batch_size: int = typer.Option(16), mc_passes: int = typer.Option(10, help="bald / variance: MC-dropout passes"),
    k: int = typer.Option(5, help="hybrid: uncertainty pre-filter to k x budget"), seed: int = typer.Option(0),
    pseudo_label: Optional[float] = typer.Option(None, help="also write confident predictions (>= this) as labels"),
    device: str = DEVICE["device"][1],
) -> None:
    """Rank unlabelled images by how much labelling them should teach the model. Re-running
    with the same arguments skips images already scored."""
    sel = _api().select(model, list(pool), budget, strategy, exclude=exclude, out=out_dir, copy_to=copy_to, link=link,
                        batch_size=batch_size, mc_passes=mc_passes, k=k, seed=seed, pseudo_label=pseudo_label,
                        device=device, console=err)
    for row in sel:
        print(f"{row['rank']}\t{row['score']:.4g}\t{row['path']}")
    err.print(f"selected {len(sel)}; see {out_dir}/selection.csv and {out_dir}/contact_sheet.png", highlight=False)


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
) -> None:
    """Replay active learning on a labelled set; writes curves.json and learning_curves.png."""
    opts = {k: v for k, v in dict(images=images, fmt=fmt, val=val_data, val_images=val_images).items() if v}
    c = _api().simulate(task, data, backbone=backbone, weights=weights, img_size=_size(img_size), initial=initial,
                        step=step, rounds=rounds, strategies=strategies.split(",") if strategies else None, seeds=seeds,
                        out=out_dir, epochs=epochs, batch_size=batch_size, lr=lr, console=err,
                        val_fraction=val_fraction, **opts)
    last = {k: round(v["mean"][-1], 4) for k, v in c["strategies"].items()}
    print(_json({"labels": c["labels"][-1], "metric": c["metric"], "final": last, "out_dir": out_dir}))


# entry ---------------------------------------------------------------------------------
def _sources_as_arguments(argv: list[str]) -> list[str]:
    """``predict ... --source 0`` (the Ultralytics spelling) = ``predict ... 0``: every predict
    command takes its sources as arguments, so --source/-s values are moved there."""
    moved_args, moved, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--source", "-s") and i + 1 < len(argv):
            moved.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--source="):
            moved.append(a.split("=", 1)[1])
        else:
            moved_args.append(a)
        i += 1
    if not moved:
        return moved_args
    return moved_args + moved if "--" in moved_args else moved_args + ["--", *moved]


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
        err.print(Text("error: ", style="red") + Text(e.one_line()), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
