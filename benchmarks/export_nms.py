"""`cvapps export --nms` on real images: the converted COCO detector exported with box decoding
and NMS in the graph, run by plain ONNX Runtime (no cvapps at run time), against cvapps's own
predictions (`model.predict`, PyTorch, Python postprocess) on the 100 voc-detection images.
Prints one JSON object: images whose final detections are the same (count and labels), the
largest box (original pixels) and score differences, and ms per image of each path.

    python benchmarks/export_nms.py [--model ssd_mobilenet_v2.coco]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps.data.io import read_image  # noqa: E402
from cvapps.data.transforms import meta_scale  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="ssd_mobilenet_v2.coco")
    args = ap.parse_args()
    import onnxruntime as ort

    files = sorted(require(data_root() / "voc-detection" / "images", "voc-detection").glob("*.jpg"))
    model = cvapps.load(args.model)
    pre = model.preprocessor()
    with tempfile.TemporaryDirectory() as d:
        path = cvapps.export(model, Path(d) / "nms.onnx", nms=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        same, box_diff, score_diff, t_graph, t_ours, n_det = 0, 0.0, 0.0, 0.0, 0.0, 0
        for f in files:
            img = read_image(f)
            t = time.perf_counter()
            u8, meta = pre.prepare(img)
            x = pre.normalize(u8[None]).numpy()
            boxes, scores, labels = sess.run(None, {"image": x})
            sx, sy = meta_scale(meta)
            boxes = np.clip(boxes / np.array([sx, sy, sx, sy], np.float32), 0,
                            [meta["width"], meta["height"], meta["width"], meta["height"]])
            t_graph += time.perf_counter() - t
            t = time.perf_counter()
            ours = model.predict(img)[0]
            t_ours += time.perf_counter() - t
            # cvapps drops boxes that clipping leaves under MIN_SIDE; do the same to the graph's
            keep = ((boxes[:, 2] - boxes[:, 0]) >= 1e-2) & ((boxes[:, 3] - boxes[:, 1]) >= 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            n_det += len(ours)
            if len(boxes) == len(ours) and np.array_equal(labels, ours.labels):
                same += 1
                if len(boxes):
                    box_diff = max(box_diff, float(np.abs(boxes - ours.boxes).max()))
                    score_diff = max(score_diff, float(np.abs(scores - ours.scores).max()))
    print(json.dumps({"model": args.model, "images": len(files), "detections": n_det, "same_detections": same,
                      "max_box_diff_px": round(box_diff, 4), "max_score_diff": float(f"{score_diff:.2e}"),
                      "ms_per_image": {"onnxruntime_nms_graph": round(1000 * t_graph / len(files), 2),
                                       "cvapps_predict_torch": round(1000 * t_ours / len(files), 2)}}))


if __name__ == "__main__":
    main()
