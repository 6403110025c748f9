"""Detection distillation: soft class targets in the loss by hand, the teacher's detections
mapped to original pixels (low scores ignored), student classes by name, and a student of
another input size and loss distilled from a trained teacher without labels reproducing its
detections."""

import copy
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torchvision.ops import box_iou, sigmoid_focal_loss

import cvapps
from cvapps.tasks.detection.distill import pseudo_records, student_classes
from cvapps.tasks.detection.loss import detection_terms

from conftest import write_image
from detdata import make_detection_set, repeated_set

QUIET = Console(file=io.StringIO())


def _head(cls_loss: str) -> SimpleNamespace:
    return SimpleNamespace(cls_loss=cls_loss, box_loss="smooth_l1", neg_pos_ratio=3, match_low=0.4, match_high=0.5,
                           background=True)


@pytest.mark.parametrize("cls_loss", ["ce", "focal"])
def test_soft_class_targets_equal_the_hand_computed_loss(cls_loss):
    """Anchor 0 is the box (a positive), anchor 1 lies elsewhere (a negative). With the
    teacher's probabilities (0.2, 0.8) the positive's class target is them — ce: the soft
    cross-entropy, focal: the per-class scores — instead of the one-hot label."""
    anchors = torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]])
    logits = torch.tensor([[[0.3, -1.0, 0.7], [1.5, 0.2, -0.4]]])  # (1, 2 anchors, background + 2 classes)
    deltas = torch.zeros(1, 2, 4)
    hard = {"boxes": anchors[:1].clone(), "labels": torch.tensor([1]), "iscrowd": torch.tensor([False])}
    soft = {**hard, "soft": torch.tensor([[0.2, 0.8]])}
    got_hard = float(detection_terms(logits, deltas, anchors, [hard], _head(cls_loss))[0]["cls"])
    got_soft = float(detection_terms(logits, deltas, anchors, [soft], _head(cls_loss))[0]["cls"])
    if cls_loss == "ce":
        lsm = logits[0].log_softmax(-1)
        negative = -lsm[1, 0]  # the one hard negative: anchor 1 as background
        assert got_hard == pytest.approx(float(-lsm[0, 2] + negative), rel=1e-6)
        assert got_soft == pytest.approx(float(-(0.2 * lsm[0, 1] + 0.8 * lsm[0, 2]) + negative), rel=1e-6)
    else:
        fg = logits[0, :, 1:]
        one_hot = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
        teacher = torch.tensor([[0.2, 0.8], [0.0, 0.0]])
        assert got_hard == pytest.approx(float(sigmoid_focal_loss(fg, one_hot, reduction="sum")), rel=1e-6)
        assert got_soft == pytest.approx(float(sigmoid_focal_loss(fg, teacher, reduction="sum")), rel=1e-6)
    assert got_soft != pytest.approx(got_hard)


def test_teacher_detections_become_boxes_in_original_pixels(tmp_path):
    """A 300x300 stretch teacher on a 600x150 image: x / 0.5, y / 2; a detection under the
    threshold becomes an ignored (crowd) box; one clipped to nothing is dropped; NaN rows pad."""
    path = write_image(tmp_path / "wide.png", np.zeros((150, 600, 3), np.uint8))
    teacher = SimpleNamespace(config={"preprocessing": {"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": 300,
                                                        "resize": "stretch"}})
    nan = float("nan")
    rows = torch.tensor([[[30, 60, 150, 120, 0.9, 1, 0.1, 0.9],
                          [0, 0, 10, 10, 0.2, 0, 0.6, 0.3],
                          [300, 10, 310, 20, 0.8, 0, 0.7, 0.1],  # x1 = 600: outside the image
                          [nan] * 8]])
    (r,) = pseudo_records(teacher, [path], rows, conf=0.5)
    np.testing.assert_allclose(r.boxes, [[60, 30, 300, 60], [0, 0, 20, 5]])
    assert r.labels.tolist() == [1, 0] and r.iscrowd.tolist() == [False, True] and (r.width, r.height) == (600, 150)
    np.testing.assert_allclose(r.soft, [[0.1, 0.9], [0.6, 0.3]], rtol=1e-6)


def test_student_classes_are_the_teachers_by_name():
    teacher = SimpleNamespace(labels=["person", "airplane", "tv"], config={"category_ids": [1, 5, 72]})
    assert student_classes(teacher, None) == (["person", "airplane", "tv"], [1, 5, 72], [0, 1, 2])
    assert student_classes(teacher, "tvmonitor,aeroplane") == (["tvmonitor", "aeroplane"], [1, 2], [2, 1])
    with pytest.raises(cvapps.ConfigError, match=r"\['kayak'\] are not classes of the teacher"):
        student_classes(teacher, ["person", "kayak"])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd")
    coco = make_detection_set(root)
    ann, images = repeated_set(root, coco)  # the 4 images 6x per epoch
    cvapps.train("detect", str(ann), images=str(images), out=str(root / "teacher"),
                 backbone="mobilenet_v2", img_size=128, epochs=20, batch_size=4, lr=3e-3, warmup_epochs=0.5,
                 augment=False, console=QUIET)
    return root


