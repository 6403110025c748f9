"""A second look at the faces a face detector finds.

RetinaFace fires on animal faces and face-like patterns (measured on VOC photos, where every
person is boxed: most of its detections outside any person are cats, dogs, sheep). The dense
face model (FaceMesh) was trained with a face-presence output on aligned face crops — the
score MediaPipe's face landmarker uses to drop a lost face. ``FaceCheck`` runs that output
on each detected face's roll-aligned crop and keeps faces scored >= ``min_presence``
(default 0.5, MediaPipe's ``min_face_presence_confidence``)."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError
from ..batch import predict_inputs
from ..keypoints.postprocess import Keypoints
from ..keypoints.topdown import eye_roll

VERIFIER = "facemesh.mediapipe"  # the default check: FaceMesh's face presence
MIN_PRESENCE = 0.5


def presence_threshold(value) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"--min-presence must be between 0 and 1, got {value}")
    return float(value)


class FaceCheck:
    """``check(image (H, W, 3) uint8 RGB, boxes (N, 4) xyxy, rolls (N,) radians) -> (N,) bool``:
    the faces whose presence score from ``model`` (a top-down landmark model with a presence
    head, e.g. FaceMesh) is at least ``min_presence``."""

    KIND = "facemesh"  # the keypoint head kind with a face-presence output

    def __init__(self, model, min_presence: float = MIN_PRESENCE):
        kind = model.config.get("head", {}).get("kind")
        if model.task != "landmarks" or kind != self.KIND:
            raise ConfigError(f"the face check needs a landmark model with a face-presence output (FaceMesh), got a "
                              f"{model.task} model with a {kind!r} head", hint="--face-check facemesh.mediapipe, "
                                                                              "or --face-check none")
        self.model, self.min_presence = model.eval(), presence_threshold(min_presence)

    def presence(self, image: np.ndarray, boxes: np.ndarray, rolls: np.ndarray) -> np.ndarray:
        """(N,) presence probability of each face's crop."""
        if not len(boxes):
            return np.zeros(0)
        fixed = (np.asarray(boxes, np.float64), np.ones(len(boxes)), np.asarray(rolls, np.float64))
        (pred,) = predict_inputs(self.model, [image], pre=self.model.preprocessor(lambda *_: fixed))
        return np.asarray(pred.scores, np.float64)[:, 0]

    def __call__(self, image: np.ndarray, boxes: np.ndarray, rolls: np.ndarray) -> np.ndarray:
        return self.presence(image, boxes, rolls) >= self.min_presence


class CheckedFaces:
    """A landmark preprocessor plus ``refine(prediction, image)``: the streaming loop's second
    look at each image's faces with its pixels, keeping those ``keep(prediction, image) -> (N,)
    bool`` passes (see the two constructors)."""

    def __init__(self, pre, keep):
        self.pre, self.keep = pre, keep

    @classmethod
    def by_check(cls, pre, check: FaceCheck, eyes) -> "CheckedFaces":
        """A face detector's faces, each looked at by ``check`` on its roll-aligned crop."""
        return cls(pre, lambda p, image: check(image, p.boxes, eye_roll(np.asarray(p.points, np.float64), eyes)))

    @classmethod
    def by_own_presence(cls, pre, min_presence: float = MIN_PRESENCE) -> "CheckedFaces":
        """A model with a face-presence output (FaceMesh) checks its own faces: the same crops
        and score FaceCheck would compute, once (every point's score is the presence)."""
        t = presence_threshold(min_presence)
        return cls(pre, lambda p, _: np.asarray(p.scores)[:, 0] >= t)

    def __getattr__(self, name):  # prepare, normalize, hw, boxes, ... are the wrapped preprocessor's
        if name == "pre":
            raise AttributeError(name)
        return getattr(self.pre, name)

    def refine(self, pred: Keypoints, image: np.ndarray) -> Keypoints:
        return pred.take(self.keep(pred, image)) if len(pred) else pred
