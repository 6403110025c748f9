"""What the API, CLI and active learning need to know about image classification."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ...data.classification import (ClassificationData, ImageDataset, load_split, resolve_dataset, to_labelset,
                                    write_csv)
from ...data.sources import image_files
from ...data.transforms import EvalTransform, train_augment
from ...data.unlabelled import WeakStrongPairs
from ...errors import ConfigError, DataError
from ...ops.uncertainty import bald, entropy, least_confidence, margin, variance
from ...options import CliOption, DataOptions, EvalOptions, parse_size, split_list
from ..base import TASKS
from ..spec import PseudoLabelWriter, SemiSupervised, TaskSpec, mc_dropout, split_every_kth
from .fixmatch import FixMatch
from .gallery import Gallery
from .metrics import save_confusion_png

INSTANCES = {"faces": ("landmarks", "face"), "people": ("pose", "person")}  # --on: the task that finds them
CACHE_IMAGES = 10_000  # decoded-image cache bound for augmented training (~3 GB at 256 px)
_PROB_FNS = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy, "hybrid": entropy}


class ClassificationSpec(TaskSpec):
    # the most accurate ImageNet classifier within 2x of MobileNetV2's speed as predict runs it
    # (benchmarks/classifiers.py: 87.6% vs 82.3% right on the hymenoptera photos, 1.9x slower)
    default_weights = "efficientnet_lite2.imagenet1k"
    default_kind = "multiclass"
    tracks = True  # the instances of --on faces | people (whole-image predictions have nothing to track)
    feature_simulation = True
    distillation = True
    self_training = True  # labels and pseudo-labels are both path,label CSV rows
    train_defaults = {"epochs": 10, "batch_size": 32, "lr": 1e-3}
    cli_options = {
        "predict": (CliOption("top_k", int, 5, "labels per prediction"),
                    CliOption("on", str, None, "classify each instance, not the whole image: faces (the face "
                                               "detector's, checked) or people (the person detector's)"),
                    CliOption("boxes", str, None, "classify each box of a COCO-style boxes file (a dataset JSON "
                                                  "or a detection results list)"),
                    CliOption("detector", str, None, "with --on: another cvapps detector for the instances"),
                    CliOption("face_check", str, None, "with --on faces: the second look at each face (default the "
                                                       "landmarks' FaceMesh check); 'none' keeps every face"),
                    CliOption("box_conf", float, 0.0, "with --on / --boxes: minimum box score"),
                    CliOption("gallery", str, None, "a descriptor model (face_descriptor.faceapi): name each face "
                                                    "by the people enrolled in this gallery (cvapps faces enroll)")),
        "train": (CliOption("train", str, None, "training class-folder tree or CSV (instead of --data ROOT)"),
                  CliOption("negatives", str, None, "with --keep-classes: images showing none of the data's "
                                                    "classes (folder, .txt list or glob)"),
                  CliOption("kind", str, None, "multiclass | multilabel | regression | binned (default: from the "
                                               "data)"),
                  CliOption("bins", str, None, "binned regression: LOW,HIGH,N", convert=split_list),
                  CliOption("label_smoothing", float, None, "multiclass: label smoothing")),
        "eval": (CliOption("out_dir", str, None, "also write confusion.png here", ("--out",), dest="out"),),
    }

    def make_config(self, backbone, weights, kind, img_size, head, labels=None, num_classes=None) -> dict:
        """Without ``labels``/``num_classes`` and with ImageNet weights: the ImageNet classifier."""
        if labels is None and num_classes is None and weights is not None and weights.task == self.name:
            labels = weights.label_names()
        if labels is None:
            labels = [str(i) for i in range(num_classes or 1)]
        pre = self.preprocessing(weights)
        size = parse_size(img_size)
        if isinstance(size, list):
            if size[0] != size[1]:
                raise ConfigError(f"--img-size {img_size}: classifiers take square crops", hint="pass one size S")
            size = size[0]
        if size:
            pre["resize_size"] = round(size * pre["resize_size"] / pre["input_size"])
            pre["input_size"] = size
        head_cfg = {"kind": kind or self.default_kind, "num_outputs": len(labels)}
        if weights is not None and weights.head.get("hidden"):
            head_cfg.update(hidden=weights.head["hidden"], activation=weights.head.get("activation", "hardswish"))
        head_cfg.update({k: v for k, v in head.items() if v is not None})
        return {"task": self.name, "backbone": backbone, "head": head_cfg, "labels": list(labels),
                "preprocessing": pre, "weights": weights.name if weights is not None else None}

    # data -----------------------------------------------------------------------------
    def read_train(self, opts: DataOptions, kind: str | None = None):
        tr, va = resolve_dataset(opts.data, opts.train, opts.val, kind, opts.images, opts.allow_outside)
        if va is None:
            tr, va = split_every_kth(tr, opts.val_fraction)
        return tr, va

    def keep_classes(self, weights, train, val, opts=None):
        """Labels = the pretrained classifier's (e.g. ImageNet's 1000) + the data's new ones; a
        data class with one of its names (case-insensitive) is that class. The training set
        gains ``opts.negatives`` — images showing none of the data's classes — with target -1:
        with one softmax and images of the new classes only, nothing teaches the model where the
        new classes end (without them an ImageNet classifier taught ants and bees named 94 of
        100 unrelated VOC photos ants or bees). -> (train, val over those labels, the pretrained
        classes: all of them learn from the frozen original)."""
        if weights is None or weights.task != self.name:
            raise ConfigError("--keep-classes needs --weights of a pretrained classifier "
                              "(e.g. mobilenet_v2.imagenet1k)")
        if train.kind != "multiclass":
            raise ConfigError(f"--keep-classes is for multiclass data, not {train.kind}")
        if opts is None or not opts.negatives:
            raise ConfigError("--keep-classes for a classifier needs --negatives: images that show none of the "
                              "data's classes, so the model learns where the new classes end",
                              hint="a folder, .txt list or glob of ordinary photos (100 or more) from where the "
                                   "model will be used")
        labelled = {Path(p).resolve() for p in list(train.paths) + list(val.paths if val is not None else [])}
        negatives = [p for p in image_files(opts.negatives) if p.resolve() not in labelled]
        if not negatives:
            raise DataError("no images among the negatives (other than the labelled ones)", path=opts.negatives)
        base = list(weights.config["labels"]) if weights.kind == "model" else weights.label_names()
        by_name = {n.lower(): i for i, n in enumerate(base)}
        labels = base + [n for n in train.labels if n.lower() not in by_name]
        index = {n.lower(): i for i, n in enumerate(labels)}

        def over(data, extra=()):
            lut = [index[n.lower()] for n in data.labels]
            targets = [lut[t] for t in data.targets] + [-1] * len(extra)
            return ClassificationData(list(data.paths) + list(extra), targets, labels, data.kind, data.source,
                                      data.skipped)

        return over(train, negatives), over(val) if val is not None else None, list(range(len(base)))

    def model_args(self, data, opts, console=None) -> dict:
        return {"labels": data.labels, "kind": data.kind}

    # distillation: the teacher's logits (N, C) + the label or -1 as (N, C + 1) rows -----------
    def distill_data(self, teacher, paths, run, opts):
        if teacher.config["head"].get("kind", "multiclass") != "multiclass":
            raise ConfigError("the teacher must be a multiclass classifier (softmax over its labels)")
        names, paths, hard = list(teacher.labels), list(paths), [-1] * len(paths)
        if opts.get("labels"):
            lab = load_split(Path(opts["labels"]), None, "multiclass", None)
            unknown = sorted(set(lab.labels) - set(names))
            if unknown:
                raise DataError(f"labelled classes {unknown} are not among the teacher's", path=opts["labels"],
                                hint="distillation trains the teacher's classes")
            paths += list(lab.paths)
            hard += [names.index(lab.labels[t]) for t in lab.targets]
        logits, kept = run.outputs(paths, lambda x: teacher(x).logits.float())
        paths, hard = [paths[i] for i in kept], [hard[i] for i in kept]
        rows = torch.cat([logits, torch.tensor(hard, dtype=torch.float32)[:, None]], 1).tolist()
        return (ClassificationData(paths, rows, names, "distill", "distillation"),
                {"labels": names, "kd_temperature": opts.get("temperature", 4.0), "kd_alpha": opts.get("alpha", 0.5)})

    def describe(self, data) -> str:
        return f"{len(data.labels)} {'classes' if data.kind != 'regression' else 'target'} ({data.kind})"

    def datasets(self, model, train, val, skip_bad: bool = False):
        pre = model.config["preprocessing"]
        evalt = EvalTransform.from_config(pre)

        def make_train(augment: bool):
            # small sets: decode each file once and keep a copy with short side ~1.15x resize (enough
            # for the crops); ~0.3 MB per image, so only up to CACHE_IMAGES images
            cache = augment and len(train) <= CACHE_IMAGES
            return ImageDataset(train, evalt, train_augment(pre) if augment else None, skip_bad,
                                cache_side=int(pre["resize_size"] * 1.15) if cache else None, cache_images=CACHE_IMAGES)

        return make_train, ImageDataset(val, evalt, None, skip_bad) if val is not None else None

    def semi_supervised(self, model, paths, cfg, skip_bad: bool = False):
        """FixMatch (cvapps.tasks.classification.fixmatch): single-label classifiers only."""
        if model.config["head"]["kind"] != "multiclass":
            raise ConfigError(f"FixMatch needs a single-label classifier, this one is {model.config['head']['kind']}")
        pre = model.config["preprocessing"]
        ds = WeakStrongPairs(paths, EvalTransform.from_config(pre), train_augment(pre), skip_bad)
        return SemiSupervised(ds, cfg.unlabelled_ratio, FixMatch(cfg.unlabelled_threshold, cfg.unlabelled_weight))

    label_writers = ("csv",)

    def tool_labels(self, model):
        return {"choices": list(model.labels)}

    def read_labelled(self, opts: DataOptions):
        if not opts.data:
            raise ConfigError("no labels", hint="pass a class-folder tree, a CSV, a Label Studio export or a CVAT XML")
        return load_split(opts.data, opts.classes, None, opts.images, opts.allow_outside)

    def labels_of(self, data):
        return to_labelset(data)

    def write_native(self, data, fmt, out):
        return write_csv(data, out)

    def read_eval(self, model, opts: DataOptions):
        if not opts.data:
            raise ConfigError("no evaluation data", hint="pass --data DIR (class folders, a root with val/, or a CSV)")
        root = Path(opts.data)
        if root.is_dir() and (root / "val").is_dir():
            root = root / "val"
        elif root.is_dir() and (root / "val.csv").is_file():
            root = root / "val.csv"
        return load_split(root, model.labels, model.kind, opts.images, opts.allow_outside)

    def finish_eval(self, model, data, evaluator, metrics: dict, opts: EvalOptions) -> dict:
        if opts.out and "confusion_matrix" in metrics:
            Path(opts.out).mkdir(parents=True, exist_ok=True)
            save_confusion_png(metrics["confusion_matrix"], model.labels, Path(opts.out) / "confusion.png")
        return metrics

    # predict --------------------------------------------------------------------------
    def can_track(self, options: dict) -> bool:
        return bool(options.get("on") or options.get("boxes") or options.get("gallery"))

    def predict_setup(self, model, load, items=(), top_k: int = 5, on: str | None = None, boxes: str | None = None,
                      detector: str | None = None, box_conf: float = 0.0, gallery: str | None = None,
                      face_check: str | None = None):
        """The whole image, or (``on`` faces | people, or a ``boxes`` file) each instance's crop
        (see InstanceCrops): the instances come from the task that finds them (landmarks' face
        detector with its face check, pose's person detector), one InstanceClasses per image.
        ``gallery``: an embedding model's faces (``on`` defaults to faces) named by the people
        enrolled there (cvapps.tasks.classification.gallery)."""
        known = None
        if gallery is not None:
            known = self.gallery_for(model, gallery)
            on = on or ("faces" if not boxes else None)
        if int(top_k) < 1:
            raise ConfigError(f"--top-k must be at least 1, got {top_k}")
        if on is None and not boxes:
            if detector is not None or box_conf or face_check is not None:
                raise ConfigError("--detector / --box-conf / --face-check choose the instances of --on faces | people")
            return model.preprocessor(), {"top_k": int(top_k)}
        if on is not None and on not in INSTANCES:
            raise ConfigError(f"--on {on!r}: classify each of {' | '.join(INSTANCES)}", hint="or --boxes FILE")
        task, instance = INSTANCES[on] if on else ("pose", "box")
        spec = TASKS.get(task)
        source = spec.instance_source(load, items, boxes, detector, None, box_conf)
        checked = on == "faces" and getattr(getattr(source, "det", None), "finds_instances", False)
        if face_check is not None and not checked:
            raise ConfigError("--face-check looks again at the face detector's faces (--on faces)")
        if checked and (face_check is None or face_check.lower() != "none"):
            source.check = spec.face_check(load, face_check)
        pre = model.preprocessor(source)
        if known is not None:
            pre.refine = known.refine
        return pre, {"top_k": int(top_k), "instance": instance}

    def gallery_for(self, model, path: str) -> Gallery:
        """The gallery at ``path``, refused in one line unless ``model`` made its descriptors."""
        g = Gallery.load(path)
        head = model.config["head"]
        if head.get("kind") != "embedding":
            raise ConfigError("--gallery names faces from descriptors: use a descriptor model",
                              hint=f"--model {g.model}")
        mine = model.config.get("weights") or ""
        if head.get("num_outputs") != g.dims or (mine and Path(g.model).name != mine and g.model != mine):
            raise ConfigError(f"the gallery holds {g.dims}-d descriptors of {g.model}; this model gives "
                              f"{head.get('num_outputs')}-d descriptors of {mine or 'another model'}", path=path,
                              hint=f"identify with --model {g.model} (descriptors of different models do not compare)")
        return g

    # active learning ------------------------------------------------------------------
    def strategies(self, model) -> list[str]:
        base = super().strategies(model)
        if model.kind in ("multiclass", "binned"):
            return base + ["least_confidence", "margin", "entropy", "bald", "hybrid"]
        if model.kind == "regression":
            return base + ["variance"]
        return base

    def scores(self, model, x, metas, strategy, mc_passes) -> torch.Tensor:
        if strategy in ("bald", "variance"):
            cached = model.cache_features(model.forward_features(x))  # the backbone once, the head T times
            runs = mc_dropout(model.head.dropout, mc_passes, lambda: model.forward_cached(cached).logits.float())
            return variance(runs) if strategy == "variance" else bald(runs.softmax(-1))
        return _PROB_FNS[strategy](model(x).logits.float().softmax(1))

    def pseudo_labels(self, model, out_dir: Path, threshold: float) -> PseudoLabelWriter:
        return _CsvLabels(out_dir / "pseudo_labels.csv", threshold)


class _CsvLabels(PseudoLabelWriter):
    """``path,label`` rows (loadable by `cvapps train classify --train FILE.csv`)."""

    def __init__(self, file: Path, threshold: float):
        self.file, self.threshold, self.written = file, threshold, 0
        self.f = open(file, "w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(["path", "label"])

    def add(self, source: str, pred, meta: dict) -> None:
        if pred.topk and pred.topk[0][2] >= self.threshold:
            self.w.writerow([self.name(source), pred.topk[0][1]])
            self.written += 1

    def close(self) -> dict:
        self.f.close()
        return super().close()
