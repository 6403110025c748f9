"""Input sources: paths, folders, globs, text files of paths, videos, camera indices,
numpy arrays -> a stream of decoded frames. Decoding runs ahead in threads."""

from __future__ import annotations

import collections
import contextlib
import functools
import glob
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np
import torch

from ..progress import count
from ..runtime import cores
from .io import as_rgb, check_pixels, is_image, is_video, list_images, read_image, visible_files
from .remote import is_cloud, is_remote_image, list_cloud, read_remote_image
from ..errors import DataError

# FFmpeg (inside OpenCV) prints its own errors for a stream or file it cannot open; cvapps says
# it in one line instead (read when FFmpeg starts; an explicit setting wins)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@contextlib.contextmanager
def quiet_opencv():
    """OpenCV's own warnings while opening a capture (a missing camera prints several lines)."""
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)
    try:
        yield
    finally:
        cv2.setLogLevel(level)


@dataclass
class Frame:
    """One image or video frame. ``image``: (H, W, 3) uint8 RGB, or None with ``error``.
    ``payload``: whatever the preprocess hook returned (computed in the decode thread).
    ``fps``: the video's frame rate (None for still images and streams that do not say)."""

    source: str
    frame: int | None
    image: np.ndarray | None = None
    error: DataError | None = None
    payload: Any = None
    fps: float | None = None
    load: Callable[[], np.ndarray] | None = field(default=None, repr=False)  # a still image, read when prefetched


def is_url(text: str) -> bool:
    """rtsp://, http(s)://, udp://... sources (streams OpenCV's FFmpeg backend opens, or
    remote images) rather than local paths."""
    return "://" in text and not Path(text).exists()


def _list_file(p: Path, notes: list[str] | None) -> list[Any]:
    """The entries of a .txt list: relative paths are looked up beside the list first, then
    in the working directory (said in ``notes`` when any is resolved there)."""
    items, here = [], 0
    for n, ln in enumerate(p.read_text(errors="replace").splitlines(), 1):
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        if is_url(ln):
            items.append(ln)
            continue
        q = Path(ln)
        if not q.is_absolute():
            q = p.parent / ln if (p.parent / ln).exists() or not Path(ln).exists() else Path(ln)
            here += q == Path(ln)
        if not q.exists():
            raise DataError(f"line {n}: {ln!r} is not a file, neither beside the list ({p.parent}) nor in the working "
                            "directory (a .txt source lists image / video paths, one per line)", path=str(p))
        items.append(q)
    if here and notes is not None:
        notes.append(f"{p}: {count(here, 'relative path')} not beside the list, read from the working directory")
    return items


def expand_sources(sources: Iterable[str | Path | np.ndarray], notes: list[str] | None = None) -> list[Any]:
    """Resolve CLI-style sources into items: image/video Paths, camera ints, stream and remote
    image URLs (str), arrays. A missing path, an empty folder or a glob without matches raises
    DataError. ``notes``: messages for the user are appended there (the files of a folder that
    are neither images nor videos, how a list's relative paths were resolved)."""
    items: list[Any] = []
    if sources is None:
        raise DataError("no input given: pass paths, folders, globs, URLs, camera indices or (H, W, 3) arrays")
    if isinstance(sources, (str, Path, np.ndarray, int)):
        sources = [sources]
    for s in sources:
        if isinstance(s, np.ndarray):
            items.append(s)
            continue
        if s is None or not isinstance(s, (str, Path, int)):
            raise DataError(f"an input must be a path, URL, camera index or (H, W, 3) array, got "
                            f"{type(s).__name__}")
        text = str(s)
        p = Path(text)
        if is_cloud(text):  # a bucket prefix, glob or object: its images
            items.extend(list_cloud(text))
        elif is_url(text):
            items.append(text)
        elif text.isdigit() and not p.exists():
            items.append(int(text))
        elif p.is_dir():
            found, others = [], []
            for q in visible_files(p):
                (found if is_image(q) or is_video(q) else others).append(q)
            if not found:
                list_images(p)  # raises the standard "folder contains no images" error
            if others and notes is not None:
                shown = ", ".join(str(q.relative_to(p)) for q in others[:5]) + (", ..." if len(others) > 5 else "")
                notes.append(f"{p}: left out {count(len(others), 'file')} that {'is' if len(others) == 1 else 'are'} "
                             f"neither an image nor a video: {shown}")
            items.extend(found)
        elif p.suffix.lower() == ".txt" and p.is_file():
            items.extend(_list_file(p, notes))
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


def image_files(sources) -> list[Path]:
    """The still images among ``sources`` (one source or a list of files, folders, globs, .txt
    lists; resolved and checked as ``expand_sources`` does); videos and streams are left out."""
    items = expand_sources(sources if isinstance(sources, (list, tuple)) else [sources])
    return [p for p in items if isinstance(p, Path) and is_image(p)]


def is_stream(item: Any) -> bool:
    """A camera or a stream URL: no known length, worth reconnecting to."""
    return isinstance(item, int) or (isinstance(item, str) and is_url(item) and not is_remote_image(item))


