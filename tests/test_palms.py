"""MediaPipe's palm detector (palm.mediapipe) and the hand pipeline on it: the mapping in the
file's execution order, the decoding and weighted NMS by hand, the hand crops MediaPipe cuts
from palms, and hand21 on the palms (rotated crops, handedness, boxes from the points)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import cvapps
from cvapps.convert import MAPPINGS
from cvapps.errors import ConfigError, WeightsError
from cvapps.tasks.keypoints.postprocess import Keypoints
from cvapps.tasks.keypoints.topdown import DetectorBoxes
from cvapps.tasks.pose.palm import PalmRaw, decode_palms, hand_frames, weighted_nms
from cvapps.weights import get_spec


def palm_model():
    torch.manual_seed(0)
    return cvapps.tasks.model_class("pose").from_config(get_spec("palm.mediapipe").config).eval()


@torch.no_grad()
def test_the_palm_mapping_follows_the_files_execution_order():
    """Weights keyed as the TFLite reader keys them — per op type, in the order the ops run
    (recorded with hooks on a forward pass, not taken from the mapping) — map back onto a
    fresh model that gives the same outputs; a missing op is a clear error."""
    ref = palm_model()
    for m in ref.modules():  # non-trivial slopes, so a swapped PReLU would show
        if isinstance(m, torch.nn.PReLU):
            m.weight.uniform_(-0.5, 0.5)
    order: dict[str, list] = {"CONV_2D": [], "DEPTHWISE_CONV_2D": [], "PRELU": []}
    hooks = []
    for m in ref.modules():
        if isinstance(m, torch.nn.Conv2d):
            op = "DEPTHWISE_CONV_2D" if m.groups > 1 else "CONV_2D"
            hooks.append(m.register_forward_hook(lambda mod, i, o, op=op: order[op].append(mod)))
        elif isinstance(m, torch.nn.PReLU):
            hooks.append(m.register_forward_hook(lambda mod, i, o: order["PRELU"].append(mod)))
    x = torch.rand(1, 3, 192, 192)
    a = ref(x)
    for h in hooks:
        h.remove()
    c = {}
    for op, mods in order.items():
        for i, m in enumerate(mods):
            c[f"{op}.{i}.weight"] = m.weight.numpy().copy()
            if op != "PRELU":
                c[f"{op}.{i}.bias"] = m.bias.numpy().copy()
    assert a.regress.shape == (1, 2016, 18) and a.logits.shape == (1, 2016)
    fresh = cvapps.tasks.model_class("pose").from_config(ref.config)
    fresh.load_state_dict(MAPPINGS.get("mediapipe_palm")(c, fresh.state_dict(), fresh.config), strict=True)
    b = fresh.eval()(x)
    torch.testing.assert_close(b.regress, a.regress)
    torch.testing.assert_close(b.logits, a.logits)
    del c[f"PRELU.{len(order['PRELU']) - 1}.weight"]
    with pytest.raises(WeightsError, match="PRELU ops"):
        MAPPINGS.get("mediapipe_palm")(c, fresh.state_dict(), fresh.config)


def test_palms_decode_and_merge_as_mediapipe_does():
    """Offsets are input pixels from the anchor's cell centre (box_scale = input size); the
    weighted NMS merges an overlapping pair into their score-weighted mean, scored by the
    better, and keeps a separate palm apart."""
    anchors = torch.tensor([[10.0, 10.0], [12.0, 10.0], [80.0, 80.0]])
    reg = torch.zeros(1, 3, 6)
    reg[0, :, 2:4] = 10.0  # 10 x 10 boxes
    reg[0, 1, 0] = 1.0  # second box 1 px further right
    reg[0, :, 4:6] = torch.tensor([[0.0, 3.0], [0.0, 3.0], [-2.0, 0.0]])  # one point each
    raw = PalmRaw(reg, torch.tensor([[math.log(3), 0.0, 2.0]]), anchors)  # scores 0.75, 0.5, 0.88
    boxes, scores, points = decode_palms(raw, 1.0)
    torch.testing.assert_close(boxes[0, 1], torch.tensor([8.0, 5.0, 18.0, 15.0]))
    torch.testing.assert_close(points[0, 2, 0], torch.tensor([78.0, 80.0]))
    torch.testing.assert_close(scores[0, 0], torch.tensor(0.75))
    b, s, p = weighted_nms(boxes[0], scores[0], points[0], iou=0.3, max_det=6)
    assert len(s) == 2 and torch.allclose(s, torch.sigmoid(torch.tensor([2.0, math.log(3)])))
    # the pair: boxes 5..15 and 8..18 in x (IoU 7/13), weights 0.75 and 0.5 -> x0 = (0.75*5 + 0.5*8) / 1.25
    torch.testing.assert_close(b[1], torch.tensor([6.2, 5.0, 16.2, 15.0]))
    torch.testing.assert_close(p[1, 0], torch.tensor([(0.75 * 10 + 0.5 * 12) / 1.25, 13.0]))
    assert len(weighted_nms(boxes[0], scores[0], points[0], 0.3, max_det=1)[1]) == 1


def test_hand_crops_from_palms_follow_mediapipe():
    """An upright palm (middle MCP straight above the wrist): roll 0, the square moved half a
    palm height up, 1.3 palm sides; a palm turned a quarter clockwise (fingers to the right):
    roll pi/2, moved right. Figures of MediaPipe's own run: palm box (45.9, 280.4, 96.1, 330.6),
    wrist (58.96, 329.78), middle MCP (65.91, 295.70) -> rotation 0.2014, centre (76.03, 280.87)."""
    pts = np.zeros((1, 7, 2))
    pts[0, 0], pts[0, 2] = [50, 80], [50, 40]
    box, roll = hand_frames(np.array([[30.0, 40, 70, 80]]), pts)
    assert np.allclose(roll, 0) and np.allclose(box, [[24, 14, 76, 66]])  # centre (50, 40), side 52
    pts[0, 0], pts[0, 2] = [30, 60], [70, 60]
    box, roll = hand_frames(np.array([[30.0, 40, 70, 80]]), pts)
    assert np.allclose(roll, np.pi / 2) and np.allclose((box[0, :2] + box[0, 2:]) / 2, [70, 60])
    pts[0, 0], pts[0, 2] = [58.96, 329.78], [65.91, 295.70]
    box, roll = hand_frames(np.array([[45.89, 280.36, 96.12, 330.58]]), pts)
    assert abs(roll[0] - 0.2014) < 1e-3 and np.allclose((box[0, :2] + box[0, 2:]) / 2, [76.03, 280.87], atol=0.02)
    assert hand_frames(np.zeros((0, 4)), np.zeros((0, 7, 2)))[0].shape == (0, 4)


@torch.no_grad()
def test_the_palm_detector_maps_its_input_back_to_the_image():
    """The whole image is fitted centred into the 192-pixel input (MediaPipe's letterbox): a
    palm decoded at the input's centre lands at the image's centre; boxes / --detector are
    refused; training says what to fine-tune instead."""
    m = palm_model()
    img = np.zeros((50, 100, 3), np.uint8)
    x, meta = m.preprocessor().prepare(img)
    assert x.shape == (3, 192, 192) and x[:, :40].max() == 0  # centred: the top rows are border
    n = m.forward(torch.zeros(1, 3, 192, 192)).anchors.shape[0]
    reg = torch.zeros(1, n, 18)
    logits = torch.full((1, n), -20.0)
    anchors = torch.zeros(n, 2)
    anchors[0] = torch.tensor([96.0, 96.0])
    reg[0, 0, 2:4] = 19.2  # 10 image pixels
    logits[0, 0] = 3.0
    (p,) = m.postprocess(PalmRaw(reg, logits, anchors), [meta])
    assert len(p) == 1 and np.allclose(p.boxes, [[45, 20, 55, 30]], atol=1e-6) and p.label == "hand"
    assert np.allclose(p.points[0], [50, 25]) and p.points.shape == (1, 7, 2)
    with pytest.raises(ConfigError, match="finds the palms itself"):
        m.predict(img, boxes=[np.zeros((1, 4))])
    with pytest.raises(ConfigError, match="inference-only"):
        m.loss(None, [])


class FixedPalms:
    """The palm detector's predict answering one given palm (its network is random here)."""

    def __init__(self, model, palm: Keypoints):
        self.model, self.palm = model, palm

    def __call__(self, image, **options):
        return [self.palm]


@torch.no_grad()
def test_the_hand_model_crops_each_palm_upright_and_names_the_hand(monkeypatch):
    """hand21's default box source is the palm detector: each palm becomes MediaPipe's hand
    crop (rotated by the palm's roll), the points come back in image pixels, each hand has a
    side (left / right, the handedness head's probability) and a box around its points."""
    torch.manual_seed(0)
    config = {**get_spec("hand21.mediapipe").config, "min_presence": None}  # random weights: any presence
    hand = cvapps.tasks.model_class("pose").from_config(config).eval()
    palm = palm_model()
    pts = np.zeros((1, 7, 2))
    pts[0, 0], pts[0, 2] = [30, 60], [70, 60]  # fingers to the right: a quarter turn
    found = Keypoints(pts, np.ones((1, 7)), np.array([[30.0, 40, 70, 80]]), np.array([0.9]),
                      list(palm.schema.keypoints), palm.schema.skeleton, "hand")
    monkeypatch.setattr(palm, "predict", FixedPalms(palm, found))
    loads = []

    def load(name, task):
        loads.append(name)
        return palm

    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
    pre, _ = hand.spec.predict_setup(hand, load, [img])
    assert loads == ["palm.mediapipe"] and isinstance(pre.boxes, DetectorBoxes) and pre.align
    x, meta = pre.prepare(img)
    inv = meta["inv"][0]
    assert np.isclose(math.atan2(inv[1, 0], inv[0, 0]), np.pi / 2)  # crop "up" is the image's right
    (p,) = cvapps.tasks.batch.predict_inputs(hand, [img], pre=pre)
    assert p.points.shape == (1, 21, 2) and p.label == "hand"
    logit = hand.head["main"](hand.backbone(pre.normalize(x).float())[-1])[2]
    right = float(torch.sigmoid(logit)[0])
    assert p.classes[0] == ("right" if right > 0.5 else "left") and np.isclose(p.class_scores[0], max(right, 1 - right))
    assert np.allclose(p.boxes[0], [*p.points[0].min(0), *p.points[0].max(0)])
    row = p.to_dict()[0]
    assert row["class"] == p.classes[0] and row["class_score"] == round(float(p.class_scores[0]), 4)
    assert p.take(np.array([False])).classes.shape == (0,)
    hand.config["min_presence"] = float(p.scores[0].mean()) + 1e-3  # a presence threshold drops the hand
    assert len(cvapps.tasks.batch.predict_inputs(hand, [img], pre=pre)[0]) == 0


def test_a_hand_model_reads_each_input_as_one_crop_with_whole_image():
    """--whole-image: each input is one hand crop (no palm detector), 21 points inside it."""
    torch.manual_seed(0)
    config = {**get_spec("hand21.mediapipe").config, "min_presence": None}  # random weights: any presence
    m = cvapps.tasks.model_class("pose").from_config(config).eval()
    crop = np.random.default_rng(0).integers(0, 255, (100, 80, 3), np.uint8)
    pre, _ = m.spec.predict_setup(m, lambda n, t: pytest.fail("no detector"), [crop], whole_image=True)
    (p,) = cvapps.tasks.batch.predict_inputs(m, [crop], pre=pre)
    assert p.points.shape == (1, 21, 2)
    assert np.allclose(p.scores[0], p.scores[0, 0]) and 0 <= p.scores[0, 0] <= 1


def test_hands_export_predict_on_the_cli_and_fine_tune(tmp_path, capsys, hand_model, palm_detector):
    """`predict pose --model hand21.mediapipe` runs the palm detector then the hand model (ONNX
    Runtime by default: the exported graphs give PyTorch's points and sides); the hand model
    fine-tunes like any keypoint model (a trained step lowers the loss)."""
    pytest.importorskip("onnxruntime")
    from conftest import run_cli, train_steps, write_image

    rng = np.random.default_rng(3)
    img = write_image(tmp_path / "hands.png", rng.integers(0, 255, (160, 200, 3), np.uint8))
    sure = cvapps.load("hand21.mediapipe")
    with torch.no_grad():
        sure.head["main"].presence.bias += 20.0  # random weights: make every crop a hand
    model = cvapps.save(sure, tmp_path / "hand.safetensors")
    runs = {}
    for backend in ("onnxruntime", "torch"):
        out = tmp_path / f"{backend}.jsonl"
        code, _, err = run_cli(capsys, "predict", "pose", img, "--model", model, "--backend",
                               "auto" if backend == "onnxruntime" else "torch", "--save-json", out)
        assert code == 0, err
        runs[backend] = json.loads(out.read_text())["predictions"]
    assert len(runs["torch"]) == len(runs["onnxruntime"]) >= 1  # random palms: some, and the same
    for a, b in zip(runs["torch"], runs["onnxruntime"]):
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=0.05)
        assert a["class"] == b["class"] in ("left", "right")
    m = cvapps.create_model("pose", weights="hand21.mediapipe")
    torch.manual_seed(0)
    x, gt = torch.rand(2, 3, 224, 224), torch.rand(2, 21, 2) * 150 + 30
    losses = train_steps(m, x, [{"keypoints": g, "weights": torch.ones(21)} for g in gt], 1e-3)
    assert losses[-1] < losses[0]


def test_the_hand_model_fine_tunes_on_21_point_hand_labels(tmp_path, capsys, hand_model):
    """`cvapps train pose --weights hand21.mediapipe` on COCO keypoints whose category names
    the 21 hand points: the hand schema and heads are kept (handedness included), it trains,
    and the fine-tuned file predicts hands with sides."""
    from conftest import run_cli, write_coco_keypoints

    data = write_coco_keypoints(tmp_path, list(hand_model.schema.keypoints), 4)
    code, _, err = run_cli(capsys, "train", "pose", "--data", data, "--images", tmp_path,
                           "--weights", "hand21.mediapipe", "--epochs", "2", "--batch-size", "2", "--out",
                           tmp_path / "run")
    assert code == 0, err
    tuned = cvapps.load(tmp_path / "run" / "last.safetensors")
    assert tuned.config["head"]["kind"] == "mediapipe_hand" and tuned.config["instance_classes"] == ["left", "right"]
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in recs if "train_loss" in r)
    (p,) = tuned.predict(str(tmp_path / "p0.png"), boxes=[np.array([[10.0, 10, 70, 70]])])
    assert p.points.shape[1:] == (21, 2)
