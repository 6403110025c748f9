"""Images named by URL (``https://host/photo.jpg``): fetched with a timeout and a size bound,
then decoded like files (the same pixel limit). Streams (rtsp://, or http URLs of video)
are opened by OpenCV instead (cvapps.data.sources).

Object storage (``s3://``, ``gs://``, ``az://`` / ``abfs://``) through fsspec and the
provider's package (``s3fs``, ``gcsfs``, ``adlfs``: the ``[s3]``, ``[gcs]``, ``[azure]``
extras), credentials from each provider's usual environment (AWS_ACCESS_KEY_ID / AWS_PROFILE
/ instance roles; GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_CONNECTION_STRING or
AZURE_STORAGE_ACCOUNT_NAME + key); another endpoint (MinIO, a test server) by fsspec's
``FSSPEC_S3_ENDPOINT_URL``. A prefix or glob lists its images; images stream as bytes;
annotation files and training images are staged once into $CVAPPS_HOME/remote (``stage``)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import ConfigError, DataError
from .io import IMAGE_EXTS, atomic_write, cvapps_home, decode_image

# scheme -> (fsspec's package, cvapps extra)
CLOUD = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
         "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure")}
CREDENTIALS = {"s3fs": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
               "gcsfs": "GOOGLE_APPLICATION_CREDENTIALS", "adlfs": "AZURE_STORAGE_CONNECTION_STRING"}

FETCH_TIMEOUT = 20.0  # seconds to connect and between reads
MAX_FETCH_BYTES = 200_000_000  # a compressed image above this is refused before it is read whole


def is_remote_image(text: str) -> bool:
    """An http(s) or object-storage URL whose path ends in an image extension (``?query`` ignored)."""
    if not isinstance(text, str) or "://" not in text:
        return False
    u = urllib.parse.urlsplit(text)
    return (u.scheme in ("http", "https") or u.scheme in CLOUD) and PurePosixPath(u.path).suffix.lower() in IMAGE_EXTS


def is_cloud(text) -> bool:
    return isinstance(text, (str, Path)) and urllib.parse.urlsplit(str(text)).scheme in CLOUD


def cloud_fs(url: str):
    """(fsspec filesystem, path) for an object-storage URL; one line when its package is missing."""
    import fsspec

    package, extra = CLOUD[urllib.parse.urlsplit(url).scheme]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        raise ConfigError(f"{url.split('://')[0]}:// needs {package}", hint=f"pip install 'cvapps[{extra}]'") from None


def _cloud_error(url: str, e: Exception) -> DataError:
    package = CLOUD[urllib.parse.urlsplit(url).scheme][0]
    if isinstance(e, FileNotFoundError):
        return DataError("no such bucket or object", path=url, hint="check the bucket and the key")
    if isinstance(e, PermissionError):
        return DataError(f"access denied: {str(e).splitlines()[0][:200] if str(e) else 'forbidden'}", path=url,
                         hint=f"credentials come from the environment ({CREDENTIALS[package]})")
    return DataError(f"cannot read: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", path=url)


def list_cloud(url: str) -> list[str]:
    """The image URLs a bucket prefix, glob or object names (sorted); DataError when none."""
    fs, path = cloud_fs(url)
    scheme = url.split("://")[0]
    try:
        if any(c in path for c in "*?["):
            names = fs.glob(path)
        elif fs.isdir(path):
            names = fs.find(path)
        else:
            fs.info(path)  # (raises for a missing object or bucket)
            names = [path]
    except Exception as e:  # noqa: BLE001 - each provider raises its own exception types
        raise _cloud_error(url, e) from None
    found = sorted(f"{scheme}://{n}" for n in names if PurePosixPath(n).suffix.lower() in IMAGE_EXTS)
    if not found:
        raise DataError("no images there", path=url, hint="a bucket prefix (folder), glob or image object")
    return found


def read_bytes(url: str, max_bytes: int = MAX_FETCH_BYTES) -> bytes:
    """An object's bytes (size-bounded like fetched images)."""
    fs, path = cloud_fs(url)
    try:
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise DataError(f"is {size} bytes, over the {max_bytes}-byte limit for a fetched image", path=url)
        return fs.cat_file(path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _cloud_error(url, e) from None


PATH_FIELDS = ("data", "images", "train", "val", "val_images", "masks", "val_masks", "palette", "class_map",
               "negatives")  # DataOptions fields that name files or folders


def staged(opts):
    """``opts`` (a DataOptions) with its object-storage files and folders staged locally."""
    import dataclasses

    changes = {f: str(stage(getattr(opts, f))) for f in PATH_FIELDS if is_cloud(getattr(opts, f, None))}
    return dataclasses.replace(opts, **changes) if changes else opts


def stage(url: str | Path) -> Path:
    """A local copy of an object-storage file or prefix (annotations, a training image
    folder), kept in $CVAPPS_HOME/remote and refreshed when an object's size changes; a local
    path is returned as it is."""
    if not is_cloud(url):
        return Path(url)
    url = str(url).rstrip("/")
    fs, path = cloud_fs(url)
    root = cvapps_home() / "remote" / hashlib.sha1(url.encode()).hexdigest()[:16]
    try:
        if not fs.isdir(path):
            target = root / PurePosixPath(path).name
            if not target.is_file() or target.stat().st_size != fs.size(path):
                data = fs.cat_file(path)
                atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
            return target
        target = root / PurePosixPath(path).name
        for name in fs.find(path):
            rel = PurePosixPath(name).relative_to(path)
            local = target / rel
            if not local.is_file() or local.stat().st_size != fs.size(name):
                data = fs.cat_file(name)
                atomic_write(local, lambda tmp, data=data: Path(tmp).write_bytes(data))
        os.makedirs(target, exist_ok=True)
        return target
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _cloud_error(url, e) from None


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


def remote_bytes(url: str) -> bytes:
    """The bytes of an object-storage (``read_bytes``) or http(s) (``fetch``) URL."""
    return read_bytes(url) if is_cloud(url) else fetch(url)


def read_remote_image(url: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the image at ``url`` (``remote_bytes``, cvapps.data.io.decode_image)."""
    return decode_image(remote_bytes(url), url)
