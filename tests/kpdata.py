"""Synthetic keypoint data: 5-point "faces" (two eyes, nose, two mouth corners drawn as
distinct coloured dots on a skin-coloured ellipse) with exactly known points."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from conftest import write_image

# dot colours differ left vs right, so a flipped image is recognisably flipped
DOTS = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0), (0, 255, 255)]


def face_image(seed: int, size=(96, 96)):
    """-> (image (H, W, 3) uint8, points (5, 2) pixel centres, box xyxy)."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), 40, np.uint8)
    cx, cy = w / 2 + rng.uniform(-8, 8), h / 2 + rng.uniform(-8, 8)
    fw, fh = rng.uniform(26, 34), rng.uniform(32, 40)
    cv2.ellipse(img, (int(cx), int(cy)), (int(fw), int(fh)), 0, 0, 360, (200, 160, 130), -1)
    pts = np.array([[cx - 0.45 * fw, cy - 0.3 * fh], [cx + 0.45 * fw, cy - 0.3 * fh], [cx, cy + 0.05 * fh],
                    [cx - 0.35 * fw, cy + 0.45 * fh], [cx + 0.35 * fw, cy + 0.45 * fh]])
    pts += rng.uniform(-2, 2, pts.shape)
    pts = np.round(pts) + 0.5  # dot centred on a pixel centre
    for (x, y), c in zip(pts, DOTS):
        cv2.circle(img, (int(x), int(y)), 3, c, -1)
    box = np.array([cx - fw, cy - fh, cx + fw, cy + fh])
    return img, pts, box


def write_faces(root: Path, n: int = 6, seed: int = 0) -> Path:
    """COCO keypoints file + PNG images in ``root``; returns the JSON path."""
    root.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        img, pts, box = face_image(seed + i)
        name = f"face{i}.png"
        write_image(root / name, img)
        images.append({"id": i + 1, "file_name": name, "width": img.shape[1], "height": img.shape[0]})
        kp = np.concatenate([pts, np.full((5, 1), 2.0)], 1).reshape(-1).tolist()
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "keypoints": kp, "num_keypoints": 5,
                     "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "iscrowd": 0,
                     "area": float((box[2] - box[0]) * (box[3] - box[1]))})
    cat = {"id": 1, "name": "face", "keypoints": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
           "skeleton": [[1, 2], [4, 5]]}
    path = root / "faces.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [cat]}))
    return path
