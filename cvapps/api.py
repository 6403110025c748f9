"""The functions both the CLI and Python users call. Task-specific behaviour comes from
each task's spec (``model.spec`` / ``TASKS.get(task)``); nothing here branches on a task."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Iterable

from rich.console import Console

from . import backbones as _bb
from . import pretrained
from .active import simulate as sim
from .active.select import check_counts, default_strategy
from .active.select import select as _select
from .active.shards import merge as _merge
from .active.simulate_tasks import simulate_task
from .active.strategies import STRATEGIES
from .data.io import load_json, out_dir, out_file
from .data.remote import staged
from .data.sources import expand_sources
from .data.unlabelled import unlabelled_paths
from .embedding import embed, embed_sources, map_images, save_embeddings  # noqa: F401 - the API's names
from .errors import ConfigError, DataError
from .exporting import export as _export
from .exporting import quantize_int8
from .inference.bundle import Bundle
from .inference.runner import iter_predict, run_predict
from .loading import _model, create_model, helper_loader, load, save  # noqa: F401 - the API's names
from .modelfile import load_model
from .options import DataOptions, EvalOptions, Options, check_value, split_options
from .progress import note
from .runtime import RUN_PRECISIONS, check_precision
from .runtimes import GraphModel, OnnxModel, bundle_runtime, default_precision, export_for_runtime, \
    pipeline_precision, prepare, prepare_group
from .tasks import TASKS, TaskModel
from .tasks.batch import predict_inputs
from .tracking import SmoothOptions, TrackingOptions, TrackOptions
from .training.trainer import TrainConfig, Trainer, evaluate_dataset, seed_everything
from .weights import all_weights, get_spec, list_weights, pull, source_name

_RUN_OPTIONS = {"batch_size", "out_dir", "save_json", "precision", "vid_stride", "save_coco", "coco_ids",
                "coco_categories", "console", "progress", "threads", "reconnect", "concurrent"}
TRACK_KEYS = {"track", "line", "zone", "count_at", "smooth", "sequences"} \
    | set(TrackOptions.keywords()) | set(SmoothOptions.keywords())


def check_outputs(dirs: dict | None = None, files: dict | None = None) -> None:
    """Output folders / files a command will write, checked before any work (an existing file
    where a folder is wanted, a folder that cannot be created, no write permission: one line).
    ``dirs`` / ``files``: {option name: path or None}."""
    for what, path in (dirs or {}).items():
        if path:
            out_dir(path, what)
    for what, path in (files or {}).items():
        if path:
            out_file(path, what)


def tell_notes(console: Console | None, notes: list[str]) -> None:
    """What expanding the sources noticed (files left out of a folder, how a list's paths resolved)."""
    for text in notes:
        note(console or Console(stderr=True, markup=False), "note:", text, style="yellow")


def _as_list(v) -> list[str]:
    return [] if v is None else [v] if isinstance(v, str) else list(v)


def tracking_options(specs: list, options: dict) -> TrackingOptions | None:
    """The tracking settings in ``options`` (popped): track (None: the task's default for
    video), line / zone (imply track), count_at ("centre" | "bottom": the box point that
    counts), track_high|low|new|buffer|iou, smooth (False: off),
    smooth_cutoff|beta|d_cutoff, sequences (still images of a folder form a sequence)."""
    kw = {k: options.pop(k) for k in list(options) if k in TRACK_KEYS}
    lines, zones = _as_list(kw.pop("line", None)), _as_list(kw.pop("zone", None))
    track = kw.pop("track", None)
    if track is None:
        track = bool(lines or zones) or any(s.track_video for s in specs)
    if not track:
        if lines or zones:
            raise ConfigError("--line / --zone count tracked objects and need tracking", hint="drop --no-track")
        return None
    if not any(s.can_track(options) for s in specs):
        raise ConfigError(f"{', '.join(s.name for s in specs)} predictions have no boxes to track",
                          hint="tracking follows detection, pose and landmark models, and classify --on faces | "
                               "people")
    t = TrackOptions.from_keywords(kw)
    smooth = SmoothOptions.from_keywords(kw) if kw.pop("smooth", True) is not False else None
    return TrackingOptions(t, smooth, lines, zones, bool(kw.get("sequences")), kw.get("count_at") or "centre")


def list_backbones() -> list[str]:
    return _bb.list_backbones()


def backbone_table() -> list[dict]:
    """name, strides, channels, parameter count, known weights and capabilities per backbone."""
    rows = []
    for name in _bb.list_backbones():
        b = _bb.build_backbone(name)
        rows.append({"name": name, "strides": [f.stride for f in b.feature_info],
                     "channels": [f.channels for f in b.feature_info],
                     "params": sum(p.numel() for p in b.parameters()),
                     "weights": list_weights(name), **_bb.BACKBONES.get(name).capabilities()})
    return rows


def weights_table() -> list[dict]:
    return [{"name": s.name, "task": s.task, "backbone": s.backbone, "top1": s.metrics.get("imagenet1k_top1"),
             "metrics": s.metrics,
             "sources": [source_name(src) for src in s.sources],
             "licence": s.licence, "cached": s.cached()} for s in all_weights().values()]


def pull_weights(name: str, file: str | None = None, console: Console | None = None) -> Path:
    """The verified local file of weights ``name`` (downloaded and cached when needed; a
    converted task model is converted once and cached as a cvapps model file)."""
    log = (lambda t: console.print(t, highlight=False, markup=False)) if console else None
    if get_spec(name).kind == "model":
        return pretrained.model_file(name, file, log)
    return pull(name, file, log=log)


def export(model, out: str | Path, fmt: str = "onnx", dynamic_batch: bool = False, img_size=None,
           nms: dict | bool | None = None, precision: str = "fp32") -> Path:
    """Write a model (TaskModel, model file or weights name) as ONNX, TorchScript or a
    runtime's own format (``openvino``: an IR, .xml + .bin; ``tflite``; ``coreml``: an
    .mlpackage, fp32 or fp16) with its config in the metadata; ``nms`` (detection): True or
    {"conf", "iou", "max_det"} puts box decoding and NMS into the graph; see cvapps.exporting."""
    check_outputs(files={"--out": out})
    m = _model(model, None, "cpu")
    nms = {} if nms is True else (nms or None)
    written = export_for_runtime(m, out, fmt, dynamic_batch, img_size, nms, precision)  # a runtime's own format
    return written or _export(m, out, fmt, dynamic_batch, img_size, nms=nms)


def export_int8(model, out: str | Path, calib, data: str | None = None, console: Console | None = None,
                **data_options) -> dict:
    """Write ``model`` as a statically quantised int8 ONNX file calibrated on the images of
    ``calib`` (folders, globs, lists), and report what it changes: images/s of the fp32 and
    int8 graphs on the calibration images (batch 1, ONNX Runtime), and with ``data`` (a
    labelled set, as for ``evaluate``) the task's metrics of both and their difference."""
    import time

    check_outputs(files={"--out": out})
    m = _model(model, None, "cpu").eval()
    paths = [p for p in expand_sources(calib) if isinstance(p, (str, Path))]
    fp32_path = _export(m, Path(out).with_name(Path(out).stem + ".fp32.onnx"))
    pre, _ = m.spec.predict_setup(m, helper_loader("cpu", "auto", console), paths)
    out = quantize_int8(m, out, paths, console=console, fp32=fp32_path, pre=pre)
    graphs = {"fp32": OnnxModel(fp32_path), "int8": OnnxModel(out)}
    report: dict = {"int8": str(out), "fp32": str(fp32_path), "calibration_images": min(len(paths), 100),
                    "images_per_s": {}}
    timed = paths[:50]
    for name, g in graphs.items():
        predict_inputs(g, timed[:2], batch_size=1)  # warm
        t = time.perf_counter()
        predict_inputs(g, timed, batch_size=1)
        report["images_per_s"][name] = round(len(timed) / (time.perf_counter() - t), 1)
    report["speedup"] = round(report["images_per_s"]["int8"] / report["images_per_s"]["fp32"], 2)
    if data is not None:
        metric, _ = m.primary_metric()
        scores = {name: evaluate(g, data, **data_options) for name, g in graphs.items()}
        report["metric"] = metric
        report["metrics"] = {name: {k: v for k, v in s.items() if isinstance(v, (int, float))}
                             for name, s in scores.items()}
        report["metric_change"] = round(scores["int8"][metric] - scores["fp32"][metric], 4)
    return report


def choose_model(model, task: str | None, options: dict, items=None):
    """``model``, or the pretrained one a task option or the inputs pick (landmarks --points
    68, the option taken out of ``options``; pose: photos get Thunder), or the task's default.
    ``items``: the expanded sources, when known."""
    picked = TASKS.get(task).pick_model(options, None if model is not None else items) if task else None
    if picked is not None and model is not None:
        raise ConfigError("--points picks a pretrained model and --model names one: pass one of them")
    return model or picked or default_model(task)


def default_model(task: str) -> str:
    spec = TASKS.get(task)
    if spec.default_weights is None:
        raise ConfigError(f"no default {task} model", hint="pass --model FILE (train one with `cvapps train`)")
    return spec.default_weights


def predict(model, sources: Iterable, task: str = "classify", device: str = "cpu", backend: str = "auto",
            coco_gt: str | None = None, stream: bool = False, **options):
    """Stream sources through a model (a TaskModel, a model file, an exported .onnx file, a
    weights name, or None for the task's default). ``backend``: "auto" runs a model named
    by file or weights name on ONNX Runtime when it is installed and can run it (exported
    once to a cache; cvapps.runtimes.prepare), else PyTorch; "torch"; "onnxruntime" / "openvino" for
    .onnx files. A TaskModel object passed in runs as it is. ``options``: the streaming options of
    cvapps.inference.runner.iter_predict (batch_size, out_dir, save_json, precision,
    vid_stride, save_coco, console, threads, reconnect), tracking (see ``tracking_options``:
    track, line, zone, track_*, smooth, smooth_*) and the task's predict options (classify:
    top_k; detect: conf, iou, max_det, classes; landmarks / pose: boxes, detector,
    detector_label, box_conf, flip_test, scales). ``coco_gt``: a COCO ground truth whose image ids
    and category ids (classes matched by name) --save-coco uses, so the file evaluates
    against it directly. Returns the run's summary; with ``stream=True`` a generator of
    cvapps.tasks.batch.FrameResult instead (outputs are still written as asked)."""
    options = dict(options)
    run = {k: v for k, v in options.items() if k in _RUN_OPTIONS}
    task_options = {k: v for k, v in options.items() if k not in _RUN_OPTIONS and k not in TRACK_KEYS}
    for key in ("batch_size", "vid_stride"):
        if run.get(key) is not None and int(run[key]) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {run[key]}")
    precision = run.get("precision") or default_precision()  # auto: fp32, or faster where it answers the same
    check_precision(precision, (*RUN_PRECISIONS, "auto"))
    tracking = tracking_options([TASKS.get(task)], options)  # checked before anything loads
    check_outputs({"--out": run.get("out_dir")}, {"--save-json": run.get("save_json"),
                                                  "--save-coco": run.get("save_coco")})
    ours = not isinstance(model, (TaskModel, GraphModel))
    notes: list[str] = []
    items = None
    if model is None:  # the default may depend on the inputs (photos or video)
        items = expand_sources(sources, notes)
    # a model of the wrong task is refused before the sources are read
    model = _model(choose_model(model, task, task_options, items), task, device, backend, compile=False)
    if items is None:
        items = expand_sources(sources, notes)
    tell_notes(run.get("console"), notes)
    model, pre, post, run["precision"] = predict_pipeline(model, items, task, device, backend, precision, tracking,
                                                          run.get("console"), run.get("threads"), ours=ours,
                                                          **task_options)
    if coco_gt:
        gt = load_json(coco_gt)
        run["coco_ids"] = {i["file_name"]: i["id"] for i in gt.get("images", [])}
        run["coco_categories"] = model.spec.category_ids(model, gt)
    if stream:
        return iter_predict(model, items, pre=pre, tracking=tracking, **run, **post)
    return run_predict(model, items, pre=pre, tracking=tracking, **run, **post)


def predict_pipeline(model, items: list, task: str | None, device: str, backend: str, precision: str,
                     tracking: TrackingOptions | None = None, console: Console | None = None,
                     threads: int | None = None, ours: bool | None = None, **task_options) -> tuple:
    """(model, preprocessor, postprocess options, precision) as ``predict`` runs ``items``
    (expanded sources; a task's setup may look at them, e.g. the face detector's scales):
    also what each worker of a distributed run (cvapps.scaleout) builds for itself.
    ``ours``: the model was loaded for this run (default: it is a name or path), so its
    batch norm may be folded and a runtime chosen for it."""
    loaded_here = not isinstance(model, (TaskModel, GraphModel)) if ours is None else ours
    model = _model(model or default_model(task), task, device, backend, compile=False)
    if loaded_here and isinstance(model, TaskModel):  # ours alone, never trained or saved: fold BN for speed
        model.fold_batchnorm()
    pre, post = model.spec.predict_setup(model, helper_loader(device, backend, console, threads), items, **task_options)
    if loaded_here and isinstance(model, TaskModel):
        model = prepare(model, backend, device, precision, post, console, threads,
                        calib=[p for p in items if isinstance(p, (str, Path))][:100], pre=pre)
    if tracking is not None:
        post = model.spec.track_post(post, tracking.track.low)
    return model, pre, post, pipeline_precision(model, precision)


def track(model=None, sources: Iterable = (), device: str = "cpu", backend: str = "auto", **options):
    """``cvapps track``: detection with identities over each video (and over the images of a
    folder, taken as a sequence in name order); see ``predict`` for the options."""
    return predict(model, sources, task="detect", device=device, backend=backend,
                   **{"track": True, "sequences": True, **options})


def predict_keypoints(model, sources: Iterable, **options):
    """Landmarks / pose on full images and videos (see ``predict``; kept for older code)."""
    m = _model(model, None, options.get("device", "cpu"), options.get("backend", "torch"))
    return predict(m, sources, task=m.task, **options)


def load_bundle(models: list, device: str = "cpu") -> Bundle:
    """A multi-task bundle of model files / TaskModels (whole-image tasks): heads whose
    backbones match in architecture and weights share one backbone pass per frame."""
    return Bundle([_model(m, None, device) for m in models])


def predict_bundle(models, sources: Iterable, tasks: list[str] | None = None, device: str = "cpu",
                   console: Console | None = None, backend: str = "auto", **kwargs):
    """Predict with several models at once (see load_bundle); each JSON Lines record holds
    every task's output under its task name. ``tasks``, when given, must match the models.
    ``backend`` "auto": models given by file or weights name run each shared pass on ONNX
    Runtime when it can run all its heads (exported once, cached; cvapps.exporting.
    prepare_group), else PyTorch; "torch" keeps PyTorch."""
    group_runtime = bundle_runtime(backend)  # a bundle's shared passes run on PyTorch or ONNX Runtime
    loaded_here = not isinstance(models, Bundle) and not any(isinstance(m, (TaskModel, GraphModel)) for m in models)
    bundle = models if isinstance(models, Bundle) else load_bundle(models, device)
    if tasks is not None and sorted(tasks) != sorted(m.task for m in bundle.models):
        raise ConfigError(f"tasks {','.join(tasks)} do not match the models' tasks {bundle.task}")
    console = console or Console(stderr=True, markup=False)
    kwargs = dict(kwargs)
    if kwargs.get("tiles"):
        raise ConfigError("--tiles runs the detector on tiles of each frame; a bundle's heads share one pass over "
                          "the whole frame", hint="predict detect alone with --tiles")
    specs = [m.spec for m in bundle.models]
    tracking = tracking_options(specs, kwargs)
    if tracking is not None:
        for spec in specs:
            kwargs = spec.track_post(kwargs, tracking.track.low)
    console.print(bundle.describe())
    kwargs["precision"] = pipeline_precision(bundle, kwargs.get("precision") or "fp32")  # auto: fp32 here
    if group_runtime and loaded_here and str(device) == "cpu" and kwargs["precision"] == "fp32":
        for gi, g in enumerate(bundle.groups):
            group = [bundle.models[i] for i in g]
            post = {k: v for k, v in kwargs.items() if k not in _RUN_OPTIONS and k not in TRACK_KEYS}
            bundle.runners[gi] = prepare_group(group, post, console, kwargs.get("threads"))
    return run_predict(bundle, sources, console=console, tracking=tracking, **kwargs)


def _head_group(spec, kind: str | None) -> type[Options]:
    return spec.model.head_options(kind or spec.default_kind)


def train(task: str = "classify", data: str | None = None, *, backbone: str | None = None,
          weights: str | None = None, kind: str | None = None, img_size=None, head: dict | None = None,
          out: str = "runs/train", console: Console | None = None, unlabelled=None, **options) -> dict:
    """Fine-tune a model and write out/best.safetensors, out/last.safetensors, out/checkpoint.pt,
    out/metrics.jsonl, out/curves.png. ``options``: data options (cvapps.options.DataOptions:
    images, fmt, val, val_images, val_fraction, masks, classes, ...), training options
    (cvapps.training.trainer.TrainConfig: epochs, lr, freeze, ...) and head options (also
    accepted as ``head={...}``). Returns a summary dict.

    ``unlabelled``: images without labels (folders, globs, lists) trained on with the labelled
    ones (semi-supervised: classify — FixMatch, see cvapps.tasks.classification.fixmatch; the
    labelled images are left out of them).
    classify: ``data`` = a root with train/ and val/ (or train.csv/val.csv), or ``train``/``val``.
    detect: ``data`` = annotations (COCO JSON, VOC XML folder, YOLO txt folder; ``fmt``) with
    ``images``; ``val`` (+ ``val_images``) or ``val_fraction`` for validation."""
    console = console or Console(stderr=True, markup=False)
    spec = TASKS.get(task)
    check_outputs({"--out": out})
    head = dict(head or {})
    kind = kind or head.pop("kind", None)
    if kind is not None:  # a typo in the kind is named before any data is read
        group = _head_group(spec, kind)
        if "kind" in group.names():
            field = next(f for f in dataclasses.fields(group) if f.name == "kind")
            check_value("kind", kind, field.metadata, group.what)
    data_kw, train_kw, head_kw = split_options(options, DataOptions, TrainConfig, _head_group(spec, kind))
    opts = staged(DataOptions.parse(data_kw, data=data))  # (s3:// ... files and folders: local copies)
    # a whole pretrained model of this task already works: its recipe fine-tunes it, and it is epoch 0
    works = bool(weights) and weights in all_weights() and get_spec(weights).kind == "model" \
        and get_spec(weights).task == task
    tuned = get_spec(weights).fine_tune if works else {}  # (not for a model of another task giving its backbone)
    cfg = TrainConfig.parse({**spec.train_defaults, **tuned, **train_kw}, out_dir=str(out), skip_bad=opts.skip_bad)
    applied = {k: v for k, v in tuned.items() if train_kw.get(k) is None}
    if applied:
        console.print(f"fine-tuning recipe of {weights}: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                     applied.items()) + " (an option you give wins)",
                      highlight=False, markup=False)
    seed_everything(cfg.seed)  # before building: head init is part of a seeded run
    tr, va = spec.read_train(opts, kind)
    if opts.negatives and not cfg.keep_classes:
        raise ConfigError("--negatives is for --keep-classes (images that show none of the data's classes)")
    if cfg.keep_classes:
        old = len(tr.labels)
        tr, va, from_teacher = spec.keep_classes(get_spec(weights) if weights else None, tr, va, opts)
    args = spec.model_args(tr, opts, console)
    kind = args.pop("kind", kind)
    model = create_model(task, backbone, weights, kind=kind, img_size=img_size, **args, **head, **head_kw)
    if cfg.keep_classes:  # learning without forgetting: the frozen original supervises what the data does not label
        model.keep_classes(load(weights, task=task, device=cfg.device), from_teacher)
        console.print(f"keep-classes: {len(tr.labels) - old} of the data's {old} classes are new; "
                      f"{len(from_teacher)} of {weights}'s classes learn from its predictions",
                      highlight=False, markup=False)
    make_train, val_ds = spec.datasets(model, tr, va, opts.skip_bad)
    semi = None
    if unlabelled:
        pool = unlabelled_paths(unlabelled, tr.paths + (va.paths if va else []))
        if not pool:
            raise ConfigError("--unlabelled has no images (other than the labelled ones)")
        semi = spec.semi_supervised(model, pool, cfg, opts.skip_bad)
        console.print(f"semi-supervised: {len(pool)} unlabelled images, {cfg.unlabelled_ratio} per labelled one in "
                      f"each step, pseudo-labels at confidence >= {cfg.unlabelled_threshold}", highlight=False,
                      markup=False)
    trainer = Trainer(model, cfg, make_train, val_ds, console, evaluate_start=works,  # checks the run folder first
                      unlabelled=semi)
    console.print(f"data: {len(tr)} train images{f', {len(va)} val images' if va else ''}, "
                  f"{spec.describe(tr)} from {tr.source}", highlight=False, markup=False)
    if not weights and not cfg.resume:
        known = list_weights(model.config["backbone"])
        console.print(f"no --weights: the {model.config['backbone']} backbone starts from random weights"
                      + (f" (pretrained: --weights {known[0]})" if known else ""), highlight=False, markup=False)
    result = trainer.fit()
    if result["rank"] != 0:  # other DDP ranks: rank 0 reports and evaluates
        return result
    dropped = trainer.train_ds.counts.get("dropped_boxes", 0)
    if dropped:
        console.print(f"augmentation dropped {dropped} boxes that became too small or left the image")
        result["dropped_boxes"] = dropped
    skipped = sorted(set(tr.skipped + (va.skipped if va else [])))
    result["skipped"] = skipped
    if skipped:
        note(console, f"skipped {len(skipped)} bad inputs:", "; ".join(skipped[:5]), style="yellow")
    if va is not None:
        best = load_model(Path(cfg.out_dir) / "best.safetensors", device=cfg.device)
        result["val"] = evaluate(best, val_data=va, out=str(cfg.out_dir), console=console,
                                 batch_size=cfg.batch_size, precision=cfg.precision)
    return result


def evaluate(model, data: str | None = None, *, task: str | None = None, val_data=None, device: str = "cpu",
             console: Console | None = None, **options) -> dict:
    """Metrics of ``model`` on ``data``. ``options``: data options (images, fmt, masks, split,
    class_map, skip_bad, ...; see cvapps.options.DataOptions) and evaluation options (metric
    "coco" | "voc", iou, eleven_point, save_results, out, batch_size, precision; see
    cvapps.options.EvalOptions). ``task``: refuse a model of another task.

    classify: a folder of class folders, a root with val/, or a CSV; multi-class results
    include the confusion matrix (and out/confusion.png).
    detect: annotations (COCO/VOC/YOLO) + ``images``; dataset classes are matched to the
    model's by name (VOC/COCO synonyms, ``class_map``); classes the model does not know are
    listed under ``not_evaluated_classes``.
    segment: a CamVid-style root (``split``), or ``images`` + ``masks``; mIoU, pixel_acc, ...
    landmarks / pose: keypoint annotations + ``images`` (ground-truth boxes are cropped)."""
    data_kw, eval_kw = split_options(options, DataOptions, EvalOptions)
    eopts = EvalOptions.parse(eval_kw)
    check_outputs({"--out": eopts.out}, {"--save-results": eopts.save_results})
    model = _model(model, task, device)
    spec = model.spec
    opts = staged(DataOptions.parse(data_kw, data=data))
    va = val_data if val_data is not None else spec.read_eval(model, opts)
    predicted = spec.evaluate_predicted(model, va, opts, eopts, helper_loader(device, "auto", console))
    if predicted is not None:
        return predicted
    ds = spec.eval_dataset(model, va, opts.skip_bad)
    ev = model.make_evaluator(ds)
    metrics = evaluate_dataset(model, ds, eopts.batch_size, eopts.precision, evaluator=ev, workers=eopts.workers)
    metrics = spec.finish_eval(model, va, ev, metrics, eopts)
    if va.skipped:
        metrics["skipped"] = sorted(set(va.skipped))
    return metrics


def evaluate_results(results: str, data: str | None = None, *, task: str = "detect", **options) -> dict:
    """Evaluate a results file without a model: detection — a COCO results JSON against COCO
    ground truth; segmentation — a folder of label-map PNGs; landmarks / pose — predict's
    JSON Lines or a COCO keypoint-results JSON. No images are needed."""
    data_kw, eval_kw = split_options(options, DataOptions, EvalOptions)
    return TASKS.get(task).evaluate_results(results, DataOptions.parse(data_kw, data=data),
                                            EvalOptions.parse(eval_kw))


def evaluate_keypoint_results(results: str, data: str, images: str | None = None, fmt: str | None = None,
                              task: str = "pose") -> dict:
    """Landmark / pose results files (kept for older code; see ``evaluate_results``)."""
    return evaluate_results(results, data, task=task, images=images, fmt=fmt)


def select(model, pool, budget: int, strategy: str | None = None, device: str = "cpu", backend: str = "auto",
           make_scorer=None, **kwargs) -> list[dict]:
    """Pick the ``budget`` images of ``pool`` most worth labelling; see cvapps.active.select.
    Images are prepared as ``predict`` prepares them: a top-down keypoint model scores the
    crops of its default box source (pose: the COCO detector's people; landmarks: the checked
    face detector's faces) unless ``boxes`` / ``detector`` / ``whole_image`` (or any other
    option of its task's predict: the ``kwargs`` cvapps.active.select.select does not take)
    say otherwise.
    ``backend`` "auto": a model file or weights name scores on ONNX Runtime (as ``predict``)
    when the strategy needs only the model's outputs — not MC-dropout passes or backbone
    embeddings (bald, variance, coreset, hybrid), which stay on PyTorch. ``make_scorer(items,
    asked)``: the pool's expanded items and the task options taken -> a ``scorer`` that scores
    elsewhere (cvapps.scaleout)."""
    check_counts(budget, kwargs.get("vid_stride", 10), kwargs.get("min_gap", 30))
    own = inspect.signature(_select).parameters
    asked = {k: v for k, v in [(k, kwargs.pop(k)) for k in list(kwargs) if k not in own]
             if v is not None and v is not False}
    items = [p for p in expand_sources(pool if isinstance(pool, (list, tuple)) else [pool])
             if isinstance(p, (Path, str))]
    m, pre = select_pipeline(model, items, strategy, device, backend, kwargs.get("console"), **asked)
    if make_scorer is not None:
        kwargs["scorer"] = make_scorer(items, asked)
    return _select(m, pool, budget, strategy, pre=pre, **kwargs)


def select_pipeline(model, items: list, strategy: str | None, device: str, backend: str,
                    console: Console | None = None, **asked) -> tuple:
    """(model, preprocessor) as ``select`` scores ``items`` (also what each worker of a
    distributed run builds); ``asked``: the task's predict options (e.g. a detector)."""
    loaded_here = not isinstance(model, (TaskModel, GraphModel))
    m = _model(model, None, device)
    known = {o.dest or o.name for o in m.spec.cli_options.get("predict", ())}
    if set(asked) - known:
        raise ConfigError(f"--{sorted(set(asked) - known)[0].replace('_', '-')} is not an option of `predict "
                          f"{m.task}`, so select does not take it for this model either",
                          hint="select finds instances as predict does: --boxes / --detector / --whole-image are "
                               "for top-down keypoint models")
    pre, _ = m.spec.predict_setup(m, helper_loader(device, backend, console), items, **asked)
    if getattr(pre, "not_for_select", None):
        raise ConfigError(pre.not_for_select)
    if loaded_here and isinstance(m, TaskModel):
        name = strategy or default_strategy(m)
        if name in STRATEGIES and STRATEGIES[name].needs in ("probs", "none"):  # outputs only: any runtime
            m = prepare(m.fold_batchnorm(), backend, device, "fp32", {}, console)
    return m, pre


def select_merge(shards: list[str | Path], out: str | Path, copy_to: str | None = None, link: bool = False,
                 model=None, console: Console | None = None) -> list[dict]:
    """The picks of ``select --shard I/N`` runs (their folders), as the unsharded run picks
    them; ``model`` (optional) draws its predictions on the contact sheet."""
    console = console or Console(stderr=True, markup=False)
    return _merge(shards, out, copy_to, link, _model(model, None, "cpu") if model else None, console)


def simulate(task: str = "classify", data: str | None = None, *, backbone: str | None = None,
             weights: str | None = None, img_size=None, initial: int = 100, step: int = 100, rounds: int = 5,
             strategies: list[str] | None = None, seeds: int = 3, out: str = "runs/al-simulate", epochs: int = 5,
             batch_size: int = 8, lr: float = 2e-3, console: Console | None = None, workers: int | None = None,
             **options) -> dict:
    """Replay active learning on a fully labelled set; writes out/curves.json and
    out/learning_curves.png. Returns the curves. ``options``: data options as for ``train``
    (``val_fraction`` defaults to 0.2 when there is no validation split). ``workers``: data
    loading processes / threads (default: the machine's; 0 or 1: in the main process).

    Classification (the spec's feature recipe): the backbone's features are computed once and
    each round trains a fresh MLP head (cvapps.active.simulate). Other tasks: each round
    fine-tunes a fresh head on the frozen backbone for ``epochs`` and scores the pool with
    cvapps.select (cvapps.active.simulate_tasks)."""
    spec = TASKS.get(task)
    opts = DataOptions.parse({"val_fraction": 0.2, **options}, data=data)
    if not data:
        raise ConfigError(f"{task} simulation needs --data")
    check_outputs({"--out": out})
    tr, va = spec.read_train(opts)
    if va is None:
        raise DataError("the simulator needs a validation split", path=str(data), hint="pass --val-fraction F")
    need = initial + rounds * step
    if need > len(tr):
        raise ConfigError(f"--initial {initial} + --rounds {rounds} x --step {step} = {need} labels, but the pool "
                          f"has {len(tr)} images", hint=f"lower --rounds or --step (at most "
                          f"{max(0, (len(tr) - initial) // max(step, 1))} rounds of {step} fit)")
    if spec.feature_simulation:
        model = create_model(task, backbone, weights, labels=tr.labels, img_size=img_size)
        x, xv = (embed(model, p, console=console, workers=workers) for p in (tr.paths, va.paths))
        curves = sim.simulate_features(x, tr.target_tensor(), xv, va.target_tensor(), len(tr.labels), initial, step,
                                       rounds, strategies or ["random", "entropy", "margin", "bald", "coreset"], seeds)
        curves["metric"] = model.primary_metric()[0]
        sim.save(curves, Path(out))
        return curves
    args = spec.model_args(tr, opts)
    args.pop("class_weights", None)
    curves = simulate_task(lambda: create_model(task, backbone, weights, img_size=img_size, **args), tr, va, initial,
                           step, rounds, strategies or ["random", "least_confidence", "coreset"], seeds, epochs,
                           batch_size, lr, workers=workers)
    sim.save(curves, Path(out), curves["metric"])
    return curves
