"""COCO files checked as a whole before any record is used: ids unique, every reference
resolvable, every number finite and in range, image names inside the images folder. A bad
record is named as it is written in the file (``annotation id 7 (image a.jpg): bbox [10, 20,
-30, 5]: width -30 is not positive``) and stops the read, or with ``--skip-bad`` is left out
and counted. pycocotools indexes the checked dict; it would otherwise merge two images that
share an id and attach their boxes to one of them."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import DataError
from .io import RecordCheck

_TOL = 1.0  # pixels a box may overhang the image (rounding in exports)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer())


def _show(v) -> str:
    """A value as the file writes it (JSON numbers: 10 stays 10, 10.5 stays 10.5)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return repr(v) if isinstance(v, str) else str(v)


def bbox_problem(bbox, width: float | None = None, height: float | None = None) -> str | None:
    """Why an [x, y, w, h] box (as written) is unusable, or None."""
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        return f"bbox must be [x, y, w, h], got {_show(bbox) if isinstance(bbox, list) else repr(bbox)}"
    if not all(_num(v) for v in bbox):
        return f"bbox {_show(list(bbox))} holds a value that is not a finite number"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        side = "width" if w <= 0 else "height"
        return f"bbox {_show(list(bbox))}: {side} {_show(w if w <= 0 else h)} is not positive"
    if width is not None and (x < -_TOL or y < -_TOL or x + w > width + _TOL or y + h > height + _TOL):
        return f"bbox {_show(list(bbox))} reaches outside the {_show(width)}x{_show(height)} image"
    return None


def _where_image(i: int, im) -> str:
    if isinstance(im, dict):
        return f"images[{i}] (id {_show(im.get('id'))}, {im.get('file_name')!r})"
    return f"images[{i}]"


def _where_ann(i: int, a, images: dict) -> str:
    name = images.get(a.get("image_id"), {}).get("file_name") if isinstance(a, dict) else None
    ident = f"annotation id {_show(a['id'])}" if isinstance(a, dict) and "id" in a else f"annotations[{i}]"
    return ident + (f" (image {name})" if name else "")


def check_coco(d, source: str, check: RecordCheck, images_root: str | Path | None = None,
               need_categories: bool = True, what: str = "COCO") -> dict:
    """The usable part of COCO dict ``d`` (a shallow copy with bad records left out, for
    pycocotools to index), or DataError at the first bad record (without ``check.skip_bad``).
    ``images_root``: where image names must stay (None: names are not paths to open here).
    Checked: the three lists; image ids and file names unique, sizes positive; category ids
    and names unique; annotation ids unique, image and category ids known, bbox finite with
    positive size inside its image, keypoints finite triples, polygons finite, RLE sized
    like its image."""
    if not isinstance(d, dict):
        raise DataError(f"not a {what} file: the top level must be a JSON object", path=source)
    keys = ("images", "annotations", "categories") if need_categories else ("images", "annotations")
    for key in keys:
        if not isinstance(d.get(key), list):
            raise DataError(f"not a {what} file: no {key!r} list", path=source)
    cats, cat_names = {}, {}
    for i, c in enumerate(d.get("categories") or []):
        where = f"categories[{i}]"
        if not isinstance(c, dict) or not _int(c.get("id")) or not isinstance(c.get("name", ""), str):
            check.bad(where, f"a category needs an integer id and a name, got {c!r}"[:200])
            continue
        cid, name = int(c["id"]), c.get("name", "")
        if cid in cats:
            check.bad(f"{where} (id {cid}, {name!r})", f"category id {cid} is also categories[{cats[cid][0]}]")
            continue
        if name and name in cat_names:
            check.bad(f"{where} (id {cid})", f"category name {name!r} is also category id {cat_names[name]}",
                      hint="classes are matched by name: give each category its own")
            continue
        cats[cid] = (i, c)
        cat_names[name] = cid
    images: dict = {}
    names: dict[str, int] = {}
    dropped: set = set()  # ids whose images are ambiguous or bad: their annotations go too
    for i, im in enumerate(d["images"]):
        where = _where_image(i, im)
        if not isinstance(im, dict) or not _int(im.get("id")):
            check.bad(where, f"an image needs an integer id, got {im.get('id') if isinstance(im, dict) else im!r}")
            continue
        iid = int(im["id"])
        if iid in images or iid in dropped:
            first = images.pop(iid, None)
            dropped.add(iid)
            was = f" ({first.get('file_name')!r})" if first else ""
            check.bad(where, f"image id {iid} is also used by another image{was}: its annotations would attach to "
                             "either", hint="give every image its own id")
            continue
        w, h = im.get("width"), im.get("height")
        if w is not None or h is not None:
            if not (_num(w) and _num(h) and w > 0 and h > 0):
                check.bad(where, f"width and height must be positive numbers, got {_show(w)} x {_show(h)}")
                dropped.add(iid)
                continue
        name = im.get("file_name")
        if images_root is not None and check.image_path(images_root, name, where) is None:
            dropped.add(iid)
            continue
        if isinstance(name, str) and name in names:
            check.bad(where, f"file name {name!r} is also image id {names[name]}", hint="one entry per image file")
            dropped.add(iid)
            continue
        names[name] = iid
        images[iid] = im
    anns, ann_ids = [], {}
    for i, a in enumerate(d["annotations"]):
        where = _where_ann(i, a, images)
        if not isinstance(a, dict):
            check.bad(where, f"an annotation is a JSON object, got {a!r}"[:200])
            continue
        if "id" in a:
            if not _int(a["id"]):
                check.bad(where, f"id must be an integer, got {a['id']!r}")
                continue
            if a["id"] in ann_ids:
                check.bad(where, f"annotation id {_show(a['id'])} is also annotations[{ann_ids[a['id']]}]",
                          hint="give every annotation its own id")
                continue
            ann_ids[a["id"]] = i
        iid = a.get("image_id")
        if iid in dropped:  # (only with --skip-bad: otherwise the image's problem stopped the read)
            check.skipped.append(f"{where}: left out with its image {_show(iid)}")
            continue
        if iid not in images:
            check.bad(where, f"image_id {_show(iid)} is not in the file's images")
            continue
        if need_categories and a.get("category_id") not in cats:
            check.bad(where, f"unknown category_id {_show(a.get('category_id'))}",
                      hint=f"categories are {sorted(cats)}")
            continue
        problem = _ann_problem(a, images[iid])
        if problem:
            check.bad(where, problem)
            continue
        anns.append(a)
    out = {**d, "images": list(images.values()), "annotations": anns}
    if need_categories:
        out["categories"] = [c for _, c in cats.values()]
    return out


