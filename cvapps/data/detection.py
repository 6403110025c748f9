"""Detection data: COCO JSON (pycocotools), PASCAL VOC XML and YOLO txt -> one target
format (boxes xyxy pixels, labels, iscrowd) -> a torch Dataset. Bad records raise DataError
naming file and record, or with ``skip_bad`` are skipped and counted in ``skipped``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .dataset import TaskDataset
from .coco import check_coco
from .io import IMAGE_EXTS, RecordCheck, atomic_write, coco_index, image_size, json_dumps, load_json, read_image
from .labels import Box, LabelImage, LabelSet, read_labels, sniff, tool_formats
from .transforms import meta_scale

_TOL = 1.0  # pixels a box may overhang the image (rounding in exports)
YOLO_LABEL_DIRS = ("obj_train_data", "obj_valid_data", "labels")  # where YOLO / CVAT exports put the .txt files


@dataclass
class DetRecord:
    """One image: boxes (N, 4) float32 xyxy pixels, labels (N,) int64, iscrowd (N,) bool;
    ``soft`` (N, K) float32: a teacher's class probabilities per box (distillation), else None."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    image_id: int
    soft: np.ndarray | None = None


@dataclass
class DetectionData:
    records: list[DetRecord]
    labels: list[str]
    category_ids: list[int]  # label index -> category id written in COCO results
    source: str
    skipped: list[str] = field(default_factory=list)
    unknown_classes: list[str] = field(default_factory=list)  # dataset classes a model did not know
    # renamed to a model's classes (classes.remap): its category id -> the annotation file's
    file_ids: dict[int, int] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.records]

    def subset(self, idx: list[int]) -> "DetectionData":
        return DetectionData([self.records[i] for i in idx], self.labels, self.category_ids, self.source)

    def to_coco(self) -> dict:
        """Ground truth as a COCO dict (original pixel coordinates) for COCOeval."""
        images, anns = [], []
        for r in self.records:
            images.append({"id": r.image_id, "width": r.width, "height": r.height, "file_name": r.path.name})
            for b, lab, crowd in zip(r.boxes, r.labels, r.iscrowd):
                w, h = float(b[2] - b[0]), float(b[3] - b[1])
                anns.append({"id": len(anns) + 1, "image_id": r.image_id, "category_id": self.category_ids[lab],
                             "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": int(crowd)})
        cats = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.labels)]
        return {"images": images, "annotations": anns, "categories": cats}


class _Builder(RecordCheck):
    """Validates boxes and collects records; errors name file and record."""

    def __init__(self, source: str, skip_bad: bool, allow_outside: bool = False):
        super().__init__(source, skip_bad, allow_outside)
        self.records: list[DetRecord] = []

    def box_ok(self, where: str, box, w: int, h: int, written: str) -> bool:
        """``box``: xyxy pixels; ``written``: the box as the file writes it (for messages)."""
        x1, y1, x2, y2 = box
        if not all(np.isfinite(box)):
            self.bad(where, f"{written} holds a value that is not a finite number")
            return False
        if not (x2 > x1 and y2 > y1):
            self.bad(where, f"{written} has zero or negative size")
            return False
        if x1 < -_TOL or y1 < -_TOL or x2 > w + _TOL or y2 > h + _TOL:
            self.bad(where, f"{written} reaches outside the {w}x{h} image")
            return False
        return True

    def add(self, path: Path, w: int, h: int, objs: list[tuple[list[float], int, bool]], image_id=None) -> None:
        """``image_id``: the annotation file's (COCO), so results files evaluate against it; else 1, 2, ..."""
        if not path.is_file():
            self.bad(f"image {path.name}", f"named in the annotations but missing on disk: {path}")
            return
        boxes = np.array([o[0] for o in objs], np.float32).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        self.records.append(DetRecord(path, w, h, boxes, np.array([o[1] for o in objs], np.int64),
                                      np.array([o[2] for o in objs], bool),
                                      len(self.records) + 1 if image_id is None else image_id))


