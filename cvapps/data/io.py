"""File IO shared by every reader and writer: image decoding with OpenCV (RGB uint8 out,
EXIF orientation applied, clear errors), JSON / JSON Lines, a quiet pycocotools index,
atomic writes."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError, ShapeError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB. Raises DataError naming ``name``."""
    if not data:
        raise DataError("empty file (0 bytes)", path=name, hint="re-export or remove the file")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        # libjpeg decodes a truncated JPEG with a grey tail and only a warning
        raise DataError("truncated or corrupt JPEG (no end-of-image marker)", path=name,
                        hint="re-download or re-export the image")
    buf = np.frombuffer(data, np.uint8)
    is_jpeg = data[:2] == b"\xff\xd8"
    # IMREAD_COLOR applies EXIF orientation (JPEGs are 8-bit); other formats keep depth/alpha
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise DataError("not a decodable image", path=name, hint="check the file is really an image of its extension")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def as_rgb(array: np.ndarray, name: str = "array") -> np.ndarray:
    """An image array given through the Python API -> (H, W, 3) uint8 RGB, converted the way
    files are: grey (H, W) / (H, W, 1) is repeated, RGBA drops alpha, uint16 is scaled, float
    arrays must hold values in [0, 1] (x 255). Anything else raises ShapeError / DataError
    naming the expected dtype and shape."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) == 0:
        raise ShapeError(f"{name}: image arrays are (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey, got shape "
                         f"{tuple(a.shape)}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a // 257).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if not (np.isfinite(a).all() and lo >= 0.0 and hi <= 1.0):
            raise DataError(f"{name}: float image arrays must hold values in [0, 1], got {lo:.3g}..{hi:.3g}",
                            hint="pass uint8 RGB (0..255), or divide a float image by 255")
        a = np.round(a * 255).astype(np.uint8)
    else:
        raise DataError(f"{name}: image arrays must be uint8 (0..255), uint16 or float in [0, 1], got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Path -> (H, W, 3) uint8 RGB. Raises DataError for missing/empty/corrupt files."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file", path=str(p), hint="check the path")
    if p.is_dir():
        raise DataError("is a folder, not an image file", path=str(p))
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=str(p)) from None
    return decode_image(data, str(p))


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder``; DataError if there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError("no such folder", path=str(root))
    it = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in it if p.is_file() and is_image(p))
    if not files:
        raise DataError("folder contains no images", path=str(root),
                        hint=f"expected files ending in {', '.join(sorted(IMAGE_EXTS))}")
    return files


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as read_image will return it, from the file header (no decode):
    JPEGs with an EXIF rotation (orientations 5-8) report their rotated size."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.format == "JPEG" and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except FileNotFoundError:
        raise DataError("no such file", path=str(path)) from None
    except OSError:
        raise DataError("not a decodable image", path=str(path)) from None
    return w, h


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # writers may create 0600 temp files; use the user's default
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def coco_index(dataset: dict):
    """A pycocotools COCO index over an in-memory COCO dict (its progress prints silenced)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"info": {}, "licenses": [], **dataset}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """JSON Lines -> records; a malformed line raises DataError naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError("no such JSON Lines file", path=str(p))
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"line {n}: not JSON ({e.msg})", path=str(p)) from None
    return rows


def _finite(o):
    if isinstance(o, float) and o != o:
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def json_dumps(obj, **kw) -> str:
    """JSON as people and parsers expect it: real UTF-8 (no \\u escapes) and NaN written as
    null (NaN is not JSON)."""
    return json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, **kw)


def load_json(path: str | os.PathLike, what: str = "annotation file"):
    """Parsed JSON; DataError naming the file when it is missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such {what}", path=str(p))
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e}", path=str(p)) from None


class RecordCheck:
    """The readers' bad-record policy: raise a DataError naming the file and the record, or
    with ``skip_bad`` count the record in ``skipped`` and go on."""

    def __init__(self, source: str, skip_bad: bool):
        self.source, self.skip_bad, self.skipped = source, skip_bad, []

    def bad(self, where: str, msg: str, hint: str | None = None) -> None:
        if self.skip_bad:
            self.skipped.append(f"{where}: {msg}")
            return
        raise DataError(f"{where}: {msg}", path=self.source, hint=hint or "fix the record or pass --skip-bad")
