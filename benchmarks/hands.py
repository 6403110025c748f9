"""21-point hand landmarks with no training: `hand21.mediapipe` (MediaPipe's hand landmark model,
full, from the mediapipe 0.10.21 wheel, converted from TFLite).

1. Parity with LiteRT running the original file on the same crops: max |delta| of the points
   (crop pixels, x y z), the presence and the handedness probabilities.
2. NME on the hands of COCO-WholeBody (keypoints/coco/test_coco_wholebody.json: 21-point hands in
   MediaPipe's order, with boxes): each valid hand's box cropped upright (margin 2.0, MediaPipe's
   own scale for a box around a hand's points), normalised by palm size (wrist to middle-finger
   MCP), over the labelled points; and the presence the model gives each crop.

    CVAPPS_HOME=... .venv/bin/python benchmarks/hands.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps import weights as W  # noqa: E402
from cvapps.data.io import read_image  # noqa: E402

NAME = "hand21.mediapipe"


def hands(root: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, box xyxy, points (21, 3) x y v) of every valid WholeBody hand."""
    d = json.loads(require(root / "test_coco_wholebody.json", "keypoints").read_text())
    files = {i["id"]: i["file_name"] for i in d["images"]}
    out = []
    for a in d["annotations"]:
        for side in ("lefthand", "righthand"):
            if a.get(f"{side}_valid"):
                x, y, w, h = a[f"{side}_box"]
                out.append((read_image(root / files[a["image_id"]]), np.array([x, y, x + w, y + h], np.float64),
                            np.asarray(a[f"{side}_kpts"], np.float64).reshape(21, 3)))
    return out


def main() -> None:
    from ai_edge_litert.interpreter import Interpreter

    root = data_root() / "keypoints" / "coco"
    model = cvapps.load(NAME).eval()
    data = hands(root)
    pre = model.preprocessor()
    crops = [pre.crop(im, box)[0] for im, box, _ in data]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        pts, presence, handed = model.head["main"](model.backbone(x)[-1])
    it = Interpreter(model_path=str(W.pull_source(W.get_spec(NAME))), num_threads=2)
    it.allocate_tensors()
    inp, outs = it.get_input_details()[0], {o["name"]: o["index"] for o in it.get_output_details()}
    worst = {"points_crop_px": 0.0, "presence": 0.0, "handedness": 0.0}
    for i, c in enumerate(crops):
        it.set_tensor(inp["index"], (c.astype(np.float32) / 255)[None])
        it.invoke()
        worst["points_crop_px"] = max(worst["points_crop_px"], float(np.abs(
            pts[i].numpy() - it.get_tensor(outs["Identity"]).reshape(21, 3)).max()))
        worst["presence"] = max(worst["presence"], abs(float(presence[i].sigmoid()) -
                                                       float(it.get_tensor(outs["Identity_1"])[0, 0])))
        worst["handedness"] = max(worst["handedness"], abs(float(handed[i].sigmoid()) -
                                                           float(it.get_tensor(outs["Identity_2"])[0, 0])))
    preds = model.predict([im for im, _, _ in data], boxes=[box[None] for _, box, _ in data])
    nmes = []
    for p, (_, _, gt) in zip(preds, data):
        vis = gt[:, 2] > 0
        palm = np.linalg.norm(gt[0, :2] - gt[9, :2])
        if vis.sum() == 0 or palm <= 0 or not (gt[0, 2] > 0 and gt[9, 2] > 0):
            continue
        nmes.append(float(np.linalg.norm(p.points[0][vis] - gt[vis, :2], axis=1).mean() / palm))
    report = {"hands": len(data), "parity_litert": worst, "nme_by_palm_size": {
        "hands_scored": len(nmes), "mean": round(float(np.mean(nmes)), 4), "median": round(float(np.median(nmes)), 4),
        "per_hand": [round(v, 3) for v in nmes]},
        "presence_per_hand": [round(float(v), 3) for v in presence.sigmoid()],
        "hand_box_sizes_px": [round(float(max(b[2] - b[0], b[3] - b[1])), 1) for _, b, _ in data]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
