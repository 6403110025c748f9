"""The `cvapps` command: parses arguments, calls cvapps.api, prints. No logic here.

Options shared by several commands are defined once (the groups below) with one default;
every command takes ``--img-size`` as S, HxW or H,W. cvapps.api (and with it torch) is
imported when a command runs, so ``cvapps --help`` stays fast."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup
from rich.table import Column, Table
from rich.text import Text

from ..errors import CvappsError
from ..options import SmoothOptions, TrackOptions, parse_size


out = Console(markup=False)
err = Console(stderr=True, markup=False, soft_wrap=True)  # messages are lines: never folded mid-path


def _api():
    """cvapps.api, imported on first use: it loads torch, which `--help` does not need."""
    from .. import api

    return api


def _engine(kw: dict):
    """The module that runs a command: cvapps.api, or with ``--engine ray`` cvapps.scaleout
    (the engine options are taken out of ``kw``; given without ``--engine ray`` they are an error)."""
    engine = kw.pop("engine", "local")
    opts = {k: kw.pop(k) for k in ENGINE if k != "engine" and k in kw}
    if engine not in ("local", "ray"):
        raise CvappsError(f"--engine {engine!r}: local or ray")
    if engine == "local":
        given = [f"--{k.replace('_', '-')}" for k, v in opts.items() if v]
        if given:
            raise CvappsError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --engine ray")
        return _api()
    from .. import scaleout  # Ray's import is heavy: only when asked for

    kw.update(opts)
    return scaleout


def _json(obj) -> str:
    from ..data.io import json_dumps  # light: no torch

    return json_dumps(obj)


# option groups -------------------------------------------------------------------------
def Opt(default: Any, *names: str, help: str = "") -> Any:
    return typer.Option(default, *names, help=help)


DEVICE = {"device": (str, Opt("cpu", help="cpu, cuda, cuda:1 ..."))}
PRECISION = {"precision": (str, Opt("fp32", help="fp32 or bf16 (autocast; fast on CPUs with AMX/AVX-512 bf16)"))}
ENGINE = {
    "engine": (str, Opt("local", help="local: this process; ray: a Ray cluster (the [ray] extra; --address or "
                                      "$RAY_ADDRESS, else one started on this machine)")),
    "actors": (Optional[int], Opt(None, help="--engine ray: model copies (default: one per CPU the cluster has, "
                                             "over --cpus-per-actor)")),
    "cpus_per_actor": (Optional[float], Opt(None, help="--engine ray: CPUs (and torch threads) per actor (default: "
                                                       "the cluster's CPUs over --actors)")),
    "gpus_per_actor": (float, Opt(0.0, help="--engine ray: GPUs per actor (with --device cuda; 0.5: two share one)")),
    "address": (Optional[str], Opt(None, help="--engine ray: the cluster to join (ray://host:10001, host:6379 or "
                                              "auto; default $RAY_ADDRESS)")),
}
PREDICT = {
    "sources": (List[str], typer.Argument(..., help="images, folders, globs, .txt lists of paths, videos, "
                                                    "camera index")),
    "model": (Optional[str], Opt(None, help="model file, exported .onnx or weights name (default: the task's "
                                           "pretrained model, where there is one)")),
    "out_dir": (Optional[str], Opt(None, "--out", help="write annotated images / videos here")),
    "save_json": (Optional[str], Opt(None, help="write JSON Lines (one object per image / frame)")),
    "batch_size": (int, Opt(8, help="images per forward pass")),
    "vid_stride": (int, Opt(1, help="use every N-th video frame")),
    **DEVICE,
    "precision": (Optional[str], Opt(None, help="auto (default; $CVAPPS_PRECISION overrides): fp32, or bf16 where this "
                                                "CPU has bf16 units and the model was measured to answer as in fp32 | "
                                                "fp32 | bf16 | int8 (calibrated on the first 100 images) | fp16 (CUDA)")),
    "backend": (str, Opt("auto", help="auto: ONNX Runtime when installed and able (the model exported once to "
                                      "a cache), else PyTorch; torch; onnxruntime; openvino (the [openvino] extra); "
                                      "FILE.onnx / FILE.xml run on their own runtime")),
    "threads": (Optional[int], Opt(None, help="CPU threads for the model (default: one per core; idle threads "
                                              "sleep, see OMP_WAIT_POLICY in the README)")),
    "reconnect": (int, Opt(3, help="camera / stream URL: reconnect attempts when the stream drops")),
    "concurrent": (Optional[bool], Opt(None, "--concurrent/--one-at-a-time", help="read every video / camera / "
                                       "stream at once, batched into one model (default: at once for 2+ live "
                                       "cameras or stream URLs)")),
}


def _group_options(group) -> dict:
    """One CLI option per field of an option group: its flag, doc and default from the field
    (the group is the one place a setting is declared)."""
    fields = {f.name: f for f in dataclasses.fields(group)}
    return {kw: (Optional[type(fields[name].default)],
                 Opt(None, help=f"{fields[name].metadata['doc']} (default {fields[name].default})"))
            for kw, name in group.keywords().items()}


# object identities over video (task specs with trackable predictions get these)
TRACK = {
    "track": (Optional[bool], Opt(None, "--track/--no-track", help="give objects identities over each video "
                                                                  "(ByteTrack); default: on for pose and landmarks")),
    "line": (Optional[List[str]], Opt(None, help="count tracks crossing x1,y1,x2,y2 per direction and class "
                                                 "(repeatable; implies --track)")),
    "zone": (Optional[List[str]], Opt(None, help="count tracks inside polygon x1,y1,x2,y2,x3,y3,... per frame "
                                                 "(repeatable; implies --track)")),
    "count_at": (Optional[str], Opt(None, help="the box point --line / --zone count: centre (default) or bottom "
                                               "(where people and cars stand; for lines on the ground)")),
    **_group_options(TrackOptions),  # --track-*
}
# One-Euro smoothing of tracked keypoints (specs whose predictions have points)
SMOOTH = {
    "smooth": (bool, Opt(True, "--smooth/--no-smooth", help="smooth tracked keypoints over time (One-Euro)")),
    **_group_options(SmoothOptions),  # --smooth-*
}
WORKERS = {"workers": (Optional[int], Opt(None, help="data-loading processes (default: one per core but one, at "
                                                   "most 8, none on 1-2 cores; 0: in the main process; env "
                                                   "CVAPPS_WORKERS)"))}
DATA = {
    "data": (Optional[str], Opt(None, help="annotations, or a dataset root")),
    "images": (Optional[str], Opt(None, help="image folder")),
    "fmt": (Optional[str], Opt(None, "--format", help="annotation format: coco, voc, yolo, pts, csv, label-studio "
                                                      "(a JSON export), cvat (CVAT for images XML); default: from "
                                                      "--data")),
    "skip_bad": (bool, Opt(False, help="skip bad images / records (counted) instead of stopping")),
    "allow_outside": (bool, Opt(False, "--allow-outside-images", help="image names in the annotation file may "
                                                                      "point outside --images (absolute paths, ..)")),
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
    "freeze": (Optional[str], Opt(None, help="backbone | stage:N | regex over module names | none (overrides a weights recipe)")),
    "unfreeze_at": (Optional[int], Opt(None, help="gradual unfreeze: from this epoch, one stage per epoch")),
    "backbone_lr_ratio": (float, Opt(0.1, help="backbone lr = lr x ratio")),
    "augment": (Optional[bool], Opt(None, "--augment/--no-augment", help="default: on unless --freeze backbone")),
    "patience": (Optional[int], Opt(None, help="early stopping patience in epochs")),
    "clip_grad": (Optional[float], Opt(5.0, help="gradient norm clip (0: off)")),
    "time_limit": (Optional[float], Opt(None, help="stop after the epoch that crosses this many minutes")),
    "seed": (int, Opt(0)), "resume": (bool, Opt(False, help="continue from OUT/checkpoint.pt")),
    "ema": (Optional[float], Opt(None, help="keep an exponential moving average of the weights with this decay per "
                                            "step (e.g. 0.98); it is what is evaluated and saved")),
    "norm_stats": (Optional[str], Opt(None, help="update (default) or fixed: norm layers keep their running "
                                                 "statistics while the weights train (small batches, pretrained "
                                                 "detectors)")),
    "keep_classes": (bool, Opt(False, help="with --weights of a pretrained detector or classifier: keep all its "
                                           "classes and add the data's; the frozen original supervises its own "
                                           "(classifiers also need --negatives)")),
    "unlabelled": (Optional[List[str]], Opt(None, help="images without labels trained on with the labelled ones "
                                                       "(classify: FixMatch); folder, glob, .txt list (repeatable)")),
    "unlabelled_threshold": (Optional[float], Opt(None, help="with --unlabelled: confidence a pseudo-label needs "
                                                             "(default: classify 0.95, detect 0.7, segment 0.9)")),
    "unlabelled_ratio": (Optional[int], Opt(None, help="with --unlabelled: unlabelled images per labelled one in a "
                                                       "step (default: classify 7, detect / segment 1)")),
    "unlabelled_weight": (Optional[float], Opt(None, help="with --unlabelled: weight of their loss (default 1)")),
    "unlabelled_warmup": (Optional[float], Opt(None, help="with --unlabelled: share of the epochs on the labels alone "
                                                          "first (default: classify 0, detect / segment 0.3: the "
                                                          "mean teacher's burn-in)")),
    **WORKERS, **DEVICE, **PRECISION,
}
EVAL = {
    **DATA,
    "model": (Optional[str], Opt(None, help="model file or weights name")),
    "results": (Optional[str], Opt(None, help="evaluate this results file / folder instead of a model")),
    "batch_size": (int, Opt(16)), **WORKERS, **DEVICE, **PRECISION,
}
def command(target: typer.Typer, name: str, *groups: dict, help: str, hidden: bool = False):
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
        target.command(name, help=help, hidden=hidden)(wrapper)
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
def _tasks():
    """The task registry (importing it loads torch: only when a task command is asked for)."""
    from ..tasks import TASKS

    return TASKS


class TaskCommands(TyperGroup):
    """`predict` / `train` / `eval`: one subcommand per registered task, built from the task's
    spec (shared option groups + the spec's ``cli_options``) when it is asked for."""

    kind = ""

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_tasks().names()))

    def get_command(self, ctx, name: str):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in _tasks():
            cmd = _task_command(self.kind, name)
            self.add_command(cmd, name)
        elif cmd is None and not name.startswith("-"):
            raise CvappsError(f"`cvapps {self.kind}` has no task {name!r}",
                              hint=f"tasks: {', '.join(_tasks().names())} (e.g. cvapps {self.kind} detect --help)")
        return cmd


