"""ONNX / TorchScript export and the ONNX Runtime backend: parity with PyTorch per task."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import run_cli, write_image

import cvapps
from cvapps.exporting import export
from cvapps.runtimes import OnnxModel

CASES = {
    "classify": ("classify", {"backbone": "mobilenet_v3_small", "labels": ["a", "b", "c"], "img_size": 64}),
    "detect": ("detect", {"backbone": "mobilenet_v2", "labels": ["a", "b"], "img_size": 128}),
    "segment_fcn": ("segment", {"backbone": "mobilenet_v2", "labels": ["a", "b"], "img_size": [64, 96]}),
    "segment_segnet": ("segment", {"backbone": "segnet_basic", "labels": ["a", "b"], "kind": "segnet", "img_size": 64}),
    "landmarks_cascade": ("landmarks", {"backbone": "mobilenet_v3_small", "img_size": [64, 64], "schema": "face5",
                                        "kind": "regression", "cascade": True}),
    "pose_heatmap": ("pose", {"backbone": "mobilenet_v3_small", "img_size": [64, 64]}),
}


def calibrated(task: str, **kw):
    """A random model whose BatchNorm statistics are the exact statistics of random inputs
    (cumulative averages from fresh). With the default momentum a few passes leave deep
    MobileNets with input-independent features (their spread across images was 5e-9), which
    makes any parity check vacuous and flip-tested heatmaps exactly mirror-symmetric (ties)."""
    torch.manual_seed(0)
    m = cvapps.create_model(task, **kw)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(4, 3, *_hw(m)) * 2 - 1)
    return m.eval()


def test_calibrated_models_respond_to_their_input():
    m = calibrated(*CASES["pose_heatmap"][:1], **CASES["pose_heatmap"][1])
    with torch.no_grad():
        f = m.forward_features(torch.rand(3, 3, 64, 64) * 2 - 1)[-1]
    assert float(f.std(0).mean()) > 1e-2  # across images, not just across positions


def _hw(m) -> tuple[int, int]:
    s = m.config["preprocessing"]["input_size"]
    return (s[0], s[1]) if isinstance(s, list) else (s, s)


def _tensors(raw) -> dict:
    return {f.name: getattr(raw, f.name) for f in dataclasses.fields(raw) if isinstance(getattr(raw, f.name), torch.Tensor)}


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_raw_outputs_match_pytorch(tmp_path, case):
    task, kw = CASES[case]
    m = calibrated(task, **kw)
    o = OnnxModel(export(m, tmp_path / "m.onnx", dynamic_batch=True))
    assert o.task == task and o.labels == m.labels
    x = torch.rand(3, 3, *_hw(m)) * 2 - 1
    with torch.no_grad():
        a = _tensors(m(x))
    b = _tensors(o(x))
    assert set(a) == set(b)
    varied = False
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert float((a[name].float() - b[name]).abs().max()) <= 1e-4, name
        if a[name].dim() and a[name].shape[0] == 3:  # per-image outputs must differ between the images
            varied |= float(a[name].float().std(0).max()) > 1e-3
    assert varied, "outputs do not depend on the input: the parity check would prove nothing"


def test_static_batch_file_runs_any_batch_and_torchscript_round_trip(tmp_path):
    m = calibrated(*CASES["classify"][:1], **CASES["classify"][1])
    o = OnnxModel(export(m, tmp_path / "b1.onnx"))  # batch fixed at 1: run in chunks
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ref = m(x).logits
    assert o.fixed_batch == 1 and torch.allclose(o(x).logits, ref, atol=1e-4)
    path = export(m, tmp_path / "m.pt", fmt="torchscript")
    extra = {"cvapps_config.json": ""}
    ts = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["cvapps_config.json"])["labels"] == ["a", "b", "c"]
    assert torch.allclose(ts(x)[0], ref, atol=1e-5)


def test_faster_rcnn_export_is_refused_clearly(tmp_path):
    m = cvapps.create_model("detect", "mobilenet_v2", labels=["a"], kind="fasterrcnn", img_size=128)
    with pytest.raises(cvapps.ConfigError, match="Faster R-CNN cannot be exported"):
        export(m, tmp_path / "f.onnx")


def _jsonl(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _close(a, b, tol=1e-3):
    """JSON values equal, numbers up to ``tol`` relative plus one unit of the JSON's rounding
    (pixel coordinates are written with 2 decimals: float noise can flip the last digit)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tol * max(1.0, abs(a)) + 0.0101
    return a == b


