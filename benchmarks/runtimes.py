"""Runtimes and precisions on real photos, in one process: speed of `predict` (batch 16 on the
photos, and fps on a 640x480 video made of them) and accuracy, per variant — ONNX Runtime fp32
(the fp32 default), OpenVINO fp32 / bf16 / int8, ONNX Runtime int8, and ``default`` (what
`cvapps predict` runs with no options: `--precision auto`, decided by cvapps.runtimes.guard).

- classifier (the default, efficientnet_lite2.imagenet1k; --classifier another) on the 153
  hymenoptera val photos: top-1 is the right insect (ImageNet's "ant" / "bee"), and top-1
  agreement with fp32 over all 1000 classes;
- detector (ssd_mobilenet_v2.coco) on the 100 voc-detection photos: COCO AP50 / AP with the VOC
  names mapped (as `cvapps eval`).

    CVAPPS_HOME=... .venv/bin/python benchmarks/runtimes.py [--only classify|detect]   # one JSON object

Run it on an otherwise idle machine; the ratios are against ONNX Runtime fp32 in the same run."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402
from rich.console import Console  # noqa: E402

import cvapps  # noqa: E402
from cvapps.benchmarking import benchmark  # noqa: E402
from cvapps.runtime import cpu_features  # noqa: E402
from cvapps.runtimes import prepare  # noqa: E402
from cvapps.tasks import TASKS  # noqa: E402
from cvapps.tasks.batch import predict_inputs  # noqa: E402

VARIANTS = ("onnxruntime_fp32", "default", "openvino_fp32", "openvino_bf16", "openvino_int8", "onnxruntime_int8")
INSECT = {"ants": "ant", "bees": "bee"}


def classifier(root: Path, quiet: Console, name: str) -> dict:
    photos = sorted((root / "val").glob("*/*.jpg"))
    truth = [INSECT[p.parent.name] for p in photos]
    timed = benchmark(name, [str(p) for p in photos[:64]], None, VARIANTS, max_images=64,
                      video_frames=100, console=quiet)
    model = cvapps.load(name).eval().fold_batchnorm()
    calib = [str(p) for p in sorted((root / "train").glob("*/*.jpg"))[:100]]
    answers = {}
    for name in VARIANTS:
        if name in timed["skipped"]:
            continue
        backend, _, precision = name.partition("_")
        runner = prepare(model, "auto", precision="auto", console=quiet) if name == "default" else \
            prepare(model, backend, precision=precision, calib=calib, console=quiet)
        answers[name] = [p.label for p in predict_inputs(runner, [str(p) for p in photos], 16)]
    ref = answers["onnxruntime_fp32"]
    for name, got in answers.items():
        row = timed["variants"][name]
        row["right_insect_top1"] = round(sum(g == t for g, t in zip(got, truth)) / len(truth), 4)
        row["top1_agrees_with_fp32"] = round(sum(g == r for g, r in zip(got, ref)) / len(ref), 4)
    return _ratios(timed)


def detector(root: Path, quiet: Console) -> dict:
    timed = benchmark("ssd_mobilenet_v2.coco", [str(root / "images")], str(root / "annotations" / "instances_coco.json"),
                      VARIANTS, max_images=100, video_frames=100, console=quiet, images=str(root / "images"))
    return _ratios(timed)


def _ratios(timed: dict) -> dict:
    base = timed["variants"]["onnxruntime_fp32"]
    for row in timed["variants"].values():
        row["b16_vs_onnxruntime_fp32"] = round(row["images_per_s_b16"] / base["images_per_s_b16"], 2)
        row["video_vs_onnxruntime_fp32"] = round(row["video_fps"] / base["video_fps"], 2)
    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", choices=("classify", "detect"), default=None)
    ap.add_argument("--classifier", default=TASKS.get("classify").default_weights)
    args = ap.parse_args()
    quiet = Console(file=io.StringIO())
    out = {"cpu": cpu_features()}
    if args.only in (None, "classify"):
        out["classify"] = classifier(require(data_root() / "hymenoptera", "hymenoptera"), quiet, args.classifier)
    if args.only in (None, "detect"):
        out["detect"] = detector(require(data_root() / "voc-detection", "voc-detection"), quiet)
    out["said"] = quiet.file.getvalue().splitlines()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
