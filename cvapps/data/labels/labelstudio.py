"""Label Studio's JSON tasks (what its "JSON" export writes and its import reads): each task
``{"id", "data": {"image": URL}, "annotations": [{"result": [...]}], "predictions": [...]}``.
Results read and written: ``choices``, ``rectanglelabels`` (x, y, width, height in percent of
``original_width`` / ``original_height``), ``polygonlabels`` (points in percent),
``brushlabels`` (RLE, cvapps.data.labels.rle) and ``keypointlabels`` (a point in percent, its
name the label, grouped under its rectangle by ``parentID``; ``hidden`` marks a labelled but
hidden point). Percent converts to pixels as x / 100 * original_width, exactly.

Reading takes each task's latest annotation that was not cancelled; tasks without one are not
labelled yet and are left out (counted). ``label_config`` writes the labelling config that
matches what a LabelSet holds."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse
from xml.sax.saxutils import quoteattr

import numpy as np

from ...errors import DataError
from ...schema import BUILTIN
from ..io import RecordCheck, atomic_write, image_size, load_json
from . import (Box, LabelFormat, LabelImage, LabelSet, Mask, PointSet, Polygon, points_in_order, register_format)
from .rle import decode_brush, encode_brush

NAMES = {"choices": "choice", "rectanglelabels": "label", "polygonlabels": "polygon", "brushlabels": "brush",
         "keypointlabels": "keypoint"}  # from_name of each result type in the configs cvapps writes
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded files with a hash


def stored_name(ref: str) -> str:
    """The file a task's image reference names, as a path relative to where Label Studio
    keeps it: under the local-files document root (``/data/local-files/?d=rel`` -> rel), an
    upload's own name (``/data/upload/<project>/<hash>-name`` -> name), a URL's file name, a
    path as it is."""
    parsed = urlparse(ref)
    query = parse_qs(parsed.query)
    if "d" in query:
        return unquote(query["d"][0])
    if parsed.scheme or ref.startswith("/data/"):
        return UPLOAD_PREFIX.sub("", Path(unquote(parsed.path)).name)
    return unquote(parsed.path)


def image_candidates(ref: str, images: Path | None) -> list[Path]:
    """Local files under ``images`` a task's image reference may name (``stored_name``, its
    bare file name, the file name as the URL gives it)."""
    root = images or Path(".")
    rel = stored_name(ref)
    return [root / rel.lstrip("/"), root / Path(rel).name, root / Path(unquote(urlparse(ref).path)).name]


def _image_ref(data: dict) -> str | None:
    if isinstance(data.get("image"), str):
        return data["image"]
    refs = [v for v in data.values() if isinstance(v, str) and re.search(r"\.(jpe?g|png|bmp|webp|tiff?)(\?|$)", v, re.I)]
    return refs[0] if len(refs) == 1 else None


def _annotation(task: dict) -> dict | None:
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    return max(done, key=lambda a: (str(a.get("updated_at", "")), a.get("id") or 0)) if done else None


def _num(v, where: str, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ValueError(f"{where}: {name} {v!r} is not a finite number")
    return float(v)


def read(path: str | Path, images: str | Path | None, check: RecordCheck) -> LabelSet:
    """A Label Studio JSON export (a list of tasks) -> LabelSet."""
    path = Path(path)
    tasks = load_json(path, "Label Studio export")
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError("a Label Studio export is a JSON list of tasks", path=str(path))
    out = LabelSet([], [], str(path))
    named_points: dict[str, None] = {}
    instance_labels: set[str] = set()
    pending = []
    for t_i, task in enumerate(tasks):
        where = f"task {task.get('id', t_i + 1) if isinstance(task, dict) else t_i + 1}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            check.bad(where, "a task is an object with a 'data' object")
            continue
        ref = _image_ref(task["data"])
        if ref is None:
            check.bad(where, "no image in its data (expected data.image)")
            continue
        source = _annotation(task)
        if source is None:
            out.dropped["tasks not labelled yet"] += 1
            continue
        path_found = next((p for p in image_candidates(ref, Path(images) if images else None) if p.is_file()), None)
        if images is not None and path_found is None:
            check.bad(f"{where} (image {ref})", f"the image is not under {images}",
                      hint="pass --images DIR holding the task images (local-files: the document root)")
            continue
        if path_found is not None and not check.allow_outside and images is not None:
            if check.image_path(images, str(path_found.relative_to(images)), where) is None:
                continue
        try:
            im, rects, groups = _read_results(source.get("result") or [], where, ref, path_found, out)
        except ValueError as e:
            check.bad(where, str(e))
            continue
        im.ref = {"task_id": task.get("id")}
        im.score = task.get("score", source.get("score"))
        named_points.update(dict.fromkeys(n for named in groups.values() for n in named))
        instance_labels.update(b.label for rid, b in rects if rid in groups)
        pending.append((im, rects, groups))
    out.point_names = order_points(list(named_points))
    for im, rects, groups in pending:
        # a rectangle of a class whose rectangles hold keypoints is an instance (with or without points)
        for rid, box in rects:
            if box.label in instance_labels:
                im.pointsets.append(PointSet(box.label, points_in_order(groups.get(rid, {}), out.point_names),
                                             box.xyxy, box.score))
        im.boxes = [b for rid, b in rects if b.label not in instance_labels]
        out.images.append(im)
    out.skipped = check.skipped
    return out


def order_points(names: list[str]) -> list[str]:
    """Point names in a known schema's order when they belong to one (COCO's 17 ...), in
    numeric order when they are p0, p1, ..., else as first seen."""
    for spec in BUILTIN.values():
        known = [str(n) for n in spec["keypoints"]]
        if names and set(names) <= set(known):
            return known
    if names and all(re.fullmatch(r"p\d+", n) for n in names):
        return [f"p{i}" for i in range(max(int(n[1:]) for n in names) + 1)]
    return names


def _read_results(results: list, where: str, ref: str, path: Path | None, out: LabelSet):
    """One annotation's results -> (LabelImage without point sets, [(rectangle id, Box)] in
    order, {rectangle id: {point name: (x, y, v)}})."""
    sizes = {(r.get("original_width"), r.get("original_height")) for r in results if isinstance(r, dict)}
    sizes.discard((None, None))
    if len(sizes) > 1:
        raise ValueError(f"its results disagree on the image size: {sorted(sizes)}")
    w, h = next(iter(sizes)) if sizes else (None, None)
    if w is None and path is not None:
        w, h = image_size(path)
    if results and (w is None or not isinstance(w, int) or not isinstance(h, int) or w <= 0 or h <= 0):
        raise ValueError("its results carry no original_width / original_height")
    im = LabelImage(ref, path, int(w or 0), int(h or 0))
    rects: dict[str, Box] = {}
    kps = []
    for k, r in enumerate(results):
        rw = f"{where}, result {r.get('id', k + 1) if isinstance(r, dict) else k + 1}"
        if not isinstance(r, dict) or not isinstance(r.get("value"), dict):
            raise ValueError(f"{rw}: a result is an object with a 'value' object")
        kind, v = str(r.get("type", "")).lower(), r["value"]
        names = v.get(kind)
        if kind == "choices":
            for c in names or []:
                im.choices.append(str(c))
                out.add_class(str(c))
            continue
        if kind not in ("rectanglelabels", "polygonlabels", "brushlabels", "keypointlabels"):
            out.dropped[f"{kind or 'untyped'} results"] += 1
            continue
        if not isinstance(names, list) or len(names) != 1:
            raise ValueError(f"{rw}: {kind} needs one label, got {names!r}")
        label = str(names[0])
        if kind == "rectanglelabels":
            x, y, bw, bh = (_num(v.get(n), rw, n) for n in ("x", "y", "width", "height"))
            if _num(v.get("rotation", 0), rw, "rotation"):
                out.dropped["rotated boxes"] += 1
                continue
            box = Box(label, np.array([x * w / 100, y * h / 100, (x + bw) * w / 100, (y + bh) * h / 100]),
                      r.get("score"))
            rects[str(r.get("id", f"#{k}"))] = box
        elif kind == "polygonlabels":
            pts = np.asarray(v.get("points"), np.float64) if isinstance(v.get("points"), list) else np.zeros(0)
            if pts.ndim != 2 or pts.shape[1:] != (2,) or len(pts) < 3 or not np.isfinite(pts).all():
                raise ValueError(f"{rw}: a polygon needs at least 3 [x, y] points in percent")
            im.polygons.append(Polygon(label, pts * [w / 100, h / 100], r.get("score")))
        elif kind == "brushlabels":
            if v.get("format", "rle") != "rle" or not isinstance(v.get("rle"), list):
                raise ValueError(f"{rw}: a brush mask needs format 'rle' and an 'rle' list")
            try:
                mask = decode_brush(v["rle"], h, w)
            except ValueError as e:
                raise ValueError(f"{rw}: brush {e}") from None
            im.masks.append(Mask(label, mask, r.get("score")))
        else:
            x, y = _num(v.get("x"), rw, "x"), _num(v.get("y"), rw, "y")
            kps.append((rw, str(r.get("parentID", "")) or None, label, x * w / 100, y * h / 100,
                        1 if v.get("hidden") else 2))
        if kind != "keypointlabels":
            out.add_class(label)
    groups: dict[str, dict] = {}
    for rw, parent, name, x, y, vis in kps:
        if parent is None or parent not in rects:
            raise ValueError(f"{rw}: keypoint {name!r} has no parent rectangle (parentID "
                             f"{parent!r} names no rectanglelabels result of this annotation)")
        groups.setdefault(parent, {})[name] = (x, y, vis)
    return im, list(rects.items()), groups


def _pct(v: float, size: int) -> float:
    return float(v) * 100.0 / size


def task_results(im: LabelImage, point_names: list[str], prefix: str = "r", names: dict | None = None,
                 to_name: str = "image") -> list[dict]:
    """``im``'s labels as Label Studio results; ``names``: the from_name of each result type
    (a project's controls, see ``controls``; default the configs cvapps writes)."""
    w, h = im.width, im.height
    names = {**NAMES, **(names or {})}
    base = {"to_name": to_name, "original_width": w, "original_height": h, "image_rotation": 0}
    out = []

    def add(kind: str, value: dict, score=None, **extra) -> str:
        rid = f"{prefix}{len(out)}"
        r = {"id": rid, "type": kind, "from_name": names[kind], **base, "value": value, **extra}
        if score is not None:
            r["score"] = float(score)
        out.append(r)
        return rid

    if im.choices:
        add("choices", {"choices": list(im.choices)})
    for b in im.boxes:
        x1, y1, x2, y2 = map(float, b.xyxy)
        add("rectanglelabels", {"x": _pct(x1, w), "y": _pct(y1, h), "width": _pct(x2 - x1, w),
                                "height": _pct(y2 - y1, h), "rotation": 0, "rectanglelabels": [b.label]}, b.score)
    for p in im.polygons:
        add("polygonlabels", {"points": [[_pct(x, w), _pct(y, h)] for x, y in p.points.tolist()], "closed": True,
                              "polygonlabels": [p.label]}, p.score)
    for m in im.masks:
        add("brushlabels", {"format": "rle", "rle": encode_brush(m.mask), "brushlabels": [m.label]}, m.score)
    for ps in im.pointsets:
        box = ps.box if ps.box is not None else _points_box(ps.points)
        x1, y1, x2, y2 = map(float, box)
        parent = add("rectanglelabels", {"x": _pct(x1, w), "y": _pct(y1, h), "width": _pct(x2 - x1, w),
                                         "height": _pct(y2 - y1, h), "rotation": 0, "rectanglelabels": [ps.label]},
                     ps.score)
        for name, (x, y, v) in zip(point_names, ps.points.tolist()):
            if v > 0:
                value = {"x": _pct(x, w), "y": _pct(y, h), "width": 0.5, "keypointlabels": [name]}
                if v < 2:
                    value["hidden"] = True
                add("keypointlabels", value, parentID=parent)
    return out


def _points_box(points: np.ndarray) -> np.ndarray:
    seen = points[points[:, 2] > 0, :2]
    return np.concatenate([seen.min(0), seen.max(0)]) if len(seen) else np.zeros(4)


def local_files_url(path: Path, document_root: Path) -> str:
    """Label Studio's URL of a file served by its local-files storage (LOCAL_FILES_DOCUMENT_ROOT)."""
    return "/data/local-files/?d=" + quote(Path(path).resolve().relative_to(document_root.resolve()).as_posix())


def url_under(document_root: str | Path | None):
    """A LabelImage -> its Label Studio reference: a local-files URL under ``document_root``
    (Label Studio's LOCAL_FILES_DOCUMENT_ROOT), else its name as read (None: that default)."""
    if document_root is None:
        return None
    root = Path(document_root)
    return lambda im: local_files_url(im.path, root) if im.path is not None else im.name


def tasks(labels: LabelSet, url=None, as_predictions: bool = False, model_version: str | None = None) -> list[dict]:
    """LabelSet -> Label Studio tasks: labels as ``annotations`` (ground truth to import) or
    as editable ``predictions`` (pre-annotations with ``model_version``; the image's score is
    the prediction's score, which the Data Manager sorts by). ``url(image) -> str``: the
    task's image reference (default: the name as read)."""
    out = []
    for i, im in enumerate(labels.images):
        data = {"image": url(im) if url else im.name}
        if im.score is not None:
            data["cvapps_score"] = float(im.score)
        task: dict = {"data": data}
        if im.ref.get("task_id") is not None:
            task["id"] = im.ref["task_id"]
        result = task_results(im, labels.point_names)
        if as_predictions:
            pred = {"model_version": model_version or "cvapps", "result": result}
            if im.score is not None:
                pred["score"] = float(im.score)
            task["predictions"] = [pred]
        else:
            task["annotations"] = [{"result": result, "ground_truth": False}]
        out.append(task)
    return out


CONTROLS = {"choices": "Choices", "rectanglelabels": "RectangleLabels", "polygonlabels": "PolygonLabels",
            "brushlabels": "BrushLabels", "keypointlabels": "KeyPointLabels"}


def controls(config: str) -> tuple[dict[str, tuple[str, str, list[str]]], str]:
    """A labelling config's controls: {result type: (name, toName, label values)} (the first
    control of each type) and the task data key of its Image ("$image" -> "image")."""
    try:
        root = ET.fromstring(config)
    except ET.ParseError as e:
        raise DataError(f"the labelling config is not well-formed XML: {e}") from None
    image = next(root.iter("Image"), None)
    if image is None:
        raise DataError("the labelling config has no <Image> to label")
    out = {}
    for kind, tag in CONTROLS.items():
        el = next(root.iter(tag), None)
        if el is not None:
            values = [c.get("value") for c in el if c.tag in ("Label", "Choice") and c.get("value")]
            out[kind] = (el.get("name"), el.get("toName") or image.get("name"), values)
    return out, (image.get("value") or "$image").lstrip("$")


def fit_to(im: LabelImage, ctrl: dict) -> Counter:
    """Keep the labels of ``im`` the project's controls ``ctrl`` can hold (classes matched by
    name, case-insensitively, and renamed to the config's spelling); counts what was dropped."""
    dropped: Counter = Counter()

    def keep(kind: str, label: str) -> str | None:
        values = {v.lower(): v for v in ctrl.get(kind, (None, None, []))[2]}
        if kind not in ctrl or (values and label.lower() not in values):
            dropped[f"{label} ({kind})"] += 1
            return None
        return values.get(label.lower(), label)

    im.choices = [c for c in (keep("choices", c) for c in im.choices) if c]
    for attr, kind in (("boxes", "rectanglelabels"), ("polygons", "polygonlabels"), ("masks", "brushlabels"),
                       ("pointsets", "rectanglelabels")):
        kept = []
        for item in getattr(im, attr):
            name = keep(kind, item.label)
            if name is not None:
                item.label = name
                kept.append(item)
        setattr(im, attr, kept)
    return dropped


def label_config(labels: LabelSet) -> str:
    """The labelling config (XML) for what ``labels`` holds: its classes under the controls
    its images use (keypoints with their schema order as ``model_index``)."""
    used = {k for im in labels.images for k in ("choices", "boxes", "polygons", "masks", "pointsets")
            if getattr(im, k)}

    def classes_of(kind: str) -> list[str]:
        seen = {i if kind == "choices" else i.label for im in labels.images for i in getattr(im, kind)}
        if len(used - {"pointsets"}) == 1 and kind in used and kind != "pointsets":
            seen |= set(labels.classes) - {p.label for im in labels.images for p in im.pointsets}  # every class
        return [c for c in labels.classes if c in seen] + sorted(seen - set(labels.classes))

    choices = classes_of("choices")
    rect = classes_of("boxes") + [c for c in classes_of("pointsets") if c not in classes_of("boxes")]
    by_kind = {k: classes_of(k) for k in ("polygons", "masks", "pointsets")}
    lines = ['<View>', '  <Image name="image" value="$image" zoom="true"/>']

    def block(tag: str, name: str, values: list[str], extra: str = "", attrs=None) -> None:
        lines.append(f'  <{tag} name="{name}" toName="image"{extra}>')
        for i, v in enumerate(values):
            more = f' model_index="{i}"' if attrs == "index" else ""
            lines.append(f"    <Label value={quoteattr(v)}{more}/>" if tag != "Choices" else
                         f"    <Choice value={quoteattr(v)}/>")
        lines.append(f"  </{tag}>")

    if "choices" in used or not used:
        multi = any(len(im.choices) > 1 for im in labels.images)
        block("Choices", NAMES["choices"], choices or labels.classes,
              f' choice="{"multiple" if multi else "single"}" showInline="true"')
    if rect:
        block("RectangleLabels", NAMES["rectanglelabels"], rect)
    if by_kind["polygons"]:
        block("PolygonLabels", NAMES["polygonlabels"], by_kind["polygons"])
    if by_kind["masks"]:
        block("BrushLabels", NAMES["brushlabels"], by_kind["masks"])
    if by_kind["pointsets"]:
        block("KeyPointLabels", NAMES["keypointlabels"], labels.point_names, ' smart="false"', "index")
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def write(labels: LabelSet, out: str | Path, url=None, as_predictions: bool = False, model_version: str | None = None,
          config: str | Path | None = None) -> list[Path]:
    """``out``: the tasks JSON; ``config``: also the labelling config there."""
    out = Path(out)
    body = json.dumps(tasks(labels, url, as_predictions, model_version))
    atomic_write(out, lambda tmp: Path(tmp).write_text(body))
    written = [out]
    if config:
        text = label_config(labels)
        atomic_write(Path(config), lambda tmp: Path(tmp).write_text(text))
        written.append(Path(config))
    return written


register_format(LabelFormat("label-studio", read, write, ".json",
                            frozenset({"choices", "boxes", "polygons", "masks", "pointsets"})))
