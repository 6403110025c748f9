"""Segmentation data: mask folders (label PNGs, or colour PNGs with a class -> colour table),
the CamVid layout (split/ + splitannot/), COCO polygons/RLE rendered to semantic masks
through pycocotools. Bad pairs raise DataError naming the file, or are skipped and counted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from ..draw import palette
from ..errors import DataError
from .dataset import TaskDataset
from .coco import check_coco
from .io import IMAGE_EXTS, RecordCheck, atomic_write, coco_index, load_json, read_image, read_raw
from .labels import LabelImage, LabelSet, Mask, read_labels
from .transforms import meta_scale

CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist"]
# SegNet's CamVid palette, but Car orange: in the original, Car (64, 0, 128) and Road (128, 64, 128)
# are two purples that overlays cannot tell apart
CAMVID_COLORS = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
                 [192, 128, 128], [64, 64, 128], [255, 140, 0], [64, 64, 0], [0, 128, 192]]


@dataclass
class SegData:
    """images[i] with masks[i] (a label-map file) or coco (image id, COCO) for rendered masks."""

    images: list[Path]
    masks: list  # Path to a mask file, or a callable -> (H, W) int64
    labels: list[str]
    colors: list[list[int]]
    ignore_index: int = 255
    palette: dict | None = None  # (r, g, b) -> class index for colour masks
    source: str = ""
    skipped: list[str] = field(default_factory=list)
    # distillation: per image a callable -> (H, W, C) uint8 class probabilities x 255 (a teacher's)
    soft: list | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def paths(self) -> list[Path]:
        return list(self.images)

    def subset(self, idx: list[int]) -> "SegData":
        return replace(self, images=[self.images[i] for i in idx], masks=[self.masks[i] for i in idx],
                       soft=[self.soft[i] for i in idx] if self.soft is not None else None)

    def load_mask(self, i: int, shape: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W) int64 label map, validated against the image ``shape`` and the classes."""
        m = self.masks[i]
        if callable(m):
            mask = m()
            name = str(self.images[i])
        else:
            name = str(m)
            if not Path(m).is_file():
                raise DataError("mask file missing", path=name, hint=f"expected a mask for {self.images[i].name}")
            raw = read_raw(name, "mask image")
            mask = self._to_labels(raw, name)
        if shape is not None and mask.shape != tuple(shape):
            raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}",
                            path=name)
        bad = (mask >= len(self.labels)) & (mask != self.ignore_index)
        if bad.any():
            vals = sorted(set(np.unique(mask[bad]).tolist()))[:5]
            raise DataError(f"label values {vals} outside 0..{len(self.labels) - 1} (ignore index "
                            f"{self.ignore_index})", path=name, hint="check --ignore-index and the class list")
        return mask

    def _to_labels(self, raw: np.ndarray, name: str) -> np.ndarray:
        if raw.ndim == 2:
            return raw.astype(np.int64)
        rgb = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB)
        if self.palette is None:
            raise DataError("colour mask but no class -> colour table", path=name, hint="pass --palette FILE.json")
        flat = rgb.reshape(-1, 3)
        colours, inverse = np.unique(flat, axis=0, return_inverse=True)
        lut = np.empty(len(colours), np.int64)
        for k, c in enumerate(map(tuple, colours.tolist())):
            if c not in self.palette:
                raise DataError(f"colour {list(c)} is not in the class -> colour table", path=name)
            lut[k] = self.palette[c]
        return lut[inverse.reshape(-1)].reshape(rgb.shape[:2])


def _pairs(img_dir: Path, mask_dir: Path) -> tuple[list[Path], list[Path]]:
    if not img_dir.is_dir():
        raise DataError("no such folder", path=str(img_dir))
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not images:
        raise DataError("folder contains no images", path=str(img_dir))
    masks = []
    for p in images:
        cands = sorted(mask_dir.glob(p.stem + ".*"))
        masks.append(cands[0] if cands else mask_dir / (p.stem + ".png"))
    return images, masks


