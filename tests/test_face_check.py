"""The face check: FaceMesh's face-presence score on each face the face detector finds drops
the faces it rejects, for the face detector as the landmark model and as the box source of
top-down landmark models (weights from fixtures, never the network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, write_image

import cvapps
from cvapps.tasks.batch import predict_inputs
from cvapps.tasks.keypoints.topdown import DetectorBoxes
from cvapps.tasks.landmarks.verify import FaceCheck


def _noise(tmp_path, seed: int = 1):
    return write_image(tmp_path / "group.png", np.random.default_rng(seed).integers(0, 255, (120, 160, 3), np.uint8))


def _presence(mesh, detector, img, scales=(1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """The detector's faces (boxes) and FaceMesh's presence on each, computed the long way: the
    mesh model run top-down on the detector's boxes and rolls."""
    source = DetectorBoxes(detector, conf=None, scales=scales)
    p = mesh.predict(cvapps.data.io.read_image(img), boxes=source)[0]
    return p.boxes, p.scores[:, 0]


def _between(presence: np.ndarray) -> float:
    """A threshold that keeps some faces and drops others (the check's work is visible)."""
    v = np.unique(np.round(presence, 4))
    assert len(v) >= 2, "the fixtures should give faces of different presence"
    k = len(v) // 2
    return float(v[k - 1] + v[k]) / 2  # midway: runtimes' rounding cannot move a face across it


def test_default_landmarks_keep_the_faces_facemesh_calls_faces(tmp_path, capsys, face_detector, facemesh_model):
    img = _noise(tmp_path)
    boxes, presence = _presence(facemesh_model, face_detector, img)
    t = _between(presence)
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--min-presence", t, "--save-json",
                           tmp_path / "p.jsonl")
    assert code == 0, err
    recs = json.loads((tmp_path / "p.jsonl").read_text())["predictions"]
    want = boxes[presence >= t]
    assert 0 < len(recs) == len(want) < len(boxes)
    np.testing.assert_allclose([r["bbox"][:2] for r in recs], want[:, :2], atol=0.01)
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--face-check", "none", "--save-json",
                           tmp_path / "all.jsonl")
    assert len(json.loads((tmp_path / "all.jsonl").read_text())["predictions"]) == len(boxes)


def test_top_down_models_crop_only_the_checked_faces(tmp_path, face_detector, facemesh_model):
    img = _noise(tmp_path, 2)
    boxes, presence = _presence(facemesh_model, face_detector, img)
    t = _between(presence)
    lm = cvapps.create_model("landmarks", "mobilenet_v3_small", img_size=[64, 64], schema="face5")
    (res,) = list(cvapps.predict(lm, [img], task="landmarks", stream=True, min_presence=t))
    # the same boxes, up to float rounding (another batch shape rounds differently on some CPUs)
    np.testing.assert_allclose(res.prediction.boxes, boxes[presence >= t], atol=1e-4, rtol=0)
    # the list-returning path (predict_inputs, behind TaskModel.predict) refines the same way
    pre, post = face_detector.spec.predict_setup(face_detector, lambda m, _: cvapps.load(m), [img],
                                                 min_presence=t)
    (p,) = predict_inputs(face_detector, [img], pre=pre, **post)
    np.testing.assert_allclose(p.boxes, boxes[presence >= t], atol=1e-6)


def test_a_model_saved_to_a_file_can_be_the_check(tmp_path, face_detector, facemesh_model):
    """--face-check takes a FaceMesh file (e.g. one fine-tuned on your faces); its presence
    output decides: a head that says "no face" everywhere leaves no face."""
    import torch

    mesh = cvapps.tasks.model_class("landmarks").from_config(facemesh_model.config)
    mesh.load_state_dict(facemesh_model.state_dict())
    with torch.no_grad():
        mesh.head["main"].presence_out.bias.fill_(-50.0)
    path = cvapps.save(mesh, tmp_path / "never.safetensors")
    img = _noise(tmp_path, 3)
    assert len(face_detector.predict(img, scales=(1, 2))[0]) > 0
    (res,) = list(cvapps.predict(None, [img], task="landmarks", stream=True, face_check=str(path)))
    assert len(res.prediction) == 0
    check = FaceCheck(mesh)
    assert not check(cvapps.data.io.read_image(img), np.array([[10.0, 10, 60, 70]]), np.zeros(1)).any()


