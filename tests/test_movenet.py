"""The converted pose models (MoveNet Lightning from TFLite, Thunder and MultiPose from TF.js
graphs): the TFLite reader on a model the test writes with the flatbuffer builder, the key
mappings on folded models, MoveNet's and MultiPose's decoding on hand-made maps, and the
defaults of `predict pose` (weights from fixtures, never the network)."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli, train_steps, write_coco_keypoints, write_image

import cvapps
from cvapps.convert import MAPPINGS, READERS
from cvapps.convert.movenet import conv_order
from cvapps.errors import WeightsError
from cvapps.ops.keypoints import decode_movenet, movenet_centre_weights

tflite = pytest.importorskip("tflite")
import flatbuffers  # noqa: E402

NAME = "movenet_lightning.coco17"


def write_tflite(path, tensors: list[tuple[str, list[int], int, np.ndarray | None]],
                 ops: list[tuple[str, list[int], list[int]]], quant: dict | None = None) -> None:
    """A one-subgraph TFLite file: tensors (name, shape, TensorType, constant or None), ops
    (builtin name, input tensor indices, output tensor indices); ``quant``: tensor index ->
    (scales, zero points, quantised dimension) of integer-quantised tensors."""
    b = flatbuffers.Builder(1024)
    quant = quant or {}

    def vec(start, items, prepend):
        start(b, len(items))
        for it in reversed(items):
            prepend(it)
        return b.EndVector()

    buffers = []
    for data in [None] + [t[3] for t in tensors if t[3] is not None]:
        raw = None if data is None else b.CreateNumpyVector(np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8))
        tflite.BufferStart(b)
        if raw is not None:
            tflite.BufferAddData(b, raw)
        buffers.append(tflite.BufferEnd(b))
    tens, k = [], 0
    for idx, (name, shape, ttype, data) in enumerate(tensors):
        n, s = b.CreateString(name), vec(lambda bb, m: tflite.TensorStartShapeVector(bb, m), shape, b.PrependInt32)
        q = None
        if idx in quant:
            scales, zeros, axis = quant[idx]
            sv = vec(tflite.QuantizationParametersStartScaleVector, list(scales), b.PrependFloat32)
            zv = vec(tflite.QuantizationParametersStartZeroPointVector, list(zeros), b.PrependInt64)
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, sv), tflite.QuantizationParametersAddZeroPoint(b, zv)
            tflite.QuantizationParametersAddQuantizedDimension(b, axis)
            q = tflite.QuantizationParametersEnd(b)
        if data is not None:
            k += 1
        tflite.TensorStart(b)
        if q is not None:
            tflite.TensorAddQuantization(b, q)
        tflite.TensorAddShape(b, s), tflite.TensorAddType(b, ttype), tflite.TensorAddName(b, n)
        tflite.TensorAddBuffer(b, k if data is not None else 0)
        tens.append(tflite.TensorEnd(b))
    kinds = sorted({op for op, _, _ in ops})
    codes = []
    for kind in kinds:
        custom = b.CreateString(kind[len("CUSTOM:"):]) if kind.startswith("CUSTOM:") else None
        tflite.OperatorCodeStart(b)
        code = tflite.BuiltinOperator.CUSTOM if custom else getattr(tflite.BuiltinOperator, kind)
        tflite.OperatorCodeAddBuiltinCode(b, code), tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        if custom:
            tflite.OperatorCodeAddCustomCode(b, custom)
        codes.append(tflite.OperatorCodeEnd(b))
    operators = []
    for kind, ins, outs in ops:
        i = vec(tflite.OperatorStartInputsVector, ins, b.PrependInt32)
        o = vec(tflite.OperatorStartOutputsVector, outs, b.PrependInt32)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, kinds.index(kind)), tflite.OperatorAddInputs(b, i), tflite.OperatorAddOutputs(b, o)
        operators.append(tflite.OperatorEnd(b))
    t_vec = vec(tflite.SubGraphStartTensorsVector, tens, b.PrependUOffsetTRelative)
    o_vec = vec(tflite.SubGraphStartOperatorsVector, operators, b.PrependUOffsetTRelative)
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, t_vec), tflite.SubGraphAddOperators(b, o_vec)
    graph = tflite.SubGraphEnd(b)
    g_vec = vec(tflite.ModelStartSubgraphsVector, [graph], b.PrependUOffsetTRelative)
    c_vec = vec(tflite.ModelStartOperatorCodesVector, codes, b.PrependUOffsetTRelative)
    b_vec = vec(tflite.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3), tflite.ModelAddSubgraphs(b, g_vec), tflite.ModelAddOperatorCodes(b, c_vec)
    tflite.ModelAddBuffers(b, b_vec)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))


def test_tflite_reader_gives_torch_layouts_by_op_position(tmp_path):
    f16, f32 = tflite.TensorType.FLOAT16, tflite.TensorType.FLOAT32
    conv = (np.arange(2 * 3 * 3 * 4) / 8 - 4).astype(np.float16).reshape(2, 3, 3, 4)  # OHWI, fp16
    dw = np.arange(3 * 3 * 2, dtype=np.float32).reshape(1, 3, 3, 2)  # 1HWC
    bias, dw_bias, scale = np.array([0.5, -1.5], np.float32), np.array([2.0, 3.0], np.float32), np.float32(0.25)
    up = np.arange(3 * 2 * 2 * 2, dtype=np.float32).reshape(3, 2, 2, 2)  # OHWI, MediaPipe's transposed conv
    tensors = [("input", [1, 5, 5, 4], f32, None), ("w_fp16", [2, 3, 3, 4], f16, conv),
               ("w_dequantize", [2, 3, 3, 4], f32, None), ("b", [2], f32, bias), ("y", [1, 5, 5, 2], f32, None),
               ("dw;fused;other_layer/depthwise", [1, 3, 3, 2], f32, dw), ("dwb", [2], f32, dw_bias),
               ("z", [1, 5, 5, 2], f32, None), ("scale", [], f32, scale),
               ("slopes", [1, 1, 2], f32, np.array([[[0.25, -0.5]]], np.float32)), ("a", [1, 5, 5, 2], f32, None),
               ("up_w", [3, 2, 2, 2], f32, up), ("up_b", [3], f32, np.array([1.0, 2.0, 3.0], np.float32)),
               ("u", [1, 10, 10, 3], f32, None)]
    write_tflite(tmp_path / "m.tflite", tensors, [("DEQUANTIZE", [1], [2]), ("CONV_2D", [0, 2, 3], [4]),
                                                   ("DEPTHWISE_CONV_2D", [4, 5, 6], [7]), ("PRELU", [7, 9], [10]),
                                                   ("CUSTOM:Convolution2DTransposeBias", [10, 11, 12], [13])])
    c = READERS.get("tflite")(tmp_path / "m.tflite")
    np.testing.assert_array_equal(c["CONV_2D.0.weight"], conv.astype(np.float32).transpose(0, 3, 1, 2))
    assert c["CONV_2D.0.weight"].dtype == np.float32 and c["CONV_2D.0.weight"].shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(c["CONV_2D.0.bias"], bias)
    np.testing.assert_array_equal(c["DEPTHWISE_CONV_2D.0.weight"], dw.transpose(3, 0, 1, 2))  # (C, 1, kh, kw)
    np.testing.assert_array_equal(c["DEPTHWISE_CONV_2D.0.bias"], dw_bias)
    np.testing.assert_array_equal(c["PRELU.0.weight"], [0.25, -0.5])
    np.testing.assert_array_equal(c["Convolution2DTransposeBias.0.weight"], up.transpose(3, 0, 1, 2))  # IOHW
    np.testing.assert_array_equal(c["Convolution2DTransposeBias.0.bias"], [1.0, 2.0, 3.0])
    assert c["scale"] == np.float32(0.25) and c["w_fp16"].dtype == np.float16  # constants keep their names
    np.testing.assert_array_equal(c["w_dequantize"], conv.astype(np.float32))
    data = (tmp_path / "m.tflite").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="TFLite"):
        READERS.get("tflite")(tmp_path / "cut.tflite")
    (tmp_path / "x.onnx").write_bytes(b"\x08\x07" + data[8:])
    with pytest.raises(WeightsError, match="no TFL3 identifier"):
        READERS.get("tflite")(tmp_path / "x.onnx")


def _constants() -> dict[str, np.ndarray]:
    """The decoding constants of the MoveNet file (values as the file stores them, fp16)."""
    return {"truediv_1;truediv_1/y": np.float16(2 / 255), "sub_1/y": np.float16(1.0), "add_1/y": np.float16(1.8),
            "Reshape_13": np.full((1, 1, 1, 2), 1 / 48, np.float16),
            "truediv_2;add_1": movenet_centre_weights(48, 48).numpy().astype(np.float16)[..., None]}


@torch.no_grad()
def test_mapping_reproduces_a_folded_model_by_position(pose_model):
    """A file made the way the original was (BatchNorm folded, convs in the file's execution
    order) converts into a model with the same outputs; every conv is mapped exactly once."""
    cls = cvapps.tasks.model_class("pose")
    ref = cls.from_config(pose_model.config).eval()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    folded = cls.from_config(ref.config).eval()
    folded.load_state_dict(ref.state_dict())
    folded.fold_batchnorm()
    mods = dict(folded.named_modules())
    convs, dws = conv_order()
    assert sorted(convs + dws) == sorted(n for n, m in mods.items() if isinstance(m, torch.nn.Conv2d))
    assert all(mods[n].groups > 1 for n in dws) and all(mods[n].groups == 1 for n in convs)
    c = _constants()
    for op, names in (("CONV_2D", convs), ("DEPTHWISE_CONV_2D", dws)):
        for i, n in enumerate(names):
            c[f"{op}.{i}.weight"], c[f"{op}.{i}.bias"] = mods[n].weight.numpy(), mods[n].bias.numpy()
    fresh = cls.from_config(ref.config)
    fresh.load_state_dict(MAPPINGS.get("movenet")(c, fresh.state_dict(), fresh.config), strict=True)
    x = torch.rand(2, 3, 192, 192) * 2 - 1
    a, b = ref(x), fresh.eval()(x)
    torch.testing.assert_close(b.heatmaps, a.heatmaps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.points, a.points, rtol=1e-4, atol=1e-3)
    bad = {**c, "add_1/y": np.float16(2.5)}
    with pytest.raises(WeightsError, match="add_1/y"):
        MAPPINGS.get("movenet")(bad, fresh.state_dict(), fresh.config)
    short = {k: v for k, v in c.items() if not k.startswith("CONV_2D.49.")}
    with pytest.raises(WeightsError, match="49 CONV_2D ops, the model 50"):
        MAPPINGS.get("movenet")(short, fresh.state_dict(), fresh.config)


def test_movenet_decoding_on_hand_made_maps():
    """Two people: the centre weighting picks the one nearer the middle; each keypoint is the
    heatmap peak nearest the point regressed from that centre, moved by its offset."""
    h = w = 8
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    centre = torch.full((1, 1, h, w), -20.0)
    centre[0, 0, 1, 1] = logit(0.9)  # a clearer person at the corner ...
    centre[0, 0, 4, 3] = logit(0.8)  # ... loses to the one near the centre cell (4, 4)
    assert 0.9 * movenet_centre_weights(h, w)[1, 1] < 0.8 * movenet_centre_weights(h, w)[4, 3]
    regress = torch.zeros(1, 4, h, w)
    regress[0, :, 4, 3] = torch.tensor([-2.0, 1.0, 2.0, 0.5])  # point 0 at (y, x) = (2, 4), point 1 at (6, 3.5)
    heat = torch.full((1, 2, h, w), -20.0)
    heat[0, 0, 2, 4], heat[0, 0, 7, 7] = logit(0.6), logit(0.95)  # the far, stronger peak belongs to no one here
    heat[0, 1, 6, 3] = logit(0.7)
    offset = torch.zeros(1, 4, h, w)
    offset[0, 0:2, 2, 4] = torch.tensor([0.25, -0.5])  # (dy, dx) of point 0 at its cell
    offset[0, 2:4, 6, 3] = torch.tensor([-0.125, 0.375])
    points, scores, hm = decode_movenet(centre, regress, heat, offset)
    np.testing.assert_allclose(points[0].numpy(), [[3.5, 2.25], [3.375, 5.875]])  # (x, y) cells
    np.testing.assert_allclose(scores[0].numpy(), [0.6, 0.7], rtol=1e-6)
    assert hm.shape == (1, 2, h, w) and torch.allclose(hm[0, 0, 7, 7], torch.tensor(0.95))


def test_predict_pose_without_model_uses_movenet_on_the_detectors_people(tmp_path, capsys, pose_model,
                                                                         thunder_model, coco_detector):
    """Photos get MoveNet Thunder; video MultiPose, or Lightning with a top-down option such as
    --whole-image (cvapps.tasks.pose.spec.PoseSpec.pick_model)."""
    img = write_image(tmp_path / "street.png", np.random.default_rng(4).integers(0, 255, (120, 160, 3), np.uint8))
    code, out, err = run_cli(capsys, "predict", "pose", img, "--whole-image", "--save-json", tmp_path / "p.jsonl",
                             "--out", tmp_path / "drawn", "--backend", "torch")
    assert code == 0, err
    (rec,) = json.loads((tmp_path / "p.jsonl").read_text())["predictions"]
    assert len(rec["keypoints"]) == 17 * 3 and rec["bbox"] == [0, 0, 160, 120]
    want = thunder_model.predict(img)[0]  # the whole image is the API's default box source
    np.testing.assert_allclose(np.asarray(rec["keypoints"]).reshape(17, 3)[:, :2], want.points[0], atol=0.01)
    assert (tmp_path / "drawn" / "street.png").is_file()
    m = cvapps.load(NAME)
    pre, _ = m.spec.predict_setup(m, lambda name, t: cvapps.load(name, task=t))
    assert pre.boxes.det.config["weights"] == "ssd_mobilenet_v2.coco" and pre.boxes.label == "person"
    assert m.config["head"]["kind"] == "movenet" and m.schema.name == "coco17"
    video = tmp_path / "clip.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (160, 120))
    for _ in range(2):
        vw.write(np.random.default_rng(4).integers(0, 255, (120, 160, 3), np.uint8))
    vw.release()
    (res,) = list(cvapps.predict(None, [str(video)], task="pose", whole_image=True, backend="torch", stream=True,
                                 vid_stride=2))
    frame = res.image
    np.testing.assert_allclose(res.prediction.points[0], pose_model.predict(frame)[0].points[0], atol=0.01)
    assert cvapps.api.choose_model(None, "pose", {}, [str(img), str(video)]) == "movenet_multipose.coco17"
    assert cvapps.api.choose_model(None, "pose", {"whole_image": True}, [str(video)]) == "movenet_lightning.coco17"
    assert cvapps.api.choose_model("m.safetensors", "pose", {}, [str(img)]) == "m.safetensors"


@torch.no_grad()
def test_thunder_maps_from_a_tfjs_graph_by_position_and_by_head_name(tmp_path, thunder_model):
    """A TF.js graph model written the way human-models' movenet-thunder.json is (fused convs
    with BiasAdd in the backbone's execution order, each FPN lateral right after the block it
    taps; bias-free depthwise halves of separable convs; the heads' depthwise convs first,
    then their 1x1s, in another order than ours) converts into a model with the same outputs."""
    cls = cvapps.tasks.model_class("pose")
    ref = cls.from_config(thunder_model.config).eval()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    for name, mod in ref.named_modules():  # the separable convs' depthwise halves have no bias in TF
        if name.startswith("head.main") and isinstance(mod, torch.nn.Conv2d) and mod.groups > 1:
            mod.bias.zero_()
    folded = cls.from_config(ref.config).eval()
    folded.load_state_dict(ref.state_dict())
    folded.fold_batchnorm()
    mods = dict(folded.named_modules())
    convs, dws = conv_order()
    p = "StatefulPartitionedCall/"
    consts = {p + "truediv": np.full((1, 1, 1, 3), 2 / 255, np.float32), p + "sub_1/y": np.float32(1.0),
              p + "Reshape_13": np.full((1, 1, 1, 2), 1 / 64, np.float32),
              "ConstantFolding/StatefulPartitionedCall/truediv_2_recip":
                  movenet_centre_weights(64, 64).numpy()[..., None]}
    nodes, weights = [], dict(consts)

    def node(name, mod, fused=True):
        w = mods[mod].weight.numpy()
        w = w.transpose(2, 3, 1, 0) if mods[mod].groups == 1 else w.transpose(2, 3, 0, 1)  # HWIO / HWC1
        op = ("_FusedConv2D" if mods[mod].groups == 1 else "FusedDepthwiseConv2dNative") if fused else \
            "DepthwiseConv2dNative"
        weights[name + "/w"] = np.ascontiguousarray(w)
        ins = ["x", name + "/w"]
        attr = {}
        if fused:
            weights[name + "/b"] = mods[mod].bias.numpy()
            ins.append(name + "/b")
            attr = {"fused_ops": {"list": {"s": [base64.b64encode(b"BiasAdd").decode()]}}}
        nodes.append({"name": name, "op": op, "input": ins, "attr": attr})

    n_heads = 4
    for i, mod in enumerate(convs[: -2 * n_heads]):
        node(f"{p}body/conv_{i}", mod)
    body_dws = dws[:-n_heads]
    for i, mod in enumerate(body_dws):
        node(f"{p}body/dw_{i}/separable_conv2d/depthwise", mod, fused=not mod.startswith("head.main.fpn"))
    tf_heads = [("kpt_heatmap_0", "heatmap"), ("kpt_regress_0", "regress"), ("center_0", "centre"),
                ("kpt_offset_0", "offset")]
    for tf, ours in tf_heads:
        node(f"{p}{tf}/separable_conv2d/separable_conv2d/depthwise", f"head.main.heads.{ours}.0", fused=False)
    for tf, ours in tf_heads:
        node(f"{p}{tf}/re_lu/Relu", f"head.main.heads.{ours}.1")
    for tf, ours in tf_heads:
        node(f"{p}{tf}/conv2d/BiasAdd", f"head.main.heads.{ours}.3")
    # the FPN's depthwise convs run between the laterals' and the merges' 1x1s in the real file; the
    # position keys count each op type on its own, so only the order within a type matters
    specs, blobs = [], []
    for k, v in weights.items():
        a = np.asarray(v, np.float32)
        specs.append({"name": k, "shape": list(a.shape), "dtype": "float32"})
        blobs.append(a.tobytes())
    (tmp_path / "m.bin").write_bytes(b"".join(blobs))
    (tmp_path / "model.json").write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": nodes},
                                                     "weightsManifest": [{"paths": ["m.bin"], "weights": specs}]}))
    c = READERS.get("tfjs_graph")(tmp_path / "model.json")
    assert c["DEPTHWISE_CONV_2D.0.weight"].shape[1] == 1 and not c[f"node:{p}center_0/separable_conv2d/" +
                                                                    "separable_conv2d/depthwise.bias"].any()
    fresh = cls.from_config(ref.config)
    fresh.load_state_dict(MAPPINGS.get("movenet_tfjs")(c, fresh.state_dict(), fresh.config), strict=True)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    a, b = ref(x), fresh.eval()(x)
    torch.testing.assert_close(b.heatmaps, a.heatmaps, rtol=1e-4, atol=1e-5)
    bad = {**c, p + "Reshape_13": np.full((1, 1, 1, 2), 1 / 48, np.float32)}  # a 192 px model's output scale
    with pytest.raises(WeightsError, match="Reshape_13"):
        MAPPINGS.get("movenet_tfjs")(bad, fresh.state_dict(), fresh.config)


def test_movenet_exports_to_onnx_runtime(tmp_path, pose_model):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 255, (150, 100, 3), np.uint8) for _ in range(3)]
    path = cvapps.export(pose_model, tmp_path / "pose.onnx", dynamic_batch=True)
    ort = cvapps.load(path, backend="onnxruntime")
    a = pose_model.predict(imgs)
    b = [r.prediction for r in cvapps.predict(ort, imgs, task="pose", stream=True, whole_image=True)]
    for p, q in zip(a, b):
        np.testing.assert_allclose(q.points, p.points, atol=1e-3)  # the argmax / gather decoding in the graph
        np.testing.assert_allclose(q.scores, p.scores, atol=1e-5)


def test_movenet_loss_by_hand():
    """One keypoint on a 4x4 map, all maps zero (p = 0.5): focal terms, offset and regression
    L1 computed independently here."""
    from cvapps.tasks.keypoints.movenet import movenet_loss

    h = w = 4
    sigma = 1.0
    maps = (torch.zeros(1, 1, h, w), torch.zeros(1, 2, h, w), torch.zeros(1, 1, h, w), torch.zeros(1, 2, h, w))
    cells = torch.tensor([[[1.25, 2.5]]])  # x, y: cell (iy, ix) = (2, 1), the centre too (one point)
    out = movenet_loss(maps, cells, torch.ones(1, 1), sigma)
    ys, xs = np.mgrid[0:h, 0:w]
    y = np.exp(-((xs - 1) ** 2 + (ys - 2) ** 2) / (2 * sigma**2))
    log_half = np.log(0.5)
    pos = y == 1
    focal = -(0.25 * log_half * pos + (1 - y) ** 4 * 0.25 * log_half * ~pos).sum()
    np.testing.assert_allclose(float(out["main"]), focal, rtol=1e-5)
    np.testing.assert_allclose(float(out["centre"]), focal, rtol=1e-5)  # the centre is the point itself
    np.testing.assert_allclose(float(out["offset"]), (0.5 + 0.25) / 2, rtol=1e-6)  # |(0.5, 0.25) - 0| / 2
    np.testing.assert_allclose(float(out["regress"]), (0.5 + 0.25) / 2, rtol=1e-6)  # from the centre cell
    np.testing.assert_allclose(float(out["loss"]), 2 * focal + 0.75, rtol=1e-5)
    none = movenet_loss(maps, cells, torch.zeros(1, 1), sigma)  # nothing labelled: nothing to learn
    assert float(none["loss"]) == 0.0


def test_fine_tuning_from_movenet_keeps_its_head_and_its_norm_statistics(tmp_path, pose_model):
    m = cvapps.create_model("pose", weights=NAME)
    assert m.config["head"]["kind"] == "movenet" and m.config["preprocessing"]["input_size"] == [192, 192]
    src = pose_model.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in m.state_dict().items())  # every tensor, head included
    m.train()
    norms = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert norms and not any(n.training for n in norms)  # folded file: identity statistics stay
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    torch.manual_seed(0)
    x = torch.rand(2, 3, 192, 192) * 2 - 1
    gt = torch.rand(2, 17, 2) * 120 + 36
    losses = train_steps(m, x, [{"keypoints": g, "weights": torch.ones(17)} for g in gt], 1e-4)
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    # `train` uses the weights' own fine-tuning lr (a converted model without BN statistics)
    write_coco_keypoints(tmp_path, list(m.schema.keypoints), 2)
    cvapps.train("pose", str(tmp_path / "kp.json"), images=str(tmp_path), weights=NAME, epochs=1,
                 out=str(tmp_path / "run"), batch_size=2)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(1e-5)


def test_the_pose_pipelines_person_detector_runs_on_onnx_runtime_by_default(tmp_path, pose_model, coco_detector):
    """Box-source detectors are helpers loaded by the task's setup: with backend "auto" they
    run on ONNX Runtime (exported once), and the people and points equal PyTorch's."""
    pytest.importorskip("onnxruntime")
    from cvapps.api import helper_loader
    from cvapps.runtimes import OnnxModel

    det = cvapps.tasks.model_class("detect").from_config(coco_detector.config)
    det.load_state_dict(coco_detector.state_dict())
    with torch.no_grad():  # a detector that sees people in noise: its finest level's "person" logits raised
        det.head.cls[0][0].bias.view(-1, 81)[:, 1] += 10
    path = str(cvapps.save(det, tmp_path / "people.safetensors"))
    assert isinstance(helper_loader()(path, None), OnnxModel)
    assert not isinstance(helper_loader(backend="torch")(path, None), OnnxModel)
    img = np.random.default_rng(6).integers(0, 255, (120, 160, 3), np.uint8)
    fast, slow = (next(iter(cvapps.predict(NAME, [img], task="pose", detector=path, backend=b, stream=True)))
                  .prediction for b in ("auto", "torch"))
    assert len(fast) == len(slow) > 1
    np.testing.assert_allclose(fast.boxes, slow.boxes, atol=1e-3)
    np.testing.assert_allclose(fast.points, slow.points, atol=0.05)


