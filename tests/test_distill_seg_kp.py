"""Segmentation and keypoint distillation: the per-pixel KL by hand, the teacher's probability
grid mapped back onto the original image, students of another head or input size distilled
from trained teachers on unlabelled images reproducing their masks and points."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

import cvapps
from cvapps.data.transforms import Letterbox
from cvapps.tasks.segmentation.distill import original_probs
from cvapps.tasks.segmentation.model import pixel_kl

from conftest import write_image
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
    lie within 3 px of the teacher's on average (5% of the ~60 px faces; an untrained student is
    ~28 px off; trained ones land at 1.0-1.7 px depending on the CPU's rounding), and the
    teacher's points were written as COCO keypoints in OUT."""
    from test_keypoints import _overfit

    teacher, _, fitted, _, ann = _overfit("landmarks", tmp_path, 150, kind="heatmap")
    assert fitted["NME"] < 0.09
    images = sorted(str(p) for p in tmp_path.glob("face*.png"))
    cvapps.distill("landmarks", teacher, images * 2, img_size=[64, 64], teacher_options={"boxes": str(ann)}, conf=0.05,
                   out=str(tmp_path / "s"), epochs=60, batch_size=4, lr=1e-3, augment=False, console=QUIET)
    written = json.loads((tmp_path / "s" / "teacher_keypoints.json").read_text())
    # an image given twice is distilled once
    assert len(written["annotations"]) == 4 and written["categories"][0]["keypoints"][0] == "left_eye"
    student = cvapps.load(tmp_path / "s" / "best.safetensors")
    assert student.config["preprocessing"]["input_size"] == [64, 64]
    boxes = [np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]])
             for a in json.loads(ann.read_text())["annotations"]]
    t_pts = np.stack([p.points[0] for p in teacher.predict(images, boxes=boxes)])
    s_pts = np.stack([p.points[0] for p in student.predict(images, boxes=boxes)])
    gap = float(np.linalg.norm(t_pts - s_pts, axis=-1).mean())
    assert gap < 3.0, gap


def test_labelled_masks_join_in_the_teachers_class_order():
    """Labelled masks whose classes are the teacher's in another order (void 11) are mapped by
    name (void -> the student's 255); classes the teacher lacks are refused in one line."""
    from functools import partial

    from cvapps.data.segmentation import SegData
    from cvapps.tasks.segmentation.distill import labelled

    raw = np.array([[0, 1, 2, 11]], np.int64)  # disc, bg, bar, void in the labelled set's order
    theirs = SegData([Path("a.png")], [partial(raw.copy)], ["disc", "bg", "bar"], [[0, 0, 0]] * 3, 11)
    images, masks = labelled(lambda *a: theirs, {"labels": "masks", "label_images": "imgs"}, CLASSES, 255)
    assert images == [Path("a.png")] and masks[0]().tolist() == [[2, 0, 1, 255]]  # CLASSES = bg, bar, disc
    other = SegData([Path("a.png")], [partial(raw.copy)], ["disc", "sky", "bar"], [[0, 0, 0]] * 3, 11)
    with pytest.raises(cvapps.DataError, match=r"labelled classes \['sky'\] are not among the teacher's"):
        labelled(lambda *a: other, {"labels": "masks", "label_images": "imgs"}, CLASSES, 255)


def test_labelled_colour_masks_join_through_their_palette(seg_teacher, tmp_path):
    """Colour masks with a palette (its classes in another order than the teacher's) are read
    through the palette and mapped by name, as `distill segment --palette` / `self-train
    --palette` pass them to the segmentation task's distillation data."""
    from cvapps.tasks import TASKS
    from conftest import write_image
    from segdata import COLORS, make_sample

    img, mask = make_sample(1, void=0)
    write_image(tmp_path / "im" / "a.png", img)
    write_image(tmp_path / "m" / "a.png", np.array(COLORS, np.uint8)[mask])
    order = [2, 0, 1]  # the palette lists the classes as disc, bg, bar
    table = {"classes": [{"name": CLASSES[i], "color": COLORS[i]} for i in order]}
    (tmp_path / "pal.json").write_text(json.dumps(table))

    class NoPool:  # the teacher's outputs on the (empty) unlabelled pool
        def outputs(self, paths, fn):
            return torch.zeros(0, 3, 8, 8), []

    teacher = cvapps.load(seg_teacher / "teacher" / "best.safetensors")
    data, _ = TASKS.get("segment").distill_data(teacher, [], NoPool(), {
        "labels": str(tmp_path / "m"), "label_images": str(tmp_path / "im"), "palette": str(tmp_path / "pal.json")})
    assert data.images == [tmp_path / "im" / "a.png"] and data.labels == CLASSES
    np.testing.assert_array_equal(data.load_mask(0), mask)


