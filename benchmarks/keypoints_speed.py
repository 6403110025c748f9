"""Keypoint throughput on this CPU: faces/s (landmarks, 256x256 crops) and persons/s (pose,
256x192 crops) for the heatmap and regression heads (MobileNetV2, batch 1 and 16, fp32 and
bf16, model forward only), each as a fraction of the measured fp32 matmul peak; and the
end-to-end fps of the full landmark pipeline (decode thread, Haar face boxes, crops,
landmarks, JSON Lines) on a generated 640x480 video of a real 300-W face moving across
the frame. Prints one JSON object."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import cv2
import torch
from _common import data_root, make_face_video, matmul_peak_gflops, per_second, require
from torch.utils.flop_counter import FlopCounterMode

import cvapps


def gflops(model, hw) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, *hw))
    return fc.get_total_flops() / 1e9


def main() -> None:
    torch.manual_seed(0)
    peak = matmul_peak_gflops()
    out: dict = {"matmul_peak_gflops": round(peak, 1), "models": {}}
    for task, unit in (("landmarks", "faces_per_s"), ("pose", "persons_per_s")):
        for head in ("heatmap", "regression"):
            m = cvapps.create_model(task, "mobilenet_v2", weights="mobilenet_v2.imagenet1k", kind=head).eval()
            m = m.to(memory_format=torch.channels_last)
            hw = m.input_hw
            gf = gflops(m, hw)
            row = {"input": list(hw), "gflop_per_crop": round(gf, 3)}
            for b in (1, 16):
                x = torch.randn(b, 3, *hw).contiguous(memory_format=torch.channels_last)
                for prec in ("fp32", "bf16"):
                    row[f"{unit}_b{b}_{prec}"] = round(per_second(m, x, precision=prec), 1)
            row["peak_fraction_b16_fp32"] = round(row[f"{unit}_b16_fp32"] * gf / peak, 3)
            out["models"][f"{task}_{head}"] = row
    face_file = require(data_root() / "keypoints" / "300w" / "indoor_029.png", "300-W sample face")
    face = cv2.cvtColor(cv2.imread(str(face_file)), cv2.COLOR_BGR2RGB)
    model = cvapps.create_model("landmarks", "mobilenet_v2", weights="mobilenet_v2.imagenet1k")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "face.mp4"
        make_face_video(video, face)
        for prec in ("fp32", "bf16"):
            t = time.perf_counter()
            s = cvapps.predict_keypoints(model, [str(video)], save_json=str(Path(tmp) / "p.jsonl"), precision=prec,
                                         batch_size=8, progress=False)
            dt = time.perf_counter() - t
            found = sum(1 for ln in (Path(tmp) / "p.jsonl").read_text().splitlines() if json.loads(ln)["predictions"])
            out[f"pipeline_640x480_{prec}"] = {"frames": s.processed, "fps": round(s.processed / dt, 1),
                                               "frames_with_a_face": found}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
