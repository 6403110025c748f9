"""Regressions of the foundation review: results files evaluate without images, the detection
results check names the file, freezing survives copies, the README's overview is true."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli
from detdata import make_detection_set

import cvapps
from cvapps.training.freezing import freeze

DATA = Path(__file__).parent / "data" / "keypoints"


def test_eval_pose_results_needs_no_images(tmp_path, capsys):
    coco = json.loads((DATA / "coco" / "test_coco.json").read_text())
    res = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
           for a in coco["annotations"] if a["num_keypoints"] > 0]
    (tmp_path / "keypoint_results.json").write_text(json.dumps(res))
    # the README's command, as written: no --images
    code, out, err = run_cli(capsys, "eval", "pose", "--results", tmp_path / "keypoint_results.json", "--data",
                             DATA / "coco" / "test_coco.json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["AP"] == 1.0


def test_eval_landmarks_results_needs_no_images(tmp_path, capsys):
    gt = json.loads((DATA / "300w" / "test_300w.json").read_text())
    names = {i["id"]: i["file_name"] for i in gt["images"]}
    lines = [{"source": names[a["image_id"]], "predictions": [{"keypoints": a["keypoints"], "bbox": a["bbox"]}]}
             for a in gt["annotations"]]
    (tmp_path / "lm.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    code, out, err = run_cli(capsys, "eval", "landmarks", "--results", tmp_path / "lm.jsonl", "--data",
                             DATA / "300w" / "test_300w.json")
    assert code == 0, err
    m = json.loads(out.strip().splitlines()[-1])
    assert m["NME"] == 0 and m["count"] == 2


def test_eval_segment_results_needs_only_masks(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    truth = np.zeros((8, 10), np.uint8)
    truth[:, 5:] = 1
    pred = truth.copy()
    pred[0, 0] = 1  # one wrong pixel of 80
    cv2.imwrite(str(tmp_path / "gt" / "a.png"), truth)
    cv2.imwrite(str(tmp_path / "pred" / "a.png"), pred)
    code, out, err = run_cli(capsys, "eval", "segment", "--results", tmp_path / "pred", "--masks", tmp_path / "gt",
                             "--classes", "bg,fg", "--ignore-index", 255)
    assert code == 0, err
    m = json.loads(out.strip().splitlines()[-1])
    assert m["pixel_acc"] == pytest.approx(79 / 80)


def test_eval_detect_results_unknown_image_id_is_one_line(tmp_path, capsys):
    make_detection_set(tmp_path)
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5],
                                                    "score": 0.9}]))
    code, _, err = run_cli(capsys, "eval", "detect", "--results", tmp_path / "res.json", "--data",
                           tmp_path / "coco.json")
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1
    assert "res.json" in lines[0] and "image_id 99 is not in coco.json" in lines[0]


def _bns(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_frozen_norms_stay_in_eval_in_a_deep_copy():
    torch.manual_seed(0)
    m = cvapps.create_model("classify", "mobilenet_v3_small", labels=["a", "b"], img_size=64)
    freeze(m, "backbone")
    c = copy.deepcopy(m)
    c.train()
    assert not m.training and not any(bn.training for bn in _bns(m))  # the original is untouched
    assert c.training and c.head.training
    assert not any(bn.training for bn in _bns(c.backbone))  # the copy's frozen norms stay in eval
    c.eval()
    c.train()
    assert not any(bn.training for bn in _bns(c.backbone))


def test_readme_overview_lists_every_task():
    first = (Path(__file__).parent.parent / "README.md").read_text().split("## ")[0]
    assert "next" not in first.lower()
    for words in ("classification", "detection", "segmentation", "landmarks", "pose"):
        assert words in first.lower(), words


def test_every_public_api_name_is_callable_whatever_was_imported_first():
    import cvapps
    import cvapps.api  # noqa: F401  (imports every submodule the API uses)

    for name in cvapps._LAZY:
        assert callable(getattr(cvapps, name)), name  # e.g. cvapps.export is the function, not a module
