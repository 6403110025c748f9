"""Semi-supervised detection and segmentation (`train detect|segment --unlabelled`, a mean
teacher): the box / label warps follow the image warp, the teacher's outputs become
pseudo-labels at the threshold (half-sure boxes ignored), the teacher is the EMA of the student
started from it after the burn-in, and runs log their pseudo-labels and resume exactly."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import interrupt_at_epoch
from detdata import make_detection_set
from rich.console import Console
from safetensors.torch import load_file
from segdata import CLASSES, make_seg_set

import cvapps
from cvapps.tasks import meanteacher
from cvapps.tasks.detection.postprocess import Detections
from cvapps.tasks.detection.spec import pseudo_boxes, warp_targets
from cvapps.tasks.meanteacher import random_affine, warp_boxes, warp_images, warp_labels
from cvapps.tasks.segmentation.spec import pseudo_masks

QUIET = Console(file=io.StringIO())


def test_boxes_move_with_the_image():
    """A white rectangle warped with random zooms, flips and shifts: the warped box is the
    bounding box of the warped white pixels (within a pixel); a flip with zoom 1 and no shift
    mirrors x exactly."""
    torch.manual_seed(3)
    h, w = 60, 80
    img = torch.zeros(1, 1, h, w)
    img[..., 20:40, 10:30] = 1.0
    box = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    aff = random_affine(6, (h, w))
    assert (aff[:, 0, 0] < 0).any() and (aff[:, 0, 0] > 0).any()  # both flipped and unflipped draws
    warped = warp_images(img.expand(6, 1, h, w), aff)
    for a, im in zip(aff, warped):
        b, kept, visible = warp_boxes(box, a, (h, w))
        ys, xs = torch.nonzero(im[0] > 0.5, as_tuple=True)
        seen = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert kept.item() and visible.item() == pytest.approx(1.0)
        assert torch.allclose(b[0], seen, atol=1.0), (a, b, seen)
    mirror = torch.tensor([[[-1.0, w], [1.0, 0.0]]])  # x' = -x + W, y' = y
    b, _, _ = warp_boxes(box, mirror[0], (h, w))
    assert b.tolist() == [[50.0, 20.0, 70.0, 40.0]]
    assert torch.equal(warp_images(img, mirror), img.flip(-1))


def test_a_box_pushed_out_of_view_is_clipped_and_its_visible_share_kept():
    shift = torch.tensor([[1.0, 40.0], [1.0, 0.0]])  # x' = x + 40 on an 80 px wide image
    b, kept, visible = warp_boxes(torch.tensor([[20.0, 0.0, 60.0, 10.0], [50.0, 0.0, 70.0, 10.0]]), shift, (60, 80))
    assert b.tolist() == [[60.0, 0.0, 80.0, 10.0], [80.0, 0.0, 80.0, 10.0]]
    assert kept.tolist() == [True, False] and visible[0].item() == pytest.approx(0.5)
    targets = warp_targets([{"boxes": torch.tensor([[20.0, 0.0, 60.0, 10.0], [0.0, 0.0, 20.0, 10.0]]),
                             "labels": torch.tensor([1, 0]), "iscrowd": torch.tensor([False, False])}],
                           torch.tensor([[[1.0, 50.0], [1.0, 0.0]]]), (60, 80))
    # 10 of 40 px left of the first (0.25: kept as a box), the second fully in view
    assert targets[0]["boxes"].tolist() == [[70.0, 0.0, 80.0, 10.0], [50.0, 0.0, 70.0, 10.0]]
    assert targets[0]["iscrowd"].tolist() == [False, False]
    targets = warp_targets([{"boxes": torch.tensor([[20.0, 0.0, 60.0, 10.0]]), "labels": torch.tensor([1]),
                             "iscrowd": torch.tensor([False])}], torch.tensor([[[1.0, 52.0], [1.0, 0.0]]]), (60, 80))
    assert targets[0]["iscrowd"].tolist() == [True]  # 8 of 40 px in view: ignored, not taught


def test_labels_move_with_the_image_and_outside_is_ignored():
    mask = torch.arange(12).reshape(1, 3, 4) % 3
    flipped = warp_labels(mask, torch.tensor([[[-1.0, 4.0], [1.0, 0.0]]]), ignore=255)
    assert torch.equal(flipped, mask.flip(-1))
    moved = warp_labels(mask, torch.tensor([[[1.0, 1.0], [1.0, 0.0]]]), ignore=255)  # one pixel right
    assert moved[0, :, 0].tolist() == [255] * 3 and torch.equal(moved[0, :, 1:], mask[0, :, :3])


def test_teacher_detections_become_boxes_and_half_sure_ones_are_ignored():
    """postprocess is asked for scores >= conf / 2; those under conf become crowd (no loss)."""
    asked = {}

    def postprocess(raw, metas, conf):
        asked.update(conf=conf, metas=metas)
        return [Detections(np.array([[1, 2, 30, 40], [5, 5, 9, 9]], np.float32), np.array([0.9, 0.5], np.float32),
                           np.array([1, 0])), Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                                         np.zeros(0, np.int64))]

    class Teacher:
        def __call__(self, x):
            return None

    teacher = Teacher()
    teacher.postprocess = postprocess
    targets, per_image = pseudo_boxes(0.7)(teacher, torch.zeros(2, 3, 64, 96), None)
    assert asked["conf"] == pytest.approx(0.35) and asked["metas"][0]["scale_xy"] == (1.0, 1.0)
    assert targets[0]["boxes"].tolist() == [[1, 2, 30, 40], [5, 5, 9, 9]] and targets[0]["labels"].tolist() == [1, 0]
    assert targets[0]["iscrowd"].tolist() == [False, True] and len(targets[1]["boxes"]) == 0
    assert per_image == 0.5  # one confident box over two images


def test_teacher_pixels_become_labels_inside_the_image_only():
    logits = torch.zeros(1, 2, 2, 3)
    logits[0, 1] = torch.tensor([[4.0, 0.5, 4.0], [4.0, 4.0, 4.0]])  # p(1) = 0.982 or 0.62
    teacher = lambda x: SimpleNamespace(logits=logits)  # noqa: E731
    labels, rate = pseudo_masks(0.9, 11)(teacher, torch.zeros(1, 3, 2, 3), torch.tensor([[2, 2]]))
    assert labels.tolist() == [[[1, 11, 11], [1, 1, 11]]]  # unsure, and column 2 is padding
    assert rate == pytest.approx(3 / 4)


def _recording(monkeypatch):
    """Each mean-teacher call's (teacher, student) copy of one weight."""
    seen = []
    call = meanteacher.MeanTeacher.__call__

    def spy(self, model, u, info=None, teacher=None):
        name = next(n for n, p in model.named_parameters() if p.requires_grad)
        seen.append((dict(teacher.named_parameters())[name].detach().clone(),
                     dict(model.named_parameters())[name].detach().clone()))
        return call(self, model, u, info, teacher)

    monkeypatch.setattr(meanteacher.MeanTeacher, "__call__", spy)
    return seen