def test_an_exported_movenet_is_evaluated_by_its_metrics(tmp_path, pose_model):
    """An exported graph returns what predict needs, not MoveNet's raw maps (its loss needs
    them): ONNX Runtime evaluation reports the metrics alone, equal to PyTorch's."""
    pytest.importorskip("onnxruntime")
    from cvapps.schema import resolve

    write_image(tmp_path / "p.png", np.random.default_rng(7).integers(0, 255, (128, 96, 3), np.uint8))
    pts = np.random.default_rng(8).uniform([22, 12], [68, 108], (17, 2))
    kps = np.concatenate([pts, np.full((17, 1), 2)], 1).reshape(-1).round(1).tolist()
    coco = {"images": [{"id": 1, "file_name": "p.png", "width": 96, "height": 128}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 50, 100], "keypoints": kps,
                             "num_keypoints": 17, "area": 5000, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person", "keypoints": list(resolve("coco17").keypoints),
                            "skeleton": []}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    ort = cvapps.load(cvapps.export(pose_model, tmp_path / "pose.onnx", dynamic_batch=True), backend="onnxruntime")
    a = cvapps.evaluate(pose_model, str(tmp_path / "gt.json"), images=str(tmp_path))
    b = cvapps.evaluate(ort, str(tmp_path / "gt.json"), images=str(tmp_path))
    assert "loss" in a and "loss" not in b
    assert b["AP"] == pytest.approx(a["AP"], abs=1e-3) and b["PCK"] == pytest.approx(a["PCK"], abs=1e-3)


