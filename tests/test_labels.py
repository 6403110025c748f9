"""Labelling tools' formats: Label Studio JSON (brush RLE checked against label-studio-sdk's
converter) and CVAT XML, read and written for every task, round trips through `cvapps labels
convert`, and one-line errors for bad exports."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli
from detdata import make_detection_set
from segdata import make_seg_set

from cvapps.data.detection import read_detection
from cvapps.data.keypoints import read_keypoints
from cvapps.data.labels import read_labels, write_labels
from cvapps.data.labels.rle import decode_brush, decode_cvat, encode_brush, encode_cvat
from cvapps.data.segmentation import from_labelset, read_camvid, to_labelset
from cvapps.errors import DataError

COCO_KP = Path(__file__).parent / "data" / "keypoints" / "coco"


def blob_mask(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    m[h // 4 : h // 2, w // 3 : w - 2] = True
    m[rng.random((h, w)) > 0.97] = True  # single pixels: runs of one
    return m


@pytest.mark.parametrize("shape", [(5, 7), (61, 83), (300, 500)])
def test_brush_rle_matches_label_studio_sdk_both_ways(shape):
    brush = pytest.importorskip("label_studio_sdk.converter.brush")
    m = blob_mask(*shape, seed=shape[0])
    ours = encode_brush(m)
    assert ours == brush.mask2rle(m.astype(np.uint8) * 255)  # byte for byte what the SDK writes
    assert np.array_equal(brush.decode_rle(ours).reshape(*shape, 4)[..., 3] > 0, m)
    assert np.array_equal(decode_brush(brush.mask2rle(m.astype(np.uint8) * 255), *shape), m)
    with pytest.raises(ValueError, match=f"the RLE holds {m.size * 4} values, a 8x5 RGBA mask has 160"):
        decode_brush(ours, 5, 8)


def test_cvat_mask_runs_start_with_background_over_the_mask_box():
    m = np.zeros((6, 8), bool)
    m[2:4, 3:6] = True
    m[3, 3] = False
    runs, box = encode_cvat(m)
    assert box == (3, 2, 3, 2) and runs == [0, 3, 1, 2]  # row-major over the 3x2 box, background first
    assert np.array_equal(decode_cvat(runs, box, 6, 8), m)
    with pytest.raises(ValueError, match="run lengths add up to 5, its 3x2 box has 6 pixels"):
        decode_cvat([0, 3, 2], box, 6, 8)


@pytest.mark.parametrize("fmt,suffix", [("label-studio", "json"), ("cvat", "xml")])
def test_detection_round_trip_is_exact_with_class_names(tmp_path, capsys, fmt, suffix):
    make_detection_set(tmp_path)
    src = read_detection(tmp_path / "coco.json", tmp_path / "images")
    out = tmp_path / f"labels.{suffix}"
    code, stdout, err = run_cli(capsys, "labels", "convert", tmp_path / "coco.json", "--task", "detect", "--images",
                                tmp_path / "images", "--to", fmt, "--out", out)
    assert code == 0, err
    assert json.loads(stdout)["images"] == 4 and json.loads(stdout)["dropped"] == {}
    back = read_detection(out, tmp_path / "images", fmt)
    assert [r.path for r in back.records] == [r.path for r in src.records]
    for a, b in zip(src.records, back.records):
        assert np.abs(a.boxes - b.boxes).max(initial=0) < 1e-3
        assert [src.labels[i] for i in a.labels] == [back.labels[i] for i in b.labels]
    code, _, err = run_cli(capsys, "labels", "convert", out, "--format", fmt, "--task", "detect", "--images",
                           tmp_path / "images", "--to", "coco", "--out", tmp_path / "back.json")
    assert code == 0, err
    again = json.loads((tmp_path / "back.json").read_text())
    assert sorted(a["bbox"] for a in again["annotations"]) == \
        sorted(a["bbox"] for a in json.loads((tmp_path / "coco.json").read_text())["annotations"])


def test_label_studio_pose_round_trip_keeps_boxes_points_and_hidden_points(tmp_path):
    src = read_keypoints(COCO_KP / "person_keypoints.json" if (COCO_KP / "person_keypoints.json").exists()
                         else next(COCO_KP.glob("*.json")), COCO_KP)
    from cvapps.data.keypoints import to_labelset as kp_labels

    write_labels("label-studio", kp_labels(src), tmp_path / "ls.json")
    back = read_keypoints(tmp_path / "ls.json", COCO_KP, "label-studio")
    assert back.schema.name == src.schema.name == "coco17"
    a = [i for r in src.records for i in r.instances if not i.iscrowd]
    b = [i for r in back.records for i in r.instances]
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert np.array_equal(x.keypoints[:, 2], y.keypoints[:, 2])  # 0 absent, 1 hidden, 2 visible
        seen = x.keypoints[:, 2] > 0
        assert np.abs(x.keypoints[seen, :2] - y.keypoints[seen, :2]).max(initial=0) < 1e-3
        assert np.abs(x.box - y.box).max() < 1e-3


def test_cvat_skeletons_keep_points_and_say_what_they_cannot_hold(tmp_path):
    src = read_keypoints(next(COCO_KP.glob("*.json")), COCO_KP)
    from cvapps.data.keypoints import to_labelset as kp_labels

    labels = kp_labels(src)
    write_labels("cvat", labels, tmp_path / "a.xml")
    assert labels.dropped["instance boxes (a CVAT skeleton holds none; read back from its points)"] > 0
    back = read_keypoints(tmp_path / "a.xml", COCO_KP, "cvat")
    a = [i for r in src.records for i in r.instances if not i.iscrowd and (i.keypoints[:, 2] > 0).any()]
    b = [i for r in back.records for i in r.instances]
    assert len(a) == len(b) and back.schema.name == "coco17"
    for x, y in zip(a, b):
        assert np.array_equal(x.keypoints[:, 2], y.keypoints[:, 2])
        seen = x.keypoints[:, 2] > 0
        assert np.abs(x.keypoints[seen, :2] - y.keypoints[seen, :2]).max() < 1e-3


@pytest.mark.parametrize("fmt,suffix", [("label-studio", "json"), ("cvat", "xml")])
def test_segmentation_masks_round_trip_pixel_identical_with_void(tmp_path, fmt, suffix):
    root = make_seg_set(tmp_path / "seg", void=11)
    src = read_camvid(root, "train")  # CamVid layout: 11 classes, void 11
    src.labels = src.labels[:3]  # (the synthetic masks use classes 0-2)
    labels = to_labelset(src)
    write_labels(fmt, labels, tmp_path / f"m.{suffix}")
    back = from_labelset(read_labels(fmt, tmp_path / f"m.{suffix}", root / "train"), list(src.labels), 11)
    for i in range(len(src)):
        assert np.array_equal(src.load_mask(i), back.load_mask(i))
    # without a class list, uncovered pixels are background (class 0) and "void" shapes are ignored pixels
    alone = from_labelset(read_labels(fmt, tmp_path / f"m.{suffix}", root / "train"))
    assert alone.labels[0] == "background" and set(alone.labels[1:]) == set(src.labels[1:] + src.labels[:1])


def test_classification_choices_round_trip_single_and_multi_label(tmp_path, capsys, colour_folder):
    out, colour_folder = tmp_path / "cls.json", colour_folder / "train"
    code, stdout, err = run_cli(capsys, "labels", "convert", colour_folder, "--task", "classify", "--to",
                                "label-studio", "--out", out, "--images", colour_folder, "--ls-config",
                                tmp_path / "config.xml")
    assert code == 0, err
    assert '<Choices name="choice" toName="image" choice="single"' in (tmp_path / "config.xml").read_text()
    code, _, err = run_cli(capsys, "labels", "convert", out, "--task", "classify", "--to", "csv", "--out",
                           tmp_path / "cls.csv", "--images", colour_folder)
    assert code == 0, err
    rows = (tmp_path / "cls.csv").read_text().splitlines()[1:]
    assert rows and all(r.split(",")[0].split("/")[-2] == r.split(",")[1] for r in rows)  # class folder = class
    tasks = json.loads(out.read_text())
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["red", "blue"]  # a multi-label image
    (tmp_path / "multi.json").write_text(json.dumps(tasks))
    from cvapps.data.classification import load_split

    multi = load_split(tmp_path / "multi.json", images_root=colour_folder)
    assert multi.kind == "multilabel" and sorted(multi.labels[i] for i in multi.targets[0]) == ["blue", "red"]


def _ls_box_task(image: str, label: str = "red", **extra) -> dict:
    r = {"id": "b1", "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": 128,
         "original_height": 128, "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": [label]}}
    return {"id": 7, "data": {"image": f"/data/local-files/?d={image}"}, "annotations": [{"result": [r, *extra.get(
        "more", [])]}]}


def test_bad_label_studio_and_cvat_files_are_one_line_each(tmp_path, capsys):
    make_detection_set(tmp_path)
    images = tmp_path / "images"
    cases = {
        "unknown label": ([_ls_box_task("img0.png", "green")], "unknown class 'green'"),
        "no image": ([_ls_box_task("nothere.png")], "is not under"),
        "orphan keypoint": ([_ls_box_task("img0.png", more=[{
            "id": "k1", "type": "keypointlabels", "parentID": "zz", "original_width": 128, "original_height": 128,
            "value": {"x": 5, "y": 5, "keypointlabels": ["nose"]}}])], "keypoint 'nose' has no parent rectangle"),
        "wrong rle size": ([{"id": 3, "data": {"image": "img0.png"}, "annotations": [{"result": [{
            "id": "m", "type": "brushlabels", "original_width": 128, "original_height": 128,
            "value": {"format": "rle", "rle": encode_brush(np.ones((4, 4), bool)), "brushlabels": ["red"]}}]}]}],
            "RLE holds 64 values, a 128x128 RGBA mask has 65536"),
    }
    for name, (tasks, expected) in cases.items():
        f = tmp_path / f"{name.replace(' ', '_')}.json"
        f.write_text(json.dumps(tasks))
        task = "pose" if name == "orphan keypoint" else "segment" if name == "wrong rle size" else "detect"
        code, _, err = run_cli(capsys, "labels", "convert", f, "--format", "label-studio", "--task", task, "--images",
                               images, "--to", "cvat", "--out", tmp_path / "x.xml", "--classes", "red,blue")
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (name, err)
        assert str(f) in err
    xml = tmp_path / "missing.xml"
    xml.write_text('<annotations><version>1.1</version><image id="0" name="gone.png" width="128" height="128">'
                   '<box label="red" xtl="1" ytl="1" xbr="9" ybr="9"/></image><image id="1" name="img0.png" '
                   'width="128" height="128"><box label="red" xtl="1" ytl="1" xbr="9" ybr="9"/></image></annotations>')
    code, _, err = run_cli(capsys, "labels", "convert", xml, "--format", "cvat", "--task", "detect", "--images", images,
                           "--to", "coco", "--out", tmp_path / "c.json")
    assert code == 2 and "image 'gone.png': named in the XML but missing on disk" in err
    code, out, err = run_cli(capsys, "labels", "convert", xml, "--format", "cvat", "--task", "detect", "--images",
                             images, "--to", "coco", "--out", tmp_path / "c.json", "--skip-bad")
    assert code == 0 and json.loads(out)["images"] == 1 and "gone.png" in json.loads(out)["skipped"][0]


def test_train_and_eval_read_label_studio_and_cvat_with_format(tmp_path, capsys):
    """`--format label-studio | cvat` wherever a dataset is read: the same model evaluates to
    the same metrics on the COCO file and on its Label Studio / CVAT copies."""
    make_detection_set(tmp_path)
    src = read_detection(tmp_path / "coco.json", tmp_path / "images")
    from cvapps.data.detection import to_labelset as det_labels

    write_labels("label-studio", det_labels(src), tmp_path / "a.json")
    write_labels("cvat", det_labels(src), tmp_path / "a.xml")
    code, out, err = run_cli(capsys, "train", "detect", "--data", tmp_path / "a.json", "--format", "label-studio",
                             "--images", tmp_path / "images", "--backbone", "mobilenet_v3_small", "--img-size", 96,
                             "--epochs", 1, "--batch-size", 4, "--out", tmp_path / "run")
    assert code == 0, err
    got = {}
    for fmt, f in (("coco", tmp_path / "coco.json"), ("label-studio", tmp_path / "a.json"), ("cvat", tmp_path / "a.xml")):
        code, out, err = run_cli(capsys, "eval", "detect", "--model", tmp_path / "run" / "best.safetensors", "--data",
                                 f, "--format", fmt, "--images", tmp_path / "images")
        assert code == 0, err
        got[fmt] = json.loads(out.strip().splitlines()[-1])
    assert got["coco"] == got["label-studio"] == got["cvat"]
    for f in (tmp_path / "a.json", tmp_path / "a.xml"):  # the files say what they are (distill --labels too)
        assert read_detection(f, tmp_path / "images").source == str(f)
        assert len(read_detection(f, tmp_path / "images")) == 4


def test_label_studio_sdk_made_tasks_read_as_the_coco_they_came_from(tmp_path):
    """A fixture made by label-studio-sdk's own COCO importer (boxes, with its ids and percent
    arithmetic) reads back as the COCO file it was made from."""
    coco_import = pytest.importorskip("label_studio_sdk.converter.imports.coco")
    make_detection_set(tmp_path)
    coco_import.convert_coco_to_ls(str(tmp_path / "coco.json"), str(tmp_path / "sdk.json"),
                                   image_root_url="/data/local-files/?d=images/")
    src = read_detection(tmp_path / "coco.json", tmp_path / "images")
    back = read_detection(tmp_path / "sdk.json", tmp_path, "label-studio", labels=src.labels)
    assert [r.path.name for r in back.records] == [r.path.name for r in src.records]
    for a, b in zip(src.records, back.records):
        assert np.abs(a.boxes - b.boxes).max(initial=0) < 1e-3 and list(a.labels) == list(b.labels)
