"""Keypoint data (faces and people): COCO keypoints JSON (pycocotools), iBUG ``.pts``
files beside images, and CSV (``path,x1,y1,...``). Coordinates are image pixels; each
instance has a box (xyxy; derived from the points when the file has none) and
keypoints (K, 3) = x, y, visibility (0 unlabelled, 1 occluded, 2 visible)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..ops.keypoints import box_from_points
from ..schema import Schema, convert_points, from_dataset
from .coco import check_coco
from .io import IMAGE_EXTS, RecordCheck, atomic_write, coco_index, image_size, json_dumps, load_json
from .labels import LabelImage, LabelSet, PointSet, read_labels, sniff, tool_formats

_TOL = 2.0  # pixels a point may sit outside the image (annotation rounding)
FACE_BOX_PAD = 0.1  # a face box derived from points is grown by this fraction per side


@dataclass
class KpInstance:
    box: np.ndarray  # (4,) xyxy pixels
    keypoints: np.ndarray  # (K, 3) x, y, v
    area: float
    ann_id: int = 0
    iscrowd: bool = False


@dataclass
class KpRecord:
    path: Path
    width: int
    height: int
    image_id: int
    instances: list[KpInstance]


@dataclass
class KeypointData:
    records: list[KpRecord]
    schema: Schema
    source: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_keypoints(self) -> int:
        return len(self.schema)

    def instances(self) -> list[tuple[int, int]]:
        """(record index, instance index) of every non-crowd instance with labelled points."""
        return [(r, i) for r, rec in enumerate(self.records) for i, inst in enumerate(rec.instances)
                if not inst.iscrowd and (inst.keypoints[:, 2] > 0).any()]

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.records]

    def subset(self, idx: list[int]) -> "KeypointData":
        return KeypointData([self.records[i] for i in idx], self.schema, self.source, self.skipped)

    def converted(self, schema: Schema, groups: tuple[tuple[int, ...], ...]) -> "KeypointData":
        """The same instances with their points in ``schema`` (cvapps.schema.convert_points with
        ``groups``); boxes and areas unchanged."""
        records = [KpRecord(r.path, r.width, r.height, r.image_id,
                            [replace(i, keypoints=convert_points(i.keypoints, groups)) for i in r.instances])
                   for r in self.records]
        return KeypointData(records, schema, self.source, self.skipped)

    def to_coco(self) -> dict:
        """COCO keypoints ground truth (skeleton 1-based, as COCO stores it)."""
        images, anns = [], []
        for r in self.records:
            images.append({"id": r.image_id, "file_name": r.path.name, "width": r.width, "height": r.height})
            for inst in r.instances:
                x1, y1, x2, y2 = map(float, inst.box)
                kp = inst.keypoints.astype(np.float64)
                anns.append({"id": len(anns) + 1, "image_id": r.image_id, "category_id": 1,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(inst.area),
                             "iscrowd": int(inst.iscrowd), "keypoints": kp.reshape(-1).tolist(),
                             "num_keypoints": int((kp[:, 2] > 0).sum())})
        cat = {"id": 1, "name": "person" if self.schema.name in ("coco17", "crowdpose14") else "object",
               "keypoints": list(self.schema.keypoints),
               "skeleton": [[a + 1, b + 1] for a, b in self.schema.skeleton]}
        return {"images": images, "annotations": anns, "categories": [cat]}


class _Collector(RecordCheck):
    def instance(self, where: str, kp: np.ndarray, box_xywh, w: int, h: int, k: int, area=None,
                 pad_derived: float = 0.0, crowd: bool = False, ann_id: int = 0) -> KpInstance | None:
        """Validated instance; None (counted) or DataError when the record is bad."""
        if kp.shape != (k, 3):
            self.bad(where, f"{kp.shape[0]} keypoints, the schema has {k}",
                     hint="every annotation of a file needs the same number of points")
            return None
        lab = kp[:, 2] > 0
        p = kp[lab, :2]
        if len(p) and (p[:, 0].min() < -_TOL or p[:, 1].min() < -_TOL or p[:, 0].max() > w + _TOL
                       or p[:, 1].max() > h + _TOL):
            self.bad(where, f"keypoint coordinates outside the {w}x{h} image "
                     f"(x {p[:, 0].min():.1f}..{p[:, 0].max():.1f}, y {p[:, 1].min():.1f}..{p[:, 1].max():.1f})")
            return None
        if box_xywh is None:
            if not lab.any():
                self.bad(where, "no box and no labelled points")
                return None
            box = box_from_points(kp[:, :2], lab)
            pw, ph = (box[2] - box[0]) * pad_derived, (box[3] - box[1]) * pad_derived
            box = box + [-pw, -ph, pw, ph]
        else:
            if len(box_xywh) != 4:
                self.bad(where, f"bbox must be [x, y, w, h], got {box_xywh!r}")
                return None
            x, y, bw, bh = map(float, box_xywh)
            if not (bw > 0 and bh > 0):
                self.bad(where, f"box [{x}, {y}, {bw}, {bh}] has zero size")
                return None
            box = np.array([x, y, x + bw, y + bh])
        box = np.array([max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)], np.float64)
        if area is None:
            area = float((box[2] - box[0]) * (box[3] - box[1]))
        return KpInstance(box, kp.astype(np.float64), float(area), ann_id, crowd)


def read_coco_keypoints(ann_file: str | Path, images: str | Path | None, skip_bad: bool = False,
                        allow_outside: bool = False) -> KeypointData:
    """A COCO keypoints file (one keypoint category), checked as a whole first
    (cvapps.data.coco.check_coco). Face files without keypoint names (300W / WFLW / COFW /
    AFLW style) get the built-in schema for their point count. ``images`` None: annotations
    only (evaluating a results file needs no pictures); record paths are then the bare file
    names."""
    ann_file = Path(ann_file)
    col = _Collector(str(ann_file), skip_bad, allow_outside)
    raw = load_json(ann_file)
    d = check_coco(raw, str(ann_file), col, images, need_categories=isinstance(raw, dict) and "categories" in raw,
                   what="COCO keypoints")
    coco = coco_index({**d, "categories": d.get("categories") or [{"id": 1, "name": "object"}]})
    kp_cats = [c for c in coco.dataset["categories"] if c.get("keypoints") is not None] or coco.dataset["categories"]
    cat = kp_cats[0]
    counts = sorted({len(a.get("keypoints") or []) // 3 for a in d["annotations"] if a.get("category_id") == cat["id"]})
    if not counts:
        raise DataError(f"no keypoint annotations for category {cat.get('name')!r}", path=str(ann_file))
    k = len(cat.get("keypoints") or []) or max(counts, key=lambda c: sum(
        len(a.get("keypoints") or []) == 3 * c for a in d["annotations"]))
    schema = from_dataset(list(cat.get("keypoints") or []), cat.get("skeleton"), k)
    is_face = schema.is_face
    records = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        w, h = int(info["width"]), int(info["height"])
        insts = []
        for a in coco.imgToAnns.get(img_id, []):
            if a.get("category_id", cat["id"]) != cat["id"]:
                continue
            where = f"annotation id {a.get('id')} (image {info['file_name']})"
            kp = np.asarray(a.get("keypoints") or [], np.float64)
            if kp.size % 3:
                col.bad(where, f"keypoints must be x, y, v triples, got {kp.size} numbers")
                continue
            inst = col.instance(where, kp.reshape(-1, 3), a.get("bbox"), w, h, k, a.get("area"),
                                FACE_BOX_PAD if is_face else 0.0, bool(a.get("iscrowd", 0)), int(a.get("id", 0)))
            if inst is not None:
                insts.append(inst)
        path = Path(images) / info["file_name"] if images is not None else Path(info["file_name"])
        if images is not None and not path.is_file():
            col.bad(f"image {info['file_name']}", f"named in the annotations but missing on disk: {path}")
            continue
        records.append(KpRecord(path, w, h, int(img_id), insts))
    return KeypointData(records, schema, str(ann_file), col.skipped)


def parse_pts(path: Path) -> np.ndarray:
    """iBUG ``.pts``: ``version: 1`` / ``n_points: N`` / ``{`` / N lines ``x y`` / ``}`` ->
    (N, 2). The format is 1-based (Matlab): the first pixel's centre is (1, 1)."""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]

    def broken(msg: str):
        return DataError(f"broken .pts file: {msg}", path=str(path),
                         hint="expected 'version: 1', 'n_points: N', '{', N lines 'x y', '}'")

    n = None
    for ln in lines[:3]:
        if ln.lower().startswith("n_points"):
            try:
                n = int(ln.split(":", 1)[1])
            except (IndexError, ValueError):
                raise broken(f"bad n_points line {ln!r}") from None
    if n is None or "{" not in lines:
        raise broken("no 'n_points:' header or no '{'")
    start = lines.index("{") + 1
    end = lines.index("}", start) if "}" in lines[start:] else len(lines)
    body = lines[start:end]
    if len(body) != n:
        raise broken(f"n_points says {n} but the block between braces has {len(body)} lines")
    try:
        pts = np.array([[float(v) for v in ln.split()[:2]] for ln in body], np.float64)
    except ValueError:
        raise broken("a point line is not two numbers") from None
    return pts - 0.5  # 1-based pixel centres -> our convention (pixel i spans [i, i+1))