def test_int8_calibration_of_a_top_down_model_sees_its_crops(tmp_path):
    pytest.importorskip("onnxruntime")
    from cvapps.exporting import quantize_int8
    from cvapps.runtimes import OnnxModel

    torch.manual_seed(0)
    m = cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64]).eval()
    two = (np.array([[0.0, 0, 30, 40], [10, 10, 50, 60]]), np.ones(2))

    class Counted:  # the given preprocessor, counting the crops it normalises
        def __init__(self, pre):
            self.pre, self.crops = pre, 0

        def prepare(self, *a):
            return self.pre.prepare(*a)

        def normalize(self, x):
            self.crops += len(x)
            return self.pre.normalize(x)

    pre = Counted(m.preprocessor(lambda *_: two))
    imgs = [write_image(tmp_path / f"c{i}.png", np.random.default_rng(i).integers(0, 255, (80, 70, 3), np.uint8))
            for i in range(3)]
    q = OnnxModel(quantize_int8(m, tmp_path / "q.onnx", imgs, pre=pre))
    assert pre.crops == 6  # two crops of each image, one calibration input each
    (res,) = list(cvapps.predict(q, [imgs[0]], task="pose", stream=True, whole_image=True))
    assert len(res.prediction) == 1 and np.isfinite(res.prediction.points).all()


