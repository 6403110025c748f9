"""What the API, CLI and active learning need to know about object detection: reading
COCO / VOC / YOLO data, classes mapped onto a model's by name (classes.py), COCO or VOC
metrics, results files, predict options, selection scores, COCO pseudo-labels and
distillation (distill.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...data.detection import (DetectionData, DetectionDataset, read_detection, to_labelset, write_coco,
                               write_yolo)
from ...data.coco import check_coco, check_results
from ...data.io import RecordCheck, atomic_write, load_json
from ...data.transforms import Letterbox, detection_augment
from ...data.unlabelled import LetterboxedPairs
from ...errors import ConfigError, DataError
from ...options import CliOption, DataOptions, EvalOptions, parse_size
from ..meanteacher import MIN_VISIBLE, TEACHER_DECAY, MeanTeacher, warp_boxes
from ..spec import PseudoLabelWriter, SemiSupervised, TaskSpec, split_every_kth
from . import distill
from .classes import class_mapping, read_class_map, remap
from .metrics import coco_metrics, voc_metrics
from .slicing import Sliced, parse_tiles

def check_boxes(data: DetectionData, what: str) -> None:
    """Refuse data a detector cannot learn from (no images, or no box at all)."""
    if not len(data):
        raise DataError(f"the {what} annotations list no usable images", path=data.source)
    if not sum(len(r.boxes) for r in data.records):
        raise DataError(f"the {what} annotations have {len(data)} images but no boxes", path=data.source,
                        hint="check that the label files are where the reader looked (YOLO: a .txt per image "
                             "beside the names file, or in obj_train_data/ or labels/)")


def pseudo_boxes(conf: float):
    """pseudo(teacher, weak (B, 3, H, W), info) -> (targets in input pixels: the teacher's
    detections scored >= ``conf``, those from ``conf`` / 2 marked crowd (no loss either way);
    confident boxes per image)."""

    def pseudo(teacher, weak: torch.Tensor, info) -> tuple[list[dict], float]:
        h, w = weak.shape[-2:]
        metas = [{"width": w, "height": h, "scale_xy": (1.0, 1.0)}] * len(weak)
        dets = teacher.postprocess(teacher(weak), metas, conf=conf / 2)
        targets = [{"boxes": torch.from_numpy(d.boxes).to(weak.device), "labels": torch.from_numpy(d.labels).to(
            weak.device), "iscrowd": torch.from_numpy(d.scores < conf).to(weak.device)} for d in dets]
        return targets, sum(int((d.scores >= conf).sum()) for d in dets) / max(1, len(dets))

    return pseudo


def warp_targets(targets: list[dict], aff: torch.Tensor, hw: tuple[int, int]) -> list[dict]:
    """The boxes on the strong view (cvapps.tasks.meanteacher.warp_boxes); those mostly pushed
    out of view become crowd."""
    out = []
    for t, a in zip(targets, aff):
        b, kept, visible = warp_boxes(t["boxes"], a, hw)
        out.append({"boxes": b[kept], "labels": t["labels"][kept],
                    "iscrowd": (t["iscrowd"].bool() | (visible < MIN_VISIBLE))[kept]})
    return out


class DetectionSpec(TaskSpec):
    default_kind = "ssd"
    default_weights = "ssd_mobilenet_v2.coco"
    distillation = True
    distill_augment = True
    tracks = True
    # --unlabelled: a mean teacher (Unbiased Teacher's threshold 0.7 and 1:1 batches) after a labelled burn-in
    train_defaults = {**TaskSpec.train_defaults, "unlabelled_threshold": 0.7, "unlabelled_ratio": 1,
                      "unlabelled_warmup": 0.3}
    cli_options = {
        "predict": (CliOption("save_coco", str, None, "write one COCO results file for all still images"),
                    CliOption("coco_gt", str, None, "COCO ground truth whose image ids --save-coco uses"),
                    CliOption("conf", float, None, "score threshold (default: the model's)"),
                    CliOption("iou", float, None, "NMS IoU threshold (default: the model's)"),
                    CliOption("max_det", int, None, "detections per image"),
                    CliOption("classes", str, None, "keep only these classes: names or indices, comma-separated"),
                    CliOption("tiles", str, None, "also detect on R x C overlapping tiles of each image (e.g. 2x2) "
                                                  "and merge: finds small, far objects at 1 + R*C times the cost")),
        "train": (CliOption("head", str, "ssd", "ssd (single-stage anchors) or fasterrcnn (two-stage, FPN)",
                            dest="kind"),
                  CliOption("cls_loss", str, None, "ssd: ce (hard negative mining 3:1) or focal"),
                  CliOption("box_loss", str, None, "ssd: smooth_l1 or giou")),
        "eval": (CliOption("metric", str, "coco", "coco (pycocotools COCOeval) or voc"),
                 CliOption("iou", float, 0.5, "voc: IoU threshold"),
                 CliOption("eleven_point", bool, False, "voc: VOC2007 11-point interpolation (default all-point)"),
                 CliOption("save_results", str, None, "write the model's COCO results file (the data's classes, "
                                                      "in its category ids: it evaluates against --data)"),
                 CliOption("class_map", str, None, "JSON {dataset class: model class} for names the built-in "
                                                   "VOC/COCO synonyms do not cover")),
    }

    def make_config(self, backbone, weights, kind, img_size, head, labels=None, num_classes=None,
                    category_ids=None) -> dict:
        """A new detector; from a pretrained detector (``weights`` of kind "model") its whole
        architecture, preprocessing and labels unless the data brings its own."""
        if weights is not None and weights.kind == "model":
            base = weights.config
            if labels is None and num_classes is None:
                labels, category_ids = base["labels"], base.get("category_ids")
            head = {**base["head"], "kind": kind or base["head"]["kind"], **head}
            pre = dict(base["preprocessing"])
            if img_size is not None:
                pre["input_size"] = parse_size(img_size)
            labels = list(labels) if labels is not None else [str(i) for i in range(num_classes or 1)]
            head["num_classes"] = len(labels)
            return {**base, "head": head, "labels": labels, "preprocessing": pre, "weights": weights.name,
                    "category_ids": list(category_ids) if category_ids else list(range(1, len(labels) + 1))}
        labels = list(labels) if labels is not None else [str(i) for i in range(num_classes or 1)]
        pre = self.preprocessing(weights)
        size = parse_size(img_size) or 320
        head_cfg = {"kind": kind or self.default_kind, "num_classes": len(labels),
                    **{k: v for k, v in head.items() if v is not None}}
        return {"task": self.name, "backbone": backbone, "head": head_cfg, "labels": labels,
                "category_ids": list(category_ids) if category_ids else list(range(1, len(labels) + 1)),
                "preprocessing": {"mean": pre["mean"], "std": pre["std"], "input_size": size,
                                  "resize": "letterbox"},
                "weights": weights.name if weights is not None else None}

    # data -----------------------------------------------------------------------------
    def read_train(self, opts: DataOptions, kind=None):
        if not opts.data or not opts.images:
            raise ConfigError("detection training needs --data ANNOTATIONS and --images DIR")
        tr = read_detection(opts.data, opts.images, opts.fmt, opts.classes, skip_bad=opts.skip_bad,
                            allow_outside=opts.allow_outside)
        va = None
        if opts.val:
            va = read_detection(opts.val, opts.val_images or opts.images, opts.fmt, skip_bad=opts.skip_bad,
                                allow_outside=opts.allow_outside)
            va, unknown = remap(va, tr.labels, tr.category_ids)
            if unknown:
                raise DataError(f"validation classes {unknown} are not training classes", path=opts.val)
        else:
            tr, va = split_every_kth(tr, opts.val_fraction)
        check_boxes(tr, "training")
        if va is not None:
            check_boxes(va, "validation")
        return tr, va

    def distill_data(self, teacher, paths, run, opts):
        return distill.distill_data(teacher, paths, run, opts)

    def inherit_args(self, teacher) -> dict:
        return distill.inherit_args(teacher)

    def keep_classes(self, weights, train, val, opts=None):
        """Labels = the pretrained detector's (same rows) + the data's classes it does not know
        (by name / synonym; new category ids after its own); a data class equal to one of its
        classes reuses that row and is learnt from the labels. -> (train, val remapped, the
        detector's classes the data does not label)."""
        if weights is None or weights.kind != "model" or weights.task != self.name:
            raise ConfigError("--keep-classes needs --weights of a pretrained detector (e.g. ssd_mobilenet_v2.coco)")
        if opts is not None and opts.negatives:
            raise ConfigError("--negatives is for classifiers: a detector learns where its classes end from "
                              "every unlabelled part of its images")
        base, ids = list(weights.config["labels"]), list(weights.config.get("category_ids") or [])
        ids = ids or list(range(1, len(base) + 1))
        mapping, new = class_mapping(train.labels, base)
        labels = base + new
        ids = ids + list(range(max(ids) + 1, max(ids) + 1 + len(new)))
        train, _ = remap(train, labels, ids)
        val = remap(val, labels, ids)[0] if val is not None else None
        return train, val, sorted(set(range(len(base))) - set(mapping.values()))

    def model_args(self, data, opts, console=None) -> dict:
        return {"labels": data.labels, "category_ids": data.category_ids}

    def describe(self, data) -> str:
        return f"{len(data.labels)} classes, {sum(len(r.boxes) for r in data.records)} boxes"

    def datasets(self, model, train, val, skip_bad: bool = False):
        pre = model.config["preprocessing"]
        box = Letterbox.from_config(pre)

        def make_train(augment: bool):
            return DetectionDataset(train, box, detection_augment() if augment else None, skip_bad)

        return make_train, DetectionDataset(val, box, None, skip_bad) if val is not None else None

    def semi_supervised(self, model, paths, cfg, skip_bad: bool = False):
        """A mean teacher (cvapps.tasks.meanteacher) whose detections are the boxes."""
        ds = LetterboxedPairs(paths, Letterbox.from_config(model.config["preprocessing"]), skip_bad)
        loss = MeanTeacher(pseudo_boxes(cfg.unlabelled_threshold), warp_targets, cfg.unlabelled_weight, "pseudo_boxes")
        return SemiSupervised(ds, cfg.unlabelled_ratio, loss, TEACHER_DECAY, ("unlabelled_loss", "pseudo_boxes"))

    label_writers = ("coco", "yolo")

    def tool_labels(self, model):
        return {"boxes": list(model.labels)}

    def read_labelled(self, opts: DataOptions):
        return read_detection(opts.data, opts.images, opts.fmt, opts.classes, opts.skip_bad, opts.allow_outside)

    def labels_of(self, data):
        return to_labelset(data)

    def write_native(self, data, fmt, out):
        return write_coco(data, out) if fmt == "coco" else write_yolo(data, out)

    def read_eval(self, model, opts: DataOptions):
        if not opts.data:
            raise ConfigError("detection evaluation needs --data ANNOTATIONS")
        if opts.images is None:
            raise ConfigError("evaluating a model needs --images DIR", hint="or evaluate a results file: --results")
        d = read_detection(opts.data, opts.images, opts.fmt, skip_bad=opts.skip_bad, allow_outside=opts.allow_outside)
        d, d.unknown_classes = remap(d, model.labels, model.config.get("category_ids") or
                                     list(range(1, len(model.labels) + 1)), read_class_map(opts.class_map))
        return d

    def finish_eval(self, model, data, evaluator, metrics: dict, opts: EvalOptions) -> dict:
        if opts.metric != "coco":
            metrics = voc_metrics(data.to_coco(), evaluator.results(), opts.iou, opts.eleven_point)
        if opts.save_results:
            rows = evaluator.results()
            if data.file_ids is not None:  # the data's classes, in the annotation file's ids
                rows = [{**r, "category_id": data.file_ids[r["category_id"]]} for r in rows
                        if r["category_id"] in data.file_ids]
            atomic_write(Path(opts.save_results), lambda tmp: tmp.write_text(json.dumps(rows)))
        if data.unknown_classes:
            metrics["not_evaluated_classes"] = data.unknown_classes
        return metrics

    def evaluate_results(self, results: str, opts: DataOptions, eval_opts: EvalOptions) -> dict:
        """Any detector's COCO-results JSON against a COCO ground-truth file (no images needed)."""
        if not opts.data:
            raise ConfigError("evaluating a results file needs --data (COCO ground truth)")
        res_path = Path(results)
        gt = check_coco(load_json(opts.data), str(opts.data), RecordCheck(str(opts.data), False), what="COCO detection")
        rows = check_results(load_json(res_path, "results file"), str(res_path), {i["id"] for i in gt["images"]},
                             {c["id"] for c in gt["categories"]}, gt=Path(opts.data).name)
        if eval_opts.metric == "voc":
            return voc_metrics(gt, rows, eval_opts.iou, eval_opts.eleven_point)
        return coco_metrics(gt, rows)

    # predict --------------------------------------------------------------------------
    def predict_setup(self, model, load, items=(), conf=None, iou=None, max_det=None, classes=None, tiles=None):
        for name, v, lo, hi in (("--conf", conf, 0.0, 1.0), ("--iou", iou, 0.0, 1.0)):
            if v is not None and not lo <= v <= hi:
                raise ConfigError(f"{name} {v} must be between {lo} and {hi}")
        if max_det is not None and max_det < 1:
            raise ConfigError(f"--max-det must be at least 1, got {max_det}")
        grid = parse_tiles(tiles)
        pre = model.preprocessor() if grid is None else Sliced(model.preprocessor(), *grid)
        return pre, {"conf": conf, "iou": iou, "max_det": max_det, "classes": self.class_indices(model, classes)}

    def track_post(self, post: dict, low: float) -> dict:
        """The tracker's second stage needs the low-score boxes a plain --conf would drop."""
        return {**post, "conf": low}

    def category_ids(self, model, coco_gt: dict) -> dict[str, int]:
        """The ground truth's category id of each model class it names (synonyms included);
        detections of classes it does not name are left out of the COCO results file."""
        cats = coco_gt.get("categories", [])
        mapping, _ = class_mapping(model.labels, [c["name"] for c in cats])
        return {model.labels[i]: cats[j]["id"] for i, j in mapping.items()}

    @staticmethod
    def class_indices(model, classes) -> list[int] | None:
        """Names or indices (a comma-separated string or a list) -> label indices."""
        if classes is None:
            return None
        items = classes.split(",") if isinstance(classes, str) else list(classes)
        keep = []
        for c in (str(i).strip() for i in items):
            if c in model.labels:
                keep.append(model.labels.index(c))
            elif c.isdigit() and int(c) < len(model.labels):
                keep.append(int(c))
            else:
                raise ConfigError(f"unknown class {c!r}", hint=f"classes: {', '.join(model.labels)}")
        return keep

    # active learning ------------------------------------------------------------------
    def strategies(self, model) -> list[str]:
        kinds = list(model.head.uncertainty_kinds)
        return super().strategies(model) + kinds + ["hybrid"]

    def scores(self, model, x, metas, strategy, mc_passes) -> torch.Tensor:
        return model.uncertainty(model(x), kind="entropy" if strategy in ("entropy", "hybrid") else "least_confidence")

    def pseudo_labels(self, model, out_dir: Path, threshold: float) -> PseudoLabelWriter:
        return _CocoBoxes(out_dir / "pseudo_labels_coco.json", model)

    def pseudo_options(self, threshold: float) -> dict:
        return {"conf": threshold}


class _CocoBoxes(PseudoLabelWriter):
    """A COCO detection file (loadable by `cvapps train detect --data FILE --images POOL`)."""

    def __init__(self, file: Path, model):
        self.file, self.written = file, 0
        ids = model.config.get("category_ids") or range(1, len(model.labels) + 1)
        self.coco = {"images": [], "annotations": [],
                     "categories": [{"id": c, "name": n} for c, n in zip(ids, model.labels)]}

    def add(self, source: str, pred, meta: dict) -> None:
        img_id = len(self.coco["images"]) + 1
        self.coco["images"].append({"id": img_id, "file_name": self.name(source), "width": meta["width"],
                                    "height": meta["height"]})
        for r in pred.to_dict():
            x0, y0, bw, bh = r["bbox"]
            self.coco["annotations"].append({"id": len(self.coco["annotations"]) + 1, "image_id": img_id,
                                             "category_id": r["category_id"], "bbox": r["bbox"], "area": bw * bh,
                                             "iscrowd": 0, "score": r["score"]})
        self.written += 1

    def close(self) -> dict:
        atomic_write(self.file, lambda tmp: tmp.write_text(json.dumps(self.coco)))
        return super().close()
