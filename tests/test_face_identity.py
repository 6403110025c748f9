"""Face attributes and identity from face-api's TF.js files: the age / gender (TinyXception)
and descriptor (dlib ResNet) mappings against face-api's forward written here from its
source, classification of each instance (--boxes / --on faces), the gallery's distance rule,
and `cvapps faces enroll / identify` (weights from fixtures, never the network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import _converted_fixture, run_cli, write_image
from test_tfjs import _tf_same

import cvapps
from cvapps.convert import MAPPINGS, READERS
from cvapps.errors import ConfigError, DataError
from cvapps.ops.keypoints import crop_affine, warp
from cvapps.tasks.classification.gallery import UNKNOWN, Gallery
from cvapps.tasks.classification.postprocess import ClassPrediction, InstanceClasses
from cvapps.tasks.keypoints.topdown import dlib_boxes


class _Manifest:
    """Random float32 weights under face-api's names, written as a TF.js manifest + shard."""

    def __init__(self, seed: int = 0):
        self.rng, self.entries, self.blobs, self.w = np.random.default_rng(seed), [], [], {}

    def add(self, name: str, shape, scale: float = 0.2) -> np.ndarray:
        a = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.entries.append({"name": name, "shape": list(shape), "dtype": "float32"})
        self.blobs.append(a.tobytes())
        self.w[name] = a
        return a

    def read(self, folder):
        (folder / "w.bin").write_bytes(b"".join(self.blobs))
        path = folder / "w-weights_manifest.json"
        path.write_text(json.dumps([{"paths": ["w.bin"], "weights": self.entries}]))
        return READERS.get("tfjs")(path)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _convert(mapping: str, tensors: dict, task: str, backbone: str, **kw):
    model = cvapps.create_model(task, backbone, **kw).eval()
    model.load_state_dict(MAPPINGS.get(mapping)(tensors, model.state_dict(), model.config), strict=True)
    return model