def read_coco(ann_file: str | Path, images: str | Path, skip_bad: bool = False,
              allow_outside: bool = False) -> DetectionData:
    """A COCO detection file, checked as a whole first (cvapps.data.coco.check_coco)."""
    ann_file = Path(ann_file)
    b = _Builder(str(ann_file), skip_bad, allow_outside)
    d = check_coco(load_json(ann_file), str(ann_file), b, images, what="COCO detection")
    for a in d["annotations"]:
        if not isinstance(a.get("bbox"), list):
            b.bad(f"annotation id {a.get('id')}", "a detection annotation needs a bbox [x, y, w, h]")
    d["annotations"] = [a for a in d["annotations"] if isinstance(a.get("bbox"), list)]
    coco = coco_index(d)
    cat_ids = sorted(coco.getCatIds())
    names = [coco.cats[c]["name"] for c in cat_ids]
    index = {c: i for i, c in enumerate(cat_ids)}
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        if info.get("width") is None:
            b.bad(f"image id {img_id} ({info['file_name']!r})", "no width / height")
            continue
        w, h = int(info["width"]), int(info["height"])
        objs = []
        for a in coco.imgToAnns.get(img_id, []):
            x, y, bw, bh = map(float, a["bbox"])
            objs.append(([x, y, x + bw, y + bh], index[a["category_id"]], bool(a.get("iscrowd", 0))))
        b.add(Path(images) / info["file_name"], w, h, objs, img_id)
    return DetectionData(b.records, names, cat_ids, str(ann_file), b.skipped)


def _names_file(folder: Path) -> Path | None:
    for cand in [folder / "classes.txt", *sorted(folder.glob("*.names")), *sorted(folder.parent.glob("*.names"))]:
        if cand.is_file():
            return cand
    return None


def read_names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_voc(xml_dir: str | Path, images: str | Path, labels: list[str] | None = None,
             skip_bad: bool = False, allow_outside: bool = False) -> DetectionData:
    """A folder of VOC XML files. Classes: ``labels``, else a ``*.names``/``classes.txt`` file
    beside the folder, else the sorted names found. ``difficult`` objects count as crowd
    (ignored in matching and evaluation, as in the VOC protocol)."""
    xml_dir = Path(xml_dir)
    if not xml_dir.is_dir():
        raise DataError("no such folder (VOC: a folder of .xml files)", path=str(xml_dir))
    files = sorted(xml_dir.glob("*.xml"))
    if not files:
        raise DataError("no .xml files found", path=str(xml_dir))
    parsed = []
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as e:
            raise DataError(f"malformed XML: {e}", path=str(f)) from None
        parsed.append((f, root))
    if labels is None:
        nf = _names_file(xml_dir)
        labels = read_names(nf) if nf else sorted({o.findtext("name", "").strip()
                                                   for _, r in parsed for o in r.iter("object")})
    b = _Builder(str(xml_dir), skip_bad, allow_outside)
    for f, root in parsed:
        b.source = str(f)
        size = root.find("size")
        try:
            w, h = int(size.findtext("width")), int(size.findtext("height"))
        except (AttributeError, TypeError, ValueError):
            b.bad("size", "missing or invalid <size>")
            continue
        objs = []
        for k, o in enumerate(root.iter("object")):
            name = o.findtext("name", "").strip()
            where = f"object {k} ({name})"
            if name not in labels:
                b.bad(where, f"unknown class {name!r}", hint=f"known classes: {', '.join(labels)}")
                continue
            bb = o.find("bndbox")
            try:
                written = [bb.findtext(t).strip() for t in ("xmin", "ymin", "xmax", "ymax")]
                box = [float(v) for v in written]
            except (AttributeError, TypeError, ValueError):
                b.bad(where, "missing or invalid <bndbox>")
                continue
            shown = "<bndbox> " + " ".join(f"{t}={v}" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), written))
            if b.box_ok(where, box, w, h, shown):
                objs.append((box, labels.index(name), o.findtext("difficult", "0").strip() == "1"))
        path = b.image_path(images, root.findtext("filename", f.stem + ".jpg").strip(), "<filename>")
        if path is not None:
            b.add(path, w, h, objs)
    return DetectionData(b.records, list(labels), list(range(1, len(labels) + 1)), str(xml_dir), b.skipped)


