"""Detection distillation (``cvapps distill detect``): the teacher's detections on unlabelled
images become the student's boxes. Each pseudo-box keeps the teacher's class probabilities
(the soft class target of the anchors matched to it, see loss.detection_terms); detections
scored between half the threshold and the threshold are neither objects nor background for
the student (they are marked crowd: anchors on them take no loss). The pseudo-boxes live in
original-image pixels, so the student may differ from the teacher in input size, resize mode,
anchors and head, and trains with the usual box-aware augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.ops import clip_boxes_to_image

from ...data.detection import DetectionData, DetRecord, read_detection, read_names
from ...data.io import image_size
from ...data.transforms import Letterbox
from ...errors import ConfigError, DataError
from ...ops import decode_boxes
from ...options import split_list
from .classes import class_mapping, remap
from .postprocess import select

FIELDS = 6  # a teacher output row: x1 y1 x2 y2 (input pixels), score, label; then the K class probabilities


def student_classes(teacher, classes) -> tuple[list[str], list[int], list[int]]:
    """(the student's class names, their COCO category ids, the teacher's column of each):
    ``classes`` (names, a comma-separated string or a names file; VOC / COCO synonyms map)
    or all the teacher's."""
    t_names = list(teacher.labels)
    t_ids = teacher.config.get("category_ids") or list(range(1, len(t_names) + 1))
    if not classes:
        return t_names, list(t_ids), list(range(len(t_names)))
    if isinstance(classes, str):
        classes = read_names(Path(classes)) if Path(classes).is_file() else split_list(classes)
    names = [n.strip() for n in classes if n.strip()]
    mapping, unknown = class_mapping(names, t_names)
    if unknown:
        raise ConfigError(f"--classes {unknown} are not classes of the teacher",
                          hint=f"the teacher knows {', '.join(t_names[:8])}, ...")
    return names, list(range(1, len(names) + 1)), [mapping[i] for i in range(len(names))]


def teacher_fn(teacher, columns: list[int], low: float, max_det: int):
    """fn(x) -> (B, max_det, FIELDS + K): the teacher's detections of the classes ``columns``
    scored >= ``low`` (its own NMS), label = index into ``columns``, then the K probabilities
    of the detection's anchor over ``columns``; rows after the last detection are NaN."""
    if not hasattr(teacher.head, "probs"):
        raise ConfigError(f"the teacher must be an SSD-style detector, not {teacher.config['head'].get('kind')!r}",
                          hint="its per-anchor class probabilities are the student's soft targets")
    cols, iou = torch.as_tensor(columns), teacher.head.h.iou

    def fn(x: torch.Tensor) -> torch.Tensor:
        raw = teacher(x)
        probs = teacher.head.probs(raw)[..., cols.to(x.device)]  # (B, N, K)
        boxes = clip_boxes_to_image(decode_boxes(raw.deltas.float(), raw.anchors), tuple(x.shape[-2:]))
        out = torch.full((x.shape[0], max_det, FIELDS + len(columns)), float("nan"))
        for i, (p, bx) in enumerate(zip(probs, boxes)):
            b, s, lab, idx = select(p, bx, low, iou, max_det, with_anchors=True)
            out[i, :len(s)] = torch.cat([b, s[:, None], lab[:, None].float(), p[idx]], 1).cpu()
        return out

    return fn


def pseudo_records(teacher, paths: list[Path], outputs: torch.Tensor, conf: float) -> list[DetRecord]:
    """One record per image: the teacher's detections in original pixels, those under ``conf``
    as crowd (ignored), with their class probabilities as ``soft``."""
    box = Letterbox.from_config(teacher.config["preprocessing"])
    records = []
    for i, (path, rows) in enumerate(zip(paths, outputs)):
        rows = rows[~torch.isnan(rows[:, 0])]
        w, h = image_size(path)
        sx, sy = box.scale_xy(w, h)
        b = clip_boxes_to_image(rows[:, :4] / torch.tensor([sx, sy, sx, sy]), (h, w))
        keep = ((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)
        rows, b = rows[keep], b[keep]
        records.append(DetRecord(Path(path), w, h, b.numpy().astype(np.float32), rows[:, 5].long().numpy(),
                                 (rows[:, 4] < conf).numpy(), i + 1, rows[:, FIELDS:].numpy().astype(np.float32)))
    return records


def distill_data(teacher, paths, run, opts: dict):
    """DetectionSpec.distill_data: pseudo-boxes at ``opts["conf"]`` (default: the teacher's
    threshold; ignored down to half of it), ``opts["classes"]``, and the labelled
    ``opts["labels"]`` + ``opts["label_images"]`` (classes mapped by name) with their own boxes."""
    names, ids, columns = student_classes(teacher, opts.get("classes"))
    conf = opts.get("conf") or teacher.head.h.conf
    outputs, kept = run.outputs(paths, teacher_fn(teacher, columns, conf / 2, teacher.head.h.max_det))
    paths = [paths[i] for i in kept]
    records = pseudo_records(teacher, paths, outputs, conf)
    if opts.get("labels"):
        if not opts.get("label_images"):
            raise ConfigError("labelled detection images need --label-images DIR beside --labels ANNOTATIONS")
        lab, unknown = remap(read_detection(opts["labels"], opts["label_images"]), names, ids)
        if unknown:
            raise DataError(f"labelled classes {unknown} are not among the student's", path=opts["labels"],
                            hint="the student learns the teacher's classes (or --classes)")
        records += [DetRecord(r.path, r.width, r.height, r.boxes, r.labels, r.iscrowd, len(records) + k + 1)
                    for k, r in enumerate(lab.records)]
    if not any(len(r.boxes) for r in records):
        raise DataError(f"the teacher found nothing at score >= {conf} in {len(paths)} images",
                        hint="lower --conf, or give images with the teacher's classes")
    return DetectionData(records, names, ids, "distillation"), {"labels": names, "category_ids": ids}


INHERITED = ("levels", "extra_channels", "extra_mid", "tf_same", "bn_eps",  # the feature layers
             "anchors", "anchor_base", "anchor_scales", "aspect_ratios", "min_scale", "max_scale", "reduce_lowest",
             "cls_loss", "background")  # what the predictors' rows mean


def inherit_args(teacher) -> dict:
    """The teacher's backbone options, extra feature layers (levels, widths, padding), anchors
    and class scoring, so that a student of its backbone starts from all its feature layers
    and from its predictors (an SSDLite student's factorised from a plain-conv teacher's: see
    SSDHead.separable_rows); the predictor kind, input size and classes stay the student's."""
    h = teacher.config["head"]
    return {"backbone_options": teacher.config.get("backbone_options"), **{k: h[k] for k in INHERITED if k in h}}
