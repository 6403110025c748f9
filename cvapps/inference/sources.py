"""Input sources: paths, folders, globs, text files of paths, videos, camera indices,
numpy arrays -> a stream of decoded frames. Decoding runs ahead in a thread."""

from __future__ import annotations

import glob
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np

from ..data.io import is_image, is_video, list_images, read_image
from ..errors import DataError


@dataclass
class Frame:
    """One image or video frame. ``image``: (H, W, 3) uint8 RGB, or None with ``error``.
    ``payload``: whatever the preprocess hook returned (computed in the decode thread)."""

    source: str
    frame: int | None
    image: np.ndarray | None = None
    error: DataError | None = None
    payload: Any = None


def expand_sources(sources: Iterable[str | Path | np.ndarray]) -> list[Any]:
    """Resolve CLI-style sources into items: image/video Paths, camera ints, arrays.
    A missing path, an empty folder or a glob without matches raises DataError."""
    items: list[Any] = []
    for s in sources:
        if isinstance(s, np.ndarray):
            items.append(s)
            continue
        text = str(s)
        p = Path(text)
        if text.isdigit() and not p.exists():
            items.append(int(text))
        elif p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and (is_image(q) or is_video(q)))
            if not found:
                list_images(p)  # raises the standard "folder contains no images" error
            items.extend(found)
        elif p.suffix.lower() == ".txt" and p.is_file():
            for n, ln in enumerate(p.read_text(errors="replace").splitlines(), 1):
                ln = ln.strip()
                if not ln or ln.startswith("#"):
                    continue
                q = (p.parent / ln) if not Path(ln).is_absolute() else Path(ln)
                if not q.exists():
                    raise DataError(f"line {n}: {ln!r} is not a file (a .txt source lists image / video paths, one "
                                    "per line)", path=text)
                items.append(q)
        elif any(c in text for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise DataError("glob matched no files", path=text)
            items.extend(matches)
        elif p.exists():
            items.append(p)
        else:
            raise DataError("no such file or folder", path=text, hint="check the path")
    return items


def count_frames(items: list[Any], vid_stride: int = 1) -> int | None:
    total = 0
    for it in items:
        if isinstance(it, Path) and is_video(it):
            cap = cv2.VideoCapture(str(it))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            total += max(0, (n + vid_stride - 1) // vid_stride)
        elif isinstance(it, int):
            return None
        else:
            total += 1
    return total


def video_info(path: str | Path | int) -> tuple[float, int, int]:
    cap = cv2.VideoCapture(path if isinstance(path, int) else str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    return fps, w, h


def iter_frames(items: list[Any], vid_stride: int = 1) -> Iterator[Frame]:
    for k, it in enumerate(items):
        if isinstance(it, np.ndarray):
            yield Frame(f"<array {k}>", None, it)
        elif isinstance(it, int) or is_video(it):
            cap = cv2.VideoCapture(it if isinstance(it, int) else str(it))
            name = f"camera:{it}" if isinstance(it, int) else str(it)
            if not cap.isOpened():
                yield Frame(name, None, error=DataError("cannot open video", path=name))
                continue
            declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not isinstance(it, int) else 0
            i = 0
            try:
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    if i % vid_stride == 0:
                        yield Frame(name, i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    i += 1
            finally:
                cap.release()
            if i < declared - 1:  # containers may round their count by a frame; a cut file stops far short
                yield Frame(name, i, error=DataError(f"video ended after {i} of its {declared} frames (truncated or "
                                                     f"corrupt); the frames before were processed", path=name))
        else:
            try:
                yield Frame(str(it), None, read_image(it))
            except DataError as e:
                yield Frame(str(it), None, error=e)


_END = object()


def prefetch(frames: Iterator[Frame], pre=None, maxsize: int = 32) -> Iterator[Frame]:
    """Run ``frames`` and the preprocessing of each image in a daemon thread, handing results
    over a bounded queue so memory stays flat on long videos. ``pre``: a preprocessor; its
    ``prepare(image, source, frame)`` (the source name lets box sources look boxes up by
    file name) becomes the frame's payload."""
    hook: Callable[[Frame], Any] | None = None
    if pre is not None:
        hook = lambda f: pre.prepare(f.image, f.source, f.frame)  # noqa: E731
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def work():
        try:
            for f in frames:
                if stop.is_set():
                    return
                if hook is not None and f.image is not None:
                    try:
                        f.payload = hook(f)
                    except DataError as e:
                        f.error = e
                q.put(f)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)
        finally:
            q.put(_END)

    t = threading.Thread(target=work, daemon=True, name="cvapps-decode")
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


def batched(it: Iterator[Frame], n: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for f in it:
        batch.append(f)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
