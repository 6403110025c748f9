"""Object-storage sources (s3:// through fsspec + s3fs) against a local S3-compatible server
the test starts on 127.0.0.1 (moto's server mode, as s3fs's own tests do): predict and
select over a bucket prefix equal the local runs, annotation files and training images are
staged, and a missing bucket or extra is one line."""

from __future__ import annotations

import json
import socket

import pytest
from conftest import run_cli
from detdata import make_detection_set

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")
import fsspec  # noqa: E402

import cvapps  # noqa: E402
from cvapps.data import remote  # noqa: E402


@pytest.fixture(scope="module")
def endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(endpoint, monkeypatch, tmp_path):
    """An S3 bucket on the test server (credentials from the environment, as users give them)."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})  # (users: FSSPEC_S3_ENDPOINT_URL)
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    name = f"b{abs(hash(str(tmp_path))) % 10**8}"
    fs.mkdir(name)
    yield fs, name
    s3fs.S3FileSystem.clear_instance_cache()


def upload(fs, local_dir, prefix: str) -> None:
    for f in sorted(local_dir.rglob("*")):
        if f.is_file():
            fs.pipe(f"{prefix}/{f.relative_to(local_dir).as_posix()}", f.read_bytes())


def test_predict_and_select_over_a_bucket_equal_the_local_runs(bucket, colour_folder, tiny_model_file, capsys,
                                                                tmp_path):
    fs, name = bucket
    local = colour_folder / "val"
    upload(fs, local, f"{name}/pool")
    got = {}
    for where, src in (("local", str(local)), ("s3", f"s3://{name}/pool")):
        code, _, err = run_cli(capsys, "predict", "classify", src, "--model", tiny_model_file, "--save-json",
                               tmp_path / f"{where}.jsonl")
        assert code == 0, err
        recs = [json.loads(ln) for ln in (tmp_path / f"{where}.jsonl").read_text().splitlines()]
        got[where] = {r["source"].replace(f"s3://{name}/pool/", str(local) + "/"): r["predictions"] for r in recs}
    assert got["s3"] == got["local"] and len(got["s3"]) == 9
    picks = {}
    for where, src in (("local", str(local)), ("s3", f"s3://{name}/pool/*/*.png")):
        sel = cvapps.select(str(tiny_model_file), [src], 4, "entropy", out=str(tmp_path / f"sel_{where}"),
                            copy_to=str(tmp_path / f"copy_{where}"))
        picks[where] = [(r["path"].split("/pool/")[-1] if where == "s3" else str(
            r["path"]).split("/val/")[-1], round(r["score"], 5)) for r in sel]
    assert picks["s3"] == picks["local"]
    assert sorted(p.name for p in (tmp_path / "copy_s3").iterdir()) == \
        sorted(p.name for p in (tmp_path / "copy_local").iterdir())


def test_annotations_and_training_images_are_staged(bucket, tmp_path, capsys):
    import torch

    fs, name = bucket
    make_detection_set(tmp_path / "det")
    upload(fs, tmp_path / "det", f"{name}/det")
    torch.manual_seed(0)
    det = cvapps.create_model("detect", "mobilenet_v3_small", labels=["red", "blue"], img_size=96).train()
    with torch.no_grad():
        det(torch.rand(8, 3, 96, 96))  # (BatchNorm statistics from inputs: varied boxes)
    model = cvapps.save(det.eval(), tmp_path / "det.safetensors")
    got = []
    for data, images in ((tmp_path / "det" / "coco.json", tmp_path / "det" / "images"),
                         (f"s3://{name}/det/coco.json", f"s3://{name}/det/images")):
        code, out, err = run_cli(capsys, "eval", "detect", "--model", model, "--data", data, "--images", images)
        assert code == 0, err
        got.append(json.loads(out.strip().splitlines()[-1]))
    assert got[0] == got[1]
    staged = list((tmp_path / "home" / "remote").rglob("*.png"))
    assert len(staged) == 4  # the image folder, fetched once into $CVAPPS_HOME/remote


def test_missing_bucket_object_and_extra_are_one_line(bucket, capsys, tiny_model_file, monkeypatch):
    fs, name = bucket
    code, _, err = run_cli(capsys, "predict", "classify", "s3://no-such-bucket-here/pool", "--model", tiny_model_file)
    assert code == 2 and "no such bucket or object" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "predict", "classify", f"s3://{name}/nothing/*.png", "--model", tiny_model_file)
    assert code == 2 and "no images there" in err
    e = remote._cloud_error("s3://b/k.jpg", PermissionError("Access Denied"))
    assert "access denied: Access Denied" in e.one_line() and "AWS_ACCESS_KEY_ID" in e.one_line()

    def no_package(url, **kw):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_package)
    code, _, err = run_cli(capsys, "predict", "classify", f"s3://{name}/pool", "--model", tiny_model_file)
    assert code == 2 and "s3:// needs s3fs" in err and "cvapps[s3]" in err
