"""Segmentation and keypoint distillation: the per-pixel KL by hand, the teacher's probability
grid mapped back onto the original image, students of another head or input size distilled
from trained teachers on unlabelled images reproducing their masks and points."""

import io
import json

import numpy as np
import pytest
import torch
from rich.console import Console

import cvapps
from cvapps.data.transforms import Letterbox
from cvapps.tasks.segmentation.distill import original_probs
from cvapps.tasks.segmentation.model import pixel_kl

from segdata import CLASSES, make_seg_set

QUIET = Console(file=io.StringIO())


def test_pixel_kl_equals_the_hand_computed_value():
    """Two pixels, the second padding (no teacher probabilities): only the first counts."""
    logits = torch.tensor([[[[2.0, 5.0]], [[0.0, -1.0]]]])  # (1, 2 classes, 1, 2)
    soft = torch.tensor([[[[0.7, 0.0]], [[0.3, 0.0]]]])
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    expected = 0.7 * np.log(0.7 / float(p[0])) + 0.3 * np.log(0.3 / float(p[1]))
    assert float(pixel_kl(logits, soft)["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(pixel_kl(torch.log(soft + 1e-12), soft)["loss"]) == pytest.approx(0.0, abs=1e-5)


def test_teacher_probabilities_map_back_to_the_original_image():
    """A 16 x 8 input letterboxing a 32 x 8 image (scale 0.5): the image fills the top 4 input
    rows, 1 grid row of 4 x 4 cells; the padding row is cropped before resizing to 32 x 8."""
    box = Letterbox((0.5,) * 3, (0.5,) * 3, (8, 16))
    grid = np.zeros((2, 2, 4), np.uint8)  # (C, 8 / 4, 16 / 4)
    grid[0, 0], grid[1, 0] = 200, 55  # the image row
    grid[:, 1] = 7  # the padding row: must not leak in
    out = original_probs(grid, box, 32, 8)
    assert out.shape == (8, 32, 2)
    assert (out[..., 0] == 200).all() and (out[..., 1] == 55).all()


@pytest.fixture(scope="module")
def seg_teacher(tmp_path_factory):
    root = make_seg_set(tmp_path_factory.mktemp("segkd"))
    cvapps.train("segment", None, images=str(root / "train"), masks=str(root / "trainannot"), backbone="mobilenet_v2",
                 kind="fcn8s", classes=CLASSES, img_size=64, epochs=40, batch_size=4, lr=1e-2,
                 backbone_lr_ratio=1.0, augment=False, out=str(root / "teacher"), console=QUIET)
    return root


def test_student_distilled_without_labels_reproduces_the_teachers_masks(seg_teacher, tmp_path):
    """The student (FCN-16s at 80 px; the teacher FCN-8s at 64) sees the training images only,
    no masks; on the unseen validation images its masks agree with the teacher's on >= 90% of
    the pixels, and it scores the teacher's mIoU within 0.1 against the true masks."""
    root = seg_teacher
    teacher = root / "teacher" / "best.safetensors"
    r = cvapps.distill("segment", str(teacher), [str(root / "train")] * 8, head={"kind": "fcn16s"}, img_size=80,
                       val=str(root), out=str(tmp_path / "s"), epochs=12, batch_size=4, lr=5e-3, augment=False,
                       console=QUIET)
    student = cvapps.load(tmp_path / "s" / "best.safetensors")
    assert student.config["head"]["kind"] == "fcn16s" and student.labels == CLASSES
    val = sorted(str(p) for p in (root / "val").glob("*.png"))
    t_masks = [m.mask for m in cvapps.load(teacher).predict(val)]
    s_masks = [m.mask for m in student.predict(val)]
    agree = np.mean([(a == b).mean() for a, b in zip(t_masks, s_masks)])
    assert agree >= 0.9, agree
    assert r["val"]["mIoU"] >= r["teacher_val"]["mIoU"] - 0.1, (r["val"], r["teacher_val"])


def test_landmark_student_learns_the_teachers_points(tmp_path):
    """A heatmap landmark teacher fitted to 4 synthetic faces; a student at another input size
    learns its points (given the same boxes: teacher_options) without the labels: its points
    lie within 1.5 px of the teacher's on average, and the teacher's points were written as
    COCO keypoints in OUT."""
    from test_keypoints import _overfit

    teacher, _, fitted, _, ann = _overfit("landmarks", tmp_path, 150, kind="heatmap")
    assert fitted["NME"] < 0.09
    images = sorted(str(p) for p in tmp_path.glob("face*.png"))
    cvapps.distill("landmarks", teacher, images * 6, img_size=[64, 64], teacher_options={"boxes": str(ann)}, conf=0.05,
                   out=str(tmp_path / "s"), epochs=10, batch_size=4, lr=1e-3, augment=False, console=QUIET)
    written = json.loads((tmp_path / "s" / "teacher_keypoints.json").read_text())
    assert len(written["annotations"]) == 24 and written["categories"][0]["keypoints"][0] == "left_eye"
    student = cvapps.load(tmp_path / "s" / "best.safetensors")
    assert student.config["preprocessing"]["input_size"] == [64, 64]
    boxes = [np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]])
             for a in json.loads(ann.read_text())["annotations"]]
    t_pts = np.stack([p.points[0] for p in teacher.predict(images, boxes=boxes)])
    s_pts = np.stack([p.points[0] for p in student.predict(images, boxes=boxes)])
    gap = float(np.linalg.norm(t_pts - s_pts, axis=-1).mean())
    assert gap < 1.5, gap
