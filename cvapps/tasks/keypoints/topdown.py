"""Top-down input: find boxes in a full image (file, cvapps detector, OpenCV Haar cascade,
or the whole image), cut an aspect-preserving affine crop per box, remember the inverse
map so predicted points land back in original image pixels."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from ...data.io import load_json
from ...data.transforms import normalize_u8, size_hw
from ...errors import ConfigError, DataError
from ...ops.keypoints import crop_affine, invert_affine, warp

BoxFn = Callable[[np.ndarray, str, "int | None"], tuple[np.ndarray, ...]]  # boxes, scores[, rolls]


class TopDown:
    """prepare(image, source, frame) -> (crops (N, 3, H, W) uint8, meta {"width", "height",
    "boxes" (N, 4) xyxy, "box_scores" (N,), "inv" (N, 2, 3) crop -> image}); N may be 0.
    ``boxes(image, source, frame) -> (boxes (N, 4), scores (N,)[, rolls (N,) radians[, points
    (N, K, 2)]])``
    finds the instances; with ``align`` (a model trained on upright crops, e.g. FaceMesh)
    each crop is rotated by its instance's roll when the box source knows it (the face
    detector's eyes), else it stays axis-aligned. ``index_grid`` / ``replicate``: sample the
    crop as MediaPipe's hand model saw them (pixel indices corner to corner, see
    cvapps.ops.keypoints.warp; the image's edge repeated outside it, not black)."""

    def __init__(self, mean, std, input_size, margin: float = 1.25, boxes: BoxFn | None = None, align: bool = False,
                 index_grid: bool = False, replicate: bool = False):
        self.mean, self.std = tuple(mean), tuple(std)
        self.hw = size_hw(input_size)
        self.margin = float(margin)
        self.boxes = boxes or whole_image
        self.align = bool(align)
        self.index_grid, self.replicate = bool(index_grid), bool(replicate)

    @classmethod
    def from_config(cls, pre: dict, boxes: BoxFn | None = None) -> "TopDown":
        return cls(pre["mean"], pre["std"], pre["input_size"], pre.get("margin", 1.25), boxes,
                   pre.get("align") == "roll", pre.get("pixel_grid") == "index", pre.get("border") == "replicate")

    def crop(self, image: np.ndarray, box: np.ndarray, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """-> (crop (H, W, 3) uint8, m (2, 3) image -> crop)."""
        m = crop_affine(box, self.hw, self.margin, angle)
        return warp(image, m, self.hw, self.replicate, self.index_grid), m

    def prepare_boxes(self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                      rolls: np.ndarray | None = None) -> tuple[torch.Tensor, dict]:
        crops, inv = [], []
        rolls = rolls if rolls is not None and self.align else np.zeros(len(boxes))
        for b, roll in zip(boxes, rolls):
            c, m = self.crop(image, b, float(roll))
            crops.append(torch.from_numpy(c).permute(2, 0, 1))
            inv.append(invert_affine(m))
        x = torch.stack(crops) if crops else torch.zeros((0, 3, *self.hw), dtype=torch.uint8)
        meta = {"width": image.shape[1], "height": image.shape[0], "boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
                "box_scores": np.asarray(scores, np.float64).reshape(-1),
                "inv": np.asarray(inv, np.float64).reshape(-1, 2, 3)}
        return x, meta

    def prepare(self, image: np.ndarray, source: str = "", frame: int | None = None) -> tuple[torch.Tensor, dict]:
        found = self.boxes(image, source, frame)
        return self.prepare_boxes(image, *found[:3])

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        return normalize_u8(batch_u8, self.mean, self.std)


def whole_image(image: np.ndarray, source: str = "", frame=None) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    return np.array([[0, 0, w, h]], np.float64), np.ones(1)


class FixedBoxes:
    """Boxes given per input: ``boxes[i]`` (an (N, 4) xyxy array) for the i-th input of a
    ``predict`` call (its ``frame`` index there)."""

    def __init__(self, boxes: list):
        self.boxes = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]

    def __call__(self, image: np.ndarray, source: str = "", frame=None) -> tuple[np.ndarray, np.ndarray]:
        b = self.boxes[int(frame)]
        return b, np.ones(len(b))


class HaarFaces:
    """OpenCV's bundled frontal-face Haar cascade (pretrained, ships inside opencv-python).
    Haar boxes are tight (brows to mouth); ``grow`` enlarges them towards the point-derived
    boxes the landmark models train on (chin and jaw included)."""

    def __init__(self, min_size: int = 30, grow: float = 1.15, shift_down: float = 0.08):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ConfigError(f"cannot load OpenCV's Haar cascade {path}",
                              hint="install opencv-python-headless 4.x (OpenCV 5 dropped the cascades); "
                                   "or pass --faces FILE / --detector MODEL")
        self.min_size, self.grow, self.shift = min_size, grow, shift_down
        self._lock = threading.Lock()  # CascadeClassifier is not re-entrant

    def __call__(self, image: np.ndarray, source: str = "", frame=None) -> tuple[np.ndarray, np.ndarray]:
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        with self._lock:
            found = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                                  minSize=(self.min_size, self.min_size))
        boxes = []
        for x, y, w, h in (found if len(found) else []):
            cx, cy = x + w / 2, y + h / 2 + self.shift * h
            s = max(w, h) * self.grow / 2
            boxes.append([cx - s, cy - s, cx + s, cy + s])
        return np.asarray(boxes, np.float64).reshape(-1, 4), np.ones(len(boxes))