def read_pts(folder: str | Path, images: str | Path | None = None, skip_bad: bool = False) -> KeypointData:
    """Images with a same-stem ``.pts`` beside them (or in ``folder`` when images live in
    ``images``); one face per file, its box derived from the points."""
    folder, img_dir = Path(folder), Path(images or folder)
    if not folder.is_dir():
        raise DataError("no such .pts folder", path=str(folder))
    col = _Collector(str(folder), skip_bad)
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    records, k = [], None
    for img in files:
        pts_file = folder / f"{img.stem}.pts"
        if not pts_file.is_file():
            continue
        try:
            pts = parse_pts(pts_file)
            w, h = image_size(img)
        except DataError as e:
            if not skip_bad:
                raise
            col.skipped.append(e.one_line())
            continue
        k = k or len(pts)
        kp = np.concatenate([pts, np.full((len(pts), 1), 2.0)], 1)
        inst = col.instance(pts_file.name, kp, None, w, h, k, pad_derived=FACE_BOX_PAD)
        if inst is not None:
            records.append(KpRecord(img, w, h, len(records) + 1, [inst]))
    if not records:
        raise DataError("no image with a same-stem .pts file", path=str(folder))
    return KeypointData(records, from_dataset([], None, k), str(folder), col.skipped)


def read_keypoint_csv(csv_file: str | Path, images: str | Path | None = None, skip_bad: bool = False,
                      allow_outside: bool = False) -> KeypointData:
    """CSV rows ``path,x1,y1,...,xK,yK`` (a header row is optional; a row per face; paths
    relative to ``images`` or to the CSV's folder; empty cells = unlabelled points)."""
    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise DataError("no such CSV file", path=str(csv_file))
    base = Path(images) if images else csv_file.parent
    rows = list(csv.reader(csv_file.read_text().splitlines()))
    if rows and rows[0] and not _is_number(rows[0][1] if len(rows[0]) > 1 else ""):
        rows = rows[1:]
    col = _Collector(str(csv_file), skip_bad, allow_outside)
    by_path: dict[str, KpRecord] = {}
    k = None
    sizes: dict[Path, tuple[int, int]] = {}
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        where = f"row {line} ({row[0]})"
        vals = row[1:]
        if len(vals) % 2:
            col.bad(where, f"expected x, y pairs after the path, got {len(vals)} numbers")
            continue
        k = k or len(vals) // 2
        try:
            xy = np.array([float(v) if v.strip() else np.nan for v in vals], np.float64).reshape(-1, 2)
        except ValueError:
            col.bad(where, "coordinates must be numbers")
            continue
        path = col.image_path(base, row[0], where)
        if path is None:
            continue
        if path not in sizes:
            if not path.is_file():
                col.bad(where, f"missing image {path}")
                continue
            sizes[path] = image_size(path)
        w, h = sizes[path]
        v = np.where(np.isnan(xy).any(1), 0.0, 2.0)
        kp = np.concatenate([np.nan_to_num(xy), v[:, None]], 1)
        inst = col.instance(where, kp, None, w, h, k, pad_derived=FACE_BOX_PAD)
        if inst is None:
            continue
        rec = by_path.setdefault(row[0], KpRecord(path, w, h, len(by_path) + 1, []))
        rec.instances.append(inst)
    if not by_path:
        raise DataError("no usable rows", path=str(csv_file))
    return KeypointData(list(by_path.values()), from_dataset([], None, k), str(csv_file), col.skipped)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_keypoints(data: str | Path, images: str | Path | None = None, fmt: str | None = None,
                   skip_bad: bool = False, allow_outside: bool = False) -> KeypointData:
    """``fmt``: coco | pts | csv | label-studio | cvat; guessed from ``data`` when None. A COCO file without
    ``images`` reads the annotations only (callers that crop pictures check for the folder).
    ``allow_outside``: image names in the file may leave ``images``."""
    p = Path(data)
    fmt = fmt or sniff(p)
    if fmt in tool_formats():
        return from_labelset(read_labels(fmt, p, images, skip_bad, allow_outside), skip_bad)
    fmt = fmt or ("coco" if p.suffix.lower() == ".json" else "csv" if p.suffix.lower() == ".csv" else
                  "pts" if p.is_dir() else None)
    if fmt == "coco":
        return read_coco_keypoints(p, images, skip_bad, allow_outside)
    if fmt == "pts":
        return read_pts(p, images, skip_bad)
    if fmt == "csv":
        return read_keypoint_csv(p, images, skip_bad, allow_outside)
    raise DataError("cannot tell the keypoint format", path=str(p), hint="pass --format coco|pts|csv|label-studio|cvat")


