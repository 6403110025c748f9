"""Hands with no training: `palm.mediapipe` (MediaPipe's palm detector, full) finds the palms,
`hand21.mediapipe` (its hand landmark model, full) puts 21 points, presence and the hand's side
on MediaPipe's rotated crop of each — both converted from the TFLite files of the mediapipe
0.10.21 wheel.

1. Parity with LiteRT running the original files on the same inputs: the palm detector's raw
   outputs (box / point offsets in input pixels, logits) on every photo below; the hand
   model's points (crop pixels, x y z), presence and handedness probabilities on its crops.
2. Against MediaPipe Hands itself (the wheel's legacy solution, static images, up to 4 hands,
   model complexity 1), run by ``--mediapipe PYTHON`` (a Python with mediapipe 0.10.21: it
   needs its own environment) on the shared photos (voc-detection + the keypoint sets' images):
   on the photos where it finds a palm, palms matched (IoU >= 0.5) and their score
   differences; hands matched, point distance / palm size (MediaPipe's wrist to middle-finger
   MCP), and the hand's side (MediaPipe's label swapped: it assumes mirrored input).
3. NME by palm size on the hands of COCO-WholeBody (keypoints/coco/test_coco_wholebody.json)
   on their ground-truth boxes (every hand, whatever its presence), and how many of them the
   palm detector finds.
4. Speed of palm detection + hand points per photo (PyTorch, this process).

    CVAPPS_HOME=... .venv/bin/python benchmarks/hands.py --mediapipe /path/to/mediapipe-env/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps import weights as W  # noqa: E402
from cvapps.api import predict  # noqa: E402
from cvapps.data.io import read_image  # noqa: E402

HAND, PALM = "hand21.mediapipe", "palm.mediapipe"

MEDIAPIPE_SCRIPT = r'''
import json, sys
import cv2
from mediapipe.python.solution_base import SolutionBase
from mediapipe.python.solutions import hands as H

sol = SolutionBase(binary_graph_path=H._BINARYPB_FILE_PATH,
                   side_inputs={"model_complexity": 1, "num_hands": 4, "use_prev_landmarks": False},
                   calculator_params={"palmdetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": 0.5,
                                      "handlandmarkcpu__ThresholdingCalculator.threshold": 0.5},
                   outputs=["multi_hand_landmarks", "multi_handedness", "palm_detections"])
out = {}
for p in open(sys.argv[2]).read().split("\n"):
    im = cv2.imread(p) if p else None
    if im is None:
        continue
    h, w = im.shape[:2]
    r = sol.process(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
    rec = {"palms": [], "hands": []}
    for d in r.palm_detections or []:
        b = d.location_data.relative_bounding_box
        rec["palms"].append({"score": d.score[0], "box": [b.xmin * w, b.ymin * h, (b.xmin + b.width) * w,
                                                          (b.ymin + b.height) * h]})
    for lm, hd in zip(r.multi_hand_landmarks or [], r.multi_handedness or []):
        c = hd.classification[0]
        rec["hands"].append({"points": [[q.x * w, q.y * h] for q in lm.landmark], "label": c.label, "score": c.score})
    if rec["palms"]:
        out[p] = rec
json.dump(out, open(sys.argv[1], "w"))
'''


def photos(root: Path) -> list[Path]:
    voc = sorted((root / "voc-detection" / "images").glob("*.jpg"))
    kp = sorted(p for p in (root / "keypoints").glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
    return voc + kp


def mediapipe_reference(python: str, paths: list[Path]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "run.py").write_text(MEDIAPIPE_SCRIPT)
        (Path(d) / "list.txt").write_text("\n".join(map(str, paths)))
        subprocess.run([python, str(Path(d) / "run.py"), str(Path(d) / "out.json"), str(Path(d) / "list.txt")],
                       check=True, capture_output=True)
        return json.loads((Path(d) / "out.json").read_text())


def interpreter(name: str):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(W.pull_source(W.get_spec(name))), num_threads=2)
    it.allocate_tensors()
    return it, it.get_input_details()[0]["index"], {o["name"]: o["index"] for o in it.get_output_details()}


@torch.no_grad()
def palm_parity(palm, images: list[np.ndarray]) -> dict:
    it, inp, outs = interpreter(PALM)
    pre, worst = palm.preprocessor(), {"regress_input_px": 0.0, "logits": 0.0}
    for im in images:
        x = pre.normalize(pre.prepare(im)[0][None]).float()
        raw = palm(x)
        it.set_tensor(inp, x.permute(0, 2, 3, 1).numpy())
        it.invoke()
        worst["regress_input_px"] = max(worst["regress_input_px"], float(np.abs(
            it.get_tensor(outs["Identity"])[0] - raw.regress[0].numpy()).max()))
        worst["logits"] = max(worst["logits"], float(np.abs(it.get_tensor(outs["Identity_1"])[0, :, 0]
                                                            - raw.logits[0].numpy()).max()))
    return {k: float(f"{v:.3g}") for k, v in worst.items()}


@torch.no_grad()
def hand_parity(hand, crops: list[np.ndarray]) -> dict:
    it, inp, outs = interpreter(HAND)
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    pts, presence, handed = hand.head["main"](hand.backbone(x)[-1])
    worst = {"points_crop_px": 0.0, "presence": 0.0, "handedness": 0.0}
    for i, c in enumerate(crops):
        it.set_tensor(inp, (c.astype(np.float32) / 255)[None])
        it.invoke()
        worst["points_crop_px"] = max(worst["points_crop_px"], float(np.abs(
            pts[i].numpy() - it.get_tensor(outs["Identity"]).reshape(21, 3)).max()))
        worst["presence"] = max(worst["presence"], abs(float(presence[i].sigmoid())
                                                       - float(it.get_tensor(outs["Identity_1"])[0, 0])))
        worst["handedness"] = max(worst["handedness"], abs(float(handed[i].sigmoid())
                                                           - float(it.get_tensor(outs["Identity_2"])[0, 0])))
    return {k: float(f"{v:.3g}") for k, v in worst.items()}


def ours(paths: list[Path], model=HAND, **options) -> dict[str, object]:
    return {str(r.source): r.prediction for r in predict(model, paths, task="pose", backend="torch", stream=True,
                                                          console=None, **options)}


def against_mediapipe(ref: dict, palm, found: dict) -> dict:
    palms = {"mediapipe": 0, "matched": 0, "ours": 0, "score_diffs": []}
    hands = {"mediapipe": 0, "matched": 0, "ours": 0, "error_by_palm_size": [], "side_agrees": 0}
    for path, rec in ref.items():
        p = palm.predict(read_image(path))[0]
        palms["mediapipe"] += len(rec["palms"])
        palms["ours"] += len(p)
        if len(p) and rec["palms"]:
            iou = box_iou(torch.tensor([q["box"] for q in rec["palms"]]), torch.from_numpy(p.boxes)).numpy()
            for i, q in enumerate(rec["palms"]):
                j = int(iou[i].argmax())
                if iou[i, j] >= 0.5:
                    palms["matched"] += 1
                    palms["score_diffs"].append(abs(q["score"] - float(p.box_scores[j])))
        h = found[path]
        hands["mediapipe"] += len(rec["hands"])
        hands["ours"] += len(h)
        for q in rec["hands"]:
            gt = np.asarray(q["points"])
            size = np.linalg.norm(gt[0] - gt[9])
            if not len(h):
                continue
            err = np.linalg.norm(h.points - gt[None], axis=-1).mean(1) / size
            j = int(err.argmin())
            if err[j] < 0.5:
                hands["matched"] += 1
                hands["error_by_palm_size"].append(float(err[j]))
                swapped = "right" if q["label"] == "Left" else "left"  # MediaPipe assumes a mirrored photo
                hands["side_agrees"] += int(h.classes[j] == swapped)
    d = palms.pop("score_diffs")
    palms.update(score_diff_max=round(max(d), 3) if d else None, score_diff_median=round(float(np.median(d)), 3)
                 if d else None)
    e = hands.pop("error_by_palm_size")
    hands.update(error_by_palm_size_median=round(float(np.median(e)), 4) if e else None,
                 error_by_palm_size_max=round(max(e), 4) if e else None)
    return {"photos_with_palms": len(ref), "palms": palms, "hands": hands}


def wholebody(root: Path, palm) -> dict:
    d = json.loads(require(root / "test_coco_wholebody.json", "keypoints").read_text())
    files = {i["id"]: root / i["file_name"] for i in d["images"]}
    boxes: dict[Path, list] = {}
    gts = []
    for a in d["annotations"]:
        for side in ("lefthand", "righthand"):
            if a.get(f"{side}_valid"):
                x, y, w, h = a[f"{side}_box"]
                boxes.setdefault(files[a["image_id"]], []).append([x, y, w, h])
                gts.append((files[a["image_id"]], np.array([x, y, x + w, y + h]),
                            np.asarray(a[f"{side}_kpts"], np.float64).reshape(21, 3)))
    with tempfile.TemporaryDirectory() as t:
        f = Path(t) / "boxes.json"
        f.write_text(json.dumps([{"file_name": p.name, "bbox": b} for p, bs in boxes.items() for b in bs]))
        every = cvapps.load(HAND).eval()
        every.config["min_presence"] = None  # score every labelled hand, whatever its presence
        preds = ours(sorted(boxes), every, boxes=str(f))
    nmes, found = [], 0
    for path, box, gt in gts:
        p = preds[str(path)]
        k = int(np.argmin([np.abs(b - box).sum() for b in p.boxes])) if len(p) else None
        pal = palm.predict(read_image(path))[0]
        found += int(len(pal) and box_iou(torch.from_numpy(pal.boxes), torch.from_numpy(box[None])).max() > 0.1)
        vis, size = gt[:, 2] > 0, np.linalg.norm(gt[0, :2] - gt[9, :2])
        if k is None or not (gt[0, 2] > 0 and gt[9, 2] > 0) or size <= 0:
            continue
        # the prediction nearest its labelled points (boxes of a file come back as the points' boxes)
        err = [np.linalg.norm(q[vis] - gt[vis, :2], axis=1).mean() / size for q in p.points]
        nmes.append(float(min(err)))
    return {"hands": len(gts), "hand_box_sides_px": sorted(round(float(max(b[2] - b[0], b[3] - b[1])), 1)
                                                           for _, b, _ in gts),
            "nme_by_palm_size_on_gt_boxes": {"scored": len(nmes), "median": round(float(np.median(nmes)), 4),
                                             "mean": round(float(np.mean(nmes)), 4)},
            "found_by_the_palm_detector": found}


def speed(paths: list[Path], repeat: int = 2) -> dict:
    ours(paths[:2])  # warm up
    t = time.perf_counter()
    for _ in range(repeat):
        found = ours(paths)
    dt = (time.perf_counter() - t) / repeat
    hands = sum(len(p) for p in found.values())
    return {"photos": len(paths), "hands": hands, "photos_per_s": round(len(paths) / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mediapipe", help="a Python with mediapipe 0.10.21 (MediaPipe Hands as the reference)")
    args = ap.parse_args()
    root = data_root()
    palm, hand = cvapps.load(PALM).eval(), cvapps.load(HAND).eval()
    paths = photos(root)
    report: dict = {}
    ref = mediapipe_reference(args.mediapipe, paths) if args.mediapipe else None
    with_palms = [Path(p) for p in ref] if ref else paths[:40]
    report["palm_parity_litert"] = palm_parity(palm, [read_image(p) for p in with_palms])
    found = ours(with_palms)
    crops = []
    pre = hand.spec.predict_setup(hand, lambda n, t: palm, [])[0]
    for p in with_palms:
        x, _ = pre.prepare(read_image(p))
        crops += [c.permute(1, 2, 0).numpy() for c in x]
    report["hand_parity_litert"] = {"crops": len(crops), **hand_parity(hand, crops)}
    if ref is not None:
        report["against_mediapipe_hands"] = against_mediapipe(ref, palm, found)
    report["coco_wholebody_hands"] = wholebody(root / "keypoints" / "coco", palm)
    report["speed"] = speed(with_palms)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
