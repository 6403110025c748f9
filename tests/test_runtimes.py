"""The runtime room: the registry, what `prepare` chooses and refuses, OpenVINO through the CLI,
and the CUDA / TensorRT provider choice (providers mocked at onnxruntime's boundary: no GPU
on these machines)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, write_image

import cvapps
from cvapps.errors import ConfigError
from cvapps.registry import Registry
from cvapps.runtimes import RUNTIMES, GraphModel, backends, prepare
from cvapps.runtimes import ort as ort_mod
from cvapps.runtimes import ov as ov_mod


def test_the_registry_lists_each_runtime_once_and_refuses_a_second():
    assert set(backends()) >= {"auto", "torch", "onnxruntime", "openvino"}
    reg = Registry("runtime")
    reg.register("x", object())
    with pytest.raises(ValueError, match="duplicate runtime name 'x'"):
        reg.register("x", object())


def test_auto_prefers_onnx_runtime_at_fp32_and_named_runtimes_build_graphs(tiny_model):
    m = tiny_model.eval()
    auto = prepare(m, "auto")
    assert isinstance(auto, GraphModel) and auto.backend == "onnxruntime"
    assert prepare(m, "torch") is m
    if RUNTIMES.get("openvino").missing():
        pytest.skip("openvino not installed")
    ov = prepare(m, "openvino")
    assert isinstance(ov, GraphModel) and ov.backend == "openvino"


def test_a_precision_a_runtime_or_cpu_lacks_is_one_line(tiny_model, monkeypatch):
    with pytest.raises(ConfigError, match="--backend torch runs --precision fp32 | bf16 on this machine, not int8"):
        prepare(tiny_model, "torch", precision="int8")
    monkeypatch.setattr(ov_mod, "capabilities", lambda: {"FP32", "INT8"})  # a CPU without bf16 units
    if not RUNTIMES.get("openvino").missing():
        with pytest.raises(ConfigError, match="--backend openvino runs --precision fp32 | int8 on this machine, not "
                                              "bf16"):
            prepare(tiny_model, "openvino", precision="bf16")
    with pytest.raises(ConfigError, match="int8 needs calibration images"):
        prepare(tiny_model, "onnxruntime", precision="int8")


def test_openvino_backend_through_the_cli_equals_pytorch(tmp_path, capsys, tiny_model_file):
    if RUNTIMES.get("openvino").missing():
        pytest.skip("openvino not installed")
    rng = np.random.default_rng(0)
    imgs = [write_image(tmp_path / f"i{i}.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for i in range(3)]
    out = {}
    for backend in ("torch", "openvino"):
        code, _, err = run_cli(capsys, "predict", "classify", *imgs, "--model", tiny_model_file, "--backend", backend,
                               "--save-json", tmp_path / f"{backend}.jsonl")
        assert code == 0, err
        out[backend] = [json.loads(ln)["predictions"] for ln in (tmp_path / f"{backend}.jsonl").read_text().splitlines()]
    for a, b in zip(out["torch"], out["openvino"]):
        assert [p["label"] for p in a] == [p["label"] for p in b]
        assert np.allclose([p["score"] for p in a], [p["score"] for p in b], atol=1e-4)
    code, _, err = run_cli(capsys, "predict", "classify", imgs[0], "--model", tiny_model_file, "--backend", "openvino",
                           "--precision", "int8")  # calibrated on the run's images
    assert code == 0, err


def test_cuda_picks_tensorrt_then_cuda_providers_when_installed(monkeypatch, tmp_path):
    import onnxruntime

    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path))
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    chosen = ort_mod.providers("cuda:1", "fp16")
    assert [p[0] if isinstance(p, tuple) else p for p in chosen] == ["TensorrtExecutionProvider",
                                                                      "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert chosen[0][1]["device_id"] == 1 and chosen[0][1]["trt_fp16_enable"] is True
    assert (tmp_path / "tensorrt").is_dir() and RUNTIMES.get("onnxruntime").runs_on("cuda")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="no CUDA or TensorRT provider"):
        ort_mod.providers("cuda")
    assert not RUNTIMES.get("onnxruntime").runs_on("cuda") and ort_mod.providers("cpu") == ["CPUExecutionProvider"]


def test_an_openvino_ir_runs_through_predict(tmp_path, capsys, tiny_model_file):
    if RUNTIMES.get("openvino").missing():
        pytest.skip("openvino not installed")
    from cvapps.exporting import export

    onnx = export(cvapps.load(tiny_model_file), tmp_path / "m.onnx", dynamic_batch=True)
    xml = ov_mod.write_ir(onnx, tmp_path / "ir" / "m.xml")
    img = write_image(tmp_path / "a.png", np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    got = []
    for i, model in enumerate((xml, tiny_model_file)):
        code, out, err = run_cli(capsys, "predict", "classify", img, "--model", model, "--save-json",
                                 tmp_path / f"{i}.jsonl")
        assert code == 0, err
        got.append(json.loads((tmp_path / f"{i}.jsonl").read_text())["predictions"])
    assert [p["label"] for p in got[0]] == [p["label"] for p in got[1]]
    assert np.allclose([p["score"] for p in got[0]], [p["score"] for p in got[1]], atol=1e-4)
    assert isinstance(cvapps.load(xml), GraphModel) and cvapps.load(xml).backend == "openvino"
