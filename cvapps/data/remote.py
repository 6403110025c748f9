"""Images named by URL (``https://host/photo.jpg``): fetched with a timeout and a size bound,
then decoded like files (the same pixel limit). Streams (rtsp://, or http URLs of video)
are opened by OpenCV instead (cvapps.data.sources)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import PurePosixPath

import numpy as np

from ..errors import DataError
from .io import IMAGE_EXTS, decode_image

FETCH_TIMEOUT = 20.0  # seconds to connect and between reads
MAX_FETCH_BYTES = 200_000_000  # a compressed image above this is refused before it is read whole


def is_remote_image(text: str) -> bool:
    """An http(s) URL whose path ends in an image extension (``?query`` ignored)."""
    if not isinstance(text, str) or "://" not in text:
        return False
    u = urllib.parse.urlsplit(text)
    return u.scheme in ("http", "https") and PurePosixPath(u.path).suffix.lower() in IMAGE_EXTS


def fetch(url: str, max_bytes: int = MAX_FETCH_BYTES) -> bytes:
    """The body of ``url``; DataError naming it for an HTTP error, a network failure or a
    body over ``max_bytes``."""
    req = urllib.request.Request(url, headers={"User-Agent": "cvapps"})
    try:
        with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT) as r:
            declared = r.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DataError(f"is {int(declared)} bytes, over the {max_bytes}-byte limit for a fetched image",
                                path=url)
            data = r.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise DataError(f"HTTP {e.code} {e.reason}", path=url, hint="check the URL (and that it is public)") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"cannot fetch: {reason}", path=url, hint="check the address and the network") from None
    if len(data) > max_bytes:
        raise DataError(f"is over the {max_bytes}-byte limit for a fetched image", path=url)
    return data


def read_remote_image(url: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the image at ``url`` (see ``fetch`` and cvapps.data.io.decode_image)."""
    return decode_image(fetch(url), url)
