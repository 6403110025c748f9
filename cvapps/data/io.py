"""File IO shared by every reader and writer: image decoding with OpenCV (RGB uint8 out,
EXIF orientation applied, clear errors, a pixel limit checked from the header before any
decode), JSON / JSON Lines, a quiet pycocotools index, atomic writes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, DataError, ImageTooLarge, ShapeError

# the formats cvapps reads, in folders and given directly alike (OpenCV decodes them all; Pillow
# reads their headers for the pixel limit)
IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".gif", ".jp2", ".ppm",
              ".pgm", ".pbm", ".pnm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}

# Decoding allocates what the header declares: a 2.6 MB PNG may declare 30000 x 30000 pixels
# (2.7 GB decoded). 100 megapixels covers camera photos and scans (a 12 MP phone photo, a
# 61 MP full-frame); set CVAPPS_MAX_PIXELS / --max-pixels for larger genuine images.
DEFAULT_MAX_PIXELS = 100_000_000
_limit: int | None = None  # set_max_pixels (the CLI's --max-pixels); None: the environment or the default
# OpenCV refuses images above its own limit too (read once, at the first decode): the same default,
# a backstop for headers Pillow cannot read
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))


def _parse_pixels(value, what: str) -> int:
    try:
        n = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {value!r} is not a number of pixels", hint="e.g. 100000000 or 1e8") from None
    if not (n >= 1 and n == n and n != float("inf")):
        raise ConfigError(f"{what} must be a positive number of pixels, got {value!r}")
    return int(n)


def max_pixels() -> int:
    """The largest image (width x height) cvapps decodes: ``set_max_pixels``, else the
    CVAPPS_MAX_PIXELS environment variable, else DEFAULT_MAX_PIXELS."""
    if _limit is not None:
        return _limit
    env = os.environ.get("CVAPPS_MAX_PIXELS")
    return _parse_pixels(env, "CVAPPS_MAX_PIXELS") if env else DEFAULT_MAX_PIXELS


def set_max_pixels(n) -> None:
    """Set the pixel limit for this process (None: back to the environment / default)."""
    global _limit
    _limit = None if n is None else _parse_pixels(n, "--max-pixels")


def check_pixels(width: int, height: int, name: str, limit: int | None = None, what: str = "declares") -> None:
    """Raise ImageTooLarge when ``width`` x ``height`` exceeds ``limit`` (default ``max_pixels()``)."""
    limit = limit or max_pixels()
    if width * height > limit:
        raise ImageTooLarge(f"{what} {width}x{height} = {width * height:,} pixels, over the limit of {limit:,}",
                            path=name, hint=_RAISE)


_RAISE = "if the image is genuine, raise the limit: --max-pixels N or CVAPPS_MAX_PIXELS=N"
_BOMB = re.compile(r"\((\d+) pixels\)")


def declared_size(source, name: str, limit: int | None = None) -> tuple[int, int] | None:
    """(width, height) as the header of ``source`` (a path or bytes) declares them, after EXIF
    rotation (orientations 5-8 swap them), read without decoding the pixels; None when Pillow
    does not know the format (OpenCV's own limit still applies then). Raises ImageTooLarge
    above ``limit`` (default ``max_pixels()``)."""
    from PIL import Image, UnidentifiedImageError

    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: the check below decides
            with Image.open(fp) as im:
                w, h = im.size
                if im.format == "JPEG" and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w
    except Image.DecompressionBombError as e:  # above Pillow's hard limit: it says how many pixels
        m = _BOMB.search(str(e))
        pixels = int(m.group(1)) if m else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
        limit = limit or max_pixels()
        if pixels > limit:
            raise ImageTooLarge(f"declares {pixels:,} pixels, over the limit of {limit:,}", path=name,
                                hint=_RAISE) from None
        return None
    except FileNotFoundError:
        raise DataError("no such file", path=name) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    check_pixels(w, h, name, limit)
    return w, h


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB. Raises DataError naming ``name``; ImageTooLarge
    (before decoding) when the header declares more than ``max_pixels`` (default
    ``cvapps.data.io.max_pixels()``)."""
    if not data:
        raise DataError("empty file (0 bytes)", path=name, hint="re-export or remove the file")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        # libjpeg decodes a truncated JPEG with a grey tail and only a warning
        raise DataError("truncated or corrupt JPEG (no end-of-image marker)", path=name,
                        hint="re-download or re-export the image")
    declared_size(data, name, max_pixels)
    img = decode_raw(data, name, cv2.IMREAD_COLOR if data[:2] == b"\xff\xd8" else None)
    if img is None:
        raise DataError("not a decodable image", path=name, hint="check the file is really an image of its extension")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def decode_raw(data: bytes, name: str, flags: int | None = None) -> np.ndarray | None:
    """cv2.imdecode of checked bytes (None when OpenCV cannot decode them); ``flags`` default:
    keep depth and alpha (IMREAD_COLOR applies EXIF orientation: JPEGs are 8-bit)."""
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH if flags is None else flags
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:  # e.g. its own size limit on a header Pillow could not read
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else "decode failed"
        raise DataError(f"not a decodable image (OpenCV: {msg})", path=name) from None


def read_raw(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """A file as OpenCV decodes it (label maps: depth and channels kept, BGR order), after
    the header's pixel check; DataError naming the file when it is missing or undecodable."""
    data = _read_checked(Path(path), what)
    img = decode_raw(data, str(path))
    if img is None:
        raise DataError(f"not a decodable {what}", path=str(path))
    return img


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
    check_pixels(a.shape[1], a.shape[0], name, what="is")
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


def _read_checked(p: Path, what: str = "image") -> bytes:
    """The bytes of an image file whose header passed the pixel limit (checked before the
    whole file is read)."""
    if not p.exists():
        raise DataError("no such file", path=str(p), hint="check the path")
    if p.is_dir():
        raise DataError(f"is a folder, not an {what} file", path=str(p))
    declared_size(p, str(p))
    try:
        return p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=str(p)) from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Path -> (H, W, 3) uint8 RGB. Raises DataError for missing/empty/corrupt files and
    ImageTooLarge (from the header, before reading the pixels) above ``max_pixels()``."""
    p = Path(path)
    return decode_image(_read_checked(p), str(p))


def visible_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Files under ``folder`` in name order, hidden ones (.DS_Store, ._x.jpg) and hidden folders left out."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and not any(part.startswith(".")
                                                            for part in p.relative_to(folder).parts))


def list_images(folder: str | os.PathLike, recursive: bool = True, others: list | None = None) -> list[Path]:
    """Sorted image files under ``folder``; DataError if there are none. ``others``: a list
    the folder's other (non-hidden) files are appended to, so callers can name what they left out."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError("no such folder", path=str(root))
    files = []
    for p in visible_files(root, recursive):
        if is_image(p):
            files.append(p)
        elif others is not None:
            others.append(p)
    if not files:
        raise DataError("folder contains no images", path=str(root),
                        hint=f"expected files ending in {', '.join(sorted(IMAGE_EXTS))}")
    return files


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as read_image will return it, from the file header (no decode):
    JPEGs with an EXIF rotation (orientations 5-8) report their rotated size. Headers Pillow
    cannot read are decoded (still under the pixel limit)."""
    size = declared_size(Path(path), str(path))
    if size is None:
        h, w = read_image(path).shape[:2]
        return w, h
    return size


def out_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as an output folder, created (with its parents) and checked writable now, before
    any work: one line naming it when it is an existing file, or cannot be created or written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p} is an existing file, not a folder", path=str(p),
                          hint="name a folder (it is created when missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {p} cannot be created: {e.strerror or e}", path=str(p),
                          hint="check the path and the permissions of its parent folders") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p} is not writable", path=str(p), hint="pick a folder you can write to")
    return p


def out_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as an output file: its folder created and writable, the path itself not a folder
    (checked before any work)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a folder, not a file name", path=str(p), hint="name a file inside it")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{what} {p} exists and is not writable", path=str(p))
    out_dir(p.parent if str(p.parent) else Path("."), f"the folder of {what}")
    return p


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


def cvapps_home() -> Path:
    """Where cvapps caches downloads, converted models and compiled graphs: $CVAPPS_HOME, else ~/.cache/cvapps."""
    return Path(os.environ.get("CVAPPS_HOME", Path.home() / ".cache" / "cvapps"))


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


def escapes(root: str | os.PathLike, name: str) -> bool:
    """Whether file name ``name`` from an annotation file, joined to ``root``, lands outside
    ``root`` (``../x.jpg``, ``/etc/passwd``). Decided on the text of the path, so symlinks a
    dataset's owner placed inside ``root`` are followed as usual."""
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(base, name))
    return os.path.commonpath([base, full]) != base