def test_student_distilled_without_labels_reproduces_the_teacher(teacher, tmp_path):
    """The student sees the images only (the pool lists each twice: it is distilled once), for 90
    epochs, at another input size (160); it starts from the teacher. On the same images it finds every box the teacher finds at >= 0.5, with the
    same class, at IoU >= 0.5."""
    images = sorted(str(p) for p in (teacher / "images").glob("*.png"))
    (tmp_path / "pool.txt").write_text("".join(f"{p}\n" for p in images * 2))
    t_file = teacher / "teacher" / "best.safetensors"
    r = cvapps.distill("detect", str(t_file), [str(tmp_path / "pool.txt")], img_size=160,
                       val=str(teacher / "coco.json"), val_images=str(teacher / "images"), out=str(tmp_path / "s"),
                       epochs=90, batch_size=4, lr=3e-3, warmup_epochs=3, augment=False, conf=0.5, console=QUIET)
    t_model, student = cvapps.load(t_file), cvapps.load(tmp_path / "s" / "best.safetensors")
    assert student.config["preprocessing"]["input_size"] == 160
    assert student.labels == t_model.labels and r["teacher_val"]["AP50"] >= 0.9
    t_dets, s_dets = t_model.predict(images, conf=0.5), student.predict(images, conf=0.3)
    assert sum(len(d) for d in t_dets) >= 4
    for t, s in zip(t_dets, s_dets):
        for box, label in zip(t.boxes, t.labels):
            same = s.labels == label
            assert same.any(), (t, s)
            assert float(box_iou(torch.from_numpy(box[None]), torch.from_numpy(s.boxes[same])).max()) >= 0.5, (t, s)
    assert r["val"]["AP50"] >= 0.8, r["val"]  # against the true boxes too (measured 0.87)


def test_a_student_of_the_teachers_backbone_starts_from_its_weights(teacher, tmp_path):
    """init auto: same backbone -> the teacher's backbone tensors and normalisation; init
    weights: a fresh backbone; an SSD-less teacher or an unknown class is refused."""
    images = sorted(str(p) for p in (teacher / "images").glob("*.png"))
    t_model = cvapps.load(teacher / "teacher" / "best.safetensors")
    cvapps.distill("detect", t_model, images, out=str(tmp_path / "a"), epochs=1, freeze="backbone", batch_size=4, console=QUIET)
    a = cvapps.load(tmp_path / "a" / "last.safetensors")
    ta = t_model.state_dict()
    assert all(torch.equal(v, ta[k]) for k, v in a.state_dict().items() if k.startswith("backbone.") and "running" not in k)
    assert a.config["preprocessing"]["mean"] == t_model.config["preprocessing"]["mean"]
    cvapps.distill("detect", t_model, images, out=str(tmp_path / "b"), epochs=1, freeze="backbone", batch_size=4, init="weights",
                   console=QUIET)
    b = cvapps.load(tmp_path / "b" / "last.safetensors")
    assert not torch.equal(b.state_dict()["backbone.body.0.0.weight"], ta["backbone.body.0.0.weight"])
    with pytest.raises(cvapps.ConfigError, match="not classes of the teacher"):
        cvapps.distill("detect", t_model, images, classes="red,green", out=str(tmp_path / "c"), console=QUIET)
    with pytest.raises(cvapps.ConfigError, match="has its backbone .mobilenet_v2. and weights"):
        cvapps.distill("detect", t_model, images, backbone="resnet18", init="teacher", out=str(tmp_path / "d"),
                       console=QUIET)


