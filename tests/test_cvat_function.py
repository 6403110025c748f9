"""cvapps.integrations.cvat as CVAT's auto-annotation driver sees it (no server): the spec
and the detect() output pass cvat_sdk's own validation and label mapping, for rectangles,
masks (and polygons when CVAT asks), tags and skeletons."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

cvat_models = pytest.importorskip("cvat_sdk.models")
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl  # noqa: E402
from PIL import Image  # noqa: E402

import cvapps  # noqa: E402
from cvapps.integrations import cvat  # noqa: E402


def dataset_labels(spec, names=None, any_type=False):
    """The task's labels in CVAT (other ids, maybe fewer classes, maybe of type "any") for the SDK's mapper."""
    out = []
    for i, lab in enumerate(spec.labels):
        if names is not None and lab.name not in names:
            continue
        subs = [cvat_models.Sublabel(id=500 + j, name=s.name, type="points", attributes=[])
                for j, s in enumerate(lab.get("sublabels") or [])]
        out.append(cvat_models.Label(id=100 + i, name=lab.name, type="any" if any_type else lab.type, sublabels=subs,
                                     attributes=[]))
    return out


def run(fn, image, names=None, poly=False, conf=None):
    ctx = _DetectionFunctionContextImpl(frame_name="f.png", conf_threshold=conf, conv_mask_to_poly=poly)
    anns = fn.detect(ctx, image)
    mapper = _AnnotationMapper(logging.getLogger("t"), fn.spec.labels, dataset_labels(fn.spec, names, poly),
                               allow_unmatched_labels=True, conv_mask_to_poly=poly)
    return anns, mapper.validate_and_remap(anns, 3)


def test_detector_gives_rectangles_matched_by_name(tmp_path, tiny_detector):
    path = cvapps.save(tiny_detector, tmp_path / "det.safetensors")
    fn = cvat.create(model=str(path))
    assert [(lab.name, lab.type) for lab in fn.spec.labels] == [("a", "rectangle"), ("b", "rectangle")]
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    anns, (tags, shapes) = run(fn, img, names={"b"})
    want = tiny_detector.predict([np.asarray(img)])[0]
    assert len(anns) == len(want) > 0
    assert np.allclose([a.points for a in anns], want.boxes, atol=1e-3)
    assert all(s.label_id == 101 and s.frame == 3 and str(s.type) == "rectangle" for s in shapes)  # only "b" mapped
    assert len(shapes) == int((want.labels == 1).sum())
    _, (_, sure) = run(fn, img, conf=float(np.median(want.scores)) + 1e-6)
    assert len(sure) == int((want.scores > np.median(want.scores)).sum())


def test_segmenter_gives_masks_or_polygons_and_classifier_tags(tmp_path, tiny_model):
    torch.manual_seed(0)
    seg = cvapps.create_model("segment", "mobilenet_v3_small", labels=["background", "road", "car"], img_size=64)
    fn = cvat.create(model=str(cvapps.save(seg, tmp_path / "seg.safetensors")))
    assert [lab.name for lab in fn.spec.labels] == ["road", "car"]
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    mask = seg.predict([np.asarray(img)])[0].mask
    present = {seg.labels[c] for c in np.unique(mask)} - {"background"}
    anns, (_, shapes) = run(fn, img)
    assert {str(s.type) for s in shapes} <= {"mask"} and len(shapes) == len(present) > 0
    _, (_, polys) = run(fn, img, poly=True)
    assert polys and {str(s.type) for s in polys} == {"polygon"}
    cls = cvat.create(model=str(cvapps.save(tiny_model, tmp_path / "cls.safetensors")))
    anns, (tags, shapes) = run(cls, img)
    assert len(tags) == 1 and not shapes
    assert cls.spec.labels[tags[0].label_id - 100].name == tiny_model.predict([np.asarray(img)])[0].label


def test_keypoint_models_give_skeletons_with_unsure_points_outside(tmp_path, monkeypatch, coco_detector):
    from cvapps.tasks.keypoints.postprocess import Keypoints

    torch.manual_seed(0)
    model = cvapps.create_model("pose", "mobilenet_v3_small", schema="coco17", img_size=64)
    fn = cvat.create(model=str(cvapps.save(model, tmp_path / "pose.safetensors")))
    (skel,) = fn.spec.labels
    assert str(skel.type) == "skeleton" and skel.name == "person" and [s.name for s in skel.sublabels][:2] == \
        ["nose", "left_eye"]
    pts = np.random.default_rng(2).uniform(5, 50, (1, 17, 2)).astype(np.float32)
    scores = np.where(np.arange(17) % 3 == 0, 0.1, 0.9)[None].astype(np.float32)
    pred = Keypoints(pts, scores, np.array([[1, 1, 60, 60]], np.float32), np.array([0.8], np.float32),
                     list(model.schema.keypoints), model.schema.skeleton, "person")
    monkeypatch.setattr(fn.served, "run", lambda items: [pred])
    anns, (_, shapes) = run(fn, Image.new("RGB", (64, 64)))
    (s,) = shapes
    assert str(s.type) == "skeleton" and len(s.elements) == 17
    assert [e.outside for e in s.elements] == [bool(i % 3 == 0) for i in range(17)]
    assert np.allclose(s.elements[1].points, pts[0, 1])