def read_palette(path: str | Path) -> tuple[list[str], list[list[int]]]:
    """JSON {"classes": [{"name": str, "color": [r, g, b]}, ...]} -> names, colours."""
    try:
        d = json.loads(Path(path).read_text())
        return [c["name"] for c in d["classes"]], [list(map(int, c["color"])) for c in d["classes"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"cannot read class -> colour table: {e}", path=str(path),
                        hint='expected {"classes": [{"name": "road", "color": [128, 64, 128]}, ...]}') from None


def read_mask_folder(images: str | Path | None, masks: str | Path, labels: list[str] | None = None,
                     palette: str | Path | None = None, ignore_index: int = 255) -> SegData:
    """Label-map (or colour) masks named like their images. ``images`` None: the masks alone
    (evaluating predicted label maps needs no pictures); ``images`` then lists the masks."""
    if images is None:
        imgs = msks = _pairs(Path(masks), Path(masks))[0]
    else:
        imgs, msks = _pairs(Path(images), Path(masks))
    colors = None
    if palette:
        labels, colors = read_palette(palette)
    if labels is None:
        raise DataError("class names are needed for label-map masks", path=str(masks),
                        hint="pass --classes a,b,c or --palette FILE.json")
    colors = colors or default_colors(len(labels))
    table = {tuple(c): i for i, c in enumerate(colors)} if palette else None
    return SegData(imgs, msks, list(labels), colors, ignore_index, table, str(masks))


def read_camvid(root: str | Path, split: str = "train") -> SegData:
    """``root/split`` images with ``root/splitannot`` label PNGs; 11 classes, void = 11."""
    root = Path(root)
    imgs, msks = _pairs(root / split, root / f"{split}annot")
    return SegData(imgs, msks, list(CAMVID_CLASSES), [list(c) for c in CAMVID_COLORS], 11, None,
                   str(root / split))


def read_coco_semantic(ann_file: str | Path, images: str | Path, skip_bad: bool = False,
                       allow_outside: bool = False) -> SegData:
    """COCO polygons/RLE -> semantic masks: 0 = background, category k -> its index + 1;
    crowd regions -> ignore (255). The file is checked as a whole first (cvapps.data.coco).
    A file whose annotations carry no polygon / RLE (box-only COCO) raises DataError: it has
    no masks to learn from."""
    check = RecordCheck(str(ann_file), skip_bad, allow_outside)
    d = check_coco(load_json(ann_file), str(ann_file), check, images, what="COCO segmentation")
    shapeless = [a.get("id") for a in d["annotations"] if not a.get("segmentation")]
    if shapeless:
        raise DataError(f"{len(shapeless)} of {len(d['annotations'])} annotations have no 'segmentation' "
                        f"polygon or RLE (e.g. id {shapeless[0]}): the file has no masks", path=str(ann_file),
                        hint="semantic segmentation needs polygons or RLE masks; box-only COCO files are for "
                             "`cvapps train detect`")
    coco = coco_index(d)
    cat_ids = sorted(coco.getCatIds())
    labels = ["background"] + [coco.cats[c]["name"] for c in cat_ids]
    imgs, makers = [], []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]

        def render(img_id=img_id, info=info):
            mask = np.zeros((info["height"], info["width"]), np.int64)
            for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
                m = coco.annToMask(a).astype(bool)
                mask[m] = 255 if a.get("iscrowd") else cat_ids.index(a["category_id"]) + 1
            return mask

        imgs.append(Path(images) / info["file_name"])
        makers.append(render)
    return SegData(imgs, makers, labels, default_colors(len(labels)), 255, None, str(ann_file), check.skipped)


BACKGROUND = "background"
VOID = ("void", "ignore")  # class names whose pixels a tool's labels mark as not to be learnt


def from_labelset(ls: LabelSet, classes: list[str] | None = None, ignore_index: int = 255) -> SegData:
    """Semantic masks from a labelling tool's brush masks and polygons (polygons rendered as
    COCO's are; where shapes overlap, the later one wins). Classes: ``classes``, else
    "background" then the file's mask / polygon classes; pixels no shape covers are
    background when the classes have it, else ``ignore_index``; shapes of a class named void
    or ignore mark ``ignore_index``."""
    from pycocotools import mask as mask_utils

    used = [c for c in ls.classes if any(m.label == c for im in ls.images for m in im.masks + im.polygons)]
    labels = list(classes) if classes is not None else \
        [BACKGROUND] + [c for c in used if c.lower() != BACKGROUND and c.lower() not in VOID]
    unknown = sorted({c for c in used if c not in labels and c.lower() not in VOID})
    if unknown:
        raise DataError(f"masks of unknown class {unknown[0]!r}", path=ls.source, hint=f"classes: {', '.join(labels)}")
    fill = labels.index(BACKGROUND) if BACKGROUND in labels else ignore_index
    makers = []
    for im in ls.images:
        def render(im=im):
            out = np.full((im.height, im.width), fill, np.int64)
            for shape in im.polygons + im.masks:
                value = ignore_index if shape.label.lower() in VOID else labels.index(shape.label)
                if isinstance(shape, Mask):
                    out[shape.mask] = value
                else:
                    rle = mask_utils.frPyObjects([shape.points.reshape(-1).tolist()], im.height, im.width)
                    out[mask_utils.decode(rle)[..., 0].astype(bool)] = value
            return out
        makers.append(render)
    return SegData([im.path for im in ls.images], makers, labels, default_colors(len(labels)), ignore_index, None,
                   ls.source, ls.notes())


def to_labelset(data: SegData) -> LabelSet:
    """Label maps as one mask per class and image (background implicit: the pixels no mask
    covers; void pixels as class "void")."""
    out = LabelSet([], [c for c in data.labels if c.lower() != BACKGROUND], data.source)
    for i, p in enumerate(data.images):
        lm = data.load_mask(i)
        masks = [Mask("void" if c == data.ignore_index else data.labels[c], lm == c) for c in np.unique(lm).tolist()
                 if c == data.ignore_index or data.labels[c].lower() != BACKGROUND]
        if any(m.label == "void" for m in masks):
            out.add_class("void")
        out.images.append(LabelImage(Path(p).name, Path(p), lm.shape[1], lm.shape[0], masks=masks))
    return out