def test_a_full_conv_factorised_into_a_separable_block():
    """Per input channel the best rank-1 (outputs x taps) factor: a kernel that is rank-1 per
    channel comes back exactly through depthwise -> affine -> ReLU6 -> 1x1 on [0, 6] inputs;
    any other is the block of its rank-1 approximation, with the relative error reported."""
    from cvapps.ops.factorize import separable_from_full

    g = torch.Generator().manual_seed(0)
    p, d = torch.randn(5, 3, generator=g), torch.randn(3, 3, 3, generator=g)
    x = torch.rand(2, 3, 8, 8, generator=g) * 6

    def block(f):
        y = F.conv2d(x, f["depthwise"], groups=3, padding=1) * f["scale"][:, None, None] + f["shift"][:, None, None]
        return F.conv2d(y.clamp(0, 6), f["pointwise"], f["bias"])

    rank1 = p[:, :, None, None] * d[None]  # (5, 3, 3, 3)
    bias = torch.randn(5, generator=g)
    f = separable_from_full(rank1, bias)
    assert float(f["error"]) < 1e-5
    torch.testing.assert_close(block(f), F.conv2d(x, rank1, bias, padding=1), atol=1e-4, rtol=1e-4)
    full = torch.randn(5, 3, 3, 3, generator=g)
    f = separable_from_full(full, bias)
    m = full.permute(1, 0, 2, 3).reshape(3, 5, 9)
    u, s, v = torch.linalg.svd(m)
    approx = (s[:, :1, None] * u[:, :, :1] * v[:, :1, :]).reshape(3, 5, 3, 3).permute(1, 0, 2, 3)
    assert float(f["error"]) == pytest.approx(float((m - approx.permute(1, 0, 2, 3).reshape(3, 5, 9)).norm() / m.norm()),
                                              rel=1e-4)
    torch.testing.assert_close(block(f), F.conv2d(x, approx, bias, padding=1), atol=1e-4, rtol=1e-4)