def _group(kind: str) -> type:
    return type(f"{kind.title()}Commands", (TaskCommands,), {"kind": kind})


TRACK_HELP = ("Detect and track objects over videos (and over the images of a folder, in name order): each "
              "JSON line's detections carry track_id; --out draws ids and trails; --line / --zone count.")


class TopCommands(TyperGroup):
    """The top level; `track` takes the detection task's options, so it is built on use."""

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | {"track"})

    listing = False

    def format_commands(self, ctx, formatter) -> None:
        self.listing = True  # the listing needs track's one-line help only, not the task registry
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.listing = False

    def get_command(self, ctx, name: str):
        cmd = super().get_command(ctx, name)
        if cmd is None and name == "track" and self.listing:
            return TyperCommand("track", help=TRACK_HELP)
        if cmd is None and name == "track":
            own = _tasks().get("detect").cli_options.get("predict", ())
            params = {k: v for k, v in TRACK.items() if k != "track"}
            one = typer.Typer(rich_markup_mode=None, add_completion=False)
            command(one, "track", PREDICT, _own_params(own), params, help=TRACK_HELP)(functools.partial(_track, own))
            cmd = typer.main.get_command(one)
            self.add_command(cmd, name)
        return cmd


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  cls=TopCommands, help="Computer-vision applications on shared pretrained backbones.")
weights_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Known pretrained weights.")
predict_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, cls=_group("predict"),
                          help="Run a model on images, folders, globs, lists or videos.")