def write_masks(data: SegData, out: str | Path) -> list[Path]:
    """``out``/<image stem>.png label maps (class indices; void 255) and ``out``/palette.json
    (classes and colours: ``--masks OUT --palette OUT/palette.json`` reads them back)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if len(data.labels) > 255:
        raise DataError(f"{len(data.labels)} classes do not fit 8-bit label maps (void is 255)", path=str(out))
    written = []
    for i, img in enumerate(data.images):
        lm = data.load_mask(i)
        lm = np.where(lm == data.ignore_index, 255, lm).astype(np.uint8)
        f = out / f"{Path(img).stem}.png"
        png = cv2.imencode(".png", lm)[1].tobytes()
        atomic_write(f, lambda tmp, png=png: Path(tmp).write_bytes(png))
        written.append(f)
    table = json.dumps({"classes": [{"name": n, "color": list(map(int, c))} for n, c in zip(data.labels, data.colors)]})
    atomic_write(out / "palette.json", lambda tmp: Path(tmp).write_text(table))
    return [out / "palette.json", *written]


def default_colors(n: int) -> list[list[int]]:
    """Well-separated class colours (class 0, usually background, black)."""
    return palette(n)


def median_frequency_weights(data: SegData, limit: int | None = None) -> list[float]:
    """SegNet's class balancing: w_c = median(f) / f_c, f_c = pixels of c / pixels of the
    images where c appears (ignore excluded). Classes never seen get weight 0."""
    k = len(data.labels)
    count, present = np.zeros(k), np.zeros(k)
    for i in range(len(data) if limit is None else min(limit, len(data))):
        m = data.load_mask(i)
        m = m[m != data.ignore_index]
        c = np.bincount(m.ravel(), minlength=k)[:k]
        count += c
        present += (c > 0) * m.size
    freq = np.where(present > 0, count / np.maximum(present, 1), 0)
    med = np.median(freq[freq > 0]) if (freq > 0).any() else 1.0
    return [float(med / f) if f > 0 else 0.0 for f in freq]


class SegDataset(TaskDataset):
    """Items: (x (3, S, S) uint8, {"mask": (S, S) int16 (int64 past 32767 classes) with ignore in the padding,
    "index", "meta"}; with ``data.soft`` also "soft" (C, S, S) float32 probabilities, 0 in the
    padding). ``augment``: albumentations with image + mask (nearest for labels)."""

    def __init__(self, data: SegData, letterbox, augment=None, skip_bad: bool = False):
        super().__init__(data, skip_bad)
        self.letterbox, self.augment = letterbox, augment
        self.normalizer = letterbox

    def load(self, i: int):
        img = read_image(self.data.images[i])
        mask = self.data.load_mask(i, img.shape[:2])
        mixed = self.data.soft is not None
        soft = self.data.soft[i]() if mixed and self.data.soft[i] is not None else None
        if self.augment is not None:
            out = self.augment(image=img, mask=mask, **({"masks": [soft]} if soft is not None else {}))
            img, mask = out["image"], out["mask"]
            soft = out["masks"][0] if soft is not None else None
        u8, meta = self.letterbox.prepare(img)
        (sx, sy), (th, tw) = meta_scale(meta), self.letterbox.hw
        size = (min(tw, max(1, round(img.shape[1] * sx))), min(th, max(1, round(img.shape[0] * sy))))
        small = cv2.resize(mask.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
        # int16 (classes and the ignore label fit): a quarter of int64's bytes cross from worker
        # processes and to the GPU; the loss widens it there
        ignore = self.data.ignore_index
        fits = max(len(self.data.labels), ignore + 1) <= 2 ** 15 and ignore >= -2 ** 15
        full = np.full((th, tw), ignore, np.int16 if fits else np.int64)
        full[: small.shape[0], : small.shape[1]] = small
        target = {"mask": torch.from_numpy(full), "index": i, "meta": meta}
        if soft is not None:  # no target where the mask is void: augmentation padding, low teacher confidence
            soft = np.where((mask == self.data.ignore_index)[..., None], 0, soft).astype(np.uint8)
            probs = np.zeros((th, tw, soft.shape[-1]), np.float32)
            probs[: size[1], : size[0]] = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR).reshape(
                size[1], size[0], -1) / 255.0
            target["soft"] = torch.from_numpy(probs).permute(2, 0, 1)  # (C, S, S)
        elif mixed:  # a labelled image among a teacher's: its mask one-hot (the KL is then its cross-entropy)
            valid = torch.from_numpy(full != self.data.ignore_index)
            onehot = torch.nn.functional.one_hot(torch.from_numpy(full).long().clamp(0, len(self.data.labels) - 1),
                                                 len(self.data.labels))
            target["soft"] = (onehot * valid[..., None]).permute(2, 0, 1).float()
        return u8, target