@pytest.mark.parametrize("case,command,extra", [
    ("classify", "classify", []),
    ("detect", "detect", ["--conf", "0.0", "--max-det", "5"]),
    ("pose_heatmap", "pose", ["--flip-test", "--whole-image"]),
])
def test_cli_onnxruntime_backend_json_equals_pytorch(tmp_path, capsys, case, command, extra):
    task, kw = CASES[case]
    model = cvapps.save(calibrated(task, **kw), tmp_path / "m.safetensors")
    code, out, err = run_cli(capsys, "export", "--model", model, "--out", tmp_path / "m.onnx", "--dynamic-batch")
    assert code == 0, err
    rng = np.random.default_rng(0)
    imgs = [write_image(tmp_path / "in" / f"i{i}.png", rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
            for i in range(3)]
    for name, m, backend in (("torch", model, "torch"), ("ort", tmp_path / "m.onnx", "onnxruntime")):
        code, _, err = run_cli(capsys, "predict", command, *imgs, "--model", m, "--backend", backend, "--save-json",
                               tmp_path / f"{name}.jsonl", *extra)
        assert code == 0, err
    a, b = _jsonl(tmp_path / "torch.jsonl"), _jsonl(tmp_path / "ort.jsonl")
    assert len(a) == 3 and any(r["predictions"] for r in a)
    if command == "pose":  # decoded points are an argmax: the test is only meaningful with clear peaks
        _assert_clear_peaks(cvapps.load(model), cvapps.load(tmp_path / "m.onnx"), imgs)
    assert _close(a, b), (a[0], b[0])


def _assert_clear_peaks(model, onnx_model, images):
    """Every flip-tested heatmap's maximum beats its runner-up by more than twice the largest
    PyTorch / ONNX Runtime difference, so both backends pick the same cell (no tie-breaking).
    (The difference is ~3e-7 with AVX-512 / AVX2 kernels, 3e-3 with oneDNN's SSE4.1 ones.)"""
    from cvapps.data.io import read_image

    pre = model.preprocessor()
    x = pre.normalize(torch.cat([pre.prepare(read_image(p), str(p), i)[0] for i, p in enumerate(images)]))
    with torch.no_grad():
        a = model.infer(x, flip_test=True).heatmaps.flatten(2)
    b = onnx_model.infer(x, flip_test=True).heatmaps.flatten(2)
    top = a.topk(2, -1).values
    gap, noise = float((top[..., 0] - top[..., 1]).min()), float((a - b).abs().max())
    assert gap > 2 * noise, (gap, noise)


def test_onnxruntime_backend_runs_a_model_file_through_its_cached_graph(tmp_path, capsys, tiny_model_file):
    """--backend onnxruntime with a model file or weights name runs what the default runs
    (it used to be refused: "runs exported .onnx files")."""
    img = write_image(tmp_path / "a.png", np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    for backend in ("onnxruntime", "torch"):
        code, _, err = run_cli(capsys, "predict", "classify", img, "--model", tiny_model_file, "--backend", backend,
                               "--save-json", tmp_path / f"{backend}.jsonl")
        assert code == 0, err
    a, b = (json.loads((tmp_path / f"{n}.jsonl").read_text()) for n in ("onnxruntime", "torch"))
    assert _close(a["predictions"], b["predictions"])
    assert isinstance(cvapps.load(tiny_model_file, backend="onnxruntime"), OnnxModel)
    torch.manual_seed(0)
    rcnn = cvapps.save(cvapps.create_model("detect", "mobilenet_v3_small", labels=["a"], kind="fasterrcnn",
                                           img_size=64), tmp_path / "rcnn.safetensors")
    code, _, err = run_cli(capsys, "predict", "detect", img, "--model", rcnn, "--backend", "onnxruntime")
    assert code == 2 and "--backend onnxruntime cannot run this model" in err and len(err.strip().splitlines()) == 1


def test_export_does_not_print_the_tracers_constant_warnings(tmp_path, tiny_model):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(tiny_model, tmp_path / "m.onnx")
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


def test_auto_backend_exports_once_and_equals_pytorch(tmp_path, capsys, monkeypatch):
    """`predict` without --backend runs a model file on ONNX Runtime: exported once into
    $CVAPPS_HOME/onnx, reused by the next run, the JSON equal to --backend torch."""
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))
    task, kw = CASES["detect"]
    model = cvapps.save(calibrated(task, **kw), tmp_path / "m.safetensors")
    rng = np.random.default_rng(1)
    imgs = [write_image(tmp_path / "in" / f"i{i}.png", rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
            for i in range(3)]
    errs = []
    for name, backend in (("auto1", []), ("auto2", []), ("torch", ["--backend", "torch"])):
        code, _, err = run_cli(capsys, "predict", "detect", *imgs, "--model", model, "--conf", "0.0", "--max-det", "5",
                               "--save-json", tmp_path / f"{name}.jsonl", *backend)
        assert code == 0, err
        errs.append(" ".join(err.split()))
    cached = list((tmp_path / "home" / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and OnnxModel(cached[0]).task == "detect"
    assert "exported the model for ONNX Runtime once" in errs[0] and "exported" not in errs[1] + errs[2]
    a, b, t = (_jsonl(tmp_path / f"{n}.jsonl") for n in ("auto1", "auto2", "torch"))
    assert any(r["predictions"] for r in t) and a == b and _close(a, t), (a[0], t[0])


def test_auto_backend_stays_on_pytorch_when_the_graph_cannot_run_it(tmp_path, face_detector, monkeypatch):
    """Faster R-CNN (no fixed graph) and RetinaFace at extra test-time scales (other input
    sizes) run on PyTorch, saying why once; a TaskModel object passed in runs as it is."""
    from rich.console import Console

    from cvapps.runtimes import prepare as fastest

    rcnn = cvapps.create_model("detect", "mobilenet_v2", labels=["a"], kind="fasterrcnn", img_size=128).eval()
    out = Console(file=__import__("io").StringIO(), width=300)
    assert fastest(rcnn, console=out) is rcnn
    assert fastest(face_detector, post={"scales": [1.0, 2.0]}, console=out) is face_detector
    said = out.file.getvalue()
    assert "Faster R-CNN cannot be exported" in said and "--scales" in said
    assert isinstance(fastest(face_detector, post={"scales": [1.0]}), OnnxModel)
    from cvapps import api

    def refuse(*a, **k):
        raise AssertionError("a TaskModel object was handed to another runtime")

    monkeypatch.setattr(api, "prepare", refuse)
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert cvapps.predict(face_detector, [img], task="landmarks", progress=False, face_check="none").processed == 1


@pytest.mark.parametrize("conf,expect_some", [(0.05, True), (0.9999, False)])
def test_nms_in_graph_equals_the_python_postprocess(tmp_path, conf, expect_some):
    """`export --nms`: ONNX Runtime returns the same final detections (boxes, scores, labels)
    as cvapps's Python selection on the same raw outputs; none above the threshold is an
    empty result, not an error."""
    import onnxruntime as ort

    from cvapps.ops import decode_boxes
    from cvapps.tasks.detection.postprocess import select
    from torchvision.ops import clip_boxes_to_image

    task, kw = CASES["detect"]
    m = calibrated(task, **kw)
    path = cvapps.export(m, tmp_path / "nms.onnx", nms={"conf": conf, "iou": 0.5, "max_det": 20})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores", "labels"]
    for seed in range(3):
        x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        boxes, scores, labels = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            raw = m(x)
        ref = select(m.head.probs(raw)[0], clip_boxes_to_image(decode_boxes(raw.deltas[:1], raw.anchors)[0], (128, 128)),
                     conf, 0.5, 20)
        assert (len(boxes) > 0) == expect_some and len(boxes) == len(ref[0])
        np.testing.assert_allclose(boxes, ref[0].numpy(), atol=1e-3)
        np.testing.assert_allclose(scores, ref[1].numpy(), atol=1e-4)
        np.testing.assert_array_equal(labels, ref[2].numpy())
    with pytest.raises(cvapps.DataError, match="ends in NMS"):
        OnnxModel(path)


def test_nms_export_refuses_what_it_cannot_do(tmp_path):
    cls = cvapps.create_model(*CASES["classify"][:1], **CASES["classify"][1])
    with pytest.raises(cvapps.ConfigError, match="--nms is for detection models"):
        cvapps.export(cls, tmp_path / "c.onnx", nms=True)
    det = cvapps.create_model(*CASES["detect"][:1], **CASES["detect"][1])
    with pytest.raises(cvapps.ConfigError, match="one image at a time"):
        cvapps.export(det, tmp_path / "d.onnx", nms=True, dynamic_batch=True)


def test_int8_export_is_quantised_keeps_its_config_and_reports_the_change(tmp_path, colour_folder):
    """`export --int8`: a QDQ graph (int8 weights) that `predict` can load like any export,
    close to the fp32 graph; the report has both speeds and, with labelled data, the metric
    of each graph as `evaluate` computes it and their difference."""
    import onnx

    torch.manual_seed(0)
    m = cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"], img_size=64)
    calib = str(colour_folder / "train")
    r = cvapps.api.export_int8(m, tmp_path / "q.onnx", [calib], data=str(colour_folder / "val"))
    ops = {n.op_type for n in onnx.load(r["int8"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    q, f = OnnxModel(r["int8"]), OnnxModel(r["fp32"])
    assert q.labels == ["blue", "green", "red"] and r["calibration_images"] == 18
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    a, b = q(x).logits.numpy(), f(x).logits.numpy()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9 and not np.array_equal(a, b)
    assert set(r["images_per_s"]) == {"fp32", "int8"} and r["metric"] == "top1"
    assert r["metrics"]["int8"]["top1"] == pytest.approx(cvapps.evaluate(q, str(colour_folder / "val"))["top1"])
    assert r["metric_change"] == pytest.approx(r["metrics"]["int8"]["top1"] - r["metrics"]["fp32"]["top1"], abs=1e-4)


def test_benchmark_says_when_pytorch_rows_do_more_work_than_onnx_ones(tmp_path, face_detector, facemesh_model):
    """On photos the face detector's PyTorch predict adds a test-time scale an exported graph
    cannot run: the benchmark says so beside the rows (they are not the same work per image)."""
    from cvapps.benchmarking import benchmark

    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "p" / f"{i}.png", rng.integers(0, 255, (120, 160, 3), np.uint8))
    r = benchmark("retinaface.face5", [str(tmp_path / "p")], None, ("torch_fp32", "onnxruntime_fp32"),
                  max_images=2, video_frames=2)
    assert "test-time scales" in r["note"] and "ONNX Runtime rows run one pass" in r["note"]


def test_benchmark_command_measures_each_variant_and_its_metric(tmp_path, colour_folder, capsys):
    """`cvapps benchmark`: a row per variant with speeds, the metrics `evaluate` gives for
    that variant, the table on stderr and the JSON on stdout."""
    m = cvapps.save(cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"],
                                        img_size=64), tmp_path / "m.safetensors")
    from cvapps.benchmarking import benchmark

    r = benchmark(str(m), [str(colour_folder / "train")], str(colour_folder / "val"),
                  ("torch_fp32", "onnxruntime_fp32"), max_images=6, video_frames=6)
    assert list(r["variants"]) == ["torch_fp32", "onnxruntime_fp32"] and r["images"] == 6 and r["metric"] == "top1"
    assert "note" not in r  # the same work on both backends
    want = cvapps.evaluate(str(m), str(colour_folder / "val"))["top1"]
    for row in r["variants"].values():
        assert row["images_per_s_b1"] > 0 and row["images_per_s_b16"] > 0 and row["video_fps"] > 0
        assert row["metrics"]["top1"] == pytest.approx(want, abs=1e-4)
    code, out, err = run_cli(capsys, "benchmark", "--model", m, "--variants", "torch_fp32,torch_bf16",
                             "--sample", str(colour_folder / "val"))
    assert code == 0 and "torch_bf16" in err and json.loads(out.strip().splitlines()[-1])["task"] == "classify"
    code, _, err = run_cli(capsys, "benchmark", "--model", m, "--variants", "torch_fp64")
    assert code == 2 and "unknown benchmark variants ['torch_fp64']" in err
