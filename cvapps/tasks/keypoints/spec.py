"""What the API, CLI and active learning need to know about the top-down keypoint tasks
(facial landmarks and pose share this; their specs add defaults and metrics)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ...data.io import atomic_write, is_image
from ...data.keypoints import KeypointData, read_keypoints, to_labelset, write_coco
from ...errors import ConfigError, DataError
from ...options import CliOption, DataOptions, EvalOptions, parse_size
from ...progress import count
from ...schema import (CORRESPONDENCES, FACE_BY_COUNT, Schema, builtin, convert_points, correspondence,
                       resolve)
from ..batch import predict_inputs
from ..spec import PseudoLabelWriter, TaskSpec, split_every_kth
from .heads import KEYPOINT_HEADS
from .topdown import DetectorBoxes, FileBoxes, TopDown
from .topdown import whole_image as whole_image_boxes
from .workflow import KeypointDataset, augment, load_results, match_results


def parse_scales(value) -> tuple[float, ...] | None:
    """"1,2" / [1, 2] -> (1.0, 2.0); None stays None (the model's default)."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = tuple(float(v) for v in parts)
    except ValueError:
        raise ConfigError(f"--scales takes numbers such as 1,2, got {value!r}") from None
    if not out or any(not 1 <= v <= 4 for v in out):
        raise ConfigError(f"--scales must be between 1 and 4 (enlargements for small faces), got {value!r}")
    return out


PHOTO_SCALES = (1.0, 2.0)  # the face detector's default test-time scales when every input is a still image


def all_still(items) -> bool:
    """Whether every input is a still image (an image file or an array)."""
    items = list(items)
    return bool(items) and all(isinstance(it, np.ndarray) or (isinstance(it, (str, Path)) and is_image(it))
                               for it in items)


def photo_scales(items) -> tuple[float, ...] | None:
    """PHOTO_SCALES when every input is a still image (files or arrays): photos get the extra
    enlarged pass for small faces (~5x the compute); video, cameras and streams keep one pass."""
    return PHOTO_SCALES if all_still(items) else None


# what a pretrained top-down model's config says about its crops and instances, kept when it is fine-tuned
CROP_KEYS = ("align", "pixel_grid", "border")
INSTANCE_KEYS = ("instance", "instance_classes", "min_presence", "box_from_points", "default_boxes")


def detector_scales(detector, scales, items) -> tuple[float, ...] | None:
    """The face detector's test-time scales: ``scales`` when given, else ``photo_scales``. An
    exported graph (ONNX Runtime) has one input size: one pass, and a clear error if asked
    for more."""
    asked = parse_scales(scales)
    if isinstance(detector, torch.nn.Module):
        return asked or photo_scales(items)
    if asked and set(asked) - {1.0}:
        raise ConfigError("--scales needs the PyTorch face detector: an exported graph has one input size",
                          hint="use --backend torch (or the model file instead of its .onnx export)")
    return None


def bridge(data: KeypointData, schema: Schema) -> tuple[KeypointData, tuple | None, str | None]:
    """Labels and predictions in one schema, where the points correspond (cvapps.schema.
    CORRESPONDENCES: the dense face schemas' 5 points, FaceMesh's iBUG-68 points): (the labels,
    converted to ``schema`` when they can be; the groups converting predicted points to the
    labels' schema otherwise, else None; what was mapped, for the metrics' "schema" note).
    DataError when the schemas differ and do not correspond."""
    if data.schema.name == schema.name or (data.num_keypoints == len(schema) and "custom" in (data.schema.name,
                                                                                           schema.name)):
        return data, None, None
    to_model = correspondence(data.schema.name, schema.name)
    if to_model is not None:
        return data.converted(schema, to_model), None, f"labels' {data.schema.name} points as {schema.name}"
    to_labels = correspondence(schema.name, data.schema.name)
    if to_labels is not None:
        return data, to_labels, f"predicted {schema.name} points as {data.schema.name}"
    for a, common in CORRESPONDENCES:  # both map to a third schema (e.g. the 5 face points)
        if a == data.schema.name and correspondence(schema.name, common) is not None:
            return (data.converted(builtin(common), correspondence(a, common)), correspondence(schema.name, common),
                    f"labels' {data.schema.name} and predicted {schema.name} points as {common}")
    known = sorted({f"{a}->{b}" for a, b in CORRESPONDENCES})
    raise DataError(f"the data has {data.num_keypoints} keypoints per instance (schema {data.schema.name!r}), the "
                    f"model's schema {schema.name!r} has {len(schema)}, and their points do not correspond",
                    path=data.source, hint=f"schemas cvapps maps between: {', '.join(known)}")


def as_results_rows(rows: list[dict], groups: tuple | None) -> list[dict]:
    """Result rows (COCO keypoint instances) with their points converted by ``groups``."""
    if groups is None:
        return rows
    return [{**r, "keypoints": convert_points(np.asarray(r["keypoints"], np.float64).reshape(-1, 3),
                                              groups).reshape(-1).tolist()} for r in rows]


def as_results(preds: list, paths: list, groups: tuple | None) -> dict[str, list[dict]]:
    """Predictions (one per image) -> results per file name, as a predict JSON Lines file has
    them; ``groups``: converts each instance's points to the labels' schema."""
    by_name: dict[str, list[dict]] = {}
    for path, pred in zip(paths, preds):
        by_name.setdefault(Path(path).name, []).extend(as_results_rows(pred.to_dict(), groups))
    return by_name


class KeypointSpec(TaskSpec):
    distillation = True
    distill_augment = True  # the teacher's points move with the image like labels
    cli_options = {
        "predict": (CliOption("boxes", str, None, "COCO-style boxes: a dataset JSON or a detection results list",
                              ("--boxes", "--faces")),
                    CliOption("detector", str, None, "a cvapps detection model for the boxes"),
                    CliOption("detector_label", str, None, "detector class to keep (default face / person)"),
                    CliOption("box_conf", float, 0.0, "minimum box score (file or detector)"),
                    CliOption("whole_image", bool, False, "one instance per image: the whole frame (webcams, "
                                                          "single-person shots)"),
                    CliOption("flip_test", bool, False, "average with the mirrored crop (left/right swapped)"),
                    CliOption("scales", str, None, "face detector: test-time scales, e.g. 1,2 to find faces "
                                                   "under ~20 px (5x the compute); default 1,2 for still images, 1 "
                                                   "for video and cameras")),
        "train": (CliOption("head", str, None, "heatmap (deconvolution, stride 4), regression (direct) or movenet "
                                               "(CenterNet-style); default: the --weights model's head, else heatmap",
                            dest="kind"),
                  CliOption("loss", str, None, "regression: wing | l1 | l2 (default wing faces, l1 pose)"),
                  CliOption("cascade", bool, False, "add a stage refining each point from a patch around it"),
                  CliOption("sigma", float, 2.0, "heatmap Gaussian sigma (heatmap pixels)")),
        "eval": (CliOption("instances", str, None, "labels: crop the labelled boxes (top-down protocol); predict: "
                                                  "find instances as `predict` does (default detector, face check) "
                                                  "and match them to the labels; default: labels, or predict for "
                                                  "models that find their own (the face detector)"),),
    }
    default_kind = "heatmap"
    tracks = track_video = smooths = True
    default_schema: ClassVar[str] = "coco17"
    rotate: ClassVar[float] = 30.0  # training rotation range (degrees)
    box_label: ClassVar[str] = "person"  # the detector class whose boxes are cropped
    instance: ClassVar[str] = "person"  # category name in pseudo-label files
    default_detector: ClassVar[str | None] = None  # a pretrained detector for boxes when none are given
    named_box_sources: ClassVar[dict] = {}  # --boxes NAME: a built-in box source instead of a file

    def make_config(self, backbone, weights, kind, img_size, head, schema=None) -> dict:
        """Crop size [H, W] (default per task), the schema (names, flip pairs, skeleton, eyes,
        OKS sigmas) and the crop ``margin`` around boxes (a head option here)."""
        # a pretrained top-down model of this task (e.g. MoveNet): its head kind, crop size, margin and
        # (unless the data has its own) schema; a single-stage face detector's weights lend their backbone
        base = self.pretrained_config(weights)
        if base.get("head", {}).get("kind") not in KEYPOINT_HEADS:
            base = {"head": {}, "preprocessing": {}}
        schema = resolve(schema if schema is not None else base.get("schema", self.default_schema))
        size = parse_size(img_size) or base["preprocessing"].get("input_size") or self.model.default_size
        size = [size, size] if isinstance(size, int) else list(size)
        head = dict(head)
        margin = head.pop("margin", None) or base["preprocessing"].get("margin") or 1.25
        pre = self.preprocessing(weights)
        head_cfg = {"kind": kind or base["head"].get("kind") or self.default_kind,
                    **{k: v for k, v in head.items() if v is not None}}
        multiple = getattr(KEYPOINT_HEADS.get(head_cfg["kind"]), "size_multiple", 32)  # maps' strides; 1: pooled
        if any(v % multiple for v in size):
            raise ConfigError(f"keypoint input size {size} must be multiples of {multiple} (the "
                              f"{head_cfg['kind']} head's stride)")
        config = {"task": self.name, "backbone": backbone, "head": head_cfg, "labels": list(schema.keypoints),
                  "schema": schema.to_dict(), "preprocessing": {"mean": pre["mean"], "std": pre["std"],
                                                                "input_size": size, "margin": float(margin),
                                                                "resize": "affine"},
                  "weights": weights.name if weights is not None else None}
        if base["head"].get("kind") == head_cfg["kind"]:  # fine-tuning it: how it crops and reads its instances
            config["preprocessing"].update({k: base["preprocessing"][k] for k in CROP_KEYS
                                            if k in base["preprocessing"]})
            config.update({k: base[k] for k in INSTANCE_KEYS if k in base})
        return config

    # data -----------------------------------------------------------------------------
    def _read(self, data: str | None, images: str | None, opts: DataOptions, need_images: bool = True):
        if not data:
            raise ConfigError(f"{self.name} needs --data (COCO JSON, .pts folder or CSV)")
        if need_images and images is None and (opts.fmt or Path(data).suffix.lower().lstrip(".")) in ("coco", "json"):
            raise ConfigError("COCO keypoints need --images DIR (the crops come from the pictures)")
        return read_keypoints(data, images, opts.fmt, opts.skip_bad, opts.allow_outside)

    def read_train(self, opts: DataOptions, kind=None):
        tr = self._read(opts.data, opts.images, opts)
        va = self._read(opts.val, opts.val_images or opts.images, opts) if opts.val else None
        if va is None:
            tr, va = split_every_kth(tr, opts.val_fraction)
        if not tr.instances():
            raise DataError("the training annotations have no labelled instance", path=tr.source)
        return tr, va

    def model_args(self, data, opts, console=None) -> dict:
        return {"schema": data.schema}

    def describe_outputs(self, model) -> str:
        return count(len(model.labels), "keypoint")

    def describe(self, data) -> str:
        return f"{len(data.instances())} instances x {data.num_keypoints} keypoints (schema {data.schema.name})"

    def datasets(self, model, train, val, skip_bad: bool = False):
        """make_train(augment) and the validation dataset, both cropping ground-truth boxes."""
        td = TopDown.from_config(model.config["preprocessing"])

        def make_train(aug: bool):
            return KeypointDataset(train, td, augment(self.rotate) if aug else None, model.perm, skip_bad)

        return make_train, KeypointDataset(val, td, None, model.perm, skip_bad) if val is not None else None

    label_writers = ("coco",)

    def tool_labels(self, model):
        return {"pointsets": [self.instance], "points": list(model.schema.keypoints)}

    def read_labelled(self, opts: DataOptions):
        return self._read(opts.data, opts.images, opts, need_images=False)

    def labels_of(self, data):
        return to_labelset(data)

    def write_native(self, data, fmt, out):
        return write_coco(data, out)

    def read_eval(self, model, opts: DataOptions):
        """The labels, in the model's schema where they can be (see ``bridge``); labels whose
        points only the model's predictions can be mapped to are evaluated by predicting."""
        d = self._read(opts.data, opts.images, opts)
        labels, groups, note = bridge(d, model.schema)
        labels.mapped = (groups, note)
        return labels

    def evaluate_predicted(self, model, data, opts: DataOptions, eval_opts: EvalOptions, load) -> dict | None:
        """Metrics of the instances ``predict`` finds (the default detector or the model's own
        faces, the face check) matched to the labels by box IoU, like a results file: for a
        model that finds its own instances (the face detector), for ``--instances predict``, and
        where only predictions can be mapped to the labels' schema. None: crop the labels' boxes."""
        groups, note = getattr(data, "mapped", (None, None))
        own = getattr(model, "finds_instances", False)
        mode = eval_opts.instances or ("predict" if own or groups is not None else "labels")
        if mode == "labels":
            if own:
                raise ConfigError("this model finds its own instances: it is evaluated on what it finds",
                                  hint="drop --instances labels (or use --instances predict)")
            if groups is not None:
                raise ConfigError(f"the model's {model.schema.name} points map to the labels' {data.schema.name} "
                                  "points only from its predictions", hint="evaluate with --instances predict")
            return None
        paths = [str(r.path) for r in data.records]
        pre, post = self.predict_setup(model, load, paths)
        preds = predict_inputs(model, paths, eval_opts.batch_size, eval_opts.precision, pre=pre, **post)
        by_name = as_results(preds, paths, groups)
        pairs, missed = match_results(by_name, data)
        metrics = {**self.results_metrics(data, by_name, pairs, missed), "instances": "predict"}
        return {**metrics, "schema": note} if note else metrics

    def evaluate_results(self, results: str, opts: DataOptions, eval_opts: EvalOptions) -> dict:
        gt = self._read(opts.data, opts.images, opts, need_images=False)
        by_name = load_results(results, gt)
        counts = {len(p.get("keypoints") or []) // 3 for ps in by_name.values() for p in ps}
        note = None
        if len(counts) == 1:
            (k,) = counts
            if k != gt.num_keypoints and k in FACE_BY_COUNT:  # a face model of another schema
                gt, groups, note = bridge(gt, builtin(FACE_BY_COUNT[k]))
                by_name = {n: as_results_rows(ps, groups) for n, ps in by_name.items()}
        pairs, missed = match_results(by_name, gt)
        if not pairs and missed:
            raise DataError(f"no prediction matches any of the {missed} labelled instances", path=results,
                            hint="check that the results are for these images (file names / image ids)")
        metrics = self.results_metrics(gt, by_name, pairs, missed)
        return {**metrics, "schema": note} if note else metrics

    def results_metrics(self, gt, by_name, pairs, missed) -> dict:  # pragma: no cover - per task
        raise NotImplementedError

    # predict --------------------------------------------------------------------------
    def box_source(self, boxes: str | None = None, detector=None, detector_label: str | None = None,
                   box_conf: float = 0.0, scales=None, items=()):
        """A named source (e.g. haar), a boxes file, a cvapps detector, or None (the model's
        default box source). ``scales``: the face detector's test-time scales (default: see
        ``detector_scales`` for ``items``)."""
        if boxes and detector is not None:
            raise ConfigError("give either a boxes file or a detector, not both")
        own = getattr(detector, "finds_instances", False)  # a face detector: own threshold, test-time scales
        if scales is not None and not own:
            raise ConfigError("--scales is an option of the face detector (the default landmark model and "
                              "face-box source)")
        if boxes in self.named_box_sources:
            return self.named_box_sources[boxes]()
        if boxes:
            return FileBoxes(boxes, min_score=box_conf)
        if detector is not None:
            extra = {"scales": detector_scales(detector, scales, items)} if own else {}
            return DetectorBoxes(detector, detector_label or self.box_label, conf=box_conf or (None if own else 0.3),
                                 **extra)
        return None

    def predict_setup(self, model, load, items=(), boxes=None, detector=None, detector_label=None,
                      box_conf: float = 0.0, whole_image: bool = False, flip_test: bool = False, scales=None):
        if whole_image and (boxes or detector):
            raise ConfigError("--whole-image takes no boxes file or detector")
        if getattr(model, "finds_instances", False):  # a single-stage model: its own boxes
            if boxes or detector or whole_image or flip_test:
                raise ConfigError(f"{model.config.get('weights') or 'this model'} finds the {self.instance}s itself: "
                                  "--boxes / --detector / --whole-image / --flip-test are for top-down models")
            return model.preprocessor(), {"conf": box_conf or None, "scales": detector_scales(model, scales, items)}
        default = model.config.get("default_boxes")  # the model's own box source: "whole_image" or a model name
        if not (boxes or detector or whole_image) and default:
            whole_image, detector = (True, None) if default == "whole_image" else (False, default)
        if whole_image and scales is not None:
            raise ConfigError("--whole-image takes no --scales (they are the face detector's)")
        source = whole_image_boxes if whole_image else \
            self.instance_source(load, items, boxes, detector, detector_label, box_conf, scales)
        return model.preprocessor(source), {"flip_test": flip_test}

    def instance_source(self, load, items=(), boxes=None, detector=None, detector_label=None,
                        box_conf: float = 0.0, scales=None):
        """Where predict finds this task's instances (a box source, see topdown.py): a named
        source, a boxes file (refused when it covers none of the named ``items``), ``detector``
        (a model name or file) or the task's default detector. Per-instance classification
        (``predict classify --on faces | people``) finds its instances here too."""
        if detector is None and not boxes:
            detector = self.default_detector
        if detector is not None:
            detector = load(detector, None)
            if detector.task != "detect" and not getattr(detector, "finds_instances", False):
                raise ConfigError(f"--detector needs a detection model (or a face detector), got a {detector.task} "
                                  "model")
        source = self.box_source(boxes, detector, detector_label, box_conf, scales, items)
        if isinstance(source, FileBoxes):
            named = [str(it) for it in items if isinstance(it, Path)]
            if named and not any(source.covers(n) for n in named):
                raise ConfigError(f"the boxes file has boxes for none of the {len(named)} inputs "
                                  f"(e.g. {Path(named[0]).name})", path=str(boxes),
                                  hint="boxes are looked up by image file name or numeric image id (video frames: "
                                       "'source' + 'frame' entries); or use --detector")
        return source

    # active learning ------------------------------------------------------------------
    def strategies(self, model) -> list[str]:
        kind = model.config["head"]["kind"]  # a top-down head kind | a single-stage detector (scores, no dropout)
        return super().strategies(model) + (["least_confidence"] if kind != "regression" else []) + \
            (["variance", "hybrid"] if kind in ("heatmap", "regression", "facemesh") else [])

    def scores(self, model, x, metas, strategy, mc_passes) -> torch.Tensor:
        """Per crop; select reduces them per image (the most uncertain instance)."""
        if strategy == "variance" or (strategy == "hybrid" and model.config["head"]["kind"] == "regression"):
            return model.mc_variance(x, mc_passes).cpu()
        return model.uncertainty(model(x)).cpu()

    def pseudo_labels(self, model, out_dir: Path, threshold: float) -> PseudoLabelWriter:
        return _CocoKeypoints(out_dir / "pseudo_labels_keypoints.json", model, threshold, self.instance)

    def distill_data(self, teacher, paths, run, opts):
        """The teacher's points as labels: its predictions (a top-down teacher on its default
        detector's boxes) written as COCO keypoints (OUT/teacher_keypoints.json: instances
        scored >= ``opts["conf"]``, default 0.3; points under 0.2 unlabelled) and read back as
        training data — the student trains on them like on hand labels (crops, augmentation).
        Labelled images (``opts["labels"]`` + ``label_images``, any keypoint format whose
        point names are the teacher's) join with their own points."""
        out = Path(opts["out"])
        out.mkdir(parents=True, exist_ok=True)
        writer = _CocoKeypoints(out / "teacher_keypoints.json", teacher, opts.get("conf") or 0.3, self.instance,
                                absolute=True)
        for r in run.predictions(paths, **opts.get("teacher_options", {})):
            h, w = r.image.shape[:2]
            writer.add(r.source, r.prediction, {"width": w, "height": h})
        writer.close()
        if not writer.written:
            raise DataError(f"the teacher found no {self.instance} scored >= {writer.threshold} in {len(paths)} images",
                            path=str(writer.file), hint="lower --conf, or give images with what the teacher finds")
        data = read_keypoints(writer.file, "/", "coco", allow_outside=True)  # our own file: absolute names
        if opts.get("labels"):
            data.records += _labelled(opts["labels"], opts.get("label_images"), data.schema, len(data.records))
        return data, {"schema": teacher.config["schema"]}


def _labelled(ann: str, images: str | None, schema, first_id: int) -> list:
    """The records of a labelled keypoint set, points reordered to ``schema`` by name."""
    if images is None:
        raise ConfigError("labelled keypoint images need --label-images DIR beside --labels ANNOTATIONS")
    lab = read_keypoints(ann, images)
    names = list(lab.schema.keypoints)
    missing = [n for n in schema.keypoints if n not in names]
    if missing:
        raise DataError(f"the labelled points lack {missing[:5]} of the teacher's schema {schema.name!r}", path=ann,
                        hint="label with the teacher's point names (cvapps weights list shows its schema)")
    order = [names.index(n) for n in schema.keypoints]
    out = []
    for k, r in enumerate(lab.records):
        inst = [dataclasses.replace(i, keypoints=i.keypoints[order]) for i in r.instances]
        out.append(dataclasses.replace(r, image_id=first_id + k + 1, instances=inst))
    return out


class _CocoKeypoints(PseudoLabelWriter):
    """COCO keypoints (the model's schema in the category): confident instances; their
    points below 0.2 confidence or outside the image become unlabelled."""

    def __init__(self, file: Path, model, threshold: float, name: str, absolute: bool = False):
        self.file, self.threshold, self.written, self.absolute = file, threshold, 0, absolute
        sch = model.schema
        self.coco = {"images": [], "annotations": [], "categories": [
            {"id": 1, "name": name, "keypoints": list(sch.keypoints),
             "skeleton": [[a + 1, b + 1] for a, b in sch.skeleton]}]}

    def add(self, source: str, pred, meta: dict) -> None:
        keep = [r for r in pred.to_dict() if r["score"] >= self.threshold]
        if not keep:
            return
        img_id = len(self.coco["images"]) + 1
        name = str(Path(source).resolve()) if self.absolute else self.name(source)
        self.coco["images"].append({"id": img_id, "file_name": name, "width": meta["width"],
                                    "height": meta["height"]})
        for r in keep:
            kp = np.asarray(r["keypoints"]).reshape(-1, 3)
            inside = (kp[:, 0] >= 0) & (kp[:, 0] <= meta["width"]) & (kp[:, 1] >= 0) & (kp[:, 1] <= meta["height"])
            kp[:, 2] = np.where((kp[:, 2] > 0.2) & inside, 2, 0)
            kp[kp[:, 2] == 0, :2] = 0
            self.coco["annotations"].append({"id": len(self.coco["annotations"]) + 1, "image_id": img_id,
                                             "category_id": 1, "bbox": r["bbox"], "iscrowd": 0,
                                             "area": r["bbox"][2] * r["bbox"][3], "score": r["score"],
                                             "keypoints": kp.reshape(-1).tolist(),
                                             "num_keypoints": int((kp[:, 2] > 0).sum())})
        self.written += 1

    def close(self) -> dict:
        atomic_write(self.file, lambda tmp: tmp.write_text(json.dumps(self.coco)))
        return super().close()
