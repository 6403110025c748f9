"""`select` with top-down keypoint models scores the instance crops `predict` would make:
the default detector's boxes, a boxes file, or the whole image when asked (weights from
fixtures, never the network)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import run_cli, write_image

import cvapps
from cvapps.active import select as select_mod
from cvapps.data.io import read_image
from cvapps.tasks.keypoints.topdown import DetectorBoxes, FileBoxes, TopDown, whole_image


def _scores(path) -> dict[str, float]:
    with open(path) as f:
        return {r["path"].rsplit("/", 1)[-1]: float(r["score"]) for r in csv.DictReader(f)}


def _crops(model, paths, boxes) -> torch.Tensor:
    """The normalised crops of every image for box source ``boxes``, computed by hand."""
    pre = TopDown.from_config(model.config["preprocessing"], boxes)
    return torch.cat([pre.normalize(pre.prepare(read_image(p), str(p))[0]) for p in paths])


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(5)
    return [write_image(tmp_path / "pool" / f"im{i}.png", rng.integers(0, 255, (96, 128, 3), np.uint8))
            for i in range(3)]


@pytest.fixture
def scored(monkeypatch):
    """The crop batches select scores, in order."""
    seen, real = [], select_mod._scores
    monkeypatch.setattr(select_mod, "_scores", lambda model, x, *a: seen.append(x.clone()) or real(model, x, *a))
    return seen


def test_pose_select_scores_the_people_of_the_default_detector(tmp_path, photos, coco_detector, monkeypatch, scored):
    torch.manual_seed(0)
    pose = cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64]).eval()
    # the default detector, made to see people everywhere: its finest level's "person" logits raised
    det = cvapps.tasks.model_class("detect").from_config(coco_detector.config)
    det.load_state_dict(coco_detector.state_dict())
    with torch.no_grad():
        det.head.cls[0][0].bias.view(-1, 81)[:, 1] += 10  # 81 = background + 80 classes per anchor
    monkeypatch.setattr(type(pose.spec), "default_detector", str(cvapps.save(det, tmp_path / "det.safetensors")))
    cvapps.select(pose, photos, 2, "least_confidence", out=str(tmp_path / "d"), batch_size=8)
    want = _crops(pose, photos, DetectorBoxes(det, "person", conf=0.3))
    assert len(want) > len(photos)  # several people per image: each is a crop
    torch.testing.assert_close(torch.cat(scored), want, atol=1e-5, rtol=0)
    scored.clear()
    cvapps.select(pose, photos, 2, "least_confidence", out=str(tmp_path / "w"), whole_image=True, batch_size=8)
    torch.testing.assert_close(torch.cat(scored), _crops(pose, photos, whole_image))


def test_select_takes_a_boxes_file_and_refuses_instance_options_elsewhere(tmp_path, photos, tiny_model, capsys,
                                                                          scored):
    torch.manual_seed(0)
    pose = cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64]).eval()
    boxes = tmp_path / "boxes.json"  # two people in the first image, one in the second, none in the third
    boxes.write_text(json.dumps([{"file_name": "im0.png", "bbox": [4, 4, 40, 80], "score": 0.9},
                                 {"file_name": "im0.png", "bbox": [60, 10, 50, 70], "score": 0.8},
                                 {"file_name": "im1.png", "bbox": [20, 20, 30, 60], "score": 0.9}]))
    path = cvapps.save(pose, tmp_path / "pose.safetensors")
    code, _, err = run_cli(capsys, "select", "--model", path, "--pool", tmp_path / "pool", "--budget", 1,
                           "--strategy", "least_confidence", "--boxes", boxes, "--out", tmp_path / "b",
                           "--pseudo-label", 0.0, "--backend", "torch")
    assert code == 0, err
    crops = torch.cat(scored)
    assert len(crops) == 3
    torch.testing.assert_close(crops, _crops(pose, photos, FileBoxes(boxes)), atol=1e-5, rtol=0)
    got = _scores(tmp_path / "b" / "scores.csv")
    assert got["im2.png"] == 0 and got["im0.png"] > 0  # no instance: nothing to learn from
    picked = {r["path"].rsplit("/", 1)[-1] for r in json.loads((tmp_path / "b" / "selection.json").read_text())}
    pseudo = json.loads((tmp_path / "b" / "pseudo_labels_keypoints.json").read_text())
    people = {"im0.png": 2, "im1.png": 1, "im2.png": 0}
    want = sum(people[n] for n in set(people) - picked)  # the unpicked images' people, from the file's boxes
    assert want > 0 and len(pseudo["annotations"]) == want
    with pytest.raises(cvapps.ConfigError, match="--whole-image is not an option of `predict classify`"):
        cvapps.select(tiny_model, photos, 1, out=str(tmp_path / "c"), whole_image=True)
    with pytest.raises(cvapps.ConfigError, match="--face-check is not an option of `predict pose`"):
        cvapps.select(pose, photos, 1, out=str(tmp_path / "c"), face_check="none")
