"""--engine ray: outputs equal a local run's (predict for three tasks, select, embed, evaluate)
on a Ray cluster this module starts on this machine with two CPUs; a worker killed mid-run
loses and duplicates nothing; refusals are one line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import COLOURS, colour_image, run_cli, write_image

ray = pytest.importorskip("ray")

import cvapps  # noqa: E402
from cvapps import api, scaleout  # noqa: E402
from cvapps.errors import ConfigError  # noqa: E402
from cvapps.scaleout import cluster as cluster_mod  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """A small Ray on this machine for the module (the engine joins a running one). Four
    logical CPUs on two cores: a finished run's actors leave asynchronously, and the next run's
    two must not wait for them."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    # workers inherit this process's CVAPPS_HOME / CVAPPS_PRECISION / CVAPPS_OFFLINE
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert cluster_mod.connect().cpus == 4
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _keep_threads():
    """The local runs here use threads=1 (an actor's count), which sets the process's torch
    threads: the tests after this module must not inherit that."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _video(path: Path, n: int = 6) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(n):
        w.write(cv2.cvtColor(colour_image(list(COLOURS.values())[i % 3], seed=50 + i), cv2.COLOR_RGB2BGR))
    w.release()
    return path


@pytest.fixture
def pool(tmp_path) -> Path:
    """Nine colour images (one named twice in two folders), one unreadable file, one video."""
    root = tmp_path / "pool"
    for i, rgb in enumerate(list(COLOURS.values()) * 3):
        write_image(root / f"img{i}.png", colour_image(rgb, seed=i))
    write_image(root / "sub" / "img0.png", colour_image((200, 200, 40), seed=99))
    (root / "broken.png").write_bytes(b"not an image")
    _video(root / "clip.mp4")
    return root


def _model_file(task: str, path: Path) -> Path:
    torch.manual_seed(0)
    labels, size = (["a", "b"], 96) if task == "detect" else (list(COLOURS), 64)
    m = cvapps.create_model(task, "mobilenet_v3_small", labels=labels, img_size=size)
    m.train()
    with torch.no_grad():  # BatchNorm statistics of real-ish inputs: confident, varied outputs
        m(torch.rand(8, 3, size, size))
    return cvapps.save(m.eval(), path)


@pytest.mark.parametrize("task", ["classify", "detect", "segment"])
def test_predict_on_ray_equals_the_local_run_record_for_record(local_ray, pool, tmp_path, task):
    model = _model_file(task, tmp_path / f"{task}.safetensors")
    srcs = [str(pool / "sub"), str(pool)]  # img0.png twice: the annotated names must not collide
    local = api.predict(model, srcs, task=task, batch_size=4, threads=1, save_json=tmp_path / "local.jsonl",
                        out_dir=tmp_path / "local", save_coco=tmp_path / "local_coco.json" if task == "detect" else None)
    far = scaleout.predict(model, srcs, task=task, batch_size=4, actors=2, save_json=tmp_path / "ray.jsonl",
                           out_dir=tmp_path / "ray",
                           save_coco=tmp_path / "ray_coco.json" if task == "detect" else None)
    a = (tmp_path / "local.jsonl").read_text().replace(str(tmp_path / "local"), "OUT").splitlines()
    b = (tmp_path / "ray.jsonl").read_text().replace(str(tmp_path / "ray"), "OUT").splitlines()
    assert len(a) == 11 + 6 and a == b  # 11 images (sub/img0.png twice), 6 frames
    assert (far.processed, far.failed) == (local.processed, local.failed) and len(far.failed) == 1
    assert far.summaries == local.summaries
    assert [Path(p).name for p in far.outputs] == [Path(p).name for p in local.outputs]
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    assert Path("img0_1.png") in files and Path("clip.mp4") in files
    for f in files:  # still images byte for byte (a video's encoder may stamp its own)
        if f.suffix == ".png":
            assert (tmp_path / "local" / f).read_bytes() == (tmp_path / "ray" / f).read_bytes(), f
    if task == "detect":
        assert json.loads((tmp_path / "ray_coco.json").read_text()) == \
            json.loads((tmp_path / "local_coco.json").read_text())
    assert not (tmp_path / "ray.jsonl.partial").exists()


@pytest.mark.parametrize("strategy", ["entropy", "coreset"])
def test_select_on_ray_picks_what_the_local_run_picks(local_ray, pool, tmp_path, tiny_model_file, strategy):
    kw = dict(budget=5, strategy=strategy, batch_size=4, vid_stride=2, min_gap=2, seed=3)
    local = api.select(str(tiny_model_file), [str(pool)], out=str(tmp_path / "local"), **kw)
    far = scaleout.select(str(tiny_model_file), [str(pool)], out=str(tmp_path / "ray"), actors=2, **kw)
    key = lambda rows: [(r["source"], r["frame"], r["score"]) for r in rows]  # noqa: E731
    assert key(far) == key(local)
    assert {r["frame"] is not None for r in local} == {True, False}  # video frames and images among the picks
    # the same scores file: a run resumes on either engine
    rows = lambda d: sorted((tmp_path / d / "scores.csv").read_text().splitlines())  # noqa: E731
    assert rows("ray") == rows("local")


def test_embed_and_evaluate_on_ray_equal_the_local_results(local_ray, pool, tmp_path, tiny_model_file, colour_folder):
    names, emb, failed = api.embed_sources(str(tiny_model_file), [str(pool / "img*.png"), str(pool / "broken.png")])
    n2, e2, f2 = scaleout.embed_sources(str(tiny_model_file), [str(pool / "img*.png"), str(pool / "broken.png")],
                                        actors=2, batch_size=4)
    assert n2 == names and len(names) == 9 and [s for s, _ in f2] == [s for s, _ in failed] == [str(pool / "broken.png")]
    np.testing.assert_allclose(e2, emb, atol=1e-5)
    kw = dict(task="classify", batch_size=2)
    local = api.evaluate(str(tiny_model_file), str(colour_folder / "val"), **kw)
    far = scaleout.evaluate(str(tiny_model_file), str(colour_folder / "val"), actors=2, **kw)
    assert far.keys() == local.keys()
    for k, v in local.items():
        assert far[k] == pytest.approx(v, abs=1e-6) if isinstance(v, float) else far[k] == v, k


def _fragile_worker(marker: str, _shared):
    """Echoes rows; the first actor to see row 5 dies with it (as a node lost mid-run)."""

    def work(batch: dict) -> dict:
        if 5 in set(int(i) for i in batch["i"]) and not os.path.exists(marker):
            Path(marker).write_text("died once")
            os._exit(1)
        n = len(batch["i"])
        return {"i": batch["i"], "frame": np.full(n, -1), "error": np.array([""] * n, dtype=object),
                "source": batch["source"]}

    return work


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(local_ray, tmp_path):
    import functools

    rows = [{"i": i, "source": f"s{i}", "video": False} for i in range(24)]
    got = [int(r["i"]) for r in cluster_mod.run(rows, functools.partial(_fragile_worker, str(tmp_path / "died")),
                                                actors=2, batch_size=3, progress=False)]
    assert (tmp_path / "died").exists()  # the worker did die
    assert sorted(got) == list(range(24))


def test_refusals_are_one_line(local_ray, tmp_path, tiny_model_file, capsys, monkeypatch):
    with pytest.raises(ConfigError, match="live camera or stream"):
        scaleout.predict(str(tiny_model_file), ["0"], task="classify")
    with pytest.raises(ConfigError, match="does not track"):
        scaleout.predict(str(tiny_model_file), [str(tmp_path)], task="classify", track=True)
    code, _, err = run_cli(capsys, "predict", "classify", str(tmp_path), "--model", tiny_model_file, "--actors", "2")
    assert code != 0 and "--actors is for --engine ray" in err
    with pytest.raises(ConfigError, match="--actors must be at least 1, got 0"):
        next(cluster_mod.run([{"i": 0, "source": "x", "video": False}], lambda shared: None, actors=0))
    monkeypatch.setattr(cluster_mod, "ray", None)
    with pytest.raises(ConfigError, match="needs Ray") as e:
        cluster_mod.connect()
    assert "cvapps[ray]" in e.value.one_line()


def test_the_cli_runs_predict_and_select_on_ray(local_ray, pool, tmp_path, tiny_model_file, capsys):
    code, _, err = run_cli(capsys, "predict", "classify", pool / "img1.png", pool / "img2.png", "--model",
                           tiny_model_file, "--engine", "ray", "--actors", "1", "--save-json", tmp_path / "p.jsonl")
    assert code == 0, err
    assert [json.loads(x)["source"] for x in (tmp_path / "p.jsonl").read_text().splitlines()] == \
        [str(pool / "img1.png"), str(pool / "img2.png")]
    code, out, err = run_cli(capsys, "select", "--model", tiny_model_file, "--pool", pool / "img*.png", "--budget",
                             "2", "--out", tmp_path / "sel", "--engine", "ray", "--actors", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 2 and (tmp_path / "sel" / "selection.csv").exists()
