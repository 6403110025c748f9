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
    """A face detector's preprocessor plus ``refine(prediction, image)``: the streaming loop's
    second look at each image's faces with its pixels (``check``, see FaceCheck)."""

    def __init__(self, pre, check: FaceCheck, eyes):
        self.pre, self.check, self.eyes = pre, check, tuple(eyes)

    def __getattr__(self, name):  # prepare, normalize, hw, ... are the detector's
        if name == "pre":
            raise AttributeError(name)
        return getattr(self.pre, name)

    def refine(self, pred: Keypoints, image: np.ndarray) -> Keypoints:
        if not len(pred):
            return pred
        return pred.take(self.check(image, pred.boxes, eye_roll(np.asarray(pred.points, np.float64), self.eyes)))


class OwnPresence:
    """A top-down model with a face-presence output (FaceMesh) checks its own faces: the
    preprocessor plus ``refine`` keeping the instances whose presence (every point's score) is
    at least ``min_presence`` — the same crops and score FaceCheck would compute, once."""

    def __init__(self, pre, min_presence: float = MIN_PRESENCE):
        self.pre, self.min_presence = pre, presence_threshold(min_presence)

    def __getattr__(self, name):  # prepare, normalize, boxes, ... are the model's
        if name == "pre":
            raise AttributeError(name)
        return getattr(self.pre, name)

    def refine(self, pred: Keypoints, image: np.ndarray) -> Keypoints:
        return pred.take(np.asarray(pred.scores)[:, 0] >= self.min_presence) if len(pred) else pred
