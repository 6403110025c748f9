"""New classes without forgetting (--keep-classes): the data over old + new classes, rows by
name, the label loss blind to the old-only classes, the distillation loss by hand, and a
training run (the COCO detector from a fixture, never the network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, write_image

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


def _imagenet_fixture(tmp_path, monkeypatch):
    """mobilenet_v2.imagenet1k as a random-weight fixture file (never the network)."""
    import dataclasses
    import hashlib

    from torchvision import models as tvm

    from cvapps.weights import all_weights

    w = get_spec("mobilenet_v2.imagenet1k")
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    f = tmp_path / "mv2.pth"
    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), f)
    monkeypatch.setitem(all_weights(), w.name, dataclasses.replace(
        w, sha256=hashlib.sha256(f.read_bytes()).hexdigest(), sha256_prefix=""))
    cvapps.pull_weights(w.name, str(f))
    return w


def test_classify_keep_classes_data_adds_new_classes_and_negatives(tmp_path):
    """ImageNet's 1000 + the data's new classes (an ImageNet name is that class), the negatives
    appended with target -1 (labelled images left out of them); without negatives the
    classifier refuses, saying why; a detector refuses negatives."""
    from cvapps.data.classification import ClassificationData
    from cvapps.options import DataOptions

    w = get_spec("mobilenet_v2.imagenet1k")
    names = w.label_names()
    for i in range(3):
        write_image(tmp_path / "neg" / f"n{i}.png", np.zeros((8, 8, 3), np.uint8))
    data = ClassificationData([tmp_path / "neg" / "n0.png", Path("b.jpg")], [0, 1], ["kayak", names[1].upper()],
                              "multiclass", "t")
    spec = cvapps.tasks.TASKS.get("classify")
    train, val, teach = spec.keep_classes(w, data, None, DataOptions(negatives=str(tmp_path / "neg")))
    assert train.labels == names + ["kayak"] and teach == list(range(1000)) and val is None
    assert train.targets == [1000, 1, -1, -1]  # n0 is labelled: not a negative too
    assert train.paths[2:] == [tmp_path / "neg" / "n1.png", tmp_path / "neg" / "n2.png"]
    with pytest.raises(cvapps.ConfigError, match="needs --negatives"):
        spec.keep_classes(w, data, None, DataOptions())
    with pytest.raises(cvapps.ConfigError, match="--negatives is for classifiers"):
        cvapps.tasks.TASKS.get("detect").keep_classes(get_spec(NAME), _data(["kayak"]), None,
                                                      DataOptions(negatives=str(tmp_path / "neg")))


def test_keep_classes_loss_by_hand():
    """Labelled row: CE over all classes + T² KL over the old columns; negative row: T² KL with
    the teacher's distribution over every column (0 on the new one), which pushes the new
    logit down."""
    from cvapps.tasks.classification.loss import keep_classes_loss

    logits = torch.tensor([[1.0, 0.0, 2.0], [0.5, -0.5, 1.5]], requires_grad=True)  # old, old, new
    teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = keep_classes_loss(logits, teacher, torch.tensor([2, -1]), torch.tensor([0, 1]), temperature=2.0)
    lg = logits.detach()
    ce = -(lg[0, 2] - torch.logsumexp(lg[0], 0))
    q0, q1 = torch.softmax(teacher[0] / 2, 0), torch.softmax(teacher[1] / 2, 0)
    kl0 = (q0 * (q0.log() - torch.log_softmax(lg[0, :2] / 2, 0))).sum()
    kl1 = (q1 * (q1.log() - torch.log_softmax(lg[1] / 2, 0)[:2])).sum()
    assert torch.isclose(out["ce"], ce) and torch.isclose(out["kd"], (kl0 + kl1) * 4)  # each its own rows' mean
    assert torch.isclose(out["loss"], ce + (kl0 + kl1) * 4)
    out["loss"].backward()
    assert logits.grad[1, 2] > 0  # the negative row's new-class logit is pushed down


def test_negatives_teach_the_new_class_where_it_ends():
    """The failure measured with labels alone, on a toy feature space: a linear head taught a
    new class from its images only calls most unrelated inputs by it; with negatives it calls
    almost none, and keeps the teacher's answer on them."""
    from cvapps.tasks.classification.loss import keep_classes_loss

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    teacher = torch.nn.Linear(8, 4)
    new_x = torch.randn(64, 8, generator=g) * 0.5 + 2.0  # images of the new class: one cluster
    other = torch.randn(256, 8, generator=g) * 1.5  # unrelated images
    train_neg, test_neg = other[:128], other[128:]

    def fit(negatives: bool) -> torch.nn.Linear:
        torch.manual_seed(0)
        head = torch.nn.Linear(8, 5)
        with torch.no_grad():
            head.weight[:4], head.bias[:4] = teacher.weight, teacher.bias  # old rows start as the teacher's
        x = torch.cat([new_x, train_neg]) if negatives else new_x
        y = torch.cat([torch.full((64,), 4), torch.full((128,), -1)]) if negatives else torch.full((64,), 4)
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(200):
            opt.zero_grad()
            with torch.no_grad():
                old = teacher(x)
            keep_classes_loss(head(x), old, y, torch.arange(4))["loss"].backward()
            opt.step()
        return head

    plain, kept = fit(False), fit(True)
    with torch.no_grad():
        called_new = lambda h: float((h(test_neg).argmax(1) == 4).float().mean())  # noqa: E731
        assert called_new(plain) > 0.3 and called_new(kept) < 0.05
        assert float((kept(new_x).argmax(1) == 4).float().mean()) > 0.9
        assert float((kept(test_neg).argmax(1) == teacher(test_neg).argmax(1)).float().mean()) > 0.8


