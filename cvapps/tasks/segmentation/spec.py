"""What the API, CLI and active learning need to know about semantic segmentation: which
reader (CamVid layout, mask folders, COCO polygons), datasets, results folders, selection
scores and label-map pseudo-labels."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from ...data.labels import read_labels, sniff, tool_formats
from ...data.segmentation import (SegData, SegDataset, default_colors, from_labelset, median_frequency_weights,
                                  read_camvid, read_coco_semantic, read_mask_folder, to_labelset, write_masks)
from ...data.io import read_raw
from ...data.transforms import Letterbox, colour_shift
from ...data.unlabelled import LetterboxedPairs
from ...errors import ConfigError, DataError
from ...options import CliOption, DataOptions, EvalOptions, parse_size, split_list
from ..meanteacher import TEACHER_DECAY, MeanTeacher, warp_labels
from ..spec import PseudoLabelWriter, SemiSupervised, TaskSpec, split_every_kth
from . import distill
from .metrics import confusion, seg_metrics


def load(data: str | None, images: str | None = None, masks: str | None = None, split: str = "train",
         classes: list[str] | None = None, palette: str | None = None, ignore_index: int = 255,
         opts: DataOptions | None = None) -> SegData:
    """A CamVid-style root (``data/split`` + ``data/splitannot``), a COCO JSON (+ ``images``),
    or ``images`` + ``masks`` folders (classes from ``classes`` or a ``palette`` table).
    ``opts``: the format (a labelling tool's: ``fmt`` label-studio | cvat), skip_bad and
    allow_outside for a file."""
    fmt = (opts.fmt if opts is not None else None) or (sniff(data) if data else None)
    if data and fmt in tool_formats():
        skip, outside = (opts.skip_bad, opts.allow_outside) if opts is not None else (False, False)
        return from_labelset(read_labels(fmt, data, images, skip, outside), classes, ignore_index)
    if data and Path(data).suffix.lower() == ".json":
        if not images:
            raise ConfigError("COCO segmentation needs --images DIR")
        return read_coco_semantic(data, images, bool(opts and opts.skip_bad), bool(opts and opts.allow_outside))
    if data and not masks:
        root = Path(data)
        if not (root / split).is_dir():
            raise DataError(f"no {split}/ folder (CamVid layout: {split}/ and {split}annot/)", path=str(root))
        if classes or palette:  # the CamVid layout with other classes
            return read_mask_folder(root / split, root / f"{split}annot", classes, palette, ignore_index)
        return read_camvid(root, split)
    if masks:
        return read_mask_folder(images, masks, classes, palette, ignore_index)
    raise ConfigError("no segmentation data", hint="pass --data ROOT (CamVid layout), --data ANN.json --images DIR, "
                      "or --images DIR --masks DIR")


def augment(ignore: int) -> A.Compose:
    """Image + mask augmentation (labels resampled nearest-neighbour by albumentations);
    padding from scaling is void (``ignore``), not class 0."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.75, 1.5), p=0.7, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore),
        A.RandomBrightnessContrast(p=0.5),
        colour_shift(hue=0.03, saturation=0.15, p=0.3),
    ])


def evaluate_results_dir(results: str | Path, gt: SegData) -> dict:
    """Predicted label-map PNGs named like the images (``<stem>.png``) vs ground truth."""
    res = Path(results)
    if not res.is_dir():
        raise DataError("no such results folder", path=str(res))
    k = len(gt.labels)
    cm = np.zeros((k, k), np.int64)
    for i, img in enumerate(gt.images):
        cands = [c for c in sorted(res.glob(img.stem + ".*")) + sorted(res.glob(img.stem + "_mask.*"))
                 if c.resolve() != Path(gt.masks[i]).resolve()]
        if not cands:
            raise DataError(f"no prediction for {img.name}", path=str(res), hint=f"expected {img.stem}.png")
        pred = read_raw(cands[0], "label map")
        truth = gt.load_mask(i)
        if pred is None or pred.shape[:2] != truth.shape:
            raise DataError(f"prediction must be a {truth.shape[1]}x{truth.shape[0]} label map", path=str(cands[0]))
        cm += confusion(pred.astype(np.int64), truth, k, gt.ignore_index)
    return seg_metrics(cm, gt.labels)


