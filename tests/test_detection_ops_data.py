"""Box ops, readers (three formats, bad input) and metrics for detection."""

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from cvapps.data.detection import read_coco, read_detection, read_voc, read_yolo
from cvapps.errors import DataError
from cvapps.ops import BACKGROUND, IGNORE, decode_boxes, default_boxes, encode_boxes, match_anchors
from cvapps.tasks.detection.metrics import coco_metrics, voc_metrics

from detdata import make_detection_set

VOC = Path(__file__).parent / "data" / "voc"


def test_default_boxes_order_and_geometry():
    a = default_boxes([(2, 3)], [16], base=2.0, scales=[1.0], ratios=[1.0, 4.0])
    assert a.shape == (2 * 3 * 2, 4)
    # first cell (row 0, col 0): centre (8, 8); ratio 1 -> 32x32, ratio 4 -> 64x16
    assert a[0].tolist() == [-8, -8, 24, 24] and a[1].tolist() == [-24, 0, 40, 16]
    centres = (a[:, :2] + a[:, 2:]) / 2
    assert centres[2].tolist() == [24, 8]  # next column
    assert centres[6].tolist() == [8, 24]  # next row


def test_encode_decode_round_trip():
    anchors = torch.tensor([[0.0, 0, 10, 10], [5, 5, 50, 25]])
    boxes = torch.tensor([[1.0, 2, 9, 12], [0, 0, 60, 30]])
    d = encode_boxes(boxes, anchors)
    assert torch.allclose(decode_boxes(d, anchors), boxes, atol=1e-4)
    assert torch.allclose(encode_boxes(anchors, anchors), torch.zeros(2, 4))


def test_matching_thresholds_and_forced_best():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 6], [0, 0, 10, 4.5], [50, 50, 60, 60], [100, 100, 104, 104]])
    gt = torch.tensor([[0.0, 0, 10, 10], [100, 100, 120, 120]])
    m = match_anchors(gt, anchors, low=0.4, high=0.5)
    # IoUs with gt0: 1.0, 0.6, 0.45, 0; anchor 4 has IoU 0.04 with gt1 but is its best -> forced
    assert m.tolist() == [0, 0, IGNORE, BACKGROUND, 1]
    assert match_anchors(torch.zeros(0, 4), anchors).tolist() == [BACKGROUND] * 5


def _targets(data):
    """{file name: sorted [(class name, box rounded to 1e-2)]}"""
    return {r.path.name: sorted((data.labels[lab], tuple(np.round(b, 2))) for b, lab in zip(r.boxes, r.labels))
            for r in data.records}


def test_voc_samples_identical_in_coco_voc_and_yolo():
    coco = read_coco(VOC / "instances_coco.json", VOC / "images")
    voc = read_voc(VOC / "voc_xml", VOC / "images", labels=(VOC / "voc.names").read_text().split())
    yolo = read_yolo(VOC / "yolo", VOC / "images")
    assert len(coco) == len(voc) == len(yolo) == 3
    a, b, c = _targets(coco), _targets(voc), _targets(yolo)
    assert a == b
    for name in a:  # YOLO stores 6 decimals of normalised coordinates: equal to ~1e-3 px
        assert [x[0] for x in a[name]] == [x[0] for x in c[name]]
        np.testing.assert_allclose([x[1] for x in a[name]], [x[1] for x in c[name]], atol=0.01)


def test_synthetic_set_same_in_three_formats(tmp_path):
    make_detection_set(tmp_path)
    sets = [read_detection(tmp_path / "coco.json", tmp_path / "images"),
            read_detection(tmp_path / "voc", tmp_path / "images", "voc", labels=["red", "blue"]),
            read_detection(tmp_path / "yolo", tmp_path / "images", "yolo")]
    t = [_targets(s) for s in sets]
    assert t[0] == t[1] == t[2]
    assert t[0]["img3.png"] == []  # an image without objects is a valid sample