def read_yolo(txt_dir: str | Path, images: str | Path, labels: list[str] | None = None,
              skip_bad: bool = False) -> DetectionData:
    """YOLO: one ``<image stem>.txt`` per image with lines ``class cx cy w h`` (normalised),
    in ``txt_dir`` or where YOLO exports put them (``obj_train_data/``, ``labels/``). Images
    without a .txt have no objects. Classes from ``labels`` or a names file."""
    txt_dir, images = Path(txt_dir), Path(images)
    if not txt_dir.is_dir():
        raise DataError("no such folder (YOLO: a folder of .txt label files)", path=str(txt_dir))
    if labels is None:
        nf = _names_file(txt_dir)
        if nf is None:
            raise DataError("no class names file (classes.txt or *.names) found", path=str(txt_dir))
        labels = read_names(nf)
    image_files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTS) if images.is_dir() else []
    if not image_files:
        raise DataError("no images found", path=str(images))
    dirs = [txt_dir, *(txt_dir / sub for sub in YOLO_LABEL_DIRS)]
    found = {img.stem: d / (img.stem + ".txt") for d in reversed(dirs) for img in image_files
             if (d / (img.stem + ".txt")).is_file()}
    if not found:
        raise DataError(f"no YOLO label file named like the {len(image_files)} images (looked in the folder and "
                        f"its {', '.join(s + '/' for s in YOLO_LABEL_DIRS)})", path=str(txt_dir),
                        hint="YOLO labels are <image stem>.txt files; point --data at their folder")
    b = _Builder(str(txt_dir), skip_bad)
    for img in image_files:
        try:
            w, h = image_size(img)
        except DataError:
            b.bad(f"image {img.name}", "not a decodable image")
            continue
        objs = []
        txt = found.get(img.stem)
        lines = txt.read_text().splitlines() if txt is not None else []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            b.source = str(txt)
            parts = line.split()
            where = f"line {n}"
            if len(parts) != 5:
                b.bad(where, f"expected 'class cx cy w h' (5 numbers), got {len(parts)}: {line.strip()!r}")
                continue
            try:
                c, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:])
            except ValueError:
                b.bad(where, f"not numbers: {line.strip()!r}")
                continue
            if not 0 <= c < len(labels):
                b.bad(where, f"unknown class index {c} (there are {len(labels)} classes)")
                continue
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            if b.box_ok(where, box, w, h, f"box {line.strip()!r} (class cx cy w h, of the {w}x{h} image)"):
                objs.append((box, c, False))
        b.add(img, w, h, objs)
    return DetectionData(b.records, list(labels), list(range(1, len(labels) + 1)), str(txt_dir), b.skipped)


def read_detection(data: str | Path, images: str | Path, fmt: str | None = None, labels: list[str] | None = None,
                   skip_bad: bool = False, allow_outside: bool = False) -> DetectionData:
    """``fmt``: coco | voc | yolo | label-studio | cvat (default: coco for a .json file, voc for
    a folder of .xml). ``allow_outside``: image names in the file may leave ``images``
    (absolute paths, ``..``)."""
    p = Path(data)
    fmt = fmt or sniff(p)
    if fmt in tool_formats():
        return from_labelset(read_labels(fmt, p, images, skip_bad, allow_outside), labels, skip_bad)
    if fmt is None:
        fmt = "coco" if p.suffix.lower() == ".json" else ("voc" if any(p.glob("*.xml")) else "yolo")
    if fmt == "coco":
        return read_coco(p, images, skip_bad, allow_outside)
    if fmt == "voc":
        return read_voc(p, images, labels, skip_bad, allow_outside)
    if fmt == "yolo":
        return read_yolo(p, images, labels, skip_bad)
    raise DataError(f"unknown annotation format {fmt!r}", hint="use coco, voc, yolo, label-studio or cvat")


def from_labelset(ls: LabelSet, labels: list[str] | None = None, skip_bad: bool = False) -> DetectionData:
    """The boxes of a labelling tool's labels (classes: ``labels``, else the file's box
    classes in order); a box of another class is a bad record."""
    classes = list(labels) if labels is not None else [c for c in ls.classes if any(
        b.label == c for im in ls.images for b in im.boxes)]
    b = _Builder(ls.source, skip_bad)
    b.skipped.extend(ls.notes())
    for im in ls.images:
        objs = []
        for k, box in enumerate(im.boxes):
            where = f"image {im.name}, box {k + 1}"
            if box.label not in classes:
                b.bad(where, f"unknown class {box.label!r}", hint=f"known classes: {', '.join(classes)}")
                continue
            if b.box_ok(where, box.xyxy, im.width, im.height, f"box {[round(float(v), 3) for v in box.xyxy]} "
                                                                 f"(xyxy pixels)"):
                objs.append((box.xyxy.tolist(), classes.index(box.label), False))
        b.add(im.path, im.width, im.height, objs)
    return DetectionData(b.records, classes, list(range(1, len(classes) + 1)), ls.source, b.skipped)


