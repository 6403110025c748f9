"""Outputs: JSON Lines (flushed per record), annotated images, annotated videos."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import cv2
import numpy as np

from ..data.io import atomic_write, json_dumps
from ..data.sources import video_info


class JsonlWriter:
    """One JSON object per line, flushed as written so an interrupted run keeps its lines."""

    def __init__(self, path: str | Path | None):
        self.f = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.write_line(json_dumps(record))

    def write_line(self, line: str) -> None:
        """A record already serialised (by another process)."""
        if self.f:
            self.f.write(line + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()


class AnnotatedWriter:
    """Writes drawn images to ``out_dir/<name>`` and video frames to ``out_dir/<stem>.mp4``
    (same fps and size as the input)."""

    def __init__(self, out_dir: str | Path | None):
        self.out = Path(out_dir) if out_dir else None
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
        self.videos: dict[str, cv2.VideoWriter] = {}
        self.used: set[str] = set()
        self.written: list[Path] = []

    def _unique(self, name: str) -> Path:
        stem, suffix, k = Path(name).stem, Path(name).suffix, 1
        while name in self.used:
            name, k = f"{stem}_{k}{suffix}", k + 1
        self.used.add(name)
        return self.out / name

    def name_for(self, source: str, frame: int | None) -> Path:
        """The (reserved) output path of a still image (``frame`` None) or of a video's frames."""
        if frame is None:
            name = Path(source).name if not source.startswith("<") else f"array_{len(self.used)}.png"
            return self._unique(name if Path(name).suffix else name + ".png")
        return self._unique(Path(source.replace(":", "_")).stem + ".mp4")

    def write(self, source: str, frame: int | None, drawn: np.ndarray, path: Path | None = None) -> None:
        """``path``: where to write (one ``name_for`` reserved elsewhere, e.g. by a driver
        process handing the work to others); default: the next free name."""
        if not self.out:
            return
        bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
        if frame is None:
            path = path or self.name_for(source, None)
            cv2.imwrite(str(path), bgr)
            self.written.append(path)
            return
        if source not in self.videos:
            fps, _, _ = video_info(int(source.split(":")[1]) if source.startswith("camera:") else source)
            path = path or self.name_for(source, frame)
            h, w = bgr.shape[:2]
            self.videos[source] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            self.written.append(path)
        self.videos[source].write(bgr)

    def close(self) -> None:
        for v in self.videos.values():
            v.release()


class CocoResultsWriter:
    """Collects detections of still images as a COCO results list, written (atomically) on
    close. image_id comes from ``ids`` (file name -> id, e.g. from a COCO ground-truth file),
    else the image's 1-based position in the run; with ``categories`` (label -> that file's
    category id) labels it does not name are left out."""

    def __init__(self, path: str | Path | None, ids: dict[str, int] | None = None,
                 categories: dict[str, int] | None = None):
        self.path, self.ids, self.categories, self.rows, self.n = path, ids, categories, [], 0
        self.not_in_ids: list[str] = []  # with ``ids``: images the ground truth does not hold (left out)

    def add(self, source: str, frame: int | None, records: list[dict]) -> None:
        if not self.path or frame is not None:
            return
        self.n += 1
        name = Path(source).name
        if self.ids is not None and name not in self.ids:  # a run-position id would name another image of the file
            self.not_in_ids.append(name)
            return
        image_id = self.n if self.ids is None else self.ids[name]
        for r in records:
            cat = r["category_id"] if self.categories is None else self.categories.get(r.get("label"))
            if cat is not None:
                self.rows.append({"image_id": image_id, "category_id": cat, "bbox": r["bbox"], "score": r["score"],
                                  "file_name": Path(source).name})

    def close(self) -> None:
        if self.path:
            atomic_write(Path(self.path), lambda tmp: tmp.write_text(json_dumps(self.rows), encoding="utf-8"))


class BackgroundDrawer:
    """Draws predictions and encodes images / video frames in a worker thread behind a
    bounded queue, so encoding overlaps the next batch's inference while memory stays flat
    (the queue holds at most ``maxsize`` frames). Errors surface on the next put/close."""

    def __init__(self, writer: AnnotatedWriter, maxsize: int = 16):
        self.writer, self.error = writer, None
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.t = threading.Thread(target=self._work, daemon=True, name="cvapps-writer")
        self.t.start()

    def _work(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is None:
                source, frame, pred, image = item
                try:
                    self.writer.write(source, frame, pred.draw(image))
                except BaseException as e:  # noqa: BLE001 - re-raised in the producer
                    self.error = e

    def put(self, source: str, frame: int | None, pred, image: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((source, frame, pred, image))

    def close(self) -> None:
        self.q.put(None)
        self.t.join()
        self.writer.close()
        if self.error is not None:
            raise self.error