class DetectorBoxes:
    """Boxes from a cvapps model that finds instances: a detection model (``label`` keeps one
    class, e.g. person / face, when the detector knows it) or a face detector. ``check``
    (face detectors): ``check(image, boxes, rolls) -> (N,) bool``, the faces to keep (see
    cvapps.tasks.landmarks.verify)."""

    def __init__(self, detector, label: str | None = None, conf: float | None = 0.3, check=None, **options):
        self.det, self.label, self.check = detector.eval(), label, check
        self.options = {"conf": conf, **options}  # the detector's predict options
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray, source: str = "", frame=None) -> tuple[np.ndarray, ...]:
        """-> boxes (N, 4), scores (N,) and, from a face detector, each face's roll (N,)
        (radians, the angle of the line from its left to its right eye) and its points (N, K, 2);
        a detector with ``instance_frames(boxes, points) -> (boxes, rolls)`` (the palm
        detector: MediaPipe's hand crops) gives its own crop boxes and rolls."""
        with self._lock:
            pred = self.det.predict(image, **self.options)[0]
        t = pred.track_boxes()
        keep = np.ones(len(t.boxes), bool)
        if self.label is not None and self.label in t.names:
            keep = t.labels == t.names.index(self.label)
        boxes, scores = np.asarray(t.boxes, np.float64)[keep].reshape(-1, 4), np.asarray(t.scores, np.float64)[keep]
        eyes = getattr(getattr(self.det, "schema", None), "eyes", None)
        frames = getattr(self.det, "instance_frames", None)  # a detector that frames its crops itself (palms)
        if not getattr(self.det, "finds_instances", False) or not (eyes or frames):
            return boxes, scores
        points = np.asarray(pred.points, np.float64)[keep]
        if frames is not None:
            boxes, rolls = frames(boxes, points)
        else:
            rolls = eye_roll(points, eyes)
        if self.check is not None and len(boxes):
            ok = self.check(image, boxes, rolls)
            boxes, scores, rolls, points = boxes[ok], scores[ok], rolls[ok], points[ok]
        return boxes, scores, rolls, points


def eye_roll(points: np.ndarray, eyes) -> np.ndarray:
    """points (N, K, 2), eyes (left, right) indices -> (N,) roll in radians: the angle of the
    line from the left to the right eye (0 for an upright face)."""
    d = points[:, eyes[1]] - points[:, eyes[0]]
    return np.arctan2(d[:, 1], d[:, 0])


class FileBoxes:
    """COCO-style boxes from a file: a COCO dataset (images + annotations) or a detection
    results list ([{"image_id", "bbox": [x, y, w, h], "score"}]; image ids match file names
    through ``images`` when present, else numeric file stems such as 000000000785.jpg).
    Entries with ``"source"`` (a file name) and ``"frame"`` give boxes for video frames."""

    def __init__(self, path: str | Path, min_score: float = 0.0, category_id: int | None = None):
        p = Path(path)
        d = load_json(p, "boxes file")
        anns = d.get("annotations", []) if isinstance(d, dict) else d
        names = {im["id"]: im["file_name"] for im in d.get("images", [])} if isinstance(d, dict) else {}
        self.by_key: dict[tuple, list] = {}
        for a in anns:
            if not isinstance(a, dict) or "bbox" not in a:
                raise DataError("every entry needs a 'bbox' [x, y, w, h]", path=str(p))
            if category_id is not None and a.get("category_id", category_id) != category_id:
                continue
            if float(a.get("score", 1.0)) < min_score:
                continue
            key = a.get("file_name") or a.get("source") or names.get(a.get("image_id")) or str(a.get("image_id"))
            x, y, w, h = map(float, a["bbox"])
            if w <= 0 or h <= 0:
                raise DataError(f"box {a['bbox']} of {key} has zero size", path=str(p))
            frame = a.get("frame")
            self.by_key.setdefault((Path(str(key)).name, frame), []).append(([x, y, x + w, y + h],
                                                                            float(a.get("score", 1.0))))
        self.path = p
        self.names = {k[0] for k in self.by_key}

    def covers(self, source: str) -> bool:
        """Whether the file has entries for this input (by file name or numeric stem)."""
        name, stem = Path(source).name, Path(source).stem
        return name in self.names or (stem.isdigit() and str(int(stem)) in self.names)

    def __call__(self, image: np.ndarray, source: str = "", frame=None) -> tuple[np.ndarray, np.ndarray]:
        name, stem = Path(source).name, Path(source).stem
        hits = (self.by_key.get((name, frame)) or self.by_key.get((name, None))
                or (self.by_key.get((str(int(stem)), None)) if stem.isdigit() else None) or [])
        return np.asarray([h[0] for h in hits], np.float64).reshape(-1, 4), np.asarray([h[1] for h in hits])


def dlib_boxes(points: np.ndarray) -> np.ndarray:
    """Face boxes as dlib's face chips frame them (face-api's ``alignDlib``), from the 5 face
    points (N, 5, 2: eyes, nose, mouth corners): a square of side mean(eye-to-mouth
    distance) / 0.45, its top-left 0.5 side left of and 0.43 side above the centroid of the
    eye centres and the mouth centre -> (N, 4) xyxy."""
    p = np.asarray(points, np.float64).reshape(-1, 5, 2)
    eyes, mouth = p[:, :2], p[:, 3:].mean(1)
    side = np.linalg.norm(mouth[:, None] - eyes, axis=-1).mean(1) / 0.45
    ref = (eyes.sum(1) + mouth) / 3
    x0, y0 = ref[:, 0] - 0.5 * side, ref[:, 1] - 0.43 * side
    return np.stack([x0, y0, x0 + side, y0 + side], 1)