def test_face_check_refuses_what_it_cannot_use(tmp_path, capsys, face_detector, facemesh_model, tiny_model_file):
    img = _noise(tmp_path, 4)
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--face-check", tiny_model_file)
    assert code == 2 and "is a classify model" in err
    lm = cvapps.create_model("landmarks", "mobilenet_v3_small", img_size=[64, 64], schema="face5")
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--face-check", cvapps.save(lm, tmp_path / "lm.pt"))
    assert code == 2 and "face-presence output" in err and "'heatmap' head" in err
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--min-presence", "1.5")
    assert code == 2 and "--min-presence must be between 0 and 1" in err
    with pytest.raises(cvapps.ConfigError, match="looks again at a face detector's faces"):
        cvapps.predict(lm, [img], task="landmarks", boxes="haar", face_check="facemesh.mediapipe")
    assert len(cvapps.predict(lm, [img], task="landmarks", boxes="haar").failed) == 0  # Haar: nothing to check


def test_without_the_check_weights_the_error_says_how_to_go_on(face_detector):
    def offline(name, task):
        raise cvapps.errors.WeightsError(f"could not obtain {name!r}", hint="cvapps weights pull ...")

    with pytest.raises(cvapps.errors.WeightsError) as e:
        face_detector.spec.predict_setup(face_detector, offline, [])
    assert "the face check needs facemesh.mediapipe" in e.value.one_line()
    assert "--face-check none" in e.value.one_line()
    pre, _ = face_detector.spec.predict_setup(face_detector, offline, [], face_check="none")  # nothing to load
    assert not hasattr(pre, "refine")


def test_facemesh_checks_its_own_faces(tmp_path, capsys, face_detector, facemesh_model):
    """With FaceMesh as the landmark model its own presence output is the check (no second
    FaceMesh pass): the faces kept are those whose presence, computed the long way, passes."""
    img = _noise(tmp_path, 5)
    boxes, presence = _presence(facemesh_model, face_detector, img)
    t = _between(presence)
    def load(name, task):  # the face detector only: no second FaceMesh for the check
        return face_detector if name == "retinaface.face5" else pytest.fail(f"loaded {name}")

    pre, _ = facemesh_model.spec.predict_setup(facemesh_model, load, [img], min_presence=t)
    assert pre.boxes.check is None and hasattr(pre, "refine")
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--model", "facemesh.mediapipe", "--min-presence", t,
                           "--backend", "torch", "--save-json", tmp_path / "p.jsonl")
    assert code == 0, err
    recs = json.loads((tmp_path / "p.jsonl").read_text())["predictions"]
    want = boxes[presence >= t]
    assert 0 < len(recs) == len(want) < len(boxes)
    np.testing.assert_allclose([r["bbox"][:2] for r in recs], want[:, :2], atol=0.01)


def test_select_scores_an_image_without_a_kept_face_zero(tmp_path, face_detector, facemesh_model):
    """select sees an image as predict does: when the face check leaves no face, there is
    nothing the face model could learn there (it used to score the dropped faces' uncertainty)."""
    import csv

    img = _noise(tmp_path)
    scored = {}
    for name, presence in (("some", 0.0), ("none", 1.0)):  # the fixture's presence is ~0.47 on every face
        cvapps.select("retinaface.face5", [str(img)], 1, out=str(tmp_path / name), min_presence=presence,
                      scales="1", backend="torch")
        with open(tmp_path / name / "scores.csv") as f:
            scored[name] = [float(r["score"]) for r in csv.DictReader(f)]
    (kept,) = cvapps.predict("retinaface.face5", [img], task="landmarks", stream=True, min_presence=1.0, scales="1",
                             backend="torch")
    assert len(kept.prediction) == 0 and scored["none"] == [0.0] and scored["some"][0] > 0
