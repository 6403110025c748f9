import json

import cv2
import numpy as np
import pytest

import cvapps
from cvapps.data.sources import expand_sources

from conftest import COLOURS, colour_image, write_image


def _video(path, n=10, size=(64, 48), fps=7.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), (i * 20) % 255, np.uint8))
    w.release()
    return path


def test_video_in_video_out_same_fps_and_size(tmp_path, tiny_model):
    vid = _video(tmp_path / "clip.mp4")
    s = cvapps.predict(tiny_model, [vid], out_dir=tmp_path / "out", save_json=tmp_path / "v.jsonl",
                       batch_size=4, progress=False)
    assert s.processed == 10
    recs = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(10)) and recs[0]["source"] == str(vid)
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    s2 = cvapps.predict(tiny_model, [vid], vid_stride=3, progress=False)
    assert s2.processed == 4  # frames 0, 3, 6, 9


def test_sources_glob_list_and_arrays(tmp_path, tiny_model):
    paths = [write_image(tmp_path / f"{c}.png", colour_image(rgb)) for c, rgb in COLOURS.items()]
    (tmp_path / "list.txt").write_text("\n".join(p.name for p in paths[:2]) + "\n")
    assert expand_sources([str(tmp_path / "*.png")]) == sorted(paths)
    assert expand_sources([str(tmp_path / "list.txt")]) == paths[:2]
    arr = colour_image((1, 2, 3))
    preds = tiny_model.predict([arr, str(paths[0])])
    assert len(preds) == 2
    np.testing.assert_allclose(preds[1].scores, tiny_model.predict(paths[0])[0].scores)


def test_batching_does_not_change_predictions(tmp_path, tiny_model):
    imgs = [colour_image(rgb, seed=i) for i, rgb in enumerate(list(COLOURS.values()) * 3)]
    one = tiny_model.predict(imgs, batch_size=1)
    many = tiny_model.predict(imgs, batch_size=16)
    for a, b in zip(one, many):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