def _ann_problem(a: dict, image: dict) -> str | None:
    """Why the numbers of annotation ``a`` (on ``image``) are unusable, or None."""
    if "bbox" in a:
        p = bbox_problem(a["bbox"], image.get("width"), image.get("height"))
        if p:
            return p
    for key in ("area", "score"):
        if key in a and not _num(a[key]):
            return f"{key} {_show(a[key])} is not a finite number"
    if "iscrowd" in a and a["iscrowd"] not in (0, 1, True, False):
        return f"iscrowd must be 0 or 1, got {_show(a['iscrowd'])}"
    kp = a.get("keypoints")
    if kp is not None:
        if not isinstance(kp, list) or len(kp) % 3 or not all(_num(v) for v in kp):
            return "keypoints must be a list of finite x, y, v triples"
        if any(v not in (0, 1, 2) for v in kp[2::3]):
            return f"keypoint visibility must be 0, 1 or 2, got {sorted({_show(v) for v in kp[2::3]} - {'0', '1', '2'})}"
    seg = a.get("segmentation")
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(_num(v) for v in poly):
                return "a segmentation polygon must be a list of at least 3 finite x, y pairs"
    elif isinstance(seg, dict):
        size = seg.get("size")
        want = [image.get("height"), image.get("width")]
        if not (isinstance(size, list) and len(size) == 2) or "counts" not in seg:
            return "an RLE segmentation needs 'size' [h, w] and 'counts'"
        if None not in want and [int(v) for v in size] != [int(v) for v in want]:
            return f"RLE size {_show(size)} is not its image's [height, width] {_show(want)}"
    elif seg is not None:
        return f"segmentation must be polygons or an RLE, got {type(seg).__name__}"
    return None


def check_results(rows, source: str, images: set, categories: set | None = None, keypoints: int | None = None,
                  gt: str = "the ground truth") -> list:
    """A COCO results list (detections or keypoint instances) checked as a whole: each record
    an object with a known image_id (and category_id when ``categories`` is given), a finite
    score, a finite box of non-negative size, finite keypoint triples (``keypoints``: their
    count). DataError naming the first bad record as written."""
    if not isinstance(rows, list):
        raise DataError("a COCO results file is a JSON list of records", path=source)
    for n, r in enumerate(rows):
        where = f"record {n}"
        if not isinstance(r, dict):
            raise DataError(f"{where}: a record is a JSON object, got {r!r}"[:200], path=source)
        need = {"image_id", "score"} | ({"category_id"} if categories is not None else set())
        need |= {"bbox"} if keypoints is None else {"keypoints"}
        missing = sorted(need - set(r))
        if missing:
            raise DataError(f"{where}: needs {', '.join(sorted(need))}; {', '.join(missing)} missing", path=source)
        if r["image_id"] not in images:
            raise DataError(f"{where}: image_id {_show(r['image_id'])} is not in {gt}", path=source)
        if categories is not None and r["category_id"] not in categories:
            raise DataError(f"{where}: category_id {_show(r['category_id'])} is not in {gt}", path=source)
        if not _num(r["score"]):
            raise DataError(f"{where}: score {_show(r['score'])} is not a finite number", path=source)
        if "bbox" in r:
            b = r["bbox"]
            if not (isinstance(b, list) and len(b) == 4 and all(_num(v) for v in b)) or b[2] < 0 or b[3] < 0:
                raise DataError(f"{where}: bbox {_show(b) if isinstance(b, list) else repr(b)} must be four finite "
                                "numbers [x, y, w, h] with w, h >= 0", path=source)
        if keypoints is not None:
            kp = r["keypoints"]
            if not (isinstance(kp, list) and len(kp) == 3 * keypoints and all(_num(v) for v in kp)):
                raise DataError(f"{where}: keypoints must be {keypoints} finite x, y, score triples", path=source)
    return rows
