"""Detection end to end: overfit, model-file round trip, CLI predict/eval, two-stage head."""

import io
import json

import numpy as np
import pytest
import torch
from rich.console import Console

import cvapps

from conftest import run_cli
from detdata import make_detection_set, repeated_set

QUIET = Console(file=io.StringIO())


@pytest.fixture(scope="module")
def det_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    coco = make_detection_set(root)
    repeated_set(root, coco)  # the 4 images 6x per epoch: more steps per (evaluated) epoch
    return root


@pytest.fixture(scope="module")
def trained(det_set):
    out = det_set / "run"
    r = cvapps.train("detect", str(det_set / "train.json"), images=str(det_set / "repeated"),
                     val=str(det_set / "coco.json"), val_images=str(det_set / "images"), out=str(out),
                     backbone="mobilenet_v2", img_size=128,
                     epochs=20, batch_size=4, lr=3e-3, warmup_epochs=0.5, augment=False, console=QUIET)
    return r, out


def test_overfits_four_images(trained):
    r, out = trained
    assert r["val"]["AP50"] >= 0.9, r["val"]
    for k in ("AP", "AP50", "AP75", "APsmall", "APmedium", "APlarge", "AR1", "AR10", "AR100", "per_class"):
        assert k in r["val"]
    for name in ("best.safetensors", "last.safetensors", "checkpoint.pt", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file()


def test_round_trip_predicts_identical_boxes(trained, det_set, tmp_path):
    _, out = trained
    m = cvapps.load(out / "best.safetensors")
    again = cvapps.load(cvapps.save(m, tmp_path / "copy.safetensors"))
    imgs = [str(det_set / "images" / f"img{k}.png") for k in range(4)]
    for a, b in zip(m.predict(imgs), again.predict(imgs)):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
    first = m.predict(imgs[0])[0]
    assert first.boxes.dtype == np.float32 and first.labels.dtype == np.int64 and first.boxes.shape[1] == 4
    assert sorted(first.to_dict()[0]) == ["bbox", "category_id", "label", "score"]
    # least-confidence = mean over the top-k anchors of 1 - max foreground probability, by hand
    raw = m(torch.zeros(2, 3, 128, 128))
    n = raw.cls.shape[1]
    raw.cls = torch.full((2, n, 3), -20.0)  # background, red, blue logits: everything background
    raw.cls[0, :, 0] = 0.0
    raw.cls[0, 0] = torch.tensor([0.0, 0.0, -20.0])  # anchor 0 of image 0: P(red) = 1/2
    raw.cls[1, :2] = torch.tensor([-20.0, 0.0, 0.0])  # anchors 0, 1 of image 1: P(red) = P(blue) = 1/2
    raw.cls[1, 2:, 0] = 0.0
    k = m.hcfg["uncertainty_topk"]
    u = m.uncertainty(raw, "least_confidence")
    expected0 = (0.5 + (k - 1) * 1.0) / k  # one anchor at 1/2, the other top-k anchors ~0 foreground
    expected1 = (2 * 0.5 + (k - 2) * 1.0) / k
    assert u.tolist() == pytest.approx([expected0, expected1], abs=1e-6)


run = run_cli


def test_cli_predict_and_eval(trained, det_set, tmp_path, capsys):
    _, out = trained
    model = out / "best.safetensors"
    jsonl, coco_res = tmp_path / "p.jsonl", tmp_path / "res.json"
    code, stdout, err = run(capsys, "predict", "detect", det_set / "images", "--model", model, "--save-json", jsonl,
                            "--save-coco", coco_res, "--coco-gt", det_set / "coco.json", "--out", tmp_path / "drawn",
                            "--conf", 0.3)
    assert code == 0, err
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(recs) == 4 and recs[0]["task"] == "detect"
    d = recs[0]["predictions"][0]
    x, y, w, h = d["bbox"]
    assert w > 0 and h > 0 and d["label"] in ("red", "blue")  # COCO-style [x, y, w, h]
    assert len(list((tmp_path / "drawn").iterdir())) == 4
    # the dataset-wide results file evaluates against the ground truth without a model
    code, stdout, _ = run(capsys, "eval", "detect", "--results", coco_res, "--data", det_set / "coco.json")
    m = json.loads(stdout.strip().splitlines()[-1])
    assert m["AP50"] >= 0.9
    code, stdout, _ = run(capsys, "eval", "detect", "--model", model, "--data", det_set / "coco.json",
                          "--images", det_set / "images", "--metric", "voc", "--eleven-point")
    v = json.loads(stdout.strip().splitlines()[-1])
    assert v["interpolation"] == "11point" and v["mAP"] >= 0.9
    code, stdout, _ = run(capsys, "predict", "detect", det_set / "images" / "img0.png", "--model", model,
                          "--classes", "blue", "--conf", 0.3)
    assert "red" not in stdout and "blue" in stdout


def test_two_stage_goes_through_the_same_paths(det_set, tmp_path):
    out = tmp_path / "rcnn"
    r = cvapps.train("detect", str(det_set / "coco.json"), images=str(det_set / "images"),
                     val=str(det_set / "coco.json"), out=str(out), backbone="mobilenet_v2", img_size=128,
                     head={"kind": "fasterrcnn"}, epochs=2, batch_size=4, lr=1e-3, augment=False, console=QUIET)
    assert r["epochs_run"] == 2
    best = cvapps.load(out / "best.safetensors")  # the reported metrics are the saved model's
    again = cvapps.evaluate(best, str(det_set / "coco.json"), images=str(det_set / "images"))
    assert again["AP50"] == pytest.approx(r["val"]["AP50"]) and again["AP"] == pytest.approx(r["val"]["AP"])
    m = cvapps.load(out / "last.safetensors")
    assert m.config["head"]["kind"] == "fasterrcnn" and type(m.head).__name__ == "RCNNHead" and m.task == "detect"
    again = cvapps.load(cvapps.save(m, tmp_path / "copy.safetensors"))
    img = str(det_set / "images" / "img0.png")
    a, b = m.predict(img, conf=0.0)[0], again.predict(img, conf=0.0)[0]
    assert len(a) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    # a training step lowers the two-stage loss (RPN + RoI heads) on a fixed batch
    from cvapps.data.dataset import collate

    _, val_ds = m.spec.datasets(m, *[m.spec.read_eval(m, cvapps.options.DataOptions(
        data=str(det_set / "coco.json"), images=str(det_set / "images")))] * 2)
    x, t, _ = collate([val_ds[i] for i in range(4)])
    x = val_ds.normalize(x)  # items are uint8; the loader normalises batches
    torch.manual_seed(0)
    m.train()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=5e-3)
    before = float(m.training_step(x, t)["loss"])
    for _ in range(3):
        torch.manual_seed(0)  # the same RPN / RoI samples each time
        loss = m.training_step(x, t)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(0)
    assert float(m.training_step(x, t)["loss"]) < before
