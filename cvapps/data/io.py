"""Image decoding with OpenCV: RGB uint8 out, EXIF orientation applied, clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError

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