train_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, cls=_group("train"),
                        help="Fine-tune a model on your labelled data.")
eval_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, cls=_group("eval"),
                       help="Evaluate a model or a results file; prints a JSON object of metrics last.")
app.add_typer(weights_app, name="weights")
app.add_typer(predict_app, name="predict")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")


def _own_params(own) -> dict:
    return {o.name: (Optional[o.type] if o.default is None else o.type, typer.Option(o.default, *o.flags, help=o.help))
            for o in own}


def _video_params(spec) -> dict:
    """Tracking / smoothing options for tasks whose predictions can be tracked / smoothed."""
    return {**(TRACK if spec.tracks else {}), **(SMOOTH if spec.smooths else {})}


def _task_command(kind: str, task: str):
    spec = _tasks().get(task)
    own = spec.cli_options.get(kind, ())
    extra = {**_own_params(own), **(_video_params(spec) if kind == "predict" else {})}
    groups = {"predict": {**PREDICT, **ENGINE}, "train": TRAIN, "eval": {**EVAL, **ENGINE}}
    helps = {"predict": f"Run a {task} model on images and videos: a line per image, JSON Lines with --save-json, "
                        "annotated images / videos with --out.",
             "train": f"Train a {task} model; writes best/last model files, checkpoint, metrics.jsonl, curves.png.",
             "eval": f"Evaluate a {task} model (or a results file): metrics as JSON, last line."}
    app1 = typer.Typer(rich_markup_mode=None, add_completion=False)
    run = {"predict": _predict, "train": _train, "eval": _evaluate}[kind]
    command(app1, task, groups[kind], extra, help=helps[kind])(functools.partial(run, task, own))
    return typer.main.get_command(app1)


