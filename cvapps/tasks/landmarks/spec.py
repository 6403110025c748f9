"""Facial landmarks: the keypoint spec with face defaults and NME metrics for results files."""

from __future__ import annotations

from ...errors import ConfigError, WeightsError
from ...options import CliOption
from ..keypoints.spec import KeypointSpec
from ..keypoints.topdown import DetectorBoxes, HaarFaces
from .metrics import evaluate_pairs
from .verify import MIN_PRESENCE, VERIFIER, CheckedFaces, FaceCheck


class LandmarkSpec(KeypointSpec):
    cli_options = {**KeypointSpec.cli_options,
                   "predict": KeypointSpec.cli_options["predict"] + (
                       CliOption("face_check", str, None, f"a second look at each face the face detector finds: "
                                                          f"{VERIFIER} (default) drops faces its face-presence "
                                                          f"score rejects (animal faces, patterns); 'none' keeps "
                                                          f"every face"),
                       CliOption("min_presence", float, MIN_PRESENCE, "face check: the presence score a face needs"),
                       CliOption("points", int, None, "the pretrained face model with this many points: 5 (the "
                                                      "default), 68 (iBUG 300-W) or 468 (FaceMesh)")),
                   }
    by_points = {5: "retinaface.face5", 68: "landmarks68.faceapi", 468: "facemesh.mediapipe"}
    default_schema = "ibug68"
    rotate = 20.0
    box_label = "face"
    instance = "face"
    default_weights = "retinaface.face5"  # boxes + 5 points of every face, no training
    default_detector = "retinaface.face5"  # faces for the top-down landmark models
    named_box_sources = {"haar": HaarFaces}  # --faces haar: OpenCV's frontal-face cascade

    def pick_model(self, options: dict, items=None) -> str | None:
        points = options.pop("points", None)
        if points is None:
            return None
        if int(points) not in self.by_points:
            raise ConfigError(f"--points {points}: pretrained face models have "
                              f"{', '.join(map(str, self.by_points))} points", hint="or --model your own")
        return self.by_points[int(points)]

    def predict_setup(self, model, load, items=(), face_check: str | None = None,
                      min_presence: float = MIN_PRESENCE, **options):
        """The keypoint setup; faces from a face detector (the model itself or the box source of
        a top-down model) get a second look (``face_check``: a FaceMesh model name / file,
        default VERIFIER; "none" turns it off; see cvapps.tasks.landmarks.verify)."""
        pre, post = super().predict_setup(model, load, items, **options)
        source = getattr(pre, "boxes", None)
        own = getattr(model, "finds_instances", False)
        from_detector = isinstance(source, DetectorBoxes) and getattr(source.det, "finds_instances", False)
        if face_check is not None and str(face_check).lower() == "none":
            return pre, post
        if not (own or from_detector):
            if face_check is not None:
                raise ConfigError("--face-check looks again at a face detector's faces; these boxes come from "
                                  f"{'a boxes file or Haar' if options.get('boxes') else 'no face detector'}")
            return pre, post
        if from_detector and face_check is None and model.config["head"].get("kind") == FaceCheck.KIND:
            return CheckedFaces.by_own_presence(pre, min_presence), post  # its own presence is the check
        check = self.face_check(load, face_check, min_presence)
        if own:
            return CheckedFaces.by_check(pre, check, model.schema.eyes), post
        source.check = check
        return pre, post

    def face_check(self, load, face_check: str | None = None, min_presence: float = MIN_PRESENCE) -> FaceCheck:
        """The second look at a face detector's faces (``face_check``: a FaceMesh model, default
        VERIFIER), for the faces of top-down landmark models and per-face classification."""
        try:
            return FaceCheck(load(face_check or VERIFIER, "landmarks"), min_presence)
        except WeightsError as e:
            if face_check is not None:
                raise
            raise WeightsError(f"the face check needs {VERIFIER}: {e}",
                               hint=f"{e.hint}; or --face-check none to keep every face unchecked") from None

    def results_metrics(self, gt, by_name, pairs, missed) -> dict:
        """NME / FR / AUC over IoU-matched faces; unmatched faces count as failures."""
        return evaluate_pairs(pairs, missed, gt.schema.eyes)