def test_a_labelled_image_among_the_teachers_learns_its_mask_by_cross_entropy(tmp_path):
    """In a distillation set, an image without teacher probabilities gets its mask one-hot as
    the target, so the per-pixel KL on it equals the cross-entropy (void pixels left out)."""
    import torch.nn.functional as F

    from cvapps.data.segmentation import SegData, SegDataset
    from segdata import make_sample
    from conftest import write_image

    img, mask = make_sample(0)
    write_image(tmp_path / "s.png", img)
    data = SegData([tmp_path / "s.png"], [lambda: mask.astype(np.int64)], CLASSES, [[0, 0, 0]] * 3, 255, soft=[None])
    _, target = SegDataset(data, Letterbox((0.5,) * 3, (0.5,) * 3, (48, 64)))[0]
    assert target["mask"].dtype == torch.int16  # a quarter of int64's bytes between processes; the loss widens it
    gt = target["mask"].long()
    assert target["soft"].shape == (3, 48, 64) and (target["soft"].argmax(0)[gt != 255] == gt[gt != 255]).all()
    assert (target["soft"].sum(0) == (gt != 255).float()).all()  # void and padding: no target
    logits = torch.randn(1, 3, 48, 64)
    kl = pixel_kl(logits, target["soft"][None])["loss"]
    assert float(kl) == pytest.approx(float(F.cross_entropy(logits, gt[None], ignore_index=255)), rel=1e-5)


def test_self_training_segments_through_the_previous_rounds_model(seg_teacher, tmp_path):
    """Round 0 on the labelled masks; round 1 trains on them + the pool labelled by round 0's
    model; the curve's figures are the rounds' models scored on the validation set."""
    from segdata import make_sample
    from conftest import write_image

    root = seg_teacher
    for k in range(3):
        write_image(tmp_path / "pool" / f"p{k}.png", make_sample(k + 7)[0])
    fast = dict(backbone="mobilenet_v2", kind="fcn8s", img_size=64, epochs=2, batch_size=4, lr=1e-2, augment=False)
    r = cvapps.self_train("segment", None, [str(tmp_path / "pool"), str(root / "train")], images=str(root / "train"),
                          masks=str(root / "trainannot"), classes=CLASSES, val=str(root), rounds=1, threshold=0.5,
                          out=str(tmp_path / "st"), console=QUIET, **fast)
    assert [(x["round"], x["labelled"], x["pseudo"]) for x in r["rounds"]] == [(0, 4, 0), (1, 4, 3)]  # labelled left out of the pool
    for x in r["rounds"]:
        best = cvapps.load(tmp_path / "st" / f"round{x['round']}" / "best.safetensors")
        assert cvapps.evaluate(best, str(root))["mIoU"] == pytest.approx(x["mIoU"], abs=1e-4)
    assert (tmp_path / "st" / "self_training.png").is_file()


def test_labelled_points_join_keypoint_distillation_reordered_by_name(tmp_path):
    """A labelled COCO keypoints file with the teacher's point names in another order joins
    with its points put in the teacher's order; other names are refused."""
    from cvapps.data.keypoints import read_keypoints
    from cvapps.tasks.keypoints.spec import _labelled

    from kpdata import write_faces

    ann = write_faces(tmp_path, 2)
    teacher = read_keypoints(ann, tmp_path)
    d = json.loads(ann.read_text())
    names = d["categories"][0]["keypoints"]
    order = [4, 2, 0, 1, 3]  # the labelled file lists point order[j] of the teacher at j
    d["categories"][0]["keypoints"] = [names[i] for i in order]
    for a in d["annotations"]:
        kp = np.array(a["keypoints"]).reshape(-1, 3)
        a["keypoints"] = kp[order].reshape(-1).tolist()
    (tmp_path / "perm.json").write_text(json.dumps(d))
    recs = _labelled(str(tmp_path / "perm.json"), str(tmp_path), teacher.schema, 10)
    assert [r.image_id for r in recs] == [11, 12]
    for mine, theirs in zip(recs, teacher.records):
        np.testing.assert_allclose(mine.instances[0].keypoints, theirs.instances[0].keypoints)
    d["categories"][0]["keypoints"][0] = "chin"
    (tmp_path / "other.json").write_text(json.dumps(d))
    with pytest.raises(cvapps.DataError, match="the labelled points lack"):
        _labelled(str(tmp_path / "other.json"), str(tmp_path), teacher.schema, 10)