def count_frames(items: list[Any], vid_stride: int = 1) -> int | None:
    total = 0
    for it in items:
        if is_stream(it):
            return None
        if isinstance(it, Path) and is_video(it):
            cap = cv2.VideoCapture(str(it))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            total += max(0, (n + vid_stride - 1) // vid_stride)
        else:
            total += 1
    return total


def source_name(item: Any) -> str:
    return f"camera:{item}" if isinstance(item, int) else str(item)


def video_info(path: str | Path | int) -> tuple[float, int, int]:
    cap = cv2.VideoCapture(path if isinstance(path, int) else str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    return fps, w, h


RECONNECT_WAIT = 1.0  # seconds before the first reconnect attempt; doubles per attempt, at most 8 s


def open_capture(item: Any, attempts: int) -> cv2.VideoCapture | None:
    """A camera / URL / video file opened by OpenCV; streams are retried ``attempts`` more
    times with growing waits. None when it cannot be opened."""
    wait = RECONNECT_WAIT
    for k in range(1 + (attempts if is_stream(item) else 0)):
        if k:
            time.sleep(wait)
            wait = min(8.0, 2 * wait)
        with quiet_opencv():
            cap = cv2.VideoCapture(item if isinstance(item, int) else str(item))
        if cap.isOpened():
            return cap
        cap.release()
    return None


def iter_video(item: Any, vid_stride: int = 1, reconnect: int = 0) -> Iterator[Frame]:
    """Frames of a video file, camera or stream URL. A stream that stops is reopened up to
    ``reconnect`` times (frame numbers continue); a file cut short is reported as an error."""
    name = source_name(item)
    cap = open_capture(item, reconnect)
    if cap is None:
        tried = f" (tried {1 + reconnect} times)" if is_stream(item) and reconnect else ""
        if isinstance(item, int):
            what, hint = f"no camera {item} on this machine (or it is in use){tried}", \
                "list cameras with `v4l2-ctl --list-devices` (Linux); a video file or stream URL works too"
        elif is_stream(item):
            what, hint = f"cannot open stream{tried}", "check the address, credentials and network, or raise --reconnect"
        else:
            what, hint = "cannot open video", \
                "the file is truncated (an interrupted copy?), corrupt, or in a codec this OpenCV cannot read"
        yield Frame(name, None, error=DataError(what, path=name, hint=hint))
        return
    try:  # frames are decoded at the size the stream declares: refused before the first one
        check_pixels(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), name,
                     what="has frames of")
    except DataError as e:
        cap.release()
        yield Frame(name, None, error=e)
        return
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    declared = 0 if isinstance(item, int) else max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    live = is_stream(item) and declared == 0  # a camera or live stream: an end is a dropped link
    i, left, wait = 0, reconnect, RECONNECT_WAIT
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                if not live or left == 0:
                    if live and reconnect:
                        yield Frame(name, i, error=DataError(
                            f"stream stopped after {i} frames and did not come back after {reconnect} reconnect "
                            "attempts", path=name, hint="raise --reconnect for flaky links"))
                    break
                left -= 1
                cap.release()
                time.sleep(wait)
                wait = min(8.0, 2 * wait)
                cap = open_capture(item, 0) or cv2.VideoCapture()
                continue
            left, wait = reconnect, RECONNECT_WAIT  # a frame arrived: the link is healthy again
            if i % vid_stride == 0:
                yield Frame(name, i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), fps=fps)
            i += 1
    finally:
        cap.release()
    if i < declared - 1:  # containers may round their count by a frame; a cut file stops far short
        yield Frame(name, i, error=DataError(f"video ended after {i} of its {declared} frames (truncated or "
                                             f"corrupt); the frames before were processed", path=name))


def iter_frames(items: list[Any], vid_stride: int = 1, reconnect: int = 0,
                concurrent: bool | None = None) -> Iterator[Frame]:
    """The frames of ``items`` in order. ``concurrent``: read every video / camera / stream at
    once, each in its own thread, their frames interleaved as they arrive (each in its order;
    a stream that stalls or reconnects does not hold up the others); None: so when two or
    more are live cameras or streams (read one after another, the second would never start)."""
    items = [Path(it) if isinstance(it, str) and not is_url(it) else it for it in items]  # a path given as text
    videos = [it for it in items if not isinstance(it, np.ndarray) and not (isinstance(it, str) and is_remote_image(it))
              and (is_stream(it) or is_video(it))]
    if concurrent is None:
        concurrent = sum(1 for it in videos if is_stream(it)) >= 2
    if concurrent and len(videos) >= 2:
        stills = [it for it in items if not any(it is v for v in videos)]
        yield from _sequential(stills, vid_stride, reconnect)
        yield from interleave([functools.partial(iter_video, v, vid_stride, reconnect) for v in videos])
        return
    yield from _sequential(items, vid_stride, reconnect)