def test_multipose_decoding_on_hand_made_maps():
    """Two people on a 16 x 16 map: each centre peak gives a box (centre + offset, +- half the
    scale) and keypoints found inside it near the point regressed from that centre; a third,
    non-peak centre cell is not a person; person score = centre score x the mean of its
    keypoint scores above the threshold."""
    from cvapps.ops.keypoints import decode_multipose

    h = w = 16
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    centre = torch.full((1, 1, h, w), -20.0)
    centre[0, 0, 4, 4], centre[0, 0, 11, 12] = logit(0.9), logit(0.6)
    centre[0, 0, 4, 5] = logit(0.8)  # beside the first peak: not a peak itself
    regress, offset = torch.zeros(1, 4, h, w), torch.zeros(1, 4, h, w)
    regress[0, :, 4, 4] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # 2 keypoints: (dy, dx) pairs, channels y0 x0 y1 x1
    regress[0, :, 11, 12] = torch.tensor([-1.0, 0.0, 0.0, -1.0])
    heat = torch.full((1, 2, h, w), -20.0)
    heat[0, 0, 5, 4], heat[0, 1, 4, 5] = logit(0.7), logit(0.05)  # person 1's points (the second below 0.127)
    heat[0, 0, 10, 12], heat[0, 1, 11, 11] = logit(0.8), logit(0.6)  # person 2's
    offset[0, 0:2, 5, 4] = torch.tensor([0.25, -0.25])
    box_scale, box_offset = torch.zeros(1, 2, h, w), torch.zeros(1, 2, h, w)
    box_scale[0, :, 4, 4] = torch.tensor([6.0, 4.0])  # (h, w)
    box_scale[0, :, 11, 12] = torch.tensor([4.0, 4.0])
    box_offset[0, :, 11, 12] = torch.tensor([0.5, 0.0])
    pts, ks, boxes, ps = decode_multipose(centre, regress, heat, offset, box_scale, box_offset, people=3)
    np.testing.assert_allclose(boxes[0, :2].numpy(), [[2, 1, 6, 7], [10, 9.5, 14, 13.5]])  # xyxy cells
    np.testing.assert_allclose(pts[0, 0].numpy(), [[3.75, 5.25], [5, 4]])  # (x, y)
    np.testing.assert_allclose(pts[0, 1].numpy(), [[12, 10], [11, 11]])
    np.testing.assert_allclose(ks[0, 0].numpy(), [0.7, 0.05], atol=1e-6)
    np.testing.assert_allclose(ps[0, :2].numpy(), [0.9 * 0.7, 0.6 * (0.8 + 0.6) / 2], atol=1e-6)
    assert ps[0, 2] == 0  # the third centre slot: no other peak (score 0)


