"""Segmentation: metrics, models (odd sizes, SegNet indices), data errors, overfit, CLI."""

import io
import json

import cv2
import numpy as np
import pytest
import torch
from rich.console import Console

import cvapps
from cvapps.cli import main
from cvapps.data.segmentation import SegData, median_frequency_weights, read_mask_folder
from cvapps.errors import ConfigError, DataError
from cvapps.tasks.segmentation.metrics import confusion, seg_metrics

from conftest import write_image
from segdata import CLASSES, COLORS, make_sample, make_seg_set

QUIET = Console(file=io.StringIO())


def test_hand_computed_confusion_and_void():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = confusion(pred, gt, 3, 255)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # void pixels never counted
    m = seg_metrics(cm, ["a", "b", "c"])
    assert m["pixel_acc"] == pytest.approx(4 / 6)
    # IoU: a 1/(2+2-1)=1/3, b 2/(2+3-2)=2/3, c 1/(2+1-1)=1/2
    assert m["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 1 / 2})
    assert m["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m["mean_class_acc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert seg_metrics(confusion(gt, gt, 3, 255), ["a", "b", "c"])["mIoU"] == 1.0  # GT fed back


def _model(kind="fcn8s", backbone="mobilenet_v2", size=64):
    torch.manual_seed(0)
    return cvapps.create_model("segment", backbone, labels=CLASSES, kind=kind, img_size=size, colors=COLORS)


@pytest.mark.parametrize("kind,backbone", [("fcn8s", "mobilenet_v2"), ("fcn16s", "resnet18"), ("fcn32s", "resnet18"),
                                           ("segnet", "segnet_basic")])
def test_output_size_equals_input_for_odd_sizes(kind, backbone):
    m = _model(kind, backbone).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 359, 481)).logits.shape == (1, 3, 359, 481)


def test_segnet_needs_pool_indices_and_uses_them():
    with pytest.raises(ConfigError, match="segnet_basic, vgg16_bn"):
        _model("segnet", "resnet18")
    m = _model("segnet", "segnet_basic").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats, pools = m.backbone.forward_with_pool_indices(x)
        a = m.head(feats, pools, x.shape[-2:])
        idx, size = pools[-1]
        shuffled = idx.flatten()[torch.randperm(idx.numel())].view_as(idx)
        b = m.head(feats, pools[:-1] + [(shuffled, size)], x.shape[-2:])
    assert not torch.allclose(a, b)


def test_bad_masks_name_the_file(tmp_path):
    img, mask = make_sample(0)
    write_image(tmp_path / "im" / "a.png", img)
    (tmp_path / "m").mkdir()
    cv2.imwrite(str(tmp_path / "m" / "a.png"), mask[:40])  # wrong size
    d = read_mask_folder(tmp_path / "im", tmp_path / "m", CLASSES)
    with pytest.raises(DataError, match="mask is 64x40 but its image is 64x48") as e:
        d.load_mask(0, img.shape[:2])
    assert "a.png" in str(e.value)
    bad = mask.copy()
    bad[10, 10] = 7
    cv2.imwrite(str(tmp_path / "m" / "a.png"), bad)
    with pytest.raises(DataError, match=r"label values \[7\] outside 0..2"):
        d.load_mask(0, img.shape[:2])
    (tmp_path / "m" / "a.png").unlink()
    with pytest.raises(DataError, match="mask file missing"):
        d.load_mask(0)
    (tmp_path / "pal.json").write_text(json.dumps({"classes": [{"name": n, "color": c} for n, c in zip(CLASSES, COLORS)]}))
    colour = np.zeros((48, 64, 3), np.uint8)
    colour[5, 5] = (1, 2, 3)
    cv2.imwrite(str(tmp_path / "m" / "a.png"), colour)
    d = read_mask_folder(tmp_path / "im", tmp_path / "m", palette=tmp_path / "pal.json")
    with pytest.raises(DataError, match=r"colour \[3, 2, 1\] is not in the class -> colour table"):
        d.load_mask(0)


def test_palette_masks_map_to_classes(tmp_path):
    img, mask = make_sample(1, void=0)
    write_image(tmp_path / "im" / "a.png", img)
    rgb = np.array(COLORS, np.uint8)[mask]
    write_image(tmp_path / "m" / "a.png", rgb)
    (tmp_path / "pal.json").write_text(json.dumps({"classes": [{"name": n, "color": c} for n, c in zip(CLASSES, COLORS)]}))
    d = read_mask_folder(tmp_path / "im", tmp_path / "m", palette=tmp_path / "pal.json")
    np.testing.assert_array_equal(d.load_mask(0), mask)


