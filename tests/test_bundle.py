"""Multi-task bundles: heads on one backbone pass give the same outputs as separate runs."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import run_cli, write_image

import cvapps
from cvapps.inference.bundle import Bundle


def _pair(share: bool):
    torch.manual_seed(0)
    det = cvapps.create_model("detect", "mobilenet_v2", labels=["a", "b"], img_size=64)
    seg = cvapps.create_model("segment", "mobilenet_v2", labels=["x", "y", "z"], img_size=64)
    det.train()
    with torch.no_grad():  # realistic BatchNorm statistics, so outputs are not all ~0
        det(torch.rand(4, 3, 64, 64))
    det.eval()
    if share:  # heads trained on the same frozen backbone
        seg.backbone.load_state_dict(det.backbone.state_dict())
    return det, seg


def test_shared_backbone_outputs_equal_separate_runs(tmp_path, capsys):
    det, seg = _pair(share=True)
    d, s = cvapps.save(det, tmp_path / "det.safetensors"), cvapps.save(seg, tmp_path / "seg.safetensors")
    rng = np.random.default_rng(0)
    imgs = [write_image(tmp_path / "in" / f"{i}.png", rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
            for i in range(3)]
    code, out, err = run_cli(capsys, "predict", "detect,segment", *imgs, "--model", d, "--model", s,
                             "--save-json", tmp_path / "b.jsonl", "--out", tmp_path / "drawn")
    assert code == 0, err
    assert "detect+segment share one mobilenet_v2 backbone pass" in err
    for task, m in (("detect", d), ("segment", s)):
        code, _, err = run_cli(capsys, "predict", task, *imgs, "--model", m, "--save-json", tmp_path / f"{task}.jsonl")
        assert code == 0, err
    both = [json.loads(ln) for ln in (tmp_path / "b.jsonl").read_text().splitlines()]
    for task in ("detect", "segment"):
        alone = [json.loads(ln) for ln in (tmp_path / f"{task}.jsonl").read_text().splitlines()]
        strip = [[{k: v for k, v in p.items() if k != "mask"} for p in r["predictions"][task]] for r in both]
        assert strip == [[{k: v for k, v in p.items() if k != "mask"} for p in r["predictions"]] for r in alone]
    assert both[0]["task"] == "detect,segment" and len(list((tmp_path / "drawn").glob("*.png"))) == 3
    assert len(list((tmp_path / "drawn" / "masks").glob("*.png"))) == 3


def test_different_backbone_weights_run_separately():
    det, seg = _pair(share=False)
    b = Bundle([det, seg])
    assert len(b.groups) == 2 and "runs its own" in b.describe()
    img = np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    pre = b.preprocessor()
    u8, metas = pre.prepare(img)
    out = b.run_batch([u8], [metas])[0]
    assert out.parts["segment"].mask.shape == (40, 60)
    np.testing.assert_array_equal(out.parts["segment"].mask, seg.predict(img)[0].mask)


def test_bundle_rejects_top_down_tasks():
    import pytest

    m = cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64])
    with pytest.raises(cvapps.ConfigError, match="whole-image tasks"):
        Bundle([m])


def test_a_shared_pass_runs_on_onnx_runtime_like_pytorch(tmp_path, capsys, monkeypatch):
    """Models given by file: the shared backbone pass and both heads run as one ONNX Runtime
    graph (exported once), with the same predictions as PyTorch."""
    import pytest

    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))  # its own export cache
    det, seg = _pair(share=True)
    files = [str(cvapps.save(det, tmp_path / "det.safetensors")), str(cvapps.save(seg, tmp_path / "seg.safetensors"))]
    rng = np.random.default_rng(2)
    imgs = [write_image(tmp_path / "in" / f"{i}.png", rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
            for i in range(3)]
    from rich.console import Console

    for backend in ("auto", "torch"):
        out = Console(file=__import__("io").StringIO())
        cvapps.predict_bundle(files, imgs, backend=backend, console=out, save_json=str(tmp_path / f"{backend}.jsonl"),
                              conf=0.0)
        said = out.file.getvalue()
        assert ("exported the bundle's shared pass" in said) == (backend == "auto")
    assert len(list((tmp_path / "home" / "onnx").glob("group-*.onnx"))) == 1
    a = [json.loads(ln)["predictions"] for ln in (tmp_path / "auto.jsonl").read_text().splitlines()]
    t = [json.loads(ln)["predictions"] for ln in (tmp_path / "torch.jsonl").read_text().splitlines()]
    for pa, pt in zip(a, t):
        assert len(pa["detect"]) == len(pt["detect"]) > 0
        np.testing.assert_allclose([d["score"] for d in pa["detect"]], [d["score"] for d in pt["detect"]], atol=1e-4)
        np.testing.assert_allclose([d["bbox"] for d in pa["detect"]], [d["bbox"] for d in pt["detect"]], atol=1e-2)
        assert pa["segment"][0]["pixels"] == pt["segment"][0]["pixels"]