def test_age_and_gender_weights_map_onto_tiny_xception(tmp_path):
    """AgeGenderNet's one file gives two cvapps models (age: regression on fc/age; gender: a
    classifier on fc/gender) that compute face-api's TinyXception forward: SAME convs,
    separable convs, SAME 3x3/2 max pools, strided 1x1 shortcuts, 7x7 average, dense."""
    m = _Manifest(1)

    def sep(p, c, o):
        m.add(f"{p}/depthwise_filter", (3, 3, c, 1), 0.3), m.add(f"{p}/pointwise_filter", (1, 1, c, o), 1 / np.sqrt(c))
        m.add(f"{p}/bias", (o,), 0.05)

    m.add("entry_flow/conv_in/filters", (3, 3, 3, 32)), m.add("entry_flow/conv_in/bias", (32,), 0.05)
    blocks = [("entry_flow/reduction_block_0", 32, 64), ("entry_flow/reduction_block_1", 64, 128)]
    for p, c, o in blocks + [("exit_flow/reduction_block", 128, 256)]:
        sep(f"{p}/separable_conv0", c, o), sep(f"{p}/separable_conv1", o, o)
        m.add(f"{p}/expansion_conv/filters", (1, 1, c, o), 1 / np.sqrt(c)), m.add(f"{p}/expansion_conv/bias", (o,))
    for b in range(2):
        for i in range(3):
            sep(f"middle_flow/main_block_{b}/separable_conv{i}", 128, 128)
    sep("exit_flow/separable_conv", 256, 512)
    m.add("fc/age/weights", (512, 1), 0.5), m.add("fc/age/bias", (1,), 1.0)
    m.add("fc/gender/weights", (512, 2), 0.5), m.add("fc/gender/bias", (2,), 1.0)
    tensors = m.read(tmp_path)
    w = m.w

    def conv(x, p, stride):
        return _tf_same(x, _t(w[f"{p}/filters"].transpose(3, 2, 0, 1)), _t(w[f"{p}/bias"]), stride)

    def separable(x, p):
        dw = _tf_same(x, _t(w[f"{p}/depthwise_filter"].transpose(2, 3, 0, 1)), None, 1, groups=x.shape[1])
        return F.conv2d(dw, _t(w[f"{p}/pointwise_filter"].transpose(3, 2, 0, 1)), _t(w[f"{p}/bias"]))

    def reduction(x, p, activate=True):
        out = separable(x.relu() if activate else x, f"{p}/separable_conv0")
        out = separable(out.relu(), f"{p}/separable_conv1")
        out = F.max_pool2d(F.pad(out, (0, 1, 0, 1), value=-np.inf), 3, 2)  # SAME on an even size: bottom-right
        return out + conv(x, f"{p}/expansion_conv", 2)

    x = torch.rand(2, 3, 112, 112) - 0.5
    with torch.no_grad():
        out = conv(x, "entry_flow/conv_in", 2).relu()
        out = reduction(out, blocks[0][0], activate=False)
        out = reduction(out, blocks[1][0])
        for b in range(2):
            p = f"middle_flow/main_block_{b}"
            out = separable(separable(separable(out.relu(), f"{p}/separable_conv0").relu(),
                                      f"{p}/separable_conv1").relu(), f"{p}/separable_conv2") + out
        out = separable(reduction(out, "exit_flow/reduction_block"), "exit_flow/separable_conv").relu()
        pooled = F.avg_pool2d(out, 7, 2).flatten(1)
        age = _convert("faceapi_age_gender", tensors, "classify", "faceapi_xception", kind="regression",
                       labels=["age"], img_size=112)
        gender = _convert("faceapi_age_gender", tensors, "classify", "faceapi_xception", labels=["male", "female"],
                          img_size=112)
        torch.testing.assert_close(age(x).logits, pooled @ _t(w["fc/age/weights"]) + _t(w["fc/age/bias"]),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(gender(x).logits, pooled @ _t(w["fc/gender/weights"]) + _t(w["fc/gender/bias"]),
                                   atol=1e-4, rtol=1e-4)
    assert age.predict(np.zeros((112, 112, 3), np.uint8))[0].value is not None  # a regression: years, no class


def test_descriptor_weights_map_onto_the_dlib_resnet(tmp_path):
    """FaceRecognitionNet's file -> a 128-d embedding model computing face-api's forward:
    conv + bias then the folded-BatchNorm scale, valid strided convs, a 3x3/2 max pool,
    residual blocks whose down-sampling shortcut is a zero-padded 2x2 average (the branch
    zero-padded bottom-right where it came out smaller), mean, bias-free dense."""
    m = _Manifest(2)
    layers = [("conv32_down", 3, 32, 7)]
    plan = [(32, 3, 32), (64, 3, 32), (128, 2, 64), (256, 2, 128)]
    for c, n, cin in plan:
        if c > 32:
            layers += [(f"conv{c}_down/conv1", cin, c, 3), (f"conv{c}_down/conv2", c, c, 3)]
        for i in range(1, n + 1):
            layers += [(f"conv{c}_{i}/conv1", c, c, 3), (f"conv{c}_{i}/conv2", c, c, 3)]
    layers += [("conv256_down_out/conv1", 256, 256, 3), ("conv256_down_out/conv2", 256, 256, 3)]
    for p, c, o, k in layers:
        m.add(f"{p}/conv/filters", (k, k, c, o), 1 / np.sqrt(k * k * c)), m.add(f"{p}/conv/bias", (o,), 0.05)
        m.add(f"{p}/scale/weights", (o,), 0.1)
        m.w[f"{p}/scale/weights"] += 1
        m.blobs[-1] = m.w[f"{p}/scale/weights"].tobytes()
        m.add(f"{p}/scale/biases", (o,), 0.05)
    m.add("fc", (256, 128), 0.1)
    tensors = m.read(tmp_path)
    w = m.w

    def scaled(x, p, stride, relu):
        y = F.conv2d(x, _t(w[f"{p}/conv/filters"].transpose(3, 2, 0, 1)), _t(w[f"{p}/conv/bias"]), stride,
                     0 if stride > 1 else w[f"{p}/conv/filters"].shape[0] // 2)
        y = y * _t(w[f"{p}/scale/weights"]).view(1, -1, 1, 1) + _t(w[f"{p}/scale/biases"]).view(1, -1, 1, 1)
        return y.relu() if relu else y

    def residual(x, p, down=False):
        out = scaled(scaled(x, f"{p}/conv1", 2 if down else 1, True), f"{p}/conv2", 1, False)
        if not down:
            return (out + x).relu()
        pooled = F.avg_pool2d(x, 2, 2)
        if pooled.shape[-1] != out.shape[-1]:  # face-api: one zero row, then one zero column
            out = torch.cat([out, torch.zeros_like(out[:, :, :1])], 2)
            out = torch.cat([out, torch.zeros_like(out[:, :, :, :1])], 3)
        if pooled.shape[1] != out.shape[1]:
            pooled = torch.cat([pooled, torch.zeros_like(pooled)], 1)
        return (out + pooled).relu()

    x = torch.rand(2, 3, 150, 150) - 0.5
    with torch.no_grad():
        out = F.max_pool2d(scaled(x, "conv32_down", 2, True), 3, 2)
        for c, n, _ in plan:
            if c > 32:
                out = residual(out, f"conv{c}_down", down=True)
            for i in range(1, n + 1):
                out = residual(out, f"conv{c}_{i}")
        out = residual(out, "conv256_down_out", down=True)
        ref = out.mean((2, 3)) @ _t(w["fc"])
        model = _convert("faceapi_descriptor", tensors, "classify", "faceapi_resnet", kind="embedding", labels=[],
                         num_outputs=128, img_size=150)
        torch.testing.assert_close(model(x).logits, ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.embed(x), ref, atol=1e-4, rtol=1e-4)  # `cvapps embed`: the descriptor
    pred = model.predict(np.zeros((150, 150, 3), np.uint8))[0]
    assert pred.vector.shape == (128,) and pred.summary() == "128-d descriptor" and pred.to_labels() == {}
    with pytest.raises(ConfigError, match="not trained with class labels"):
        model.loss(model(x), torch.zeros(2, dtype=torch.long))


def test_each_box_of_a_boxes_file_is_classified_on_its_own_crop(tmp_path, capsys, tiny_model, tiny_model_file):
    """--boxes: one InstanceClasses per image whose i-th classification is the model's answer
    on the i-th box's square crop (cut here with crop_affine at the config's margin)."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (90, 120, 3), np.uint8)
    path = write_image(tmp_path / "street.png", img)
    boxes = [[10, 5, 40, 60], [60, 30, 110, 85]]
    (tmp_path / "boxes.json").write_text(json.dumps([{"file_name": "street.png", "bbox": b, "score": s}
                                                     for b, s in zip(boxes, (0.9, 0.7))]))
    res = list(cvapps.predict(str(tiny_model_file), [path], task="classify", boxes=str(tmp_path / "boxes.json"),
                              backend="torch", stream=True))[0].prediction
    assert isinstance(res, InstanceClasses) and len(res) == 2 and res.instance == "box"
    pre = tiny_model.config["preprocessing"]
    size = pre["input_size"]
    for i, (x, y, w, h) in enumerate(boxes):
        m = crop_affine(np.array([x, y, x + w, y + h]), (size, size), pre.get("margin", 1.1))
        crop = warp(img, m, (size, size))
        want = tiny_model.predict(crop)[0]  # a square crop of the input size: resize + centre crop do nothing
        np.testing.assert_allclose(res.classes[i].scores, want.scores, atol=1e-5)
        assert res.labels[i] == want.topk[0][0]
    np.testing.assert_allclose(res.boxes, [[10, 5, 50, 65], [60, 30, 170, 115]], atol=1e-4)
    np.testing.assert_allclose(res.scores, [0.9, 0.7], atol=1e-6)
    rows = res.to_dict()
    assert rows[0]["bbox"] == [10, 5, 40, 60] and rows[0]["label"] == res.classes[0].topk[0][1]
    assert [b.label for b in res.to_labels()["boxes"]] == [c.topk[0][1] for c in res.classes]
    assert res.track_boxes().features is None  # class scores are no identity: the tracker's colour cue
    code, _, err = run_cli(capsys, "predict", "classify", path, "--model", tiny_model_file, "--on", "cats")
    assert code == 2 and "--on 'cats': classify each of faces | people" in err
    code, _, err = run_cli(capsys, "predict", "classify", path, "--model", tiny_model_file, "--box-conf", "0.5")
    assert code == 2 and "choose the instances of --on faces | people" in err
    code, _, err = run_cli(capsys, "predict", "classify", path, "--model", tiny_model_file, "--track")
    assert code == 2 and "classify predictions have no boxes to track" in err


def test_the_gallery_names_the_nearest_person_within_dlibs_distance(tmp_path):
    g = Gallery("face_descriptor.faceapi", 2)
    g.add("ann", np.array([[0.0, 0.0], [1.0, 0.0]]))  # two photos of Ann
    g.add("bob", np.array([[0.0, 2.0]]))
    q = np.array([[0.9, 0.1], [0.0, 1.55], [3.0, 3.0]])
    d = g.distances(q)
    np.testing.assert_allclose(d, [[np.hypot(0.1, 0.1), np.hypot(0.9, 1.9)], [1.55, 0.45],
                                   [np.hypot(2, 3), np.hypot(3, 1)]])  # each person: their nearest photo
    assert [n for n, _ in g.identify(q)] == ["ann", "bob", UNKNOWN]  # 0.45 < 0.6 <= sqrt(10)
    g.save(tmp_path / "g.json")
    again = Gallery.load(tmp_path / "g.json")
    assert again.people == g.people and again.threshold == 0.6
    faces = InstanceClasses(np.zeros((3, 4), np.float32), np.ones(3, np.float32), np.full(3, -1), [],
                            classes=[ClassPrediction(np.zeros(0), vector=v) for v in q.astype(np.float32)],
                            instance="face")
    named = again.refine(faces)
    assert [c.label for c in named.classes] == ["ann", "bob", UNKNOWN] and named.labels.tolist() == [0, 1, -1]
    assert named.summary() == "3 faces: ann 0.14, bob 0.45, unknown 3.16"
    assert named.to_dict()[1]["classes"][0] == {"label": "bob", "distance": 0.45}
    feats = named.track_boxes().features  # the descriptors are the tracker's appearance cue (unit rows)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-6)
    (tmp_path / "bad.json").write_text(json.dumps({"model": "m", "dims": 2, "people": {"ann": [[1, 2, 3]]}}))
    with pytest.raises(DataError, match="bad.json.*person 'ann': expected a list of 2-number descriptors"):
        Gallery.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="must not be empty or 'unknown'"):
        g.add(UNKNOWN, q[:1])


def test_faces_enroll_then_identify_names_the_enrolled_face(fixture_home, tmp_path, capsys, face_detector,
                                                           tiny_model_file):
    """The whole path on the fixtures' face detector and descriptor network (seeded weights:
    they find "faces" in noise): the largest face of the photo is enrolled; identifying the
    same photo names that face with distance 0; a gallery of another model is refused."""
    (model,), mp = _converted_fixture(fixture_home, ["face_descriptor.faceapi"])
    try:
        img = write_image(tmp_path / "ann.png", np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8))
        gallery = tmp_path / "g.json"
        code, out, err = run_cli(capsys, "faces", "enroll", "ann", img, "--gallery", gallery, "--face-check", "none",
                                 "--backend", "torch")
        assert code == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["enrolled"] == 1 and report["model"] == "face_descriptor.faceapi"
        code, out, err = run_cli(capsys, "faces", "identify", img, "--gallery", gallery, "--save-json",
                                 tmp_path / "id.jsonl", "--face-check", "none", "--backend", "torch")
        assert code == 0, err
        rows = json.loads((tmp_path / "id.jsonl").read_text())["predictions"]
        best = min(rows, key=lambda r: r["classes"][0]["distance"])
        assert best["label"] == "ann" and best["classes"][0]["distance"] < 1e-4
        assert best["bbox"][2] * best["bbox"][3] == pytest.approx(max(r["bbox"][2] * r["bbox"][3] for r in rows),
                                                                  rel=1e-3)  # the enrolled one: the largest
        assert len(rows) > 1  # the other "faces" were looked up too (named or not, by the 0.6 rule)
        g = Gallery.load(gallery)
        g.dims = 4
        g.people = {"bob": [[0.0] * 4]}
        g.save(tmp_path / "other.json")
        code, _, err = run_cli(capsys, "faces", "identify", img, "--gallery", tmp_path / "other.json")
        assert code == 2 and "the gallery holds 4-d descriptors" in err and "do not compare" in err
        code, _, err = run_cli(capsys, "predict", "classify", img, "--gallery", gallery, "--model", tiny_model_file)
        assert code == 2 and "use a descriptor model" in err
    finally:
        mp.undo()


def test_dlib_boxes_frame_the_face_as_dlib_chips_do():
    """eyes (40, 50), (60, 50), mouth corners (44, 70), (56, 70): eye-to-mouth 20.4 px ->
    side 45.3, top-left 0.5 / 0.43 side from the centroid (50, 56.67)."""
    pts = np.array([[[40, 50], [60, 50], [50, 60], [44, 70], [56, 70]]], np.float64)
    side = np.hypot(10, 20) / 0.45
    np.testing.assert_allclose(dlib_boxes(pts), [[50 - side / 2, 170 / 3 - 0.43 * side, 50 + side / 2,
                                                  170 / 3 + 0.57 * side]])


def test_expression_weights_share_the_landmark_body_with_a_seven_way_dense(tmp_path):
    """FaceExpressionNet = FaceLandmark68Net's dense blocks + fc 256 -> 7: the same body tensors
    land where the landmark mapping puts them, the dense layer on the classifier's fc."""
    m = _Manifest(4)
    chans = [3, 32, 64, 128, 256]
    for b in range(4):
        for k in range(4):
            p, c, o = f"dense{b}/conv{k}", chans[b] if k == 0 else chans[b + 1], chans[b + 1]
            if b == 0 and k == 0:
                m.add(f"{p}/filters", (3, 3, c, o)), m.add(f"{p}/bias", (o,))
            else:
                m.add(f"{p}/depthwise_filter", (3, 3, c, 1)), m.add(f"{p}/pointwise_filter", (1, 1, c, o))
                m.add(f"{p}/bias", (o,))
    m.add("fc/weights", (256, 7)), m.add("fc/bias", (7,))
    tensors = m.read(tmp_path)
    labels = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"]
    expr = _convert("faceapi_expression", tensors, "classify", "faceapi_dense", labels=labels, img_size=112)
    sd = expr.state_dict()
    torch.testing.assert_close(sd["head.fc.weight"], _t(m.w["fc/weights"].T))
    torch.testing.assert_close(sd["backbone.body.1.conv2.pw.weight"], _t(m.w["dense1/conv2/pointwise_filter"]
                                                                         .transpose(3, 2, 0, 1)))
    torch.testing.assert_close(sd["backbone.body.0.conv0.weight"],
                               _t(m.w["dense0/conv0/filters"].transpose(3, 2, 0, 1)))
    p = expr.predict(np.zeros((112, 112, 3), np.uint8))[0]
    assert len(p.scores) == 7 and abs(float(p.scores.sum()) - 1) < 1e-5