def test_median_frequency_weights_hand_computed():
    masks = [np.array([[0, 0, 0, 1]]), np.array([[0, 0, 2, 2]])]
    d = SegData([None, None], [lambda m=m: m for m in masks], ["a", "b", "c"], COLORS)
    # f_a = 5/8, f_b = 1/4 (present in image 1 only), f_c = 2/4; median = 1/2
    assert median_frequency_weights(d) == pytest.approx([0.5 / (5 / 8), 0.5 / 0.25, 1.0])


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    root = make_seg_set(tmp_path_factory.mktemp("seg"))
    out = root / "run"
    r = cvapps.train("segment", None, images=str(root / "train"), val_images=str(root / "train"),
                     backbone="mobilenet_v2", kind="fcn8s", classes=CLASSES, masks=str(root / "trainannot"),
                     val_masks=str(root / "trainannot"),
                     img_size=64, epochs=60, batch_size=4, lr=1e-2, backbone_lr_ratio=1.0, augment=False,
                     out=str(out), console=QUIET)
    return root, out, r


def test_overfits_tiny_set_and_round_trips(seg_run, tmp_path):
    root, out, r = seg_run
    assert r["val"]["mIoU"] >= 0.9, r["val"]
    m = cvapps.load(out / "best.safetensors")
    again = cvapps.load(cvapps.save(m, tmp_path / "copy.safetensors"))
    img = str(root / "val" / "s0.png")
    a, b = m.predict(img)[0], again.predict(img)[0]
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.mask.shape == (48, 64)  # full input resolution
    # padding excluded: a confident image area (top 32 rows) and uniform logits in the padding
    raw = m(torch.randn(2, 3, 64, 64))
    logits = torch.zeros_like(raw.logits)
    logits[:, 0, :32] = 30.0
    raw.logits = logits
    u = m.uncertainty(raw, [{"width": 64, "height": 32, "scale": 1.0}] * 2)
    assert u.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    k = len(m.labels)
    assert m.uncertainty(raw).tolist() == pytest.approx([np.log(k) / 2] * 2, abs=1e-4)  # padding counted


def cli(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert e.code == 0


def test_cli_predict_eval_and_results(seg_run, tmp_path, capsys):
    root, out, _ = seg_run
    model = out / "best.safetensors"
    cli("predict", "segment", root / "train", "--model", model, "--out", tmp_path / "p", "--save-json",
        tmp_path / "p.jsonl")
    recs = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(recs) == 4
    pred = recs[0]["predictions"][0]
    assert pred["mask"].endswith("masks/s0.png") and sum(pred["pixels"].values()) == 48 * 64
    assert cv2.imread(pred["mask"], cv2.IMREAD_UNCHANGED).shape == (48, 64)
    capsys.readouterr()
    cli("eval", "segment", "--results", tmp_path / "p" / "masks", "--images", root / "train", "--masks",
        root / "trainannot", "--classes", ",".join(CLASSES), "--ignore-index", "255")
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"mIoU", "pixel_acc", "mean_class_acc", "per_class_iou"} <= set(m) and m["mIoU"] >= 0.9
    cli("eval", "segment", "--model", model, "--images", root / "train", "--masks", root / "trainannot")
    m2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m2["mIoU"] >= 0.9


def test_coco_polygons_and_rle_render_semantic_masks(tmp_path):
    from pycocotools import mask as mask_utils

    from cvapps.data.segmentation import read_coco_semantic

    write_image(tmp_path / "a.png", np.zeros((20, 30, 3), np.uint8))
    rle = np.zeros((20, 30), np.uint8, order="F")
    rle[15:18, 20:25] = 1
    enc = mask_utils.encode(np.asfortranarray(rle))
    enc["counts"] = enc["counts"].decode()
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 20, "bbox": [2, 2, 4, 5],
                 "segmentation": [[2, 2, 6, 2, 6, 7, 2, 7]]},
                {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 15, "bbox": [20, 15, 5, 3],
                 "segmentation": enc}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    d = read_coco_semantic(tmp_path / "c.json", tmp_path)
    assert d.labels == ["background", "cat", "dog"]
    m = d.load_mask(0, (20, 30))
    assert (m[3:6, 3:5] == 2).all() and m[0, 0] == 0  # polygon -> dog
    assert (m[15:18, 20:25] == 255).all()  # crowd RLE -> ignore


def test_skip_bad_counts_broken_pairs(tmp_path):
    from cvapps.data.segmentation import SegDataset
    from cvapps.data.transforms import Letterbox

    root = make_seg_set(tmp_path, n=3)
    (root / "trainannot" / "s1.png").unlink()
    d = read_mask_folder(root / "train", root / "trainannot", CLASSES)
    box = Letterbox((0.5,) * 3, (0.5,) * 3, 64)
    with pytest.raises(DataError, match="mask file missing"):
        SegDataset(d, box)[1]
    ds = SegDataset(d, box, skip_bad=True)
    from cvapps.data.loader import make_loader

    # a worker process meets the bad pair; the main process's data records it
    batches = list(make_loader(ds, 3, workers=1))
    assert [b[0].shape[0] for b in batches] == [2] and len(d.skipped) == 1 and "s1" in d.skipped[0]