class RecordCheck:
    """The readers' bad-record policy: raise a DataError naming the file and the record, or
    with ``skip_bad`` count the record in ``skipped`` and go on. ``allow_outside``: image
    names in the file may point outside the images folder (``--allow-outside-images``)."""

    def __init__(self, source: str, skip_bad: bool, allow_outside: bool = False):
        self.source, self.skip_bad, self.skipped, self.allow_outside = source, skip_bad, [], allow_outside

    def bad(self, where: str, msg: str, hint: str | None = None) -> None:
        if self.skip_bad:
            self.skipped.append(f"{where}: {msg}")
            return
        raise DataError(f"{where}: {msg}", path=self.source, hint=hint or "fix the record or pass --skip-bad")

    def image_path(self, root: str | os.PathLike, name, where: str) -> Path | None:
        """``root / name`` for an image named in the file; None (reported) when the name is not
        a string or leaves ``root`` without ``allow_outside``."""
        if not isinstance(name, str) or not name.strip():
            self.bad(where, f"file name must be a non-empty string, got {name!r}")
            return None
        if not self.allow_outside and escapes(root, name):
            what = "the file name" if name in where else f"file name {name!r}"
            self.bad(where, f"{what} points outside the images folder {root}",
                     hint="annotation files name images inside --images; for a dataset that really uses "
                          "paths elsewhere pass --allow-outside-images")
            return None
        return Path(root) / name