def test_multipose_finds_people_in_whole_images_and_exports(tmp_path):
    """The single-stage model (head kind movenet_multipose) on whole images: one Keypoints with
    every person whose score passes conf, boxes and points in image pixels; no boxes or
    detector; the same people from its ONNX Runtime graph."""
    from cvapps.weights import get_spec

    spec = get_spec("movenet_multipose.coco17")
    torch.manual_seed(0)
    m = cvapps.tasks.model_class("pose").from_config(spec.config).eval()
    assert m.finds_instances and m.whole_image
    img = np.random.default_rng(5).integers(0, 255, (120, 200, 3), np.uint8)
    (p,) = m.predict(img, conf=0.0)
    assert p.points.shape == (6, 17, 2) and p.boxes.shape == (6, 4) and len(p.box_scores) == 6
    assert (p.boxes[:, 2] <= 200).all() and (p.boxes[:, 3] <= 120).all()
    (none,) = m.predict(img, conf=1.01)
    assert len(none.box_scores) == 0
    with pytest.raises(cvapps.errors.ConfigError, match="finds the people itself"):
        m.predict(img, boxes=[np.zeros((1, 4))])
    pytest.importorskip("onnxruntime")
    from cvapps.runtimes import prepare

    ort = prepare(m, "onnxruntime", precision="fp32")
    (q,) = ort.predict(img, conf=0.0)
    np.testing.assert_allclose(q.points, p.points, atol=1e-2)