def _bad_coco(tmp_path, mutate):
    coco = make_detection_set(tmp_path)
    mutate(coco)
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    return tmp_path / "bad.json"


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["annotations"][0].update(bbox=[100, 100, 60, 10]), "bbox [100, 100, 60, 10] reaches outside the "
                                                                   "128x128 image"),
    # the record as the file writes it, not a converted xyxy box
    (lambda c: c["annotations"][0].update(bbox=[10, 10, 0, 5]), "bbox [10, 10, 0, 5]: width 0 is not positive"),
    (lambda c: c["annotations"][0].update(bbox=[40, 10, -30, 5]), "bbox [40, 10, -30, 5]: width -30 is not positive"),
    (lambda c: c["annotations"][0].update(bbox=[10, 10, float("nan"), 5]), "not a finite number"),
    (lambda c: c["annotations"][1].update(category_id=99), "unknown category_id 99"),
    (lambda c: c["annotations"][1].update(image_id=777), "image_id 777 is not in the file's images"),
    (lambda c: c["annotations"][1].update(id=c["annotations"][0]["id"]), "is also annotations[0]"),
    (lambda c: c["images"][0].update(file_name="gone.png"), "missing on disk"),
    (lambda c: c["images"][0].update(file_name="../../outside.png"), "points outside the images folder"),
    (lambda c: c["images"][0].update(file_name="/etc/passwd"), "points outside the images folder"),
    (lambda c: c["categories"].append({"id": 9, "name": c["categories"][0]["name"]}), "category name"),
])
def test_bad_coco_records_name_file_and_record(tmp_path, mutate, message):
    path = _bad_coco(tmp_path, mutate)
    with pytest.raises(DataError) as e:
        read_coco(path, tmp_path / "images")
    assert message in str(e.value) and "bad.json" in str(e.value), e.value
    assert len(e.value.one_line().splitlines()) == 1
    skipped = read_coco(path, tmp_path / "images", skip_bad=True)
    assert len(skipped.skipped) >= 1 and message.split()[0] in skipped.skipped[0]


def test_two_images_sharing_an_id_are_refused_not_merged(tmp_path):
    """pycocotools would index both under one id and attach every box to one of them."""
    coco = make_detection_set(tmp_path)
    old = coco["images"][1]["id"]
    coco["images"][1]["id"] = coco["images"][0]["id"]
    (tmp_path / "dup.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="image id .* is also used by another image"):
        read_coco(tmp_path / "dup.json", tmp_path / "images")
    d = read_coco(tmp_path / "dup.json", tmp_path / "images", skip_bad=True)
    shared = coco["images"][0]["id"]
    assert shared not in {r.image_id for r in d.records}  # both left out (ambiguous), their boxes too
    assert len(d.records) == len(coco["images"]) - 2
    assert sum(len(r.boxes) for r in d.records) == sum(a["image_id"] not in (shared, old) for a in coco["annotations"])


def test_names_outside_the_images_folder_need_the_opt_out(tmp_path):
    coco = make_detection_set(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "images" / coco["images"][0]["file_name"]).rename(elsewhere / "moved.png")
    coco["images"][0]["file_name"] = str(elsewhere / "moved.png")
    (tmp_path / "abs.json").write_text(json.dumps(coco))
    with pytest.raises(DataError) as e:
        read_coco(tmp_path / "abs.json", tmp_path / "images")
    assert "points outside the images folder" in str(e.value) and "--allow-outside-images" in e.value.one_line()
    d = read_coco(tmp_path / "abs.json", tmp_path / "images", allow_outside=True)
    assert len(d.records) == len(coco["images"]) and d.records[0].path == elsewhere / "moved.png"


def test_malformed_json_and_yolo_line_with_four_numbers(tmp_path):
    make_detection_set(tmp_path)
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(DataError, match="malformed JSON"):
        read_coco(tmp_path / "broken.json", tmp_path / "images")
    (tmp_path / "yolo" / "img1.txt").write_text("1 0.5 0.5 0.2\n")
    with pytest.raises(DataError, match=r"line 1: expected 'class cx cy w h' \(5 numbers\), got 4") as e:
        read_yolo(tmp_path / "yolo", tmp_path / "images")
    assert "img1.txt" in str(e.value)
    assert len(read_yolo(tmp_path / "yolo", tmp_path / "images", skip_bad=True).skipped) == 1


def _gt_and_results():
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400,
                           "iscrowd": 0}],
          "categories": [{"id": 1, "name": "thing"}]}
    res = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},   # TP
           {"image_id": 1, "category_id": 1, "bbox": [80, 0, 15, 15], "score": 0.8},  # FP
           {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "score": 0.7}]  # TP
    return gt, res


