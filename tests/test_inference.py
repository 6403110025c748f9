import json

import cv2
import numpy as np
import pytest
import torch

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


def test_several_videos_at_once_give_each_its_own_single_stream_output(tmp_path, tiny_model, monkeypatch):
    """--concurrent: every video read at once (frames interleaved into shared batches), each
    record naming its stream, per-stream records and annotated videos as in separate runs;
    a stream that stalls does not hold the others up."""
    import threading
    import time

    from cvapps.data import sources

    vids = [_video(tmp_path / f"cam{i}.mp4", n=8 + 2 * i) for i in range(3)]
    got = {}
    for how, conc in (("alone", False), ("together", True)):
        recs = []
        for v in (vids if how == "alone" else [vids]):
            s = cvapps.predict(tiny_model, v if isinstance(v, list) else [v], save_json=tmp_path / "r.jsonl",
                               out_dir=tmp_path / how, batch_size=4, progress=False, concurrent=conc)
            recs += [json.loads(ln) for ln in (tmp_path / "r.jsonl").read_text().splitlines()]
        got[how] = recs
    key = lambda r: (r["source"], r["frame"])  # noqa: E731
    alone, together = sorted(got["alone"], key=key), sorted(got["together"], key=key)
    assert [key(r) for r in alone] == [key(r) for r in together] and len(alone) == 8 + 10 + 12
    for a, b in zip(alone, together):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        assert np.allclose([p["score"] for p in a["predictions"]], [p["score"] for p in b["predictions"]], atol=1e-5)
    for v in vids:
        assert (tmp_path / "together" / v.name).is_file()
    # per stream in order, streams interleaved; a stalled stream does not stop the others
    release = threading.Event()
    real = sources.iter_video

    def slow_first(item, *a, **k):
        for f in real(item, *a, **k):
            if str(item) == str(vids[0]) and f.frame == 2:
                release.wait(10)
            yield f

    monkeypatch.setattr(sources, "iter_video", slow_first)
    seen = []
    t0 = time.time()
    for f in sources.iter_frames(vids, concurrent=True):
        seen.append((f.source, f.frame))
        if len([s for s in seen if s[0] != str(vids[0])]) == 22:  # the other two finished while the first waits
            release.set()
    assert time.time() - t0 < 10
    for v in vids:
        frames = [fr for s, fr in seen if s == str(v)]
        assert frames == sorted(frames) and len(frames) == {0: 8, 1: 10, 2: 12}[vids.index(v)]


def test_paths_given_as_text_are_still_images_read_in_order(tmp_path, tiny_model):
    """A local path passed as a str is an image, not a stream: read once, in order (two or
    more text paths were once taken for live streams and read concurrently, out of order)."""
    from cvapps.data.sources import iter_frames

    paths = [str(write_image(tmp_path / f"{i}.png", colour_image((40 * i, 90, 200 - 40 * i), seed=i)))
             for i in range(5)]
    frames = list(iter_frames(paths))
    assert [(f.source, f.frame) for f in frames] == [(p, None) for p in paths]
    from cvapps import api

    one_by_one = torch.cat([api.embed(tiny_model, [p]) for p in paths])
    torch.testing.assert_close(api.embed(tiny_model, paths, batch_size=4), one_by_one, atol=1e-5, rtol=0)
