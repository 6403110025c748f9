"""CVAT for images 1.1 XML (what CVAT's "CVAT for images" export writes and its import
reads): ``<image name width height>`` holding ``<tag>`` (choices), ``<box>`` (xtl ytl xbr ybr),
``<polygon>`` ("x,y;x,y;..."), ``<mask>`` (run lengths over left / top / width / height,
cvapps.data.labels.rle), ``<points>`` (one instance, its points named p0, p1, ...) and
``<skeleton>`` (named ``<points>``; ``outside`` = not labelled, ``occluded`` = hidden). The
labels in ``<meta>`` give class order and a skeleton's point order. Skeletons hold no box:
an instance's box is derived from its points when read (as CVAT's own COCO export does)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from ...errors import DataError
from ..io import RecordCheck, atomic_write
from . import Box, LabelFormat, LabelImage, LabelSet, Mask, PointSet, Polygon, points_in_order, register_format
from .labelstudio import order_points
from .rle import decode_cvat, encode_cvat


def _floats(text: str | None, where: str, n: int | None = None) -> np.ndarray:
    try:
        pts = np.array([[float(v) for v in p.split(",")] for p in (text or "").strip().split(";") if p.strip()])
    except ValueError:
        raise ValueError(f"{where}: points {text!r} are not 'x,y;x,y;...' numbers") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all() or (n is not None and len(pts) < n):
        raise ValueError(f"{where}: points {text!r} are not {'at least ' + str(n) + ' ' if n else ''}x,y pairs")
    return pts


def _attr(el, name: str, where: str) -> float:
    try:
        v = float(el.get(name))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name}={el.get(name)!r} is not a number") from None
    if not np.isfinite(v):
        raise ValueError(f"{where}: {name} is not finite")
    return v


def _meta_labels(root) -> tuple[list[str], dict[str, list[str]]]:
    """Class names in <meta> order, and each skeleton's point names in order."""
    classes, parts = [], {}
    for lab in root.iter("label"):
        name, parent = lab.findtext("name"), lab.findtext("parent")
        if not name:
            continue
        if parent:
            parts.setdefault(parent, []).append(name)
        elif name not in classes:
            classes.append(name)
    return classes, parts


def read(path: str | Path, images: str | Path | None, check: RecordCheck) -> LabelSet:
    path = Path(path)
    if not path.is_file():
        raise DataError("no such CVAT XML file", path=str(path))
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"not well-formed XML: {e}", path=str(path)) from None
    if root.tag != "annotations":
        raise DataError(f"a CVAT XML file has an <annotations> root, this one <{root.tag}>", path=str(path))
    classes, parts = _meta_labels(root)
    out = LabelSet([], [c for c in classes if not any(c in v for v in parts.values())], str(path))
    point_order = [n for names in parts.values() for n in names]
    seen_points: dict[str, None] = {}
    pending = []
    for el in root.iter("image"):
        name = el.get("name")
        where = f"image {name!r}"
        try:
            w, h = int(el.get("width")), int(el.get("height"))
        except (TypeError, ValueError):
            check.bad(where, f"width / height {el.get('width')!r} x {el.get('height')!r} are not integers")
            continue
        local = None
        if images is not None:
            local = check.image_path(images, name, where)
            if local is None:
                continue
            if not local.is_file():
                check.bad(where, f"named in the XML but missing on disk: {local}")
                continue
        im = LabelImage(str(name), local, w, h, ref={"id": el.get("id")})
        try:
            groups = _read_shapes(el, im, where, out)
        except ValueError as e:
            check.bad(where, str(e))
            continue
        for _, named, _ in groups:
            seen_points.update(dict.fromkeys(named))
        pending.append((im, groups))
    names = point_order + [n for n in seen_points if n not in point_order]
    out.point_names = names if point_order else order_points(names)
    for im, groups in pending:
        for label, named, _ in groups:
            pts = points_in_order(named, out.point_names)
            seen = pts[pts[:, 2] > 0, :2]
            box = np.concatenate([seen.min(0), seen.max(0)]) if len(seen) else None
            im.pointsets.append(PointSet(label, pts, box))
        out.images.append(im)
    out.skipped = check.skipped
    return out