def test_classify_keep_classes_trains_old_plus_new(tmp_path, monkeypatch, capsys):
    """train classify --keep-classes --negatives: the saved model's labels are ImageNet's + the
    new class, and the teacher is not inside it; without --negatives the CLI says what is
    missing in one line."""
    w = _imagenet_fixture(tmp_path, monkeypatch)
    rng = np.random.default_rng(0)
    for c in ("kayak", "canoe"):  # canoe is an ImageNet name: it reuses that row
        for i in range(4):
            write_image(tmp_path / "d" / "train" / c / f"{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            write_image(tmp_path / "d" / "val" / c / f"{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    for i in range(4):
        write_image(tmp_path / "neg" / f"{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    r = cvapps.train("classify", str(tmp_path / "d"), weights=w.name, keep_classes=True,
                     negatives=str(tmp_path / "neg"),
                     epochs=1, batch_size=4, img_size=64, out=str(tmp_path / "run"))
    m = cvapps.load(str(tmp_path / "run" / "last.safetensors"))
    rec = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m.labels == w.label_names() + ["kayak"] and m.teacher is None and len(rec) == 1 and "val" in r
    with pytest.raises(cvapps.ConfigError, match="--negatives is for --keep-classes"):
        cvapps.train("classify", str(tmp_path / "d"), weights=w.name, negatives=str(tmp_path / "neg"), epochs=1,
                     out=str(tmp_path / "run2"))
    code, _, err = run_cli(capsys, "train", "classify", "--data", tmp_path / "d", "--weights", w.name,
                           "--keep-classes", "--out", tmp_path / "run3")
    assert code != 0 and "needs --negatives" in err and not (tmp_path / "run3" / "last.safetensors").exists()


def test_classifiers_start_known_rows_from_imagenet(tmp_path, monkeypatch):
    """Fine-tuning an ImageNet classifier on classes with ImageNet names starts those output
    rows from ImageNet's (in place when the label lists agree there: ImageNet repeats a few
    names), others fresh (ImageNet weights from a fixture file, never the network)."""
    w = _imagenet_fixture(tmp_path, monkeypatch)
    names = w.label_names()
    src = cvapps.load(w.name).state_dict()["head.fc.weight"]
    full = cvapps.create_model("classify", weights=w.name, labels=names + ["kayak"]).state_dict()["head.fc.weight"]
    assert full.shape[0] == 1001 and torch.equal(full[:1000], src)  # duplicate names (crane) kept in place
    few = cvapps.create_model("classify", weights=w.name, labels=["kayak", "Goldfish"]).state_dict()["head.fc.weight"]
    assert torch.equal(few[1], src[names.index("goldfish")]) and not torch.equal(few[0], src[0])
