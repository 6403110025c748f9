"""Speed options on this CPU, per task's default model (MobileNetV2 backbone): images (or
crops) per second at batch 1 and 16, model forward only, for eager fp32 and each option —
channels_last, bf16 autocast, bf16 + channels_last, torch.compile (with its compile time),
dynamic int8 quantisation (Linear layers), ONNX Runtime — with the ratio to eager fp32 and
the fraction of the measured fp32 matmul peak. Accuracy on real fixtures for every option:
ImageNet top-1 of the classifier on the 153 hymenoptera val photos, and AP50 of the VOC
SSD detector (runs/bench-voc-ssd, from detect_finetune_voc.py) on its held-out images.
Also: two heads on one backbone (bundle) vs two separate models. Prints one JSON object."""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import data_root, matmul_peak_gflops, per_second
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cvapps
from cvapps.data.transforms import size_hw
from cvapps.exporting import export
from cvapps.runtimes import OnnxModel
from cvapps.runtime import autocast
from cvapps.tasks.batch import run_batch

ANT, BEE = 310, 309
CL = torch.channels_last


def _hw(model) -> tuple[int, int]:
    return size_hw(model.config["preprocessing"]["input_size"])


def forwards(model, tmp: Path, options: list[str]) -> dict:
    """option -> (forward(x), setup seconds). Every forward takes an NCHW float tensor."""
    out = {}
    cl = copy.deepcopy(model).to(memory_format=CL)
    for opt in options:
        t = time.perf_counter()
        if opt == "eager_fp32":
            fn = model
        elif opt == "channels_last":
            fn = lambda x, m=cl: m(x.contiguous(memory_format=CL))  # noqa: E731
        elif opt in ("bf16", "bf16_channels_last"):
            m = cl if opt.endswith("channels_last") else model

            def fn(x, m=m, last=opt.endswith("channels_last")):
                with autocast(x.device, "bf16"):
                    return m(x.contiguous(memory_format=CL) if last else x)
        elif opt == "compile":
            compiled = torch.compile(cl)
            fn = lambda x, m=compiled: m(x.contiguous(memory_format=CL))  # noqa: E731
            with torch.inference_mode():
                fn(torch.randn(1, 3, *_hw(model)))  # compile time is part of the setup
                fn(torch.randn(16, 3, *_hw(model)))
        elif opt == "int8_dynamic":
            fn = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
        elif opt == "onnxruntime":
            fn = OnnxModel(export(model, tmp / f"{model.task}.onnx", dynamic_batch=True))
        else:
            raise ValueError(opt)
        out[opt] = (fn, time.perf_counter() - t)
    return out


def gflops(model) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, *_hw(model)))
    return fc.get_total_flops() / 1e9


def classify_top1(fns: dict, root: Path) -> dict:
    """ImageNet top-1 (ant/bee) of each option on the hymenoptera val photos."""
    from cvapps.data.io import list_images, read_image

    files = [(f, ANT if "ants" in f.parts else BEE) for f in list_images(root)]
    model = cvapps.load("mobilenet_v2.imagenet1k")
    pre = model.preprocessor()
    x = pre.normalize(torch.stack([pre.prepare(read_image(f))[0] for f, _ in files]))
    y = torch.tensor([c for _, c in files])
    res = {}
    with torch.inference_mode():
        for opt, (fn, _) in fns.items():
            logits = torch.cat([fn(x[i : i + 16]).logits.float() for i in range(0, len(x), 16)])
            res[opt] = round(float((logits.argmax(1) == y).float().mean()), 4)
    return res


def detect_ap50(fns: dict, model, voc: Path) -> dict:
    from cvapps.data.detection import DetectionDataset, read_coco
    from cvapps.data.transforms import Letterbox
    from cvapps.tasks.spec import split_every_kth as split
    from cvapps.training.trainer import evaluate_dataset

    data = read_coco(voc / "annotations" / "instances_coco.json", voc / "images")
    _, val = split(data, 0.2)
    ds = DetectionDataset(val, Letterbox.from_config(model.config["preprocessing"]))
    res = {}
    for opt, (fn, _) in fns.items():
        m = evaluate_dataset(model, ds, 8, "fp32", forward=fn, evaluator=model.make_evaluator(ds))
        res[opt] = round(m["AP50"], 4)
    return res