def _read_shapes(el, im: LabelImage, where: str, out: LabelSet) -> list:
    groups = []
    for k, s in enumerate(el):
        label = s.get("label")
        sw = f"{where}, <{s.tag}> {k + 1} ({label})"
        if not label:
            raise ValueError(f"{sw}: no label")
        if s.tag == "tag":
            im.choices.append(label)
        elif s.tag == "box":
            if float(s.get("rotation") or 0):
                out.dropped["rotated boxes"] += 1
                continue
            im.boxes.append(Box(label, np.array([_attr(s, n, sw) for n in ("xtl", "ytl", "xbr", "ybr")])))
        elif s.tag == "polygon":
            im.polygons.append(Polygon(label, _floats(s.get("points"), sw, 3)))
        elif s.tag == "mask":
            try:
                runs = [int(v) for v in (s.get("rle") or "").split(",") if v.strip()]
                box = tuple(int(float(s.get(n))) for n in ("left", "top", "width", "height"))
                im.masks.append(Mask(label, decode_cvat(runs, box, im.height, im.width)))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{sw}: mask {e}") from None
        elif s.tag == "points":
            pts = _floats(s.get("points"), sw, 1)
            groups.append((label, {f"p{i}": (x, y, 2) for i, (x, y) in enumerate(pts.tolist())}, None))
        elif s.tag == "skeleton":
            named = {}
            for p in s.findall("points"):
                if p.get("outside") == "1":
                    continue
                (x, y), = _floats(p.get("points"), f"{sw} point {p.get('label')}", 1)[:1]
                named[p.get("label")] = (x, y, 1 if p.get("occluded") == "1" else 2)
            if not named:
                out.dropped["skeletons with every point outside"] += 1
                continue
            groups.append((label, named, None))
        else:
            out.dropped[f"<{s.tag}> shapes"] += 1
            continue
        if s.tag not in ("points", "skeleton"):
            out.add_class(label)
        elif label not in out.classes:
            out.classes.append(label)
    return groups


def _num(v: float) -> str:
    return f"{float(v):.6f}".rstrip("0").rstrip(".")


def _pts(points) -> str:
    return ";".join(f"{_num(x)},{_num(y)}" for x, y in np.asarray(points)[:, :2].tolist())


def xml_text(labels: LabelSet) -> str:
    kinds: dict[str, set] = {}
    for im in labels.images:
        for kind, tag in (("choices", "tag"), ("boxes", "rectangle"), ("polygons", "polygon"), ("masks", "mask"),
                          ("pointsets", "skeleton")):
            for item in getattr(im, kind):
                kinds.setdefault(item if kind == "choices" else item.label, set()).add(tag)
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>", "  <meta>",
             "    <task>", "      <name>cvapps</name>", f"      <size>{len(labels.images)}</size>",
             "      <mode>annotation</mode>", "      <labels>"]
    instances = {p.label for im in labels.images for p in im.pointsets}
    for name in labels.classes + [c for c in kinds if c not in labels.classes]:
        types = kinds.get(name, {"any"})
        kind = "skeleton" if name in instances else types.pop() if len(types) == 1 else "any"
        lines += ["        <label>", f"          <name>{escape(name)}</name>", f"          <type>{kind}</type>",
                  "          <attributes/>", "        </label>"]
        if name in instances:
            for part in labels.point_names:
                lines += ["        <label>", f"          <name>{escape(part)}</name>", "          <type>points</type>",
                          "          <attributes/>", f"          <parent>{escape(name)}</parent>", "        </label>"]
    lines += ["      </labels>", "    </task>", "  </meta>"]
    for i, im in enumerate(labels.images):
        lines.append(f'  <image id="{i}" name={quoteattr(im.name)} width="{im.width}" height="{im.height}">')
        for c in im.choices:
            lines.append(f'    <tag label={quoteattr(c)} source="manual"/>')
        for b in im.boxes:
            x1, y1, x2, y2 = map(_num, b.xyxy)
            lines.append(f'    <box label={quoteattr(b.label)} source="manual" occluded="0" xtl="{x1}" ytl="{y1}" '
                         f'xbr="{x2}" ybr="{y2}" z_order="0"/>')
        for p in im.polygons:
            lines.append(f'    <polygon label={quoteattr(p.label)} source="manual" occluded="0" '
                         f'points="{_pts(p.points)}" z_order="0"/>')
        for m in im.masks:
            if not m.mask.any():
                labels.dropped["empty masks"] += 1
                continue
            runs, (left, top, bw, bh) = encode_cvat(m.mask)
            lines.append(f'    <mask label={quoteattr(m.label)} source="manual" occluded="0" '
                         f'rle="{", ".join(map(str, runs))}" left="{left}" top="{top}" width="{bw}" height="{bh}" '
                         f'z_order="0"/>')
        for ps in im.pointsets:
            if not (ps.points[:, 2] > 0).any():
                labels.dropped["instances without labelled points (a CVAT skeleton is its points)"] += 1
                continue
            if ps.box is not None:
                labels.dropped["instance boxes (a CVAT skeleton holds none; read back from its points)"] += 1
            lines.append(f'    <skeleton label={quoteattr(ps.label)} source="manual" z_order="0">')
            for name, (x, y, v) in zip(labels.point_names, ps.points.tolist()):
                lines.append(f'      <points label={quoteattr(name)} source="manual" outside="{int(v == 0)}" '
                             f'occluded="{int(v == 1)}" points="{_num(x)},{_num(y)}"/>')
            lines.append("    </skeleton>")
        lines.append("  </image>")
    lines.append("</annotations>")
    return "\n".join(lines) + "\n"


def write(labels: LabelSet, out: str | Path, **_) -> list[Path]:
    text = xml_text(labels)
    atomic_write(Path(out), lambda tmp: Path(tmp).write_text(text))
    return [Path(out)]


register_format(LabelFormat("cvat", read, write, ".xml",
                            frozenset({"choices", "boxes", "polygons", "masks", "pointsets"})))
