"""The runtime room: the registry, what `prepare` chooses and refuses, OpenVINO through the CLI,
and the CUDA / TensorRT provider choice (providers mocked at onnxruntime's boundary: no GPU
on these machines)."""

from __future__ import annotations

import json
import sys

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
    xml = tmp_path / "ir" / "m.xml"
    code, out, err = run_cli(capsys, "export", "--model", tiny_model_file, "--format", "openvino", "--out", xml,
                             "--dynamic-batch")
    assert code == 0 and out.strip() == str(xml) and xml.with_suffix(".bin").is_file(), err
    code, _, err = run_cli(capsys, "export", "--model", tiny_model_file, "--format", "openvino", "--out",
                           tmp_path / "m.onnx")
    assert code == 2 and "an OpenVINO IR is an .xml file" in err
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


def test_each_prediction_says_what_another_runtime_answers_the_same():
    from cvapps.tasks.classification.postprocess import ClassPrediction
    from cvapps.tasks.detection.postprocess import Detections
    from cvapps.tasks.keypoints.postprocess import Keypoints
    from cvapps.tasks.segmentation.postprocess import SegMask

    a, b = ClassPrediction(np.array([0.1, 0.7, 0.2])), ClassPrediction(np.array([0.3, 0.3, 0.4]))
    assert a.agreement(a) == (1, 1) and a.agreement(b) == (0, 1)
    assert ClassPrediction(np.array([0.35, 0.3, 0.35])).agreement(a) == (0, 0)  # a near-tie is not compared
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    d = Detections(boxes, np.array([0.9, 0.5], np.float32), np.array([0, 1]))
    moved = Detections(boxes + np.array([[0, 0, 1, 1], [0, 0, 0, 0]], np.float32),  # IoU 100/121 = 0.83
                       np.array([0.9, 0.5], np.float32), np.array([0, 0]))  # second box: another label
    assert d.agreement(moved) == (2, 4)  # the confident boxes of both sides, matched one to one
    assert d.agreement(Detections(boxes[:1], np.array([0.9], np.float32), np.array([0]))) == (2, 3)
    near = Detections(boxes, np.array([0.9, 0.35], np.float32), np.array([0, 1]))  # near the threshold
    assert near.agreement(Detections(boxes[:1], np.array([0.9], np.float32), np.array([0]))) == (2, 2)
    k = Keypoints(np.array([[[0, 0], [50, 50]]], np.float32), np.ones((1, 2)), np.array([[0, 0, 60, 80]], np.float32),
                  np.ones(1), ["p", "q"], [])
    k2 = Keypoints(k.points + np.array([[[1.9, 0], [2.1, 0]]], np.float32), k.scores, k.boxes, k.box_scores, k.names, [])
    assert k.agreement(k2) == (1, 2)  # the box diagonal is 100: 2% = 2 px
    m = np.zeros((4, 5), np.uint8)
    m2 = m.copy()
    m2[0, :3] = 1
    assert SegMask(m).agreement(SegMask(m2)) == (17, 20)


def test_the_guard_takes_a_faster_precision_only_when_it_answers_as_fp32(monkeypatch, tmp_path):
    import time

    from cvapps.runtimes import guard
    from cvapps.tasks.classification.postprocess import ClassPrediction

    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path))
    model = cvapps.create_model("classify", "mobilenet_v3_small", labels=["a", "b"], img_size=32)
    calls = []

    def predict(runner, images):
        calls.append(runner)
        time.sleep({"fp32": 0.02, "same": 0.005, "flips": 0.005}[runner] * len(images) / 64)
        top = 1 if runner == "flips" else 0
        return [ClassPrediction(np.eye(2)[top if i % 16 == 3 else 0]) for i in range(len(images))]

    runner, record = guard.decide(model, "fp32", [("flips", lambda: "flips"), ("same", lambda: "same")], predict)
    assert runner == "same" and record["choice"] == "same"
    assert record["checked"]["flips"]["agreeing"] == 60 and not record["checked"]["flips"]["chosen"]
    assert record["checked"]["same"]["agreement"] == 1.0 and record["checked"]["same"]["speedup"] >= 1.2
    calls.clear()  # decided once per model and machine: the record answers the next run
    assert guard.decide(model, "fp32", [("flips", lambda: "flips"), ("same", lambda: "same")], predict)[0] == "same"
    assert calls == []
    other = cvapps.create_model("classify", "mobilenet_v3_small", labels=["a", "c"], img_size=32)
    runner, record = guard.decide(other, "fp32", [("flips", lambda: "flips")], predict)
    assert runner == "fp32" and record["choice"] == "fp32"


