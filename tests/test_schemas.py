"""Face schemas that correspond are evaluated against each other: the 5 points of the face
detector against 68- / 98-point labels, FaceMesh's 468 against 68 (the points map through
cvapps.schema.CORRESPONDENCES); pretrained face models evaluate with `cvapps eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, write_image
from kpdata import face_image

from cvapps.schema import CORRESPONDENCES, builtin, convert_points, correspondence


def test_points_map_by_the_mean_of_their_group_and_the_least_visibility():
    kp = np.zeros((68, 3))
    kp[36:42, :2] = [[0, 0], [2, 0], [4, 0], [6, 0], [4, 2], [2, 2]]  # the image-left eye's contour
    kp[:, 2] = 2
    kp[40, 2] = 1  # one of its points occluded
    five = convert_points(kp, correspondence("ibug68", "face5"))
    assert five.shape == (5, 3) and five[0].tolist() == pytest.approx([3.0, 2 / 3, 1.0])
    assert correspondence("face5", "face5") is None and correspondence("face5", "ibug68") is None
    for (src, dst), groups in CORRESPONDENCES.items():  # every group indexes its source schema's points
        n = 468 if src == "facemesh468" else len(builtin(src))
        assert len(groups) == len(builtin(dst)) and all(0 <= i < n for g in groups for i in g), (src, dst)


def _faces68(root, n=3):
    """Faces whose 68 labelled points put each eye's contour around the drawn eye dot, the nose
    tip on the nose dot and the mouth corners on the mouth dots (the other points around the
    box): their 5 mapped points are exactly the 5 drawn points."""
    images, anns, truth = [], [], {}
    for i in range(n):
        img, pts, box = face_image(i)
        write_image(root / f"f{i}.png", img)
        kp = np.zeros((68, 3))
        kp[:, :2] = (box[:2] + box[2:]) / 2
        ring = np.array([[-3, 0], [-1, -2], [1, -2], [3, 0], [1, 2], [-1, 2]], float)
        kp[36:42, :2], kp[42:48, :2] = pts[0] + ring, pts[1] + ring
        kp[30, :2], kp[48, :2], kp[54, :2] = pts[2], pts[3], pts[4]
        kp[:, 2] = 2
        images.append({"id": i + 1, "file_name": f"f{i}.png", "width": img.shape[1], "height": img.shape[0]})
        x0, y0, x1, y1 = box
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "keypoints": kp.reshape(-1).tolist(), "iscrowd": 0})
        truth[f"f{i}.png"] = (pts, box)
    (root / "faces68.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                   "categories": [{"id": 1, "name": "face"}]}))
    return root / "faces68.json", truth


def test_five_point_results_evaluate_against_68_point_labels(tmp_path, capsys):
    ann, truth = _faces68(tmp_path)
    rows = []
    for name, (pts, box) in truth.items():
        pred = pts.copy()
        if name == "f0.png":
            pred[2] += [3.0, 4.0]  # the nose 5 px off on one face
        rows.append({"source": str(tmp_path / name), "predictions": [{
            "keypoints": np.concatenate([pred, np.ones((5, 1))], 1).reshape(-1).tolist(), "score": 1.0,
            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}]})
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run_cli(capsys, "eval", "landmarks", "--results", tmp_path / "p.jsonl", "--data", ann)
    assert code == 0, err
    m = json.loads(out.strip().splitlines()[-1])
    pts0 = truth["f0.png"][0]
    want = 5.0 / 5 / np.linalg.norm(pts0[0] - pts0[1]) / 3  # one point of five off by 5 px on one face of three
    assert m["NME"] == pytest.approx(want, rel=1e-6) and m["count"] == 3
    assert m["schema"] == "labels' ibug68 points as face5"


def test_the_face_detector_evaluates_on_68_point_labels_with_the_cli(tmp_path, capsys, face_detector,
                                                                     facemesh_model):
    """It used to stop at "68 keypoints vs face5's 5": now it finds faces as predict does and
    is scored on the labels' 5 mapped points."""
    ann, _ = _faces68(tmp_path, 2)
    code, out, err = run_cli(capsys, "eval", "landmarks", "--model", "retinaface.face5", "--data", ann, "--images",
                             tmp_path)
    assert code == 0, err
    m = json.loads(out.strip().splitlines()[-1])
    assert m["instances"] == "predict" and m["schema"] == "labels' ibug68 points as face5" and m["count"] == 2
    code, _, err = run_cli(capsys, "eval", "landmarks", "--model", "retinaface.face5", "--data", ann, "--images",
                           tmp_path, "--instances", "labels")
    assert code == 2 and "finds its own instances" in err
    coco17 = tmp_path / "pose.json"  # a schema nothing maps to: one line saying which ones map
    d = json.loads(ann.read_text())
    for a in d["annotations"]:
        a["keypoints"] = a["keypoints"][: 17 * 3]
    d["categories"] = [{"id": 1, "name": "person", "keypoints": builtin("coco17").keypoints}]
    coco17.write_text(json.dumps(d, default=list))
    code, _, err = run_cli(capsys, "eval", "landmarks", "--model", "retinaface.face5", "--data", coco17, "--images",
                           tmp_path)
    assert code == 2 and "do not correspond" in err and "ibug68->face5" in err