def from_labelset(ls: LabelSet, skip_bad: bool = False) -> KeypointData:
    """The point sets of a labelling tool's labels; the schema from the point names (a
    built-in one when they are its names, e.g. COCO's 17). Boxes: the instance's rectangle,
    else the labelled points' box (faces padded as for .pts files)."""
    if not ls.point_names:
        raise DataError("no keypoints in the labels (Label Studio keypointlabels / CVAT skeletons or points)",
                        path=ls.source)
    schema = from_dataset(list(ls.point_names), [[a + 1, b + 1] for a, b in ls.skeleton], len(ls.point_names))
    col = _Collector(ls.source, skip_bad)
    col.skipped.extend(ls.notes())
    records = []
    for im in ls.images:
        insts = []
        for k, ps in enumerate(im.pointsets):
            box = None if ps.box is None else [ps.box[0], ps.box[1], ps.box[2] - ps.box[0], ps.box[3] - ps.box[1]]
            inst = col.instance(f"image {im.name}, instance {k + 1} ({ps.label})", ps.points, box, im.width,
                                im.height, len(schema), pad_derived=FACE_BOX_PAD if schema.is_face else 0.0,
                                ann_id=len(records) * 1000 + k + 1)
            if inst is not None:
                insts.append(inst)
        records.append(KpRecord(im.path, im.width, im.height, len(records) + 1, insts))
    return KeypointData(records, schema, ls.source, col.skipped)


def write_coco(data: KeypointData, out: str | Path) -> list[Path]:
    """A COCO keypoints file (one category, the schema's point names and skeleton)."""
    text = json_dumps(data.to_coco())
    atomic_write(Path(out), lambda tmp: Path(tmp).write_text(text))
    return [Path(out)]


def to_labelset(data: KeypointData) -> LabelSet:
    """Keypoint records as labels: one point set per instance, with its box (crowd regions dropped, counted)."""
    label = "person" if data.schema.name in ("coco17", "crowdpose14") else "face" if data.schema.is_face else "object"
    out = LabelSet([], [label], data.source, list(data.schema.keypoints), [tuple(e) for e in data.schema.skeleton])
    for r in data.records:
        sets = [PointSet(label, inst.keypoints.astype(np.float64), np.asarray(inst.box, np.float64))
                for inst in r.instances if not inst.iscrowd]
        if any(inst.iscrowd for inst in r.instances):
            out.dropped["crowd regions"] += sum(inst.iscrowd for inst in r.instances)
        out.images.append(LabelImage(r.path.name, r.path, r.width, r.height, pointsets=sets))
    return out