def test_self_training_landmarks_boxes_the_pool_as_told(tmp_path):
    """Round 1 of landmark self-training: round 0's model puts points on the pool's faces
    (boxed by a COCO file: teacher_options; a barely trained model, so every instance is kept),
    written as COCO keypoints, and trains on them +
    the labelled faces; each round's NME is its saved model's."""
    from kpdata import write_faces

    ann = write_faces(tmp_path / "lab", 4)
    pool = write_faces(tmp_path / "pool", 3, seed=10)
    fast = dict(backbone="mobilenet_v3_small", img_size=[64, 64], epochs=2, batch_size=4, lr=1e-3, augment=False)
    r = cvapps.self_train("landmarks", str(ann), [str(tmp_path / "pool")], images=str(tmp_path / "lab"), val=str(ann),
                          rounds=1, threshold=1e-4, teacher_options={"boxes": str(pool)}, out=str(tmp_path / "st"),
                          console=QUIET, **fast)
    assert [(x["round"], x["labelled"], x["pseudo"]) for x in r["rounds"]] == [(0, 4, 0), (1, 4, 3)]
    written = json.loads((tmp_path / "st" / "round1" / "teacher_keypoints.json").read_text())
    assert len(written["images"]) == 3 and {Path(i["file_name"]).parent for i in written["images"]} == {tmp_path / "pool"}
    for x in r["rounds"]:
        best = cvapps.load(tmp_path / "st" / f"round{x['round']}" / "best.safetensors")
        got = cvapps.evaluate(best, str(ann), images=str(tmp_path / "lab"))["NME"]
        assert got == pytest.approx(x["NME"], abs=1e-4)


def test_keypoint_teacher_labels_stay_with_their_images_past_an_unreadable_one(tmp_path):
    """The teacher's instances are written under the image they came from: a corrupt image in
    the pool is reported and left out, and the images after it keep their own boxes."""
    from cvapps.distilling import TeacherRunner
    from cvapps.tasks import TASKS

    torch.manual_seed(0)
    teacher = cvapps.create_model("landmarks", "mobilenet_v3_small", img_size=[64, 64], schema="face5").eval()
    with torch.no_grad():  # heatmap peaks of 0.5: every instance is confident enough to be written
        teacher.head["main"].final.bias.fill_(0.5)
    rng = np.random.default_rng(0)
    paths = [write_image(tmp_path / f"f{i}.png", rng.integers(0, 255, (80, 100, 3), np.uint8)) for i in range(4)]
    (tmp_path / "f1.png").write_bytes(b"not an image")
    boxes = {f"f{i}.png": [5 + 10 * i, 6, 40, 50] for i in range(4)}  # a box of its own per image
    (tmp_path / "boxes.json").write_text(json.dumps([{"file_name": k, "bbox": v} for k, v in boxes.items()]))
    opts = {"out": str(tmp_path / "d"), "conf": 1e-9, "teacher_options": {"boxes": str(tmp_path / "boxes.json")}}
    TASKS.get("landmarks").distill_data(teacher, paths, TeacherRunner(teacher, QUIET), opts)
    written = json.loads((tmp_path / "d" / "teacher_keypoints.json").read_text())
    names = {im["id"]: Path(im["file_name"]).name for im in written["images"]}
    got = {names[a["image_id"]]: [round(v) for v in a["bbox"]] for a in written["annotations"]}
    assert got == {k: v for k, v in boxes.items() if k != "f1.png"}


@pytest.mark.parametrize("task", ["classify", "detect", "segment"])
def test_an_unreadable_pool_image_is_reported_and_left_out_the_others_keep_their_outputs(task, tmp_path):
    """Tensor-output distillation (classify / detect / segment) treats a corrupt pool image as
    keypoint distillation does: named on the console, left out, and the teacher's outputs of
    the other images stay with their own images (compared with the outputs of the readable
    images alone). Before, the whole run stopped at the bad file."""
    from cvapps.distilling import TeacherRunner
    from cvapps.tasks import TASKS

    torch.manual_seed(0)
    extra = {"classify": {"labels": ["a", "b", "c"]}, "detect": {"labels": ["x", "y"]},
             "segment": {"labels": ["p", "q"]}}[task]
    teacher = cvapps.create_model(task, "mobilenet_v3_small", img_size=[64, 64], **extra).eval()
    rng = np.random.default_rng(0)
    paths = [write_image(tmp_path / f"f{i}.png", rng.integers(0, 255, (60 + 7 * i, 80, 3), np.uint8)) for i in range(4)]
    (tmp_path / "f1.png").write_bytes(b"not an image")
    out = io.StringIO()
    console = Console(file=out, width=200)
    fn = lambda x: teacher(x).logits.float() if task == "classify" else x.float().mean((1, 2, 3))[:, None]  # noqa: E731
    got, kept = TeacherRunner(teacher, console).outputs(paths, fn)
    assert kept == [0, 2, 3] and "f1.png" in out.getvalue()
    alone, _ = TeacherRunner(teacher, QUIET).outputs([paths[i] for i in kept], fn)
    torch.testing.assert_close(got, alone)
    # and the task's distillation data holds exactly the readable images
    opts = {"out": str(tmp_path / "d"), "conf": 1e-9}
    data, _ = TASKS.get(task).distill_data(teacher, paths, TeacherRunner(teacher, QUIET), opts)
    held = [str(getattr(r, "path", r)) for r in getattr(data, "records", None) or getattr(data, "paths", None)
            or getattr(data, "images", None)]
    assert held == [str(paths[i]) for i in kept]