def test_an_ssdlite_student_starts_from_a_plain_conv_teachers_predictors(coco_detector):
    """The COCO detector's 3x3 predictors made rank-1 per channel: an SSDLite student of the
    same anchors and input (init from the teacher) gives the teacher's logits for the classes
    it keeps, by name (VOC's aeroplane is COCO's airplane), and all its box deltas."""
    from cvapps.tasks.detection.distill import inherit_args

    teacher = copy.deepcopy(coco_detector).eval()
    with torch.no_grad():
        for name, w in teacher.state_dict().items():
            if name.startswith(("head.cls.", "head.reg.")) and name.endswith("0.weight") and w.dim() == 4:
                m = w.permute(1, 0, 2, 3).reshape(w.shape[1], w.shape[0], 9)
                u, s, v = torch.linalg.svd(m, full_matrices=False)
                w.copy_((s[:, :1, None] * u[:, :, :1] * v[:, :1, :]).reshape(w.shape[1], w.shape[0], 3, 3)
                        .permute(1, 0, 2, 3))
    student = cvapps.create_model("detect", "mobilenet_v2", None, labels=["aeroplane", "person", "kayak"],
                                  img_size=teacher.config["preprocessing"]["input_size"], **inherit_args(teacher))
    loaded = student.load_pretrained(teacher.state_dict(), list(teacher.labels))
    assert student.config["head"]["predictor"] == "ssdlite" and loaded["backbone"] > 0
    x = torch.rand(1, 3, 300, 300) * 2 - 1
    with torch.no_grad():
        t, s = teacher(x), student.eval()(x)
    cols = [0, 1 + teacher.labels.index("airplane"), 1 + teacher.labels.index("person")]
    torch.testing.assert_close(s.cls[..., :3], t.cls[..., cols], atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(s.deltas, t.deltas, atol=2e-3, rtol=1e-3)


def test_labelled_images_mix_in_with_their_own_boxes(teacher, tmp_path):
    """--labels / --label-images: the labelled images join the pseudo-labelled pool with their
    own boxes (no soft targets); labelled classes the student lacks are refused."""
    from cvapps.distilling import TeacherRunner
    from cvapps.tasks import TASKS

    t_model = cvapps.load(teacher / "teacher" / "best.safetensors")
    images = sorted(teacher / "images" / f"img{k}.png" for k in range(2))
    opts = {"labels": str(teacher / "coco.json"), "label_images": str(teacher / "images"), "conf": 0.5}
    data, args = TASKS.get("detect").distill_data(t_model, images, TeacherRunner(t_model, QUIET), opts)
    assert len(data) == 2 + 4 and args["labels"] == ["red", "blue"]
    labelled = data.records[2:]
    assert all(r.soft is None for r in labelled) and all(r.soft is not None for r in data.records[:2])
    assert sum(len(r.boxes) for r in labelled) == 5  # the synthetic set's five boxes
    with pytest.raises(cvapps.DataError, match=r"labelled classes \['blue'\] are not among the student's"):
        TASKS.get("detect").distill_data(t_model, images, TeacherRunner(t_model, QUIET), {**opts, "classes": "red"})


def test_self_training_detects_through_the_previous_rounds_model(teacher, tmp_path, monkeypatch):
    """Two labelled images; the pool is every image (the labelled two are left out of it);
    round 1 trains on the labels + the two others as boxed by round 0's model; each round's
    figure is its model's AP50 on the validation set."""
    coco = json.loads((teacher / "coco.json").read_text())
    keep = {1, 2}
    part = {**coco, "images": [i for i in coco["images"] if i["id"] in keep],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}
    (tmp_path / "two.json").write_text(json.dumps(part))
    fast = dict(backbone="mobilenet_v2", img_size=128, epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0.5,
                augment=False)
    import cvapps.distilling as distilling

    evaluated = []  # models distill evaluates on the validation set
    real = distilling.evaluate
    monkeypatch.setattr(distilling, "evaluate", lambda m, *a, **k: evaluated.append(m) or real(m, *a, **k))
    r = cvapps.self_train("detect", str(tmp_path / "two.json"), [str(teacher / "images")], images=str(teacher / "images"),
                          val=str(teacher / "coco.json"), rounds=1, threshold=0.3, out=str(tmp_path / "st"),
                          console=QUIET, **fast)
    assert [(x["round"], x["labelled"], x["pseudo"]) for x in r["rounds"]] == [(0, 2, 0), (1, 2, 2)]
    assert len(evaluated) == 1  # round 1's student only: its teacher, round 0's model, was scored in round 0
    for x in r["rounds"]:
        best = cvapps.load(tmp_path / "st" / f"round{x['round']}" / "best.safetensors")
        assert best.labels == ["red", "blue"]
        got = cvapps.evaluate(best, str(teacher / "coco.json"), images=str(teacher / "images"))["AP50"]
        assert got == pytest.approx(x["AP50"], abs=1e-4)


def test_self_train_detect_on_the_command_line(teacher, tmp_path, capsys):
    """`cvapps self-train detect` reads annotations + --images, prints the rounds as JSON; with
    neither --data nor --masks it stops in one line."""
    from conftest import run_cli

    code, out, err = run_cli(capsys, "self-train", "detect", "--data", teacher / "coco.json", "--images",
                             teacher / "images", "--pool", teacher / "images", "--val", teacher / "coco.json",
                             "--rounds", "1", "--epochs", "1", "--batch-size", "4", "--img-size", "128",
                             "--backbone", "mobilenet_v2", "--threshold", "0.3", "--out", tmp_path / "st")
    assert code == 2 and "the unlabelled pool has no images (other than the labelled ones)" in err
    more = tmp_path / "more"
    more.mkdir()
    for p in sorted((teacher / "images").glob("*.png"))[:2]:
        (more / f"copy_{p.name}").write_bytes(p.read_bytes())
    code, out, err = run_cli(capsys, "self-train", "detect", "--data", teacher / "coco.json", "--images",
                             teacher / "images", "--pool", more, "--val", teacher / "coco.json", "--rounds", "1",
                             "--epochs", "1", "--batch-size", "4", "--img-size", "128", "--backbone", "mobilenet_v2",
                             "--threshold", "0.3", "--out", tmp_path / "st")
    assert code == 0, err
    r = json.loads(out)
    assert [(x["round"], x["labelled"], x["pseudo"]) for x in r["rounds"]] == [(0, 4, 0), (1, 4, 2)]
    code, _, err = run_cli(capsys, "self-train", "segment", "--pool", more, "--val", teacher)
    assert code == 2 and "self-train needs the labelled images" in err


def test_saved_results_carry_the_data_files_category_ids(teacher, tmp_path):
    """Evaluated against a file whose ids for red / blue are 7 / 3 (the model's are 1 / 2),
    `--save-results` writes the file's ids, so the results evaluate against that file to the
    model's own figures."""
    coco = json.loads((teacher / "coco.json").read_text())
    ids = {1: 7, 2: 3}
    coco["categories"] = [{"id": ids[c["id"]], "name": c["name"]} for c in coco["categories"]] + \
        [{"id": 9, "name": "green"}]
    coco["annotations"] = [{**a, "category_id": ids[a["category_id"]]} for a in coco["annotations"]]
    (tmp_path / "ids.json").write_text(json.dumps(coco))
    model = teacher / "teacher" / "best.safetensors"
    m = cvapps.evaluate(str(model), str(tmp_path / "ids.json"), images=str(teacher / "images"),
                        save_results=str(tmp_path / "res.json"))
    rows = json.loads((tmp_path / "res.json").read_text())
    assert {r["category_id"] for r in rows} == {3, 7} and m["AP50"] >= 0.9
    again = cvapps.evaluate_results(str(tmp_path / "res.json"), str(tmp_path / "ids.json"), task="detect")
    assert again["AP50"] == pytest.approx(m["AP50"], abs=1e-6) and again["AP"] == pytest.approx(m["AP"], abs=1e-6)