def _own_args(own, kw: dict) -> dict:
    """The spec's options out of ``kw`` -> API keyword arguments (None values left out)."""
    out = {}
    for o in own:
        value = kw.pop(o.name)
        if value is not None:
            k, v = o.api_value(value)
            out[k] = v
    return out


def _predict(task, own, sources, model, backend, **kw):
    args = _own_args(own, kw)
    run = _engine(kw)
    s = run.predict(model, sources, task=task, backend=backend, console=err, **args, **kw)
    if s.errors and not s.processed:
        raise s.errors[0]
    _print_summary(s, kw.get("out_dir"), kw.get("save_json"))


def _track(own, **kw):
    _predict("detect", own, **{**kw, "track": True, "sequences": True})


def _train(task, own, data, img_size, out_dir, val_data, time_limit, clip_grad, **kw):
    args = {**_own_args(own, kw), **{k: v for k, v in kw.items() if v is not None}}
    result = _api().train(task, data, img_size=_size(img_size), out=out_dir or f"runs/{task}", val=val_data,
                          time_limit_min=time_limit, clip_grad=clip_grad or None, console=err, **args)
    _print_train_result(result)


def _evaluate(task, own, model, results, data, **kw):
    run = _engine(kw)
    args = {**_own_args(own, kw), **{k: v for k, v in kw.items() if v is not None}}
    if results and run is not _api():
        raise CvappsError("--results files are evaluated here: --engine ray is for --model")
    if results:
        for k in ("batch_size", "precision", "device", "skip_bad", "save_results", "out", "workers"):
            args.pop(k, None)
        m = _api().evaluate_results(results, data, task=task, **args)
    elif model:
        m = run.evaluate(model, data, task=task, console=err, **args)
    else:
        raise CvappsError("pass --model (with --data / --images) or --results", hint=f"see `cvapps eval {task} --help`")
    print(_json(m))


