import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import cvapps
from cvapps.errors import ConfigError, DataError
from cvapps.modelfile import FORMAT_VERSION, atomic_write, read_config

from conftest import COLOURS, colour_image


def test_round_trip_predicts_identically(tmp_path, tiny_model):
    imgs = [colour_image(c, seed=i) for i, c in enumerate(COLOURS.values())]
    before = tiny_model.predict(imgs)
    path = cvapps.save(tiny_model, tmp_path / "m.safetensors")
    loaded = cvapps.load(path)
    after = loaded.predict(imgs)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.scores, b.scores)
    cfg = read_config(path)
    assert cfg["task"] == "classify" and cfg["labels"] == list(COLOURS)
    assert cfg["preprocessing"]["input_size"] == 64 and cfg["backbone"] == "mobilenet_v3_small"


def test_not_a_model_file(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\x00" * 32)
    with pytest.raises(ConfigError, match="not a cvapps model file"):
        cvapps.load(p)
    q = tmp_path / "pickle.safetensors"
    torch.save({"a": torch.zeros(1)}, q)  # a pickle: must be refused, never unpickled
    with pytest.raises(ConfigError, match="not a cvapps model file"):
        cvapps.load(q)


def test_missing_model_file():
    with pytest.raises(DataError, match="no such model file"):
        cvapps.load("nope/missing.safetensors")


def test_foreign_safetensors_and_newer_format(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ConfigError, match="without cvapps metadata"):
        cvapps.load(p)
    q = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, str(q),
              metadata={"cvapps": json.dumps({"format_version": FORMAT_VERSION + 1, "config": {}})})
    with pytest.raises(ConfigError, match="newer than this cvapps supports"):
        cvapps.load(q)


def test_model_for_another_task(tiny_model_file):
    with pytest.raises(ConfigError, match="is for task 'classify', not 'detect'"):
        cvapps.load(tiny_model_file, task="detect")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")

    def crash(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(p, crash)
    assert p.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [p]  # no temp file left behind
    atomic_write(p, lambda tmp: tmp.write_bytes(b"new"))
    assert p.read_bytes() == b"new" and p.stat().st_mode & 0o044  # readable like any other file