@pytest.fixture(scope="module")
def det_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtdet")
    make_detection_set(root)
    make_detection_set(root / "pool")
    return root


DET = dict(backbone="mobilenet_v3_small", img_size=96, epochs=3, batch_size=1, lr=3e-3, warmup_epochs=0.5, seed=2,
           unlabelled_warmup=0.3, unlabelled_threshold=0.05, console=QUIET)


def test_teacher_starts_as_the_student_then_follows_its_average(det_set, tmp_path, monkeypatch):
    """Burn-in is epoch 1 (0.3 of 3, rounded up); the unlabelled images join in epoch 2, where the teacher
    is first the student itself, then after each step decay * teacher + (1 - decay) * student."""
    seen = _recording(monkeypatch)
    cvapps.train("detect", str(det_set / "coco.json"), images=str(det_set / "images"), out=str(tmp_path / "r"),
                 unlabelled=[str(det_set / "pool" / "images")], ema=0.9, **DET)
    assert len(seen) >= 2 and len(seen) % 2 == 0  # the steps of epochs 2 and 3
    t0, s0 = seen[0]
    assert torch.equal(t0, s0)
    for (t_prev, _), (t, s) in zip(seen, seen[1:]):
        assert torch.allclose(t, 0.9 * t_prev + 0.1 * s, atol=1e-6)
        assert not torch.allclose(t, s)
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert "pseudo_boxes" not in recs[0] and all("pseudo_boxes" in r and "unlabelled_loss" in r for r in recs[1:])


def test_detection_run_resumes_exactly(det_set, tmp_path, monkeypatch):
    args = dict(images=str(det_set / "images"), unlabelled=[str(det_set / "pool" / "images")], **DET)
    cvapps.train("detect", str(det_set / "coco.json"), out=str(tmp_path / "full"), **args)
    undo = interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        cvapps.train("detect", str(det_set / "coco.json"), out=str(tmp_path / "part"), **args)
    undo()
    cvapps.train("detect", str(det_set / "coco.json"), out=str(tmp_path / "part"), resume=True, **args)
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "part" / "last.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_segmentation_learns_from_confident_pixels(tmp_path):
    """A segmentation run with a pool: pixels at >= the threshold are labels (their share is
    logged as mask_rate) and the unlabelled loss is the student's cross-entropy to them. (A few
    steps leave BatchNorm's running statistics near their start: the eval-mode teacher is near
    uniform over the 3 classes, hence the low threshold.)"""
    root = make_seg_set(tmp_path / "seg", n=4)
    pool = make_seg_set(tmp_path / "pool", n=4) / "val"
    r = cvapps.train("segment", None, images=str(root / "train"), masks=str(root / "trainannot"), classes=CLASSES,
                     backbone="mobilenet_v3_small", img_size=64, epochs=6, batch_size=1, lr=1e-2, seed=0,
                     unlabelled=[str(pool)], unlabelled_threshold=0.35, out=str(tmp_path / "run"), console=QUIET)
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert r["epochs_run"] == 6 and "mask_rate" not in recs[1] and "mask_rate" in recs[2]
    assert 0 < recs[-1]["mask_rate"] <= 1 and recs[-1]["unlabelled_loss"] > 0
