"""The dense face landmark model converted from MediaPipe's FaceMesh TFLite file: the mapping
by op position, the schema's flip pairs, and `predict landmarks --model facemesh.mediapipe`
on the face detector's boxes (weights from fixtures, never the network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, train_steps, write_image

import cvapps
from cvapps.convert import MAPPINGS
from cvapps.convert.facemesh import op_order
from cvapps.errors import WeightsError

NAME = "facemesh.mediapipe"


@torch.no_grad()
def test_mapping_by_op_position_reproduces_the_model(facemesh_model):
    cls = cvapps.tasks.model_class("landmarks")
    ref = cls.from_config(facemesh_model.config).eval()
    for m in ref.modules():  # non-trivial slopes, so a swapped PReLU would show
        if isinstance(m, torch.nn.PReLU):
            m.weight.uniform_(-0.5, 0.5)
    mods = dict(ref.named_modules())
    order = op_order()
    convs = order["CONV_2D"] + order["DEPTHWISE_CONV_2D"]
    assert sorted(convs) == sorted(n for n, m in mods.items() if isinstance(m, torch.nn.Conv2d))
    assert sorted(order["PRELU"]) == sorted(n for n, m in mods.items() if isinstance(m, torch.nn.PReLU))
    c = {}
    for op, names in order.items():
        for i, n in enumerate(names):
            c[f"{op}.{i}.weight"] = mods[n].weight.numpy()
            if op != "PRELU":
                c[f"{op}.{i}.bias"] = mods[n].bias.numpy()
    fresh = cls.from_config(ref.config)
    fresh.load_state_dict(MAPPINGS.get("facemesh")(c, fresh.state_dict(), fresh.config), strict=True)
    x = torch.rand(2, 3, 192, 192)
    a, b = ref(x), fresh.eval()(x)
    torch.testing.assert_close(b.points, a.points)
    torch.testing.assert_close(b.scores, a.scores)
    assert a.points.shape == (2, 468, 2) and ((a.scores >= 0) & (a.scores <= 1)).all()
    c["PRELU.3.weight"] = np.zeros(7, np.float32)
    with pytest.raises(WeightsError, match="PRELU op 3 has weights"):
        MAPPINGS.get("facemesh")(c, fresh.state_dict(), fresh.config)


def test_the_mesh_schema_pairs_mirror_points(facemesh_model):
    s = facemesh_model.schema
    assert len(s) == 468 and tuple(s.eyes) == (33, 263)
    pairs = [tuple(p) for p in s.flip_pairs]
    flat = [i for p in pairs for i in p]
    assert len(flat) == len(set(flat)) and all(0 <= i < 468 for i in flat)  # each point in at most one pair
    assert (33, 263) in pairs and (61, 291) in pairs  # outer eye corners, mouth corners
    perm = s.flip_perm
    assert perm[1] == 1 and all(perm[perm[i]] == i for i in range(468))  # nose tip on the midline; involution


def test_predict_landmarks_with_facemesh_on_the_face_detectors_boxes(tmp_path, capsys, facemesh_model,
                                                                    face_detector):
    img = write_image(tmp_path / "group.png", np.random.default_rng(7).integers(0, 255, (120, 160, 3), np.uint8))
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--model", NAME, "--save-json",
                           tmp_path / "p.jsonl", "--out", tmp_path / "drawn", "--backend", "torch",
                           "--face-check", "none")  # the check's own tests: test_face_check.py
    assert code == 0, err
    recs = json.loads((tmp_path / "p.jsonl").read_text())["predictions"]
    faces = face_detector.predict(img, scales=(1, 2))[0]  # a photo: with the enlarged pass
    assert len(recs) == len(faces) > 0  # random weights find "faces" in noise: every one gets a mesh
    assert all(len(r["keypoints"]) == 468 * 3 for r in recs)
    np.testing.assert_allclose([r["bbox"][0] for r in recs], faces.boxes[:, 0], atol=0.01)
    assert (tmp_path / "drawn" / "group.png").is_file()


def test_facemesh_exports_and_fine_tunes(tmp_path, facemesh_model):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(8)
    imgs = [rng.integers(0, 255, (90, 80, 3), np.uint8) for _ in range(2)]
    ort = cvapps.load(cvapps.export(facemesh_model, tmp_path / "mesh.onnx"), backend="onnxruntime")
    a = facemesh_model.predict(imgs, boxes=[np.array([[0, 0, 80, 90]])] * 2)  # the whole image, as whole_image
    b = [r.prediction for r in cvapps.predict(ort, imgs, task="landmarks", stream=True, whole_image=True)]
    for p, q in zip(a, b):
        np.testing.assert_allclose(q.points, p.points, atol=1e-3)
    m = cvapps.create_model("landmarks", weights=NAME)
    assert m.config["head"]["kind"] == "facemesh" and m.config["preprocessing"]["input_size"] == [192, 192]
    torch.manual_seed(0)
    x, gt = torch.rand(2, 3, 192, 192), torch.rand(2, 468, 2) * 150 + 20
    losses = train_steps(m, x, [{"keypoints": g, "weights": torch.ones(468)} for g in gt], 1e-3)
    assert losses[-1] < losses[0]
    assert set(m.spec.strategies(m)) >= {"least_confidence", "variance"}


def test_crops_are_rotated_upright_by_the_face_detectors_eyes():
    """A face rolled by 30 degrees: its eyes lie on a horizontal line in the aligned crop, and
    points predicted in the crop map back onto the image."""
    from cvapps.ops.keypoints import apply_affine, crop_affine, invert_affine
    from cvapps.tasks.keypoints.postprocess import Keypoints
    from cvapps.tasks.keypoints.topdown import DetectorBoxes, TopDown

    a = np.deg2rad(30)
    centre = np.array([60.0, 50.0])
    eyes = centre + 15 * np.array([[-np.cos(a), -np.sin(a)], [np.cos(a), np.sin(a)]])  # left, right eye
    m = crop_affine(np.array([30, 20, 90, 80]), (64, 64), 1.25, a)
    e = apply_affine(eyes, m)
    assert abs(e[0, 1] - e[1, 1]) < 1e-9 and e[1, 0] > e[0, 0]  # level, left eye on the left
    np.testing.assert_allclose(apply_affine(e, invert_affine(m)), eyes)
    np.testing.assert_allclose(apply_affine(centre[None], m), [[32, 32]])  # the box centre stays the crop centre

    class Faces:  # a face detector's output: boxes and 5 points (eyes first)
        finds_instances = True
        schema = type("S", (), {"eyes": (0, 1)})()

        def eval(self):
            return self

        def predict(self, image, **_):
            pts = np.concatenate([eyes, np.tile(centre, (3, 1))])[None]
            return [Keypoints(pts, np.ones((1, 5)), np.array([[30.0, 20, 90, 80]]), np.ones(1), list("abcde"), [],
                              "face")]

    boxes, scores, rolls, points = DetectorBoxes(Faces(), None, conf=None)(np.zeros((100, 120, 3), np.uint8))
    np.testing.assert_allclose(rolls, [a])
    assert points.shape == (1, 5, 2)  # the face's points too (face descriptors crop dlib's chip from them)
    img = np.zeros((100, 120, 3), np.uint8)
    aligned = TopDown((0, 0, 0), (1, 1, 1), 64, align=True, boxes=DetectorBoxes(Faces(), None, conf=None))
    upright = TopDown((0, 0, 0), (1, 1, 1), 64, boxes=DetectorBoxes(Faces(), None, conf=None))
    _, meta = aligned.prepare(img)
    np.testing.assert_allclose(meta["inv"][0], invert_affine(m))
    _, meta = upright.prepare(img)
    np.testing.assert_allclose(meta["inv"][0], invert_affine(crop_affine(np.array([30, 20, 90, 80]), (64, 64))))