def interleave(readers: list[Callable[[], Iterator[Frame]]], per_reader: int = 4) -> Iterator[Frame]:
    """The frames of every ``reader()`` at once: one thread each, handing frames over on one
    bounded queue (at most ``per_reader`` waiting per reader), each reader's in its order."""
    q: queue.Queue = queue.Queue(maxsize=per_reader * len(readers))
    stop = threading.Event()
    done = object()

    def run(reader) -> None:
        try:
            for f in reader():
                while not stop.is_set():
                    try:
                        q.put(f, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        finally:
            q.put(done)

    threads = [threading.Thread(target=run, args=(r,), daemon=True, name="cvapps-stream") for r in readers]
    for t in threads:
        t.start()
    left = len(threads)
    try:
        while left:
            f = q.get()
            if f is done:
                left -= 1
            else:
                yield f
    finally:
        stop.set()
        while any(t.is_alive() for t in threads):  # unblock readers waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.05)


def _sequential(items: list[Any], vid_stride: int, reconnect: int) -> Iterator[Frame]:
    for k, it in enumerate(items):
        if isinstance(it, np.ndarray):
            yield Frame(f"<array {k}>", None, load=functools.partial(as_rgb, it, f"input {k}"))
        elif isinstance(it, str) and is_remote_image(it):
            yield Frame(it, None, load=functools.partial(read_remote_image, it))
        elif is_stream(it) or is_video(it):
            yield from iter_video(it, vid_stride, reconnect)
        else:
            yield Frame(str(it), None, load=functools.partial(read_image, it))


_END = object()


def decode_threads() -> int:
    """Threads decoding and preparing images ahead of the model (OpenCV and torch release
    the GIL while they work): one per core, at most 4."""
    return min(4, cores())


def _ready(f: Frame, hook: Callable[[Frame], Any] | None) -> Frame:
    """Read a still image (``f.load``) and run the preprocess hook; failures become ``f.error``."""
    try:
        if f.load is not None:
            f.image, f.load = f.load(), None
        if hook is not None and f.image is not None:
            f.payload = hook(f)
    except DataError as e:
        f.error = e
    return f


def prefetch(frames: Iterator[Frame], pre=None, maxsize: int = 32, threads: int | None = None,
             torch_threads: int | None = 1) -> Iterator[Frame]:
    """Run ``frames`` and the preprocessing of each image in daemon threads, handing results
    over in order on a bounded queue so memory stays flat on long videos. Still images are
    read and prepared by ``threads`` threads at once (default ``decode_threads``); video
    frames are decoded in order by one. ``pre``: a preprocessor; its ``prepare(image,
    source, frame)`` (the source name lets box sources look boxes up by file name) becomes
    the frame's payload. ``torch_threads``: each thread's torch thread count (None: the
    caller's). The count is per thread: one keeps a second OpenMP pool from fighting a PyTorch
    model's for the cores (measured: a PyTorch classifier at batch 1 fell from 102 to 61
    images/s), while a model on ONNX Runtime (its own threads) gains from the pool (the
    default classify path: 233 -> 263 images/s)."""
    hook: Callable[[Frame], Any] | None = None
    if pre is not None:
        hook = lambda f: pre.prepare(f.image, f.source, f.frame)  # noqa: E731
    threads = threads or decode_threads()
    start = functools.partial(torch.set_num_threads, torch_threads or torch.get_num_threads())
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def work():
        start()
        pool = ThreadPoolExecutor(threads, thread_name_prefix="cvapps-prepare", initializer=start) \
            if threads > 1 else None
        ahead: collections.deque = collections.deque()  # futures in source order
        try:
            for f in frames:
                if stop.is_set():
                    return
                if pool is None:
                    q.put(_ready(f, hook))
                    continue
                ahead.append(pool.submit(_ready, f, hook))
                while len(ahead) > 2 * threads or (ahead and ahead[0].done()):
                    q.put(ahead.popleft().result())
            while ahead:
                q.put(ahead.popleft().result())
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
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


def frame_batches(items: list, pre, batch_size: int, vid_stride: int = 1, on_error=None, reconnect: int = 0,
                  threads: int | None = None, torch_threads: int | None = 1,
                  concurrent: bool | None = None, frames: Iterator[Frame] | None = None) -> Iterator[list[Frame]]:
    """The decoded, prepared frames of ``items`` in batches (decoding and ``pre.prepare`` run
    ahead in a thread). Frames that failed go to ``on_error(frame)`` and are left out; an
    all-bad batch yields nothing. ``torch_threads``: see ``prefetch``. ``frames``: frames
    read elsewhere (e.g. decoded by other processes) instead of ``items``'."""
    frames = prefetch(frames if frames is not None else iter_frames(items, vid_stride, reconnect, concurrent), pre,
                      max(8, 2 * batch_size), threads, torch_threads)
    for batch in batched(frames, batch_size):
        good = []
        for f in batch:
            if f.error is not None:
                if on_error is not None:
                    on_error(f)
            else:
                good.append(f)
        if good:
            yield good