def test_precision_auto_on_this_machine_runs_what_it_decided_and_says_so(tmp_path, tiny_model_file, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path))
    monkeypatch.delenv("CVAPPS_PRECISION")
    img = write_image(tmp_path / "a.png", np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    code, _, err = run_cli(capsys, "predict", "classify", img, "--model", tiny_model_file)
    assert code == 0, err
    have_bf16 = not RUNTIMES.get("openvino").missing() and "bf16" in RUNTIMES.get("openvino").precisions_here()
    records = list((tmp_path / "runtimes").glob("*.json"))
    if not have_bf16:  # nothing faster to check here: fp32, no record
        assert records == []
        return
    record = json.loads(records[0].read_text())
    assert set(record["checked"]) == {"openvino bf16"} and record["images"] == 64
    assert "precision auto: " + record["choice"] in " ".join(err.split())


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_tflite_exports_reproduce_pytorch_on_the_litert_interpreter(task):
    """The fixtures were converted by `cvapps export --format tflite` (onnx2tf; see
    tests/data/make_tflite_fixtures.py) from these seeded models: LiteRT gives PyTorch's raw
    outputs (the segmenter's 4-D logits come back from NHWC) and the same predictions.
    In its own process: the LiteRT interpreter crashed a full suite's process."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).parent / "data" / "make_tflite_fixtures.py"
    r = subprocess.run([sys.executable, str(script), "--check", task], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["backend"] == "litert" and got["task"] == task
    for name, (same_shape, diff, scale) in got["outputs"].items():
        assert same_shape and diff <= 1e-4 * max(1.0, scale), name
    agree, compared = got["agreement"]
    assert agree == compared > 0


def test_tflite_export_without_the_converter_is_one_line(tmp_path, tiny_model_file, capsys, monkeypatch):
    monkeypatch.setenv("CVAPPS_TFLITE_PYTHON", sys.executable)  # this environment has no TensorFlow
    code, _, err = run_cli(capsys, "export", "--model", tiny_model_file, "--format", "tflite", "--out",
                           tmp_path / "m.tflite")
    assert code == 2 and "onnx2tf and TensorFlow" in err and "CVAPPS_TFLITE_PYTHON" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.tflite").exists()


def test_coreml_export_carries_the_graph_contract_and_refuses_to_run_off_macos(tmp_path, capsys, tiny_model,
                                                                               tiny_model_file):
    """Core ML predicts on macOS only: here the converted program is checked (input, outputs
    and their precision, cvapps metadata); on a Mac the same file is run against PyTorch."""
    ct = pytest.importorskip("coremltools")
    from cvapps.exporting import META_CONFIG, META_OUTPUTS
    from cvapps.runtimes.coreml import metadata

    outs = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path / f"m_{precision}.mlpackage"
        code, stdout, err = run_cli(capsys, "export", "--model", tiny_model_file, "--format", "coreml", "--precision",
                                    precision, "--out", out, "--dynamic-batch")
        assert code == 0 and stdout.strip().endswith(str(out)) and out.is_dir(), err
        spec = ct.utils.load_spec(str(out))
        (image,) = spec.description.input
        batch = image.type.multiArrayType.shapeRange.sizeRanges[0]
        assert image.name == "image" and list(image.type.multiArrayType.shape)[1:] == [3, 64, 64]
        assert (batch.lowerBound, batch.upperBound) == (1, 64)  # --dynamic-batch
        meta = metadata(out)
        assert json.loads(meta[META_CONFIG]) == tiny_model.config and meta["cvapps_precision"] == precision
        assert [o.name for o in spec.description.output] == json.loads(meta[META_OUTPUTS]) == ["logits", "embedding"]
        outs[precision] = spec.description.output[0].type.multiArrayType.dataType
    assert outs == {"fp32": ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32,
                    "fp16": ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16}
    code, _, err = run_cli(capsys, "export", "--model", tiny_model_file, "--format", "onnx", "--precision", "fp16",
                           "--out", tmp_path / "m.onnx")
    assert code == 2 and "--format onnx writes --precision fp32, not fp16" in err
    img = write_image(tmp_path / "a.png", np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    if sys.platform != "darwin":
        code, _, err = run_cli(capsys, "predict", "classify", img, "--model", tmp_path / "m_fp32.mlpackage")
        assert code == 2 and "Core ML runs models on macOS only" in err and len(err.strip().splitlines()) == 1
        return
    from cvapps.api import load
    graph = load(tmp_path / "m_fp32.mlpackage")  # (runs the day a Mac runs this suite)
    want, got = tiny_model.eval().predict([str(img)]), graph.predict([str(img)])
    assert [p.label for p in want] == [p.label for p in got]
    assert np.allclose([p.score for p in want], [p.score for p in got], atol=1e-4)