def bundle_speed(reps: int) -> dict:
    """Detection + segmentation heads on one frozen backbone: one pass vs two models."""
    det = cvapps.create_model("detect", "mobilenet_v2", weights="mobilenet_v2.imagenet1k", labels=["a", "b"])
    seg = cvapps.create_model("segment", "mobilenet_v2", weights="mobilenet_v2.imagenet1k", labels=["a", "b"],
                              img_size=320)
    b = cvapps.load_bundle([det, seg])
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    pre = b.preprocessor()
    prepared = [pre.prepare(img) for _ in range(8)]
    u8, metas = [p[0] for p in prepared], [p[1] for p in prepared]

    def timed(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return 8 / best

    # same preprocessing, so both separate models take the group's input
    sep_u8, sep_meta = [u[0] for u in u8], [m[0] for m in metas]
    one = timed(lambda: run_batch(b, u8, metas))
    two = timed(lambda: (run_batch(det, sep_u8, sep_meta), run_batch(seg, sep_u8, sep_meta)))
    return {"describe": b.describe(), "bundle_frames_per_s": round(one, 1), "separate_frames_per_s": round(two, 1),
            "speedup": round(one / two, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tasks", default="classify,detect,segment,landmarks,pose")
    ap.add_argument("--compile-tasks", default="classify,detect", help="torch.compile is slow to set up")
    args = ap.parse_args()
    torch.manual_seed(0)
    peak, peak_bf16 = matmul_peak_gflops(), matmul_peak_gflops(torch.bfloat16)
    result: dict = {"matmul_peak_gflops": {"fp32": round(peak, 1), "bf16": round(peak_bf16, 1)}, "tasks": {}}
    voc_model = Path("runs/bench-voc-ssd/best.safetensors")
    models = {"classify": lambda: cvapps.load("mobilenet_v2.imagenet1k"),
              "detect": lambda: cvapps.load(voc_model) if voc_model.is_file() else
              cvapps.create_model("detect", "mobilenet_v2", weights="mobilenet_v2.imagenet1k", labels=["a"] * 20),
              "segment": lambda: cvapps.create_model("segment", "mobilenet_v2", weights="mobilenet_v2.imagenet1k",
                                                     labels=[str(i) for i in range(11)]),
              "landmarks": lambda: cvapps.create_model("landmarks", "mobilenet_v2", weights="mobilenet_v2.imagenet1k"),
              "pose": lambda: cvapps.create_model("pose", "mobilenet_v2", weights="mobilenet_v2.imagenet1k")}
    with tempfile.TemporaryDirectory() as tmp:
        for task in [t for t in args.tasks.split(",") if t]:
            model = models[task]().eval()
            opts = ["eager_fp32", "channels_last", "bf16", "bf16_channels_last", "int8_dynamic", "onnxruntime"]
            if task in args.compile_tasks.split(","):
                opts.insert(4, "compile")
            fns = forwards(model, Path(tmp), opts)
            gf = gflops(model)
            row: dict = {"input": list(_hw(model)), "gflop": round(gf, 3), "options": {}}
            for opt, (fn, setup) in fns.items():
                r = {"setup_s": round(setup, 2)}
                for b in (1, 16):
                    r[f"b{b}_per_s"] = round(per_second(fn, torch.randn(b, 3, *_hw(model)), args.reps), 1)
                r["peak_fraction_b16"] = round(r["b16_per_s"] * gf / (peak_bf16 if "bf16" in opt else peak), 3)
                row["options"][opt] = r
            base = row["options"]["eager_fp32"]
            for r in row["options"].values():
                r["ratio_b1"] = round(r["b1_per_s"] / base["b1_per_s"], 2)
                r["ratio_b16"] = round(r["b16_per_s"] / base["b16_per_s"], 2)
            if task == "classify" and (data_root() / "hymenoptera" / "val").is_dir():
                row["top1_by_option"] = classify_top1(fns, data_root() / "hymenoptera" / "val")
            if task == "detect" and voc_model.is_file() and (data_root() / "voc-detection").is_dir():
                row["ap50_by_option"] = detect_ap50(fns, model, data_root() / "voc-detection")
            result["tasks"][task] = row
            print(json.dumps({task: row}), flush=True)
    result["bundle_detect_segment"] = bundle_speed(args.reps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
