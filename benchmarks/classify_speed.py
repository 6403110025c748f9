"""End-to-end classification throughput: the cvapps predict path vs a plain torchvision
loop (PIL decode + the weights' official transforms + model) on the same real photos and
the same MobileNetV2 ImageNet weights, batch 1 and 16. Also the ImageNet top-1 of both
pipelines on the photos (hymenoptera val: every photo is an ImageNet "ant" or "bee"), the
achieved GFLOP/s and its fraction of an fp32 matmul peak measured in the same run.
Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

import cvapps
from cvapps.runtimes import prepare
from cvapps.weights import pull

from _common import data_root, flops_per_image, matmul_peak_gflops, require

ANT, BEE = 310, 309


def torchvision_loop(files: list[Path], batch: int, model, tf) -> tuple[float, list[int]]:
    t0, preds = time.perf_counter(), []
    with torch.inference_mode():
        for i in range(0, len(files), batch):
            x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files[i : i + batch]])
            preds += model(x).argmax(1).tolist()
    return len(files) / (time.perf_counter() - t0), preds


def cvapps_path(files: list[Path], batch: int, model, precision: str) -> tuple[float, list[int]]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "p.jsonl"
        t0 = time.perf_counter()
        cvapps.predict(model, [str(f) for f in files], batch_size=batch, precision=precision, save_json=out,
                       top_k=1, progress=False)
        ips = len(files) / (time.perf_counter() - t0)
        by_src = {json.loads(line)["source"]: json.loads(line)["predictions"][0]["index"]
                  for line in out.read_text().splitlines()}
    return ips, [by_src[str(f)] for f in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None, help="folder with ants/ and bees/ (default: hymenoptera val)")
    ap.add_argument("--repeats", type=int, default=2, help="best of N timed passes per setting")
    args = ap.parse_args()
    root = require(Path(args.data) if args.data else data_root() / "hymenoptera" / "val", "hymenoptera val")
    files = sorted((root / "ants").glob("*.jpg")) + sorted((root / "bees").glob("*.jpg"))
    truth = [ANT] * len(list((root / "ants").glob("*.jpg"))) + [BEE] * len(list((root / "bees").glob("*.jpg")))
    torch.set_num_threads(torch.get_num_threads())

    w = MobileNet_V2_Weights.IMAGENET1K_V1
    ref = mobilenet_v2()
    ref.load_state_dict(torch.load(pull("mobilenet_v2.imagenet1k"), weights_only=True))
    ref.eval()
    tf = w.transforms()
    ours = cvapps.load("mobilenet_v2.imagenet1k")
    # the default `cvapps predict classify` path: ONNX Runtime when installed (exported once, cached)
    auto = prepare(cvapps.load("mobilenet_v2.imagenet1k").eval().fold_batchnorm())
    backend = type(auto).__name__

    def best(fn, *a):
        runs = [fn(*a) for _ in range(args.repeats)]
        return max(r[0] for r in runs), runs[0][1]

    tv, cv = {}, {}
    preds = {}
    for b in (1, 16):
        tv[f"b{b}"], preds[f"torchvision_b{b}"] = best(torchvision_loop, files, b, ref, tf)
        for prec in ("fp32", "bf16"):
            cv[f"{prec}_b{b}"], preds[f"cvapps_{prec}_b{b}"] = best(cvapps_path, files, b, ours, prec)
        cv[f"default_b{b}"], preds[f"cvapps_default_b{b}"] = best(cvapps_path, files, b, auto, "fp32")

    acc = {k: round(sum(p == t for p, t in zip(v, truth)) / len(truth), 4) for k, v in preds.items()}
    agree = {k: round(sum(a == b for a, b in zip(v, preds["torchvision_b16"])) / len(truth), 4)
             for k, v in preds.items() if k.startswith("cvapps")}
    flops = flops_per_image(ref, 224)
    peak = matmul_peak_gflops()
    best_cv = max(cv.values())
    gflops = flops * best_cv / 1e9
    print(json.dumps({
        "images": len(files), "threads": torch.get_num_threads(),
        "torchvision_images_per_s": {k: round(v, 2) for k, v in tv.items()},
        "cvapps_images_per_s": {k: round(v, 2) for k, v in cv.items()},
        "speedup_vs_torchvision": round(best_cv / max(tv.values()), 3),
        "default_path": backend,
        "default_speedup_vs_torchvision": round(max(cv["default_b1"], cv["default_b16"]) / max(tv.values()), 3),
        "speedup_same_batch": {f"b{b}": round(max(cv[f"fp32_b{b}"], cv[f"bf16_b{b}"], cv[f"default_b{b}"]) / tv[f"b{b}"], 3)
                               for b in (1, 16)},
        "gflops_per_image": round(flops / 1e9, 3), "gflops": round(gflops, 2),
        "matmul_peak_gflops_fp32": round(peak, 1), "peak_fraction": round(gflops / peak, 4),
        "imagenet_top1_on_photos": acc, "top1_agreement_with_torchvision": agree,
    }))


if __name__ == "__main__":
    main()
