"""The CLI: thin over the API; user errors are one line naming the file, exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvapps
from cvapps.cli import main

from conftest import run_cli, COLOURS, colour_image, write_image


run = run_cli


def assert_one_line_error(code, err, *needles):
    """Exit 2 and the error as the last, single line (notes said before it, such as the
    one-off ONNX export of the model, may precede it; no traceback)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err, err
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    assert errors and errors[0] == len(lines) - 1, err
    lines = lines[-1:]
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def bad_files(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    ok = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    (d / "corrupt.jpg").write_bytes(ok[: len(ok) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not an image")
    return d


@pytest.mark.parametrize("name,message", [("corrupt.jpg", "truncated or corrupt JPEG"), ("empty.jpg", "empty file"),
                                          ("text.jpg", "not a decodable image")])
def test_bad_image_one_line_exit_2(capsys, bad_files, tiny_model_file, name, message):
    code, _, err = run(capsys, "predict", "classify", bad_files / name, "--model", tiny_model_file)
    assert_one_line_error(code, err, name, message)


def test_missing_path_and_empty_folder(capsys, tmp_path, tiny_model_file):
    code, _, err = run(capsys, "predict", "classify", tmp_path / "nope.jpg", "--model", tiny_model_file)
    assert_one_line_error(code, err, "nope.jpg", "no such file")
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", "classify", tmp_path / "empty", "--model", tiny_model_file)
    assert_one_line_error(code, err, "empty", "contains no images")


def test_folder_with_one_bad_image_still_predicts_the_rest(capsys, tmp_path, bad_files, tiny_model_file):
    for i, c in enumerate(COLOURS.values()):
        write_image(bad_files / f"good{i}.png", colour_image(c))
    jsonl, out_dir = tmp_path / "p.jsonl", tmp_path / "out"
    code, out, err = run(capsys, "predict", "classify", bad_files, "--model", tiny_model_file, "--save-json", jsonl,
                         "--out", out_dir, "--top-k", 2)
    assert code == 0
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(Path(r["source"]).name for r in recs) == ["good0.png", "good1.png", "good2.png"]
    r = recs[0]
    assert set(r) == {"source", "frame", "task", "width", "height", "predictions"}
    assert r["frame"] is None and r["task"] == "classify" and (r["width"], r["height"]) == (64, 48)
    assert len(r["predictions"]) == 2 and set(r["predictions"][0]) == {"index", "label", "score"}
    assert len(out.strip().splitlines()) == 3  # top-1 per image on stdout
    assert err.count("skipped") >= 3 and "corrupt.jpg" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["good0.png", "good1.png", "good2.png"]


def test_model_file_for_another_task(capsys, tmp_path, tiny_model):
    other = type(tiny_model).from_config({**tiny_model.config, "task": "classify"})
    other.config = {**other.config, "task": "segment"}
    path = cvapps.save(other, tmp_path / "seg.safetensors")
    code, _, err = run(capsys, "predict", "classify", tmp_path, "--model", path)
    assert_one_line_error(code, err, "seg.safetensors", "for task 'segment', not 'classify'")


def test_weights_file_with_wrong_sha(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))
    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    bad.write_bytes(b"tampered")
    code, _, err = run(capsys, "weights", "pull", "mobilenet_v2.imagenet1k", "--file", bad)
    assert_one_line_error(code, err, str(bad), "sha256 mismatch")


def test_csv_with_unknown_class(capsys, tmp_path, tiny_model_file):
    write_image(tmp_path / "a.png", colour_image((200, 0, 0)))
    (tmp_path / "val.csv").write_text("a.png,red\na.png,purple\n")
    code, _, err = run(capsys, "eval", "classify", "--model", tiny_model_file, "--data", tmp_path / "val.csv")
    assert_one_line_error(code, err, "val.csv", "row 2", "'purple'")


def test_debug_shows_traceback(tmp_path, tiny_model_file):
    with pytest.raises(cvapps.DataError):
        main(["--debug", "predict", "classify", str(tmp_path / "nope.jpg"), "--model", str(tiny_model_file)])


def test_eval_prints_metrics_json_last(capsys, colour_folder, tiny_model_file, tmp_path):
    code, out, _ = run(capsys, "eval", "classify", "--model", tiny_model_file, "--data", colour_folder,
                       "--out", tmp_path / "ev")
    assert code == 0
    m = json.loads(out.strip().splitlines()[-1])
    assert {"top1", "top5", "per_class", "count", "confusion_matrix"} <= set(m) and m["count"] == 9
    assert (tmp_path / "ev" / "confusion.png").is_file()


def test_train_cli_with_freezing_options(capsys, colour_folder, tmp_path):
    code, out, err = run(capsys, "train", "classify", "--data", colour_folder, "--backbone", "mobilenet_v3_small",
                         "--img-size", 32, "--epochs", 2, "--batch-size", 6, "--freeze", "backbone",
                         "--unfreeze-at", 1, "--backbone-lr-ratio", 0.5, "--out", tmp_path / "run")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 2 and "top1" in summary
    import re

    flat = " ".join(err.split())
    start = re.search(r"parameters: ([\d,]+) trainable, ([\d,]+) frozen", flat)
    after = re.search(r"unfroze a backbone stage -> ([\d,]+) trainable, ([\d,]+) frozen", flat)
    assert start and after, flat
    n = [int(v.replace(",", "")) for v in start.groups() + after.groups()]
    assert n[1] > n[3] and n[2] > n[0] and n[0] + n[1] == n[2] + n[3]  # a stage moved from frozen to trainable
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_backbones_and_weights_lists(capsys):
    code, out, _ = run(capsys, "backbones")
    assert code == 0 and all(n in out for n in cvapps.list_backbones())
    code, out, _ = run(capsys, "weights", "list")
    assert code == 0 and "mobilenet_v2.imagenet1k" in out and "efficientnet_lite0.imagenet1k" in out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "cvapps", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "predict" in r.stdout and "train" in r.stdout


def test_source_option_equals_positional_sources(capsys, tmp_path, tiny_model_file):
    write_image(tmp_path / "a.png", colour_image(COLOURS["red"]))
    code, pos, err = run(capsys, "predict", "classify", tmp_path / "a.png", "--model", tiny_model_file)
    assert code == 0, err
    code, opt, err = run(capsys, "predict", "classify", "--model", tiny_model_file, "--source", tmp_path / "a.png")
    assert code == 0, err
    assert opt == pos and "a.png" in opt
    # a camera index that does not exist: one line naming it, not a hang
    code, _, err = run(capsys, "predict", "classify", "--source=7", "--model", tiny_model_file)
    assert_one_line_error(code, err, "camera:7")
