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


def _edited(tmp_path, src, name: str, change=None, drop_digest: bool = False):
    """A copy of model file ``src`` whose config ``change(config)`` edited (tensors untouched)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    info = json.loads(meta["cvapps"])
    if change is not None:
        change(info["config"])
    meta["cvapps"] = json.dumps(info)
    if drop_digest:
        meta.pop("cvapps_tensors_sha256")
    out = tmp_path / name
    save_file(load_file(str(src)), str(out), metadata=meta)
    return out


def test_flipped_tensor_bytes_are_caught_by_the_saved_digest(tmp_path, capsys):
    """20 flipped bytes of tensor data used to load silently and change the answer."""
    from conftest import run_cli, write_image

    torch.manual_seed(0)
    m = cvapps.create_model("classify", "mobilenet_v3_small", labels=["ants", "bees"], img_size=64)
    path = cvapps.save(m, tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    for i in range(20):
        data[-2000 - 13 * i] ^= 0xFF
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(cvapps.WeightsError, match="sha256 mismatch"):
        cvapps.load(tmp_path / "flipped.safetensors")
    write_image(tmp_path / "a.png", colour_image((1, 2, 3)))
    code, _, err = run_cli(capsys, "predict", "classify", tmp_path / "a.png", "--model", tmp_path / "flipped.safetensors")
    assert code == 2 and "flipped.safetensors" in err and len(err.strip().splitlines()) == 1
    # a file written before digests were stored loads, saying so (once per file)
    old = _edited(tmp_path, path, "old.safetensors", drop_digest=True)
    with pytest.warns(cvapps.errors.CvappsWarning, match="written before model files carried a digest"):
        loaded = cvapps.load(old)
    np.testing.assert_array_equal(loaded.predict(colour_image((9, 9, 9)))[0].scores,
                                  m.predict(colour_image((9, 9, 9)))[0].scores)


@pytest.mark.parametrize("change,words", [
    (lambda c: c.update(labels=list(COLOURS) + ["extra"]), "4 labels for a head of 3 outputs"),
    (lambda c: c.update(labels=[]), "0 labels for a head of 3 outputs"),
    (lambda c: c["preprocessing"].update(std=[0.0, 0.2, 0.2]), "std [0.0, 0.2, 0.2] holds 0"),
    (lambda c: c["preprocessing"].update(mean=[0.5, float("nan"), 0.5]), "mean must be three finite numbers"),
    (lambda c: c["head"].update(num_outputs=10 ** 9), "3 labels for a head of 1000000000 outputs"),
    (lambda c: c.update(labels=[f"c{i}" for i in range(10 ** 6)], head={**c["head"], "num_outputs": 10 ** 6}),
     "head.fc.weight is [3, 576] in the file, [1000000, 576] by the config"),
    (lambda c: c["preprocessing"].update(input_size=100000), "input size 100000 must be one or two integers"),
    (lambda c: c["preprocessing"].update(input_size=-224), "input size -224"),
])
def test_a_config_that_does_not_fit_its_tensors_is_refused_before_allocating(tmp_path, tiny_model_file, change,
                                                                               words):
    bad = _edited(tmp_path, tiny_model_file, "bad.safetensors", change)
    with pytest.raises(ConfigError) as e:
        cvapps.load(bad)
    assert words in str(e.value) and "bad.safetensors" in str(e.value), e.value
