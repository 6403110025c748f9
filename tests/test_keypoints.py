"""Facial landmarks and pose: schemas, readers, crops, heatmaps, metrics, heads, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli, write_image
from kpdata import DOTS, face_image, write_faces

import cvapps
from cvapps.data.keypoints import parse_pts, read_keypoints
from cvapps.errors import DataError
from cvapps.ops.keypoints import apply_affine, crop_affine, decode_heatmaps, gaussian_heatmaps, invert_affine
from cvapps.data.dataset import collate
from cvapps.schema import BUILTIN, builtin, from_dataset
from cvapps.tasks.keypoints.topdown import TopDown
from cvapps.tasks.keypoints.workflow import KeypointDataset
from cvapps.tasks.landmarks.metrics import landmark_metrics, nme

DATA = Path(__file__).parent / "data" / "keypoints"


# schemas ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_flip_pairs_are_disjoint_swaps(name):
    s = builtin(name)
    seen = [i for p in s.flip_pairs for i in p]
    assert len(seen) == len(set(seen)), "a keypoint in two flip pairs"
    assert len(s.sigmas) == len(s.keypoints)


def test_custom_schema_pairs_left_right_by_name():
    s = from_dataset(["head", "left_hand", "right_hand", "l_foot", "r_foot"], [[1, 2]], 5)
    assert s.name == "custom" and sorted(map(sorted, s.flip_pairs)) == [[1, 2], [3, 4]]
    assert [list(e) for e in s.skeleton] == [[0, 1]]  # COCO's 1-based edges become 0-based


# readers ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,images,instances,k,schema", [
    ("coco", 4, 12, 17, "coco17"), ("crowdpose", 2, 4, 14, "crowdpose14"), ("300w", 2, 2, 68, "ibug68"),
    ("wflw", 2, 4, 98, "wflw98"), ("cofw", 2, 2, 29, "cofw29"), ("aflw", 2, 2, 19, "aflw19")])
def test_every_sample_file_loads(name, images, instances, k, schema):
    d = read_keypoints(DATA / name / f"test_{name}.json", DATA / name)
    assert (len(d), len(d.instances()), d.num_keypoints, d.schema.name) == (images, instances, k, schema)


def test_pts_folder_colour_grey_ppm_and_derived_box(tmp_path):
    img, pts, _ = face_image(1)
    for i, (ext, conv) in enumerate([(".png", None), (".pgm", cv2.COLOR_RGB2GRAY), (".ppm", None)]):
        arr = cv2.cvtColor(img, conv) if conv is not None else img
        write = cv2.imwrite(str(tmp_path / f"f{i}{ext}"), arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
        assert write
        body = "\n".join(f"{x + 0.5:.3f} {y + 0.5:.3f}" for x, y in pts)  # .pts is 1-based
        (tmp_path / f"f{i}.pts").write_text(f"version: 1\nn_points: 5\n{{\n{body}\n}}\n")
    d = read_keypoints(tmp_path, fmt="pts")
    assert len(d) == 3 and d.schema.name == "face5"
    inst = d.records[0].instances[0]
    np.testing.assert_allclose(inst.keypoints[:, :2], pts, atol=1e-3)
    assert inst.box[0] < pts[:, 0].min() and inst.box[2] > pts[:, 0].max()


def test_broken_pts_header_names_the_file(tmp_path):
    (tmp_path / "a.pts").write_text("version: 1\nn_points: sixty-eight\n{\n1 2\n}\n")
    with pytest.raises(DataError, match=r"a\.pts.*n_points"):
        parse_pts(tmp_path / "a.pts")
    (tmp_path / "b.pts").write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n")
    with pytest.raises(DataError, match="n_points says 3"):
        parse_pts(tmp_path / "b.pts")


def test_csv_reader(tmp_path):
    img, pts, _ = face_image(2)
    write_image(tmp_path / "a.png", img)
    (tmp_path / "faces.csv").write_text("path," + ",".join(f"x{i},y{i}" for i in range(5)) + "\n"
                                        + "a.png," + ",".join(f"{v:.2f}" for v in pts.reshape(-1)) + "\n")
    d = read_keypoints(tmp_path / "faces.csv")
    assert len(d.instances()) == 1 and d.num_keypoints == 5


def _edit_first(ann: Path, **change) -> Path:
    d = json.loads(ann.read_text())
    d["annotations"][0].update(change)
    ann.write_text(json.dumps(d))
    return ann


@pytest.mark.parametrize("change,message", [
    ({"keypoints": [10, 10, 2] * 4}, "4 keypoints, the schema has 5"),
    ({"keypoints": [500, 10, 2] + [20, 20, 2] * 4}, "outside the 96x96 image"),
    ({"bbox": [10, 10, 0, 20]}, r"bbox \[10, 10, 0, 20\]: width 0 is not positive"),
])
def test_bad_records_raise_or_are_counted(tmp_path, change, message):
    ann = _edit_first(write_faces(tmp_path, 3), **change)
    with pytest.raises(DataError, match=message) as e:
        read_keypoints(ann, tmp_path)
    assert "annotation id 1" in e.value.one_line()
    d = read_keypoints(ann, tmp_path, skip_bad=True)
    assert len(d.skipped) == 1 and len(d.instances()) == 2


# geometry -----------------------------------------------------------------------------
def test_crop_maps_back_exactly_and_pixels_agree():
    img, pts, box = face_image(3)
    td = TopDown((0, 0, 0), (1, 1, 1), [64, 48], margin=1.25)
    crop, m = td.crop(img, box)
    in_crop = apply_affine(pts, m)
    np.testing.assert_allclose(apply_affine(in_crop, invert_affine(m)), pts, atol=1e-9)
    assert abs(m[0, 0] - m[1, 1]) < 1e-12  # aspect preserved: one scale for x and y
    for (x, y), colour in zip(in_crop, DOTS):  # the dot's colour is where the mapped point says
        assert np.abs(crop[int(y), int(x)].astype(int) - colour).max() < 60


def test_heatmap_encode_decode_round_trip():
    pts = torch.tensor([[[10.3, 20.7], [33.9, 5.2]]])
    hm = gaussian_heatmaps(pts, torch.ones(1, 2), (16, 12), 4.0, 2.0)
    dec, score = decode_heatmaps(hm, 4.0)
    assert torch.allclose(dec, pts, atol=0.05) and torch.allclose(score, torch.ones(1, 2), atol=0.05)
    assert gaussian_heatmaps(pts, torch.tensor([[1.0, 0.0]]), (16, 12), 4.0, 2.0)[0, 1].abs().max() == 0


def test_flip_augmentation_swaps_left_and_right(tmp_path):
    ann = write_faces(tmp_path, 1)
    d = read_keypoints(ann, tmp_path)
    td = TopDown((0, 0, 0), (1, 1, 1), [64, 64])
    flip = A.Compose([A.HorizontalFlip(p=1.0)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                     save_applied_params=True)
    plain, _ = KeypointDataset(d, td)[0]
    x, t = KeypointDataset(d, td, flip)[0]
    _, t0 = KeypointDataset(d, td)[0]
    k0, k1 = t0["keypoints"].numpy(), t["keypoints"].numpy()
    # the new left eye is the mirrored old right eye (and vice versa); the nose stays the nose
    np.testing.assert_allclose(k1[0], [64 - k0[1, 0], k0[1, 1]], atol=1e-4)
    np.testing.assert_allclose(k1[2], [64 - k0[2, 0], k0[2, 1]], atol=1e-4)
    img = x.permute(1, 2, 0).numpy().astype(float)  # items are uint8 images
    assert np.abs(img[int(k1[0, 1]), int(k1[0, 0])] - DOTS[1]).max() < 60  # right eye's colour at "left_eye"


# metrics ------------------------------------------------------------------------------
def test_hand_computed_nme_fr_auc():
    gt = np.array([[0, 0, 2], [10, 0, 2], [5, 5, 0]], float)  # eyes 10 px apart; point 3 unlabelled
    pred = np.array([[0, 0.5], [10, 1.5], [99, 99]])
    assert nme(pred, gt, 10.0) == pytest.approx((0.5 + 1.5) / 2 / 10)
    m = landmark_metrics([0.1, 0.05, 0.0, 0.09], missed=1)
    assert m["NME"] == pytest.approx(0.06) and m["count"] == 5
    assert m["FR@0.08"] == pytest.approx(3 / 5) and m["FR@0.10"] == pytest.approx(1 / 5)
    assert m["AUC@0.10"] == pytest.approx((0 + 0.5 + 1 + 0.1 + 0) / 5)


def test_ground_truth_fed_back_scores_perfectly(tmp_path):
    d = read_keypoints(DATA / "300w" / "test_300w.json", DATA / "300w")
    lines = [{"source": str(r.path), "predictions": [
        {"bbox": [*i.box[:2], *(i.box[2:] - i.box[:2])], "keypoints": i.keypoints.reshape(-1).tolist(), "score": 1}
        for i in r.instances]} for r in d.records]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    m = cvapps.evaluate_results(tmp_path / "p.jsonl", DATA / "300w" / "test_300w.json", task="landmarks")
    assert m["NME"] == 0 and m["FR@0.08"] == 0 and m["AUC@0.10"] == 1 and m["count"] == 2
    coco = json.loads((DATA / "coco" / "test_coco.json").read_text())
    res = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
           for a in coco["annotations"] if a["num_keypoints"] > 0]
    (tmp_path / "r.json").write_text(json.dumps(res))
    m = cvapps.evaluate_results(tmp_path / "r.json", DATA / "coco" / "test_coco.json", task="pose")
    assert m["AP"] == 1.0 and m["PCK"] == 1.0


def test_oks_ap_equals_pycocotools(tmp_path):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = DATA / "coco" / "test_coco.json"
    rng = np.random.default_rng(0)
    res = []
    for a in json.loads(ann.read_text())["annotations"]:
        if a["num_keypoints"]:
            kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
            kp[:, :2] += rng.normal(0, 6, (17, 2))
            res.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp.reshape(-1).tolist(),
                        "score": float(rng.uniform(0.5, 1))})
    (tmp_path / "r.json").write_text(json.dumps(res))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "r.json")), "keypoints")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    ours = cvapps.evaluate_results(tmp_path / "r.json", ann, task="pose")
    assert 0 < ours["AP"] < 1 and ours["AP"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert ours["AR"] == pytest.approx(ev.stats[5], abs=1e-12)


# heads: overfit, round trip ----------------------------------------------------------------
def _overfit(task, tmp_path, steps, **head):
    """The model fits 4 faces. Steps run in eval mode so norm layers use the same statistics
    in training and evaluation (a 4-image batch has no usable batch statistics)."""
    ann = write_faces(tmp_path, 4)
    data = read_keypoints(ann, tmp_path)
    torch.manual_seed(0)
    m = cvapps.create_model(task, "mobilenet_v3_small", img_size=[96, 96], schema=data.schema, **head)
    from cvapps.training.trainer import evaluate_dataset

    make, val = m.spec.datasets(m, data, data)
    x, t, _ = collate([make(False)[i] for i in range(4)])
    x = val.normalize(x)  # items are uint8; the loader normalises batches
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    before = evaluate_dataset(m, val)
    m.eval()
    for _ in range(steps):
        loss = m.training_step(x, t)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m, before, evaluate_dataset(m, val), data, ann


@pytest.mark.parametrize("head,steps,limit", [({"kind": "heatmap"}, 150, 0.09),
                                              ({"kind": "regression", "cascade": True}, 200, 0.06)])
def test_landmark_heads_overfit_and_round_trip(tmp_path, head, steps, limit):
    m, before, after, data, ann = _overfit("landmarks", tmp_path, steps, **head)
    assert before["NME"] > 0.2 and after["NME"] < limit, (before["NME"], after["NME"])
    path = cvapps.save(m, tmp_path / "lm.safetensors")
    boxes = [inst.box for r in data.records for inst in r.instances]
    imgs = [str(r.path) for r in data.records]
    a = m.predict(imgs, boxes=[b[None] for b in boxes])
    b = cvapps.load(path).predict(imgs, boxes=[b[None] for b in boxes])
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.points, q.points)


def test_pose_heatmap_overfits_to_oks_ap_one(tmp_path):
    _, before, after, _, _ = _overfit("pose", tmp_path, 250, kind="heatmap")  # 150 stopped at 0.86 on some CPUs
    assert before["AP"] < 0.5 and after["AP"] > 0.9 and after["PCK"] == 1.0, (before["AP"], after["AP"])


def test_regression_uncertainty_is_mc_dropout_variance():
    m = cvapps.create_model("landmarks", "mobilenet_v3_small", img_size=[64, 64], schema="face5", kind="regression",
                            dropout=0.5)
    x = torch.randn(3, 3, 64, 64)
    feats = [torch.randn(3, m.backbone.out_channels, 2, 2)]  # (random-init eval features are ~0)
    m.forward_features = lambda _: feats
    v = m.mc_variance(x, passes=6)
    assert v.shape == (3,) and (v > 0).all()
    assert not m.head["main"].dropout.training  # dropout back off afterwards
    m0 = cvapps.create_model("landmarks", "mobilenet_v3_small", img_size=[64, 64], schema="face5",
                             kind="regression", dropout=0.0)
    m0.forward_features = lambda _: feats
    assert (m0.mc_variance(x, passes=4) == 0).all()


# CLI ----------------------------------------------------------------------------------
def test_cli_train_predict_eval_landmarks(tmp_path, capsys):
    ann = write_faces(tmp_path / "faces", 4)
    code, out, err = run_cli(capsys, "train", "landmarks", "--data", ann, "--images", tmp_path / "faces",
                             "--val-data", ann, "--backbone", "mobilenet_v3_small", "--img-size", "64",
                             "--epochs", "1", "--batch-size", "4", "--out", tmp_path / "run")
    assert code == 0, err
    assert {"NME", "FR@0.08", "AUC@0.10", "count"} <= set(json.loads(out.strip().splitlines()[-1]))
    model = tmp_path / "run" / "best.safetensors"
    blank = write_image(tmp_path / "blank.png", np.zeros((80, 80, 3), np.uint8))
    code, out, err = run_cli(capsys, "predict", "landmarks", tmp_path / "faces" / "face0.png", blank,
                             "--model", model, "--faces", ann, "--save-json", tmp_path / "p.jsonl",
                             "--out", tmp_path / "drawn", "--flip-test")
    assert code == 0, err
    recs = [json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(recs[0]["predictions"]) == 1 and len(recs[0]["predictions"][0]["keypoints"]) == 15
    assert recs[1]["predictions"] == [] and "no instances" in out  # no face: reported, not an error
    assert (tmp_path / "drawn" / "face0.png").is_file()
    code, out, err = run_cli(capsys, "eval", "landmarks", "--data", ann, "--images", tmp_path / "faces",
                             "--results", tmp_path / "p.jsonl")
    m = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and m["count"] == 4 and m["missed"] == 3  # only face0 was predicted
    code, out, _ = run_cli(capsys, "eval", "landmarks", "--data", ann, "--images", tmp_path / "faces",
                           "--model", model)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["count"] == 4


def test_cli_pose_whole_image_and_boxes_file(tmp_path, capsys):
    m = cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64])
    path = cvapps.save(m, tmp_path / "pose.safetensors")
    img = write_image(tmp_path / "000000000785.jpg", np.full((60, 90, 3), 128, np.uint8))
    boxes = tmp_path / "det.json"
    boxes.write_text(json.dumps([{"image_id": 785, "bbox": [5, 5, 30, 40], "score": 0.9, "category_id": 1},
                                 {"image_id": 785, "bbox": [40, 5, 30, 40], "score": 0.1, "category_id": 1}]))
    code, out, err = run_cli(capsys, "predict", "pose", img, "--model", path, "--boxes", boxes, "--box-conf", "0.5",
                             "--save-json", tmp_path / "p.jsonl")
    assert code == 0, err
    rec = json.loads((tmp_path / "p.jsonl").read_text())
    assert len(rec["predictions"]) == 1 and rec["predictions"][0]["bbox"] == [5.0, 5.0, 30.0, 40.0]
    assert len(rec["predictions"][0]["keypoints"]) == 51
    code, out, err = run_cli(capsys, "predict", "pose", img, "--model", path, "--save-json", tmp_path / "w.jsonl",
                             "--whole-image")
    assert code == 0 and json.loads((tmp_path / "w.jsonl").read_text())["predictions"][0]["bbox"] == [0, 0, 90, 60]


def test_haar_default_finds_no_face_in_noise():
    m = cvapps.create_model("landmarks", "mobilenet_v3_small", img_size=[64, 64], schema="face5")
    p = m.predict(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))[0]
    assert len(p) == 0 and p.summary() == "no instances"
