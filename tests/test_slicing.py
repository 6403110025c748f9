"""Sliced detection (--tiles): tile geometry, the merge rule on hand-made boxes, and the
pipeline (PyTorch, ONNX Runtime, CLI, tracking) equal to the detector run on each tile."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli

import cvapps
from cvapps.errors import ConfigError
from cvapps.tasks.batch import predict_inputs
from cvapps.tasks.detection.postprocess import Detections
from cvapps.tasks.detection.slicing import merge, parse_tiles, windows


def _image(h=150, w=200, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 10, w // 10, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)  # blocks: structure at every scale


def test_tiles_cover_the_image_and_neighbours_share_a_fifth():
    # 640 x 480 in 2 x 2: tiles 640/1.8 = 355.6 by 480/1.8 = 266.7, starting every 0.8 of a tile
    assert windows(480, 640, 2, 2) == [(0, 0, 356, 267), (284, 0, 640, 267), (0, 213, 356, 480), (284, 213, 640, 480)]
    assert windows(100, 300, 1, 3) == [(0, 0, 115, 100), (92, 0, 207, 100), (185, 0, 300, 100)]
    assert parse_tiles("2x3") == (2, 3) and parse_tiles(None) is None
    for bad in ("3", "1x1", "9x1", "axb"):
        with pytest.raises(ConfigError, match="--tiles"):
            parse_tiles(bad)


def _dets(rows):
    a = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64), ["a", "b"], [1, 2])


def test_merge_drops_a_part_cut_by_a_tile_but_keeps_objects_inside_others():
    whole = _dets([[10, 10, 50, 250, 0.9, 0],    # an adult on the whole 300 x 300 frame
                   [20, 40, 45, 100, 0.8, 0]])   # a child in front (inside the adult's box, IoU 0.16): stays
    tile = _dets([[10, 10, 50, 90, 0.7, 0],      # the adult's upper part, cut by the tile's bottom edge: goes
                  [10, 10, 50, 90, 0.6, 1],      # the same place, another class, scoring below the adult: goes
                  [15, 20, 40, 60, 0.65, 0],     # inside the adult but whole in the tile (not cut): stays
                  [90, 50, 110, 80, 0.55, 0],    # cut by the right edge, inside nothing: stays
                  [60, 20, 80, 60, 0.5, 0]])     # only the tile sees it
    windows_ = [(0, 0, 300, 300), (0, 0, 110, 90)]
    out = merge([whole, tile], windows_, 300, 300, iou=0.5, max_det=100)
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.65, 0.55, 0.5])
    assert out.labels.tolist() == [0, 0, 0, 0, 0]
    assert merge([whole, tile], windows_, 300, 300, iou=0.5, max_det=2).scores.tolist() == pytest.approx([0.9, 0.8])
    # a part of another class scoring above the whole box is a different object: it stays
    other = merge([whole, _dets([[10, 10, 50, 90, 0.95, 1]])], windows_, 300, 300, iou=0.5, max_det=100)
    assert other.labels.tolist() == [1, 0, 0]
    # tiles away from the origin: boxes move into place; NMS across passes keeps the better duplicate
    moved = merge([_dets([[100, 100, 140, 180, 0.6, 0]]), _dets([[10, 10, 40, 80, 0.7, 0]])],
                  [(0, 0, 300, 300), (100, 100, 200, 200)], 300, 300, iou=0.5, max_det=100)
    assert moved.boxes.tolist() == [[110, 110, 140, 180]] and moved.scores.tolist() == pytest.approx([0.7])


def test_a_part_never_outscores_or_suppresses_its_whole_box():
    """The two photos where tiles used to split one object (voc-detection): a man found whole
    in the image (0.80) came out as an upper body (0.86, cut at the tiles' row edge) and legs
    (0.66), the whole box suppressed; a train became three boxes."""
    wins = windows(375, 500, 2, 2)  # 500 x 375: tile rows start at y 0 and 167, the first ends at 208
    man = merge([_dets([[401, 72, 462, 243, 0.80, 0]]),             # the whole image
                 _dets([]),                                         # top-left tile
                 _dets([[402 - 222, 70, 468 - 222, 208, 0.86, 0]]),   # top-right tile: cut at its bottom edge
                 _dets([]),                                         # bottom-left
                 _dets([[405 - 222, 0, 462 - 222, 259 - 167, 0.66, 0]])],  # bottom-right: cut at its top edge
                [(0, 0, 500, 375)] + wins, 500, 375, iou=0.45, max_det=100)
    assert man.boxes.tolist() == [[401, 72, 462, 243]] and man.scores.tolist() == pytest.approx([0.80])
    wins = windows(335, 500, 2, 2)  # 500 x 335: rows at y 0 and 149, the first ends at 186
    train = merge([_dets([[4, 45, 221, 288, 0.68, 1]]),
                   _dets([[2, 12, 218, 186, 0.72, 1]]),                # top-left tile, cut at its bottom
                   _dets([]),
                   _dets([[0, 0, 234, 297 - 149, 0.89, 1]]),            # bottom-left tile, cut at its top
                   _dets([])],
                  [(0, 0, 500, 335)] + wins, 500, 335, iou=0.45, max_det=100)
    assert train.boxes.tolist() == [[4, 45, 221, 288]]
    # chelsea.jpg (400 x 266): a strip of the cat from the lower tiles starts 1.5 px below their top edge (y 118)
    wins = windows(266, 400, 2, 2)
    assert wins[2][1] == 118
    cat = merge([_dets([[5.8, 0.1, 345.9, 264.3, 0.88, 0]]), _dets([]), _dets([]),
                 _dets([[3.4, 119.5 - 118, 215.8, 144.0 - 118, 0.78, 0]]), _dets([])],
                [(0, 0, 400, 266)] + wins, 400, 266, iou=0.45, max_det=100)
    assert cat.scores.tolist() == pytest.approx([0.88])


def test_sliced_predict_is_the_detector_on_the_image_and_each_tile_merged(tiny_detector):
    """The pipeline = the detector's own output for each pass, postprocessed, shifted and merged.
    The reference runs the passes as one batch, as the pipeline does: a random detector's
    scores are near-ties (~1/3 each), and another batch shape rounds differently on some
    CPUs, which would change which of two equal boxes NMS keeps."""
    image = _image()
    pre, post = tiny_detector.spec.predict_setup(tiny_detector, None, tiles="2x2")
    got = predict_inputs(tiny_detector, [image, image[::-1].copy()], pre=pre, **{**post, "conf": 0.05})
    for img, g in zip([image, image[::-1].copy()], got):
        boxes = [(0, 0, 200, 150)] + windows(150, 200, 2, 2)
        u8, meta = pre.prepare(img)
        with torch.inference_mode():
            raw = tiny_detector(pre.normalize(u8).contiguous(memory_format=torch.channels_last))
        parts = [tiny_detector.postprocess(type(raw)(**{f: getattr(raw, f)[k : k + 1] if getattr(raw, f).dim() and
                                                        getattr(raw, f).shape[0] == len(u8) else getattr(raw, f)
                                                        for f in raw.__dataclass_fields__}),
                                           [m], conf=0.05)[0] for k, m in enumerate(meta["passes"])]
        want = merge(parts, boxes, 200, 150, iou=tiny_detector.head.h.iou, max_det=tiny_detector.head.h.max_det)
        assert len(want) > 3 and len(g) == len(want)
        np.testing.assert_allclose(g.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(g.scores, want.scores, atol=1e-6)
        # tiles find what the whole frame alone does not, and no box leaves the image
        assert len(g) != len(parts[0]) and g.boxes[:, 2].max() <= 200 and g.boxes[:, 3].max() <= 150


def test_tiles_through_onnxruntime_the_cli_and_tracking(tmp_path, capsys, tiny_detector):
    pytest.importorskip("onnxruntime")
    model = cvapps.save(tiny_detector, tmp_path / "det.safetensors")
    onnx = cvapps.export(tiny_detector, tmp_path / "det.onnx")
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(_image(), cv2.COLOR_RGB2BGR))
    recs = {}
    for name, extra in (("torch", ["--model", model, "--backend", "torch"]),
                        ("ort", ["--model", onnx, "--backend", "onnxruntime"])):
        code, _, err = run_cli(capsys, "predict", "detect", tmp_path / "a.png", *extra, "--tiles", "2x2",
                               "--conf", "0.05", "--save-json", tmp_path / f"{name}.jsonl")
        assert code == 0, err
        recs[name] = json.loads((tmp_path / f"{name}.jsonl").read_text())["predictions"]
    assert len(recs["torch"]) > 3 and [r["label"] for r in recs["ort"]] == [r["label"] for r in recs["torch"]]
    np.testing.assert_allclose([r["bbox"] for r in recs["ort"]], [r["bbox"] for r in recs["torch"]], atol=0.05)

    video = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (200, 150))
    for _ in range(4):
        w.write(cv2.cvtColor(_image(), cv2.COLOR_RGB2BGR))
    w.release()
    code, _, err = run_cli(capsys, "track", video, "--model", model, "--tiles", "2x2", "--track-high", "0.3",
                           "--track-new", "0.3", "--track-low", "0.05", "--save-json", tmp_path / "t.jsonl")
    assert code == 0, err
    frames = [json.loads(ln) for ln in (tmp_path / "t.jsonl").read_text().splitlines()]
    ids = [[p["track_id"] for p in r["predictions"]] for r in frames]
    assert len(frames) == 4 and ids[-1] and ids[-1] == ids[-2]  # a still scene keeps its ids

    code, _, err = run_cli(capsys, "predict", "detect", tmp_path / "a.png", "--model", model, "--tiles", "2")
    assert code != 0 and "--tiles takes rows x columns" in err
    with pytest.raises(ConfigError, match="--tiles is for predict and track"):  # the CLI's select has no --tiles
        cvapps.select(model, tmp_path, 1, tiles="2x2")
    seg = cvapps.create_model("segment", "mobilenet_v3_small", labels=["x", "y"], img_size=96).eval()
    with pytest.raises(ConfigError, match="a bundle's heads share one pass"):
        cvapps.predict_bundle([tiny_detector, seg], [tmp_path / "a.png"], tiles="2x2")