def pseudo_masks(conf: float, ignore: int):
    """pseudo(teacher, weak (B, 3, H, W), extents (B, 2) h, w) -> (label maps (B, H, W): the
    teacher's class where its probability >= ``conf`` inside the image, else ``ignore``; the
    share of the images' pixels labelled)."""

    def pseudo(teacher, weak: torch.Tensor, extents: torch.Tensor) -> tuple[torch.Tensor, float]:
        p, labels = teacher(weak).logits.float().softmax(1).max(1)
        h, w = weak.shape[-2:]
        ys, xs = torch.arange(h, device=weak.device), torch.arange(w, device=weak.device)
        inside = (ys[None, :, None] < extents[:, :1, None]) & (xs[None, None, :] < extents[:, 1:, None])
        sure = (p >= conf) & inside
        return torch.where(sure, labels, torch.full_like(labels, ignore)), float(sure.sum() / inside.sum().clamp(min=1))

    return pseudo


class SegmentationSpec(TaskSpec):
    default_kind = "fcn8s"
    distillation = True
    distill_augment = True
    # --unlabelled: a mean teacher, pixels at >= 0.9, 1:1 batches, after a labelled burn-in
    train_defaults = {"epochs": 30, "batch_size": 8, "lr": 2e-3, "unlabelled_threshold": 0.9, "unlabelled_ratio": 1,
                      "unlabelled_warmup": 0.3}
    cli_options = {
        "train": (CliOption("masks", str, None, "mask folder: label PNGs (or colour PNGs with --palette)"),
                  CliOption("val_masks", str, None, "validation mask folder"),
                  CliOption("classes", str, None, "class names, comma-separated (label-map masks)", convert=split_list),
                  CliOption("palette", str, None, 'JSON {"classes": [{"name", "color": [r,g,b]}]}'),
                  CliOption("ignore_index", int, None, "void label (default: CamVid 11, else 255)"),
                  CliOption("head", str, None, "fcn32s | fcn16s | fcn8s | segnet | selfie (default: the --weights "
                                               "model's head, else fcn8s)", dest="kind"),
                  CliOption("bilinear", bool, False, "FCN: fixed bilinear upsampling instead of learned",
                            dest="learned_upsampling", convert=lambda v: not v),
                  CliOption("class_weights", str, "none", "none | median (median-frequency balancing, SegNet "
                                                          "paper)", dest="median_frequency",
                            convert=lambda v: v == "median"),
                  CliOption("dice", float, 0.0, "weight of an added soft Dice loss")),
        "eval": (CliOption("masks", str, None, "mask folder (with --images, or alone with --results)"),
                 CliOption("split", str, "val", "val | test (CamVid layout)"),
                 CliOption("classes", str, None, "class names (default with --results: CamVid's)", convert=split_list),
                 CliOption("ignore_index", int, None, "void label (default: the model's; with --results 11)")),
    }

    def make_config(self, backbone, weights, kind, img_size, head, labels=None, num_classes=None,
                    colors=None) -> dict:
        base = self.pretrained_config(weights)  # e.g. person.mediapipe: its decoder, 256 px, stretched
        labels = list(labels) if labels is not None else base.get("labels") or [str(i) for i in range(num_classes or 2)]
        pre = self.preprocessing(weights)
        head_cfg = {"kind": kind or base.get("head", {}).get("kind") or self.default_kind, "num_classes": len(labels),
                    **{k: v for k, v in head.items() if v is not None}}
        if head_cfg["kind"] == "selfie" and len(labels) != 2:
            raise ConfigError(f"the selfie decoder segments person / background (2 classes), the data has "
                              f"{len(labels)}", hint="pass --head fcn8s (or another head) for more classes")
        base_pre = base.get("preprocessing", {})
        return {"task": self.name, "backbone": backbone, "head": head_cfg, "labels": labels,
                "colors": colors or base.get("colors") or default_colors(len(labels)),
                "preprocessing": {"mean": pre["mean"], "std": pre["std"],
                                  "input_size": parse_size(img_size) or base_pre.get("input_size") or 512,
                                  "resize": base_pre.get("resize", "letterbox")},
                "weights": weights.name if weights is not None else None}

    # data -----------------------------------------------------------------------------
    def read_train(self, opts: DataOptions, kind=None):
        ignore = opts.ignore_index  # None: the layout's own (CamVid void 11, else 255)
        tr = load(opts.data, opts.images, opts.masks, "train", opts.classes, opts.palette,
                  255 if ignore is None else ignore, opts)
        tr.ignore_index = tr.ignore_index if ignore is None else int(ignore)
        va = None
        if opts.val or opts.val_masks:
            va = load(opts.val, opts.val_images, opts.val_masks, "val", tr.labels, opts.palette, tr.ignore_index, opts)
        elif opts.data and not opts.masks and Path(opts.data).suffix.lower() != ".json" \
                and (Path(opts.data) / "val").is_dir():
            va = load(opts.data, None, None, "val", opts.classes, opts.palette, tr.ignore_index)
        else:
            tr, va = split_every_kth(tr, opts.val_fraction)
        return tr, va

    def model_args(self, data, opts, console=None) -> dict:
        args = {"labels": data.labels, "colors": data.colors, "ignore_index": data.ignore_index}
        if opts.median_frequency:
            args["class_weights"] = median_frequency_weights(data)
            if console is not None:
                console.print("median-frequency class weights: " + ", ".join(
                    f"{n} {w:.2f}" for n, w in zip(data.labels, args["class_weights"])))
        return args

    def datasets(self, model, train, val, skip_bad: bool = False):
        box = Letterbox.from_config(model.config["preprocessing"])
        ignore = int(model.config["head"]["ignore_index"])
        for d in (train, val):
            if d is not None:
                d.ignore_index = ignore

        def make_train(aug: bool):
            return SegDataset(train, box, augment(ignore) if aug else None, skip_bad)

        return make_train, SegDataset(val, box, None, skip_bad) if val is not None else None

    def semi_supervised(self, model, paths, cfg, skip_bad: bool = False):
        """A mean teacher (cvapps.tasks.meanteacher) whose confident pixels are the masks."""
        ignore = int(model.config["head"]["ignore_index"])
        ds = LetterboxedPairs(paths, Letterbox.from_config(model.config["preprocessing"]), skip_bad)
        loss = MeanTeacher(pseudo_masks(cfg.unlabelled_threshold, ignore),
                           lambda m, aff, hw: [{"mask": x} for x in warp_labels(m, aff, ignore)], cfg.unlabelled_weight)
        return SemiSupervised(ds, cfg.unlabelled_ratio, loss, TEACHER_DECAY)

    def distill_data(self, teacher, paths, run, opts):
        def read(data, images, masks, classes, palette):
            return load(data, images, masks, "train", classes, palette)

        return distill.distill_data(teacher, paths, run, opts, read=read)

    label_writers = ("masks",)

    def tool_labels(self, model):
        names = list(model.labels)
        return {"masks": names[1:] if names and names[0].lower() == "background" else names}

    def read_labelled(self, opts: DataOptions):
        ignore = 255 if opts.ignore_index is None else opts.ignore_index
        return load(opts.data, opts.images, opts.masks, opts.split, opts.classes, opts.palette, ignore, opts)

    def labels_of(self, data):
        return to_labelset(data)

    def write_native(self, data, fmt, out):
        return write_masks(data, out)

    def read_eval(self, model, opts: DataOptions):
        # masks (a folder, or the CamVid layout) hold the model's class indices; a COCO file names its classes
        data = load(opts.data, opts.images, opts.masks, opts.split, model.labels, None,
                    int(model.config["head"]["ignore_index"]), opts)
        if list(data.labels) != list(model.labels):  # pixels would be scored against another class list
            shown = ", ".join(data.labels[:6]) + (", ..." if len(data.labels) > 6 else "")
            raise ConfigError(f"the data's {len(data.labels)} classes ({shown}) are not the model's "
                              f"{len(model.labels)} ({', '.join(model.labels[:6])})",
                              hint="evaluate on masks of the model's classes (--images DIR --masks DIR)")
        return data

    def evaluate_results(self, results: str, opts: DataOptions, eval_opts: EvalOptions) -> dict:
        """Predicted label-map PNGs (named like the images) against ground truth, no model;
        classes default to CamVid's, void to 11."""
        ignore = 11 if opts.ignore_index is None else opts.ignore_index
        return evaluate_results_dir(results, load(opts.data, opts.images, opts.masks, opts.split, opts.classes,
                                                  opts.palette, ignore))

    # active learning ------------------------------------------------------------------
    def strategies(self, model) -> list[str]:
        return super().strategies(model) + ["entropy", "margin", "hybrid"]

    def scores(self, model, x, metas, strategy, mc_passes) -> torch.Tensor:
        return model.uncertainty(model(x), metas, kind="margin" if strategy == "margin" else "entropy")

    def pseudo_labels(self, model, out_dir: Path, threshold: float) -> PseudoLabelWriter:
        return _LabelMaps(out_dir / "pseudo_masks", threshold, int(model.config["head"]["ignore_index"]))


class _LabelMaps(PseudoLabelWriter):
    """Label-map PNGs named like the images; pixels below the threshold get the ignore label."""

    def __init__(self, folder: Path, threshold: float, ignore: int):
        self.file, self.threshold, self.ignore, self.written = folder, threshold, ignore, 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, source: str, pred, meta: dict) -> None:
        mask = pred.mask.astype(np.uint16 if max(self.ignore, len(pred.names) - 1) > 255 else np.uint8)
        mask[pred.scores < self.threshold] = self.ignore
        cv2.imwrite(str(self.file / (Path(source).stem + ".png")), mask)
        self.written += 1