def write_coco(data: DetectionData, out: str | Path) -> list[Path]:
    """A COCO detection file (categories 1..K in the data's class order)."""
    text = json_dumps(data.to_coco())
    atomic_write(Path(out), lambda tmp: Path(tmp).write_text(text))
    return [Path(out)]


def write_yolo(data: DetectionData, out: str | Path) -> list[Path]:
    """``out``/<image stem>.txt (``class cx cy w h`` normalised; images without boxes get an
    empty file) and ``out``/classes.txt. Crowd boxes are left out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for r in data.records:
        lines = [f"{int(c)} {(b[0] + b[2]) / 2 / r.width:.6f} {(b[1] + b[3]) / 2 / r.height:.6f} "
                 f"{(b[2] - b[0]) / r.width:.6f} {(b[3] - b[1]) / r.height:.6f}"
                 for b, c, crowd in zip(r.boxes.astype(np.float64), r.labels, r.iscrowd) if not crowd]
        f = out / f"{r.path.stem}.txt"
        atomic_write(f, lambda tmp, text="".join(ln + "\n" for ln in lines): Path(tmp).write_text(text))
        written.append(f)
    names = "".join(n + "\n" for n in data.labels)
    atomic_write(out / "classes.txt", lambda tmp: Path(tmp).write_text(names))
    return [out / "classes.txt", *written]


def to_labelset(data: DetectionData) -> LabelSet:
    """Detection records as labels (crowd regions: no tool holds them, counted as dropped)."""
    out = LabelSet([], list(data.labels), data.source)
    for r in data.records:
        keep = ~r.iscrowd
        if r.iscrowd.any():
            out.dropped["crowd boxes"] += int(r.iscrowd.sum())
        out.images.append(LabelImage(r.path.name, r.path, r.width, r.height,
                                     boxes=[Box(data.labels[l], b.astype(np.float64))
                                            for b, l in zip(r.boxes[keep], r.labels[keep])]))
    return out


class DetectionDataset(TaskDataset):
    """Items: (x (3, S, S) uint8, target {"boxes" (N, 4) xyxy input pixels,
    "labels" (N,), "iscrowd" (N,), "index": int, "meta": {...}, "counts": {"dropped_boxes":
    n}}). ``augment``: an albumentations Compose with bbox_params, applied before the
    letterbox; the boxes it drops are tallied in ``counts["dropped_boxes"]`` by the loader."""

    def __init__(self, data: DetectionData, letterbox, augment=None, skip_bad: bool = False):
        super().__init__(data, skip_bad)
        self.letterbox, self.augment = letterbox, augment
        self.normalizer = letterbox

    def load(self, i: int):
        r = self.data.records[i]
        img = read_image(r.path)
        boxes, kept = r.boxes, np.arange(len(r.boxes))
        if self.augment is not None:  # the box indices ride as labels: every per-box field follows
            out = self.augment(image=img, bboxes=boxes, labels=kept, crowd=r.iscrowd.astype(np.int64))
            img = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            kept = np.asarray(out["labels"], np.int64)
        x, meta = self.letterbox.prepare(img)
        sx, sy = meta_scale(meta)
        target = {"boxes": torch.from_numpy(boxes * np.array([sx, sy, sx, sy], np.float32)).float(),
                  "labels": torch.from_numpy(r.labels[kept]).long(), "iscrowd": torch.from_numpy(r.iscrowd[kept]),
                  "index": i, "meta": meta, "counts": {"dropped_boxes": len(r.boxes) - len(kept)}}
        if r.soft is not None:
            target["soft"] = torch.from_numpy(r.soft[kept]).float()  # (N, K)
        return x, target
