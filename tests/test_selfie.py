"""Person segmentation converted from MediaPipe's selfie segmentation TFLite file: the
mapping by op position (its custom transposed conv included), `predict segment --model
person.mediapipe`, export, fine-tuning and bundles (weights from fixtures, never the network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, train_steps, write_image

import cvapps
from cvapps.convert import MAPPINGS
from cvapps.convert.selfie import op_order

NAME = "person.mediapipe"


@torch.no_grad()
def test_mapping_by_op_position_reproduces_the_model(selfie_model):
    cls = cvapps.tasks.model_class("segment")
    ref = cls.from_config(selfie_model.config).eval()
    mods = dict(ref.named_modules())
    order = op_order()
    convs = order["CONV_2D"] + order["DEPTHWISE_CONV_2D"]
    assert sorted(convs) == sorted(n for n, m in mods.items() if type(m).__name__ in ("Conv2d", "Conv2dSame"))
    assert order["Convolution2DTransposeBias"] == [n for n, m in mods.items() if isinstance(m, torch.nn.ConvTranspose2d)]
    c = {}
    for op, names in order.items():
        for i, n in enumerate(names):
            c[f"{op}.{i}.weight"], c[f"{op}.{i}.bias"] = mods[n].weight.numpy(), mods[n].bias.numpy()
    fresh = cls.from_config(ref.config)
    fresh.load_state_dict(MAPPINGS.get("selfie_segmentation")(c, fresh.state_dict(), fresh.config), strict=True)
    x = torch.rand(2, 3, 256, 256)
    a, b = ref(x).logits, fresh.eval()(x).logits
    torch.testing.assert_close(b, a)
    assert a.shape == (2, 2, 256, 256) and (a[:, 0] == 0).all()  # (0, z): softmax = (1 - sigmoid(z), sigmoid(z))
    assert ref(torch.rand(1, 3, 100, 75)).logits.shape == (1, 2, 100, 75)  # other sizes come back at their size


def test_predict_segment_with_the_person_model(tmp_path, capsys, selfie_model):
    img = write_image(tmp_path / "me.png", np.random.default_rng(9).integers(0, 255, (90, 120, 3), np.uint8))
    code, out, err = run_cli(capsys, "predict", "segment", img, "--model", NAME, "--out", tmp_path / "o",
                             "--save-json", tmp_path / "p.jsonl", "--backend", "torch")
    assert code == 0, err
    rec = json.loads((tmp_path / "p.jsonl").read_text())
    want = selfie_model.predict(img)[0]
    assert want.names == ["background", "person"] and want.mask.shape == (90, 120)
    assert "person" in json.dumps(rec) and (tmp_path / "o" / "me.png").is_file()


def test_selfie_exports_fine_tunes_and_bundles_with_the_detector(tmp_path, selfie_model, coco_detector):
    pytest.importorskip("onnxruntime")
    img = np.random.default_rng(10).integers(0, 255, (100, 140, 3), np.uint8)
    ort = cvapps.load(cvapps.export(selfie_model, tmp_path / "selfie.onnx"), backend="onnxruntime")
    a = selfie_model.predict(img)[0]
    b = next(iter(cvapps.predict(ort, [img], task="segment", stream=True))).prediction
    assert (a.mask != b.mask).mean() < 1e-3 and np.abs(a.scores - b.scores).max() < 1e-3
    m = cvapps.create_model("segment", weights=NAME, labels=["background", "person"])
    assert m.config["head"]["kind"] == "selfie" and m.config["backbone"] == "selfie_encoder"
    src = selfie_model.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in m.state_dict().items())
    torch.manual_seed(0)
    x = torch.rand(2, 3, 128, 128)
    gt = (torch.rand(2, 128, 128) > 0.5).long()
    losses = train_steps(m, x, [{"mask": g} for g in gt], 1e-3)
    assert losses[-1] < losses[0]
    bundle = cvapps.load_bundle([coco_detector, selfie_model])
    assert "segment runs its own selfie_encoder pass" in bundle.describe()
    path = write_image(tmp_path / "street.png", img)
    cvapps.predict_bundle(bundle, [path], save_json=str(tmp_path / "b.jsonl"), out_dir=str(tmp_path / "b"))
    rec = json.loads((tmp_path / "b.jsonl").read_text())
    assert {"detect", "segment"} <= set(rec["predictions"]) and (tmp_path / "b" / "street.png").is_file()