def test_hand_built_ap_2_gt_3_detections():
    gt, res = _gt_and_results()
    # precision/recall: (1, .5), (.5, .5), (2/3, 1)
    assert voc_metrics(gt, res)["mAP"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)          # all-point
    assert voc_metrics(gt, res, eleven_point=True)["mAP"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    m = coco_metrics(gt, res)  # COCO: 101 recall points, the same at every IoU (exact boxes)
    assert m["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-6) and m["AP50"] == pytest.approx(m["AP"])
    assert m["per_class"]["thing"] == pytest.approx(m["AP"])


def test_ground_truth_fed_back_scores_one_and_equals_pycocotools(tmp_path):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = json.loads((VOC / "instances_coco.json").read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    m = coco_metrics(gt, perfect)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert voc_metrics(gt, perfect)["mAP"] == pytest.approx(1.0)
    # a noisy results file: our numbers are pycocotools' own
    rng = np.random.default_rng(0)
    noisy = [{**r, "bbox": [v + float(rng.normal(0, 4)) for v in r["bbox"]], "score": float(rng.random())}
             for r in perfect]
    ours = coco_metrics(gt, noisy)
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(str(VOC / "instances_coco.json"))
        e = COCOeval(g, g.loadRes(noisy), "bbox")
        e.evaluate(), e.accumulate(), e.summarize()
    keys = ["AP", "AP50", "AP75", "APsmall", "APmedium", "APlarge", "AR1", "AR10", "AR100", "ARsmall", "ARmedium",
            "ARlarge"]
    for k, v in zip(keys, e.stats):
        assert ours[k] == pytest.approx(float(v), abs=1e-6)


def test_augmentation_keeps_boxes_valid_and_counts_drops(tmp_path):
    from cvapps.data.detection import DetectionDataset
    from cvapps.data.transforms import Letterbox, detection_augment

    make_detection_set(tmp_path)
    data = read_coco(tmp_path / "coco.json", tmp_path / "images")
    pre = {"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": 96}
    aug = detection_augment()
    aug.set_random_seed(0)
    ds = DetectionDataset(data, Letterbox.from_config(pre), aug)
    total = dropped = 0
    for _ in range(5):
        for i in range(len(ds)):
            x, t = ds[i]
            dropped += t.pop("counts")["dropped_boxes"]
            assert x.shape == (3, 96, 96)
            b = t["boxes"]
            assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
            assert (b >= 0).all() and (b <= 96 + 1e-3).all()
            assert len(t["labels"]) == len(b) == len(t["iscrowd"])
            total += len(b)
    assert total + dropped == 5 * sum(len(r.boxes) for r in data.records)


def test_loader_workers_report_the_same_drops_and_batches(tmp_path):
    """The augmentation's dropped-box tally, counted in worker processes, reaches the main
    process's dataset; 0 and 2 workers load the same (seeded) batches."""
    from cvapps.data.detection import DetectionDataset
    from cvapps.data.loader import make_loader
    from cvapps.data.transforms import Letterbox, detection_augment

    make_detection_set(tmp_path)
    data = read_coco(tmp_path / "coco.json", tmp_path / "images")
    pre = {"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": 96}
    aug = detection_augment()  # its box rules, with a random shift large enough to push boxes out
    aug = A.Compose([A.Affine(translate_percent=(-0.45, 0.45), p=1.0), *aug.transforms],
                    bbox_params=aug.processors["bboxes"].params)
    seen = {}
    for workers in (0, 2):
        ds = DetectionDataset(data, Letterbox.from_config(pre), aug)
        loader = make_loader(ds, 2, shuffle=True, seed=3, workers=workers)
        batches = []
        for epoch in range(4):
            loader.sampler.set_epoch(epoch)
            batches += [(x, [t["boxes"] for t in ts]) for x, ts in loader]
        seen[workers] = (ds.counts["dropped_boxes"], batches)
    assert seen[0][0] == seen[2][0] > 0
    for (xa, ba), (xb, bb) in zip(seen[0][1], seen[2][1], strict=True):
        assert torch.equal(xa, xb) and all(torch.equal(a, b) for a, b in zip(ba, bb))
    # images travel to the training device as uint8 and are normalised there ("meta": no data, any device)
    x, _ = next(iter(make_loader(DetectionDataset(data, Letterbox.from_config(pre)), 2, device="meta")))
    assert x.device.type == "meta" and x.dtype == torch.float32 and x.shape == (2, 3, 96, 96)


def test_coco_image_ids_are_kept_so_results_files_evaluate_against_the_file(tmp_path):
    """Ids 7 and 3 (not 1..N): the records, the ground truth they rebuild and therefore results
    written from them (`cvapps eval --save-results`) carry the file's ids."""
    coco = make_detection_set(tmp_path)
    remap = {1: 7, 2: 3, 3: 12, 4: 5}
    coco["images"] = [{**im, "id": remap[im["id"]]} for im in coco["images"]]
    coco["annotations"] = [{**a, "image_id": remap[a["image_id"]]} for a in coco["annotations"]]
    (tmp_path / "ids.json").write_text(json.dumps(coco))
    d = read_coco(tmp_path / "ids.json", tmp_path / "images")
    assert [r.image_id for r in d.records] == [3, 5, 7, 12]
    assert [r.path.name for r in d.records] == ["img1.png", "img3.png", "img0.png", "img2.png"]
    rebuilt = d.to_coco()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in rebuilt["annotations"]]
    assert coco_metrics(coco, perfect)["AP"] == pytest.approx(1.0)
