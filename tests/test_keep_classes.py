"""New classes without forgetting (--keep-classes): the data over old + new classes, rows by
name, the label loss blind to the old-only classes, the distillation loss by hand, and a
training run (the COCO detector from a fixture, never the network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image

import cvapps
from cvapps.data.detection import DetectionData, DetRecord
from cvapps.tasks.detection.loss import detection_terms, distill_columns
from cvapps.weights import get_spec

NAME = "ssd_mobilenet_v2.coco"


def _data(labels: list[str]) -> DetectionData:
    rec = DetRecord(Path("a.jpg"), 64, 48, np.array([[4.0, 4, 30, 30], [10, 10, 40, 40]], np.float32),
                    np.array([0, 1]), np.zeros(2, bool), 1)
    return DetectionData([rec], labels, list(range(1, len(labels) + 1)), "test")


def test_keep_classes_data_is_over_the_old_and_new_classes(coco_detector):
    spec = coco_detector.spec
    train, val, teach = spec.keep_classes(get_spec(NAME), _data(["aeroplane", "kayak"]), None)
    old = coco_detector.labels
    assert train.labels == old + ["kayak"] and val is None
    assert train.category_ids[:80] == coco_detector.config["category_ids"] and train.category_ids[80] == 91
    assert train.records[0].labels.tolist() == [old.index("airplane"), 80]  # a clash reuses the old row
    assert teach == [i for i in range(80) if i != old.index("airplane")]
    with pytest.raises(cvapps.ConfigError, match="needs --weights of a pretrained detector"):
        spec.keep_classes(get_spec("mobilenet_v2.imagenet1k"), _data(["kayak"]), None)


def test_old_rows_start_identical_to_the_teachers(coco_detector):
    labels = coco_detector.labels + ["kayak"]
    m = cvapps.create_model("detect", weights=NAME, labels=labels)
    src, own = coco_detector.state_dict(), m.state_dict()
    for level, a in enumerate(m.head.A):
        key = f"head.cls.{level}.0.weight"
        ks, ko = src[key].shape[0] // a, own[key].shape[0] // a
        assert ko == ks + 1
        for anchor in range(a):
            torch.testing.assert_close(own[key][anchor * ko: anchor * ko + ks], src[key][anchor * ks: (anchor + 1) * ks])


def test_the_label_loss_ignores_old_columns_and_distillation_by_hand(coco_detector):
    torch.manual_seed(0)
    raw = coco_detector(torch.rand(1, 3, 300, 300) * 2 - 1)
    t = [{"boxes": torch.tensor([[20.0, 20, 120, 140]]), "labels": torch.tensor([3]), "iscrowd": torch.zeros(1)}]
    h, cols = coco_detector.head.h, torch.tensor([0, 1, 2])
    base, pos = detection_terms(raw.cls, raw.deltas, raw.anchors, t, h, ignore_columns=cols)
    bumped = raw.cls.clone()
    bumped[..., 1:4] += 5.0  # foreground columns 0..2 (column 0 of the output is the background)
    again, _ = detection_terms(bumped, raw.deltas, raw.anchors, t, h, ignore_columns=cols)
    assert torch.equal(base["cls"], again["cls"]) and pos.any()
    full, _ = detection_terms(bumped, raw.deltas, raw.anchors, t, h)
    assert full["cls"] > base["cls"]  # without ignoring them, those columns would be pushed down
    # distillation: zero when the student agrees, the Bernoulli KL by hand otherwise
    s = torch.tensor([[[0.0, 2.0], [1.0, -1.0]]])  # (B=1, N=2, K=2) logits
    d = torch.zeros(1, 2, 4)
    same = distill_columns(s, d, s.clone(), d, torch.tensor([0, 1]), torch.zeros(1, 2, dtype=torch.bool))
    assert float(same["kd_cls"]) == pytest.approx(0.0, abs=1e-6) and float(same["kd_box"]) == 0.0
    tl = torch.tensor([[[0.0, 2.0], [3.0, -1.0]]])
    td = torch.tensor([[[0.0] * 4, [0.5, 0, 0, 0]]])
    got = distill_columns(s, d, tl, td, torch.tensor([0]), torch.zeros(1, 2, dtype=torch.bool))
    p, q = torch.sigmoid(torch.tensor(3.0)), torch.sigmoid(torch.tensor(1.0))  # teacher, student at anchor 1
    kl = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    confident = 1  # only anchor 1's teacher score (0.95) exceeds 0.5 in column 0
    assert float(got["kd_cls"]) == pytest.approx(float(kl) / confident, rel=1e-5)
    assert float(got["kd_box"]) == pytest.approx((0.5 - (1 / 9) / 2) / confident, rel=1e-5)  # smooth L1: |x| - beta/2


def test_train_keep_classes_adds_the_datas_classes(tmp_path, coco_detector):
    rng = np.random.default_rng(11)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "kayak"}, {"id": 2, "name": "cat"}]}
    for i in range(4):
        write_image(tmp_path / f"im{i}.png", rng.integers(0, 255, (80, 100, 3), np.uint8))
        coco["images"].append({"id": i + 1, "file_name": f"im{i}.png", "width": 100, "height": 80})
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [10, 10, 50, 40],
                                    "area": 2000, "iscrowd": 0})
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    r = cvapps.train("detect", str(tmp_path / "ann.json"), images=str(tmp_path), weights=NAME, keep_classes=True,
                     epochs=1, batch_size=2, out=str(tmp_path / "run"))
    m = cvapps.load(tmp_path / "run" / "last.safetensors")
    assert m.labels == coco_detector.labels + ["kayak"] and r["epochs_run"] == 1
    assert "_lwf" not in m.__dict__ and set(m.state_dict()) == set(coco_detector.state_dict())  # no teacher inside
    with pytest.raises(cvapps.ConfigError, match="keep-classes"):
        cvapps.train("detect", str(tmp_path / "ann.json"), images=str(tmp_path), weights="mobilenet_v2.imagenet1k",
                     keep_classes=True, epochs=1, out=str(tmp_path / "run2"))


def test_classifiers_refuse_keep_classes_but_start_known_rows_from_imagenet(tmp_path, monkeypatch):
    """--keep-classes is refused for classification (with the measured reason); fine-tuning an
    ImageNet classifier on classes with ImageNet names starts those output rows from ImageNet's
    (in place when the label lists agree there: ImageNet repeats a few names), others fresh
    (ImageNet weights from a fixture file, never the network)."""
    import dataclasses
    import hashlib

    from torchvision import models as tvm

    from cvapps.data.classification import ClassificationData
    from cvapps.weights import all_weights

    w = get_spec("mobilenet_v2.imagenet1k")
    data = ClassificationData([Path("a.jpg")], [0], ["kayak"], "multiclass", "t")
    with pytest.raises(cvapps.ConfigError, match="for detection"):
        cvapps.tasks.TASKS.get("classify").keep_classes(w, data, None)
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    f = tmp_path / "mv2.pth"
    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), f)
    monkeypatch.setitem(all_weights(), w.name, dataclasses.replace(
        w, sha256=hashlib.sha256(f.read_bytes()).hexdigest(), sha256_prefix=""))
    cvapps.pull_weights(w.name, str(f))
    names = w.label_names()
    src = cvapps.load(w.name).state_dict()["head.fc.weight"]
    full = cvapps.create_model("classify", weights=w.name, labels=names + ["kayak"]).state_dict()["head.fc.weight"]
    assert full.shape[0] == 1001 and torch.equal(full[:1000], src)  # duplicate names (crane) kept in place
    few = cvapps.create_model("classify", weights=w.name, labels=["kayak", "Goldfish"]).state_dict()["head.fc.weight"]
    assert torch.equal(few[1], src[names.index("goldfish")]) and not torch.equal(few[0], src[0])