# other commands ------------------------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"cvapps {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="print the version and exit"),
                 max_pixels: Optional[str] = typer.Option(None, "--max-pixels", help="largest image (width x "
                                                          "height) any command decodes; larger ones are refused from "
                                                          "their header (default 1e8; env CVAPPS_MAX_PIXELS). Also "
                                                          "accepted after the command name")) -> None:
    """Computer-vision applications on shared pretrained backbones."""


def _limits_from_argv(argv: list[str]) -> list[str]:
    """``--max-pixels N`` anywhere on the command line (every command decodes images) -> the
    CVAPPS_MAX_PIXELS environment variable (data-loading processes inherit it), checked now."""
    rest, i = [], 0
    while i < len(argv):
        a = argv[i]
        value = None
        if a == "--max-pixels" and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        elif a.startswith("--max-pixels="):
            value, i = a.split("=", 1)[1], i + 1
        else:
            rest.append(a)
            i += 1
            continue
        from ..data.io import _parse_pixels  # light: no torch

        os.environ["CVAPPS_MAX_PIXELS"] = str(_parse_pixels(value, "--max-pixels"))
    return rest


def _print_rows(cols: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table on a terminal; elsewhere (a pipe, a log) one tab-separated line per row with a
    header line, nothing folded or squeezed to 80 columns."""
    if not out.is_terminal:
        print("\t".join(cols))
        for r in rows:
            print("\t".join(r))
        return
    t = Table(*(Column(c, overflow="fold") for c in cols[1:]))
    t.columns.insert(0, Column(cols[0], no_wrap=True))
    for r in rows:
        t.add_row(*r)
    out.print(t)


@app.command()
def backbones() -> None:
    """List backbones: feature strides, channels, parameters, available weights."""
    _print_rows(("name", "strides", "channels", "params", "weights", "pool idx"),
                [(r["name"], ",".join(map(str, r["strides"])), ",".join(map(str, r["channels"])),
                  f"{r['params'] / 1e6:.1f}M", ", ".join(r["weights"]) or "-", "yes" if r["pool_indices"] else "")
                 for r in _api().backbone_table()])


@weights_app.command("list")
def weights_list() -> None:
    """List known weights: task, where they come from, licence, and whether they are cached."""
    _print_rows(("name", "task", "backbone", "metric", "cached", "licence", "sources"),
                [(r["name"], r["task"], r["backbone"], ", ".join(f"{k} {v}" for k, v in r["metrics"].items()) or "-",
                  "yes" if r["cached"] else "no", r["licence"] or "-", ", ".join(r["sources"]))
                 for r in _api().weights_table()])


@weights_app.command("pull")
def weights_pull(name: str, file: Optional[str] = typer.Option(None, help="a local copy of the file to verify and "
                                                                          "cache")) -> None:
    """Download (or find) weights NAME, verify its sha256, cache it; prints the path."""
    out.print(str(_api().pull_weights(name, file, console=err)), highlight=False, markup=False)


MULTI = {
    "tasks": (str, Opt(..., help="comma-separated tasks, e.g. detect,segment")),
    "sources": PREDICT["sources"],
    "model": (List[str], Opt(..., help="one model file per task (repeat --model)")),
    **{k: PREDICT[k] for k in ("out_dir", "save_json", "batch_size", "vid_stride", "device", "precision", "threads",
                               "reconnect", "concurrent")},
    "backend": (str, Opt("auto", help="auto: each shared pass on ONNX Runtime when it can run all its heads "
                                      "(exported once to a cache), else PyTorch; torch")),
    **TRACK,
}


def _predict_multi(tasks, sources, model, **kw) -> None:
    """`cvapps predict detect,segment SOURCES --model det --model seg`: several heads, one
    backbone pass per frame when their backbones (and weights) match."""
    s = _api().predict_bundle(list(model), sources, tasks=tasks.split(","), console=err, **kw)
    if s.errors and not s.processed:
        raise s.errors[0]
    _print_summary(s, kw.get("out_dir"), kw.get("save_json"))


command(predict_app, "multi", MULTI, help=_predict_multi.__doc__, hidden=True)(_predict_multi)


@app.command()
def export(
    model: str = typer.Option(..., help="model file, or a weights name such as mobilenet_v2.imagenet1k"),
    fmt: str = typer.Option("onnx", "--format", help="onnx, openvino (an IR: .xml + .bin; the [openvino] extra), "
                                                       "tflite (converted by onnx2tf: see CVAPPS_TFLITE_PYTHON), "
                                                       "coreml (an .mlpackage for Apple devices; the [coreml] extra) or "
                                                       "torchscript (deprecated by PyTorch since 2.9, which recommends "
                                                       "torch.export; onnx runs everywhere cvapps does)"),
    out_file: str = typer.Option(..., "--out", help="output file (.onnx / .xml / .tflite / .mlpackage / .pt)"),
    precision: str = typer.Option("fp32", help="the file's compute precision: fp32, or fp16 for --format coreml "
                                               "(what Apple's Neural Engine runs)"),
    dynamic_batch: bool = typer.Option(False, help="a variable batch dimension (default: batch 1)"),
    img_size: Optional[str] = TRAIN["img_size"][1],
    nms: bool = typer.Option(False, help="detection: box decoding + NMS in the graph (final boxes, scores, labels "
                                         "for one image, for runtimes without cvapps)"),
    conf: Optional[float] = typer.Option(None, help="with --nms: score threshold (default: the model's)"),
    iou: Optional[float] = typer.Option(None, help="with --nms: NMS overlap (default: the model's)"),
    max_det: Optional[int] = typer.Option(None, help="with --nms: detections kept (default: the model's)"),
    int8: bool = typer.Option(False, help="write a statically quantised int8 ONNX model (QDQ) calibrated on --calib, "
                                          "and report its speed and metric change"),
    calib: Optional[List[str]] = typer.Option(None, help="with --int8: calibration images (folder, glob, list)"),
    data: Optional[str] = typer.Option(None, help="with --int8: a labelled set to measure the metric change on "
                                                  "(as for `cvapps eval`)"),
    images: Optional[str] = DATA["images"][1],
) -> None:
    """Export the network up to its raw outputs; postprocessing (NMS, un-letterboxing, crop
    inverse) stays in Python — or, for SSD-style detectors with --nms, up to the final
    detections. The config (labels, preprocessing) goes into the metadata."""
    if int8:
        if fmt != "onnx" or nms or dynamic_batch or img_size:
            raise CvappsError("--int8 quantises the plain ONNX export", hint="drop --format / --nms / "
                                                                              "--dynamic-batch / --img-size")
        extra = {"images": images} if images else {}
        print(_json(_api().export_int8(model, out_file, list(calib or []), data, console=err, **extra)))
        return
    post = {"conf": conf, "iou": iou, "max_det": max_det} if nms else None
    print(str(_api().export(model, out_file, fmt, dynamic_batch, _size(img_size), nms=post, precision=precision)))


@app.command()
def serve(
    model: List[str] = typer.Option(..., help="model file or weights name (repeatable; the first is the default; "
                                              "others by POST /predict?model=NAME)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000),
    max_bytes: int = typer.Option(20_000_000, help="largest request body; larger ones get 413"),
    max_pending: int = typer.Option(64, help="requests in the server at once; more get 503"),
    max_batch: int = typer.Option(8, help="concurrent requests batched into one forward pass"),
    batch_wait_ms: float = typer.Option(5.0, help="how long a request waits for others to batch with"),
    backend: str = typer.Option("auto", help="auto (ONNX Runtime when it can), torch, onnxruntime or openvino"),
    device: str = DEVICE["device"][1],
    precision: Optional[str] = PREDICT["precision"][1],
    label_studio: bool = typer.Option(False, help="serve the (first) model as a Label Studio ML backend: /setup, "
                                                  "/predict, /webhook, /health, /metrics"),
    train_every: int = typer.Option(0, help="--label-studio: fine-tune after every N new annotations (0: on "
                                            "START_TRAINING only)"),
    train_epochs: int = typer.Option(10, help="--label-studio: epochs of each fine-tuning run"),
    work: str = typer.Option("runs/ml_backend", help="--label-studio: fetched images and training runs"),
    basic_auth: Optional[str] = typer.Option(None, help="--label-studio: require HTTP basic auth USER:PASSWORD "
                                                        "(default: $CVAPPS_ML_BASIC_AUTH)",
                                             envvar="CVAPPS_ML_BASIC_AUTH", show_envvar=False),
) -> None:
    """Serve models over HTTP: POST /predict (raw image bytes or a multipart upload -> the
    JSON Lines record of `predict --save-json`), GET /health, GET /models. Extra: [serve].
    With --label-studio: a Label Studio ML backend (pre-annotations, training on its webhooks)."""
    from ..serving import serve as run

    if label_studio:
        from ..integrations.ml_backend import serve as run_backend

        run_backend(model[0], work, train_every, {"epochs": train_epochs}, basic_auth, host=host, port=port,
                    max_bytes=max_bytes, max_pending=max_pending, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                    backend=backend, device=device, precision=precision)
        return
    run(list(model), host=host, port=port, max_bytes=max_bytes, max_pending=max_pending, max_batch=max_batch,
        batch_wait_ms=batch_wait_ms, backend=backend, device=device, precision=precision)


@app.command()
def benchmark(
    model: str = typer.Option(..., help="model file or weights name"),
    data: Optional[str] = typer.Option(None, help="labelled data for the task's metrics (as for `cvapps eval`)"),
    images: Optional[str] = DATA["images"][1],
    sample: Optional[List[str]] = typer.Option(None, help="images to time on (default: --images, else 64 "
                                                          "synthetic 640x480 images)"),
    variants: Optional[str] = typer.Option(None, help="comma-separated subset of torch_fp32, torch_channels_last, "
                                                      "torch_bf16, onnxruntime_fp32, onnxruntime_int8"),
    out_file: Optional[str] = typer.Option(None, "--out", help="also write the JSON here"),
    frames: int = typer.Option(100, help="frames of the video the fps are measured on"),
) -> None:
    """Speed (images/s at batch 1 and 16, video fps) and, with --data, accuracy of a model
    per backend and precision on this machine: a table on stderr, JSON on stdout."""
    from ..benchmarking import VARIANTS, benchmark as run, table

    _api().check_outputs(files={"--out": out_file})
    extra = {"images": images} if images else {}
    if frames < 1:
        raise CvappsError(f"--frames must be at least 1, got {frames}")
    r = run(model, list(sample or []) or ([images] if images else None), data,
            tuple(variants.split(",")) if variants else VARIANTS, video_frames=frames, console=err, **extra)
    err.print(table(r))
    if out_file:
        Path(out_file).write_text(_json(r) + "\n")
    print(_json(r))


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


from . import faces, federated, labels, learning, selection  # noqa: E402,F401  (each registers its commands on `app`)


def _notes_as_lines() -> None:
    """cvapps's warnings (CvappsWarning) print as one-line notes, not Python's two-line form."""
    import warnings

    from ..errors import CvappsWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CvappsWarning):
            err.print(Text("note: ", style="yellow") + Text(str(message)), highlight=False, soft_wrap=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    _notes_as_lines()
    # idle OpenMP threads sleep instead of spinning: a busy neighbour then costs little (torch
    # reads this when it starts, hence before any import of it; an explicit setting wins)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        argv = _limits_from_argv(argv)
    except CvappsError as e:
        err.print(Text("error: ", style="red") + Text(e.one_line()), highlight=False, soft_wrap=True)
        sys.exit(2)
    if len(argv) > 1 and argv[0] == "predict" and "," in argv[1]:  # predict detect,segment ... (a bundle)
        argv = ["predict", "multi", "--tasks", argv[1], *argv[2:]]
    if argv[:1] in (["predict"], ["track"]):
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
    except OSError as e:  # a file the checks above could not foresee (a disk that filled, a folder removed)
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        err.print(Text("error: ", style="red") + Text(f"{where}{e.strerror or e}"), highlight=False, soft_wrap=True)
        sys.exit(2)
