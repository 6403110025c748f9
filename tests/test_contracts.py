"""Contract tests driven by the registries: every registered backbone x every registered task
builds (or refuses with a ConfigError), runs forward on an odd input size, saves and loads
to identical outputs, and exports to ONNX with the same raw outputs where the head can be
exported. New backbones and tasks are covered without editing this file."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import cvapps
from cvapps.backbones import list_backbones
from cvapps.errors import ConfigError
from cvapps.tasks import TASKS

ODD = (37, 53)  # H, W of the forward check: not a multiple of any stride
SIZE, KEYPOINT_CROP = 64, [32, 32]  # the models' configured input (small: predict stays cheap)


def _create(task: str, backbone: str):
    spec = TASKS.get(task)
    torch.manual_seed(0)
    top_down = not spec.model.whole_image
    return cvapps.create_model(task, backbone, img_size=KEYPOINT_CROP if top_down else SIZE,
                               **({"num_classes": 3} if "num_classes" in _data_args(spec) else {}))


def _data_args(spec) -> set:
    import inspect

    return set(inspect.signature(spec.make_config).parameters)


def _tensors(raw) -> dict:
    return {f.name: getattr(raw, f.name) for f in dataclasses.fields(raw)
            if isinstance(getattr(raw, f.name), torch.Tensor)}


@pytest.mark.parametrize("task", TASKS.names())
@pytest.mark.parametrize("backbone", list_backbones())
def test_every_backbone_with_every_task(tmp_path, task, backbone):
    try:
        m = _create(task, backbone)
    except ConfigError as e:  # the backbone cannot serve this head: said in one line, before any work
        assert "\n" not in e.one_line() and backbone in e.one_line() or "stride" in e.one_line()
        return
    x = torch.rand(2, 3, *ODD) * 2 - 1
    with torch.no_grad():
        a = _tensors(m(x))
    assert a and all(torch.isfinite(v.float()).all() for v in a.values())
    again = cvapps.load(cvapps.save(m, tmp_path / "m.safetensors"))
    with torch.no_grad():
        b = _tensors(again(x))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # predict on a real-sized image runs the whole pipeline (pre- and postprocessing)
    pred = again.predict((torch.rand(45, 61, 3) * 255).byte().numpy())[0]
    assert isinstance(pred.to_dict(), (list, dict)) and pred.summary() is not None


# export: every task on the smallest backbone, every backbone on one task
EXPORT_CASES = sorted({(t, "mobilenet_v3_small") for t in TASKS.names()} | {("classify", b) for b in list_backbones()})


def _graph_runtimes() -> list[str]:
    from cvapps.runtimes import RUNTIMES

    return [n for n in RUNTIMES.names() if ".onnx" in RUNTIMES.get(n).suffixes + RUNTIMES.get(n).reads]


# ONNX Runtime: every case; other runtimes run the same graphs: every task on the smallest backbone
RUNTIME_CASES = [(t, b, r) for r in _graph_runtimes() for t, b in EXPORT_CASES
                 if r == "onnxruntime" or b == "mobilenet_v3_small"]


@pytest.mark.parametrize("task,backbone,runtime", RUNTIME_CASES)
def test_exports_reproduce_raw_outputs(tmp_path, task, backbone, runtime):
    """Every task on every graph runtime (and every backbone on ONNX Runtime) at fp32: the raw
    outputs of PyTorch within the parity tolerance."""
    from cvapps.exporting import export
    from cvapps.runtimes import RUNTIMES

    rt = RUNTIMES.get(runtime)
    if rt.missing():
        pytest.skip(rt.missing())
    m = _create(task, backbone)
    if m.export_blocker:
        with pytest.raises(ConfigError):
            export(m, tmp_path / "m.onnx")
        return
    size = m.config["preprocessing"]["input_size"]
    hw = size if isinstance(size, list) else [size, size]
    o = rt.load(export(m, tmp_path / "m.onnx", dynamic_batch=True), "cpu", None)
    x = torch.rand(2, 3, *hw) * 2 - 1
    with torch.no_grad():
        a = _tensors(m(x))
    b = _tensors(o(x))
    for k in a:
        assert float((a[k].float() - b[k]).abs().max()) <= 1e-3 * max(1.0, float(a[k].abs().max())), k
