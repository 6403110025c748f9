"""The models converted for issue #33 in the runtime room: each one exported once to ONNX and run
by ONNX Runtime (fp32) and, where installed, OpenVINO (fp32) — the raw outputs against PyTorch's
on real inputs (face crops of face-api's demo photos; the COCO keypoint photos; hymenoptera
photos; voc-detection photos with hands): max |delta| of every output tensor, and whether the decided top-1 answers agree.

    CVAPPS_HOME=... .venv/bin/python benchmarks/new_models_runtimes.py [NAME ...]
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root  # noqa: E402
from rich.console import Console  # noqa: E402

import cvapps  # noqa: E402
from cvapps import weights as W  # noqa: E402
from cvapps.data.io import read_image  # noqa: E402
from cvapps.runtimes import prepare  # noqa: E402
from cvapps.tasks.batch import predict_inputs  # noqa: E402

FACES = ("landmarks68.faceapi", "expression.faceapi", "age.faceapi", "gender.faceapi", "face_descriptor.faceapi")
OTHERS = {"movenet_thunder.coco17": "pose", "movenet_multipose.coco17": "pose",
          "efficientnet_lite2.imagenet1k": "classify", "efficientnet_lite3.imagenet1k": "classify"}
HANDS = ("palm.mediapipe", "hand21.mediapipe")  # on the voc-detection photos where the palm detector finds palms


def face_crops() -> list[np.ndarray]:
    tgz = next((W.cvapps_home() / "npm").glob("@vladmandic+face-api-*.tgz"))
    with tarfile.open(tgz) as t:
        photos = [np.frombuffer(t.extractfile(f"package/demo/sample{i}.jpg").read(), np.uint8) for i in range(1, 7)]
    import cv2

    return [cv2.cvtColor(cv2.imdecode(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in photos]


def _tensors(raw) -> dict[str, np.ndarray]:
    fields = vars(raw) if hasattr(raw, "__dict__") else {"out": raw}
    return {k: v.detach().float().cpu().numpy() for k, v in fields.items() if isinstance(v, torch.Tensor)}


def compare(name: str, task: str, inputs: list, **options) -> dict:
    quiet = Console(file=io.StringIO())
    model = cvapps.load(name).eval()
    loader = lambda n, t: cvapps.load(n, task=t)  # noqa: E731
    pre, post = model.spec.predict_setup(model, loader, inputs, **options)
    x_u8 = [pre.prepare(im, "", i)[0] for i, im in enumerate(inputs)]
    x = torch.cat([u if u.dim() == 4 else u[None] for u in x_u8])
    x = pre.normalize(x)
    with torch.no_grad():
        ref = _tensors(model(x))
    out = {"inputs": len(x)}
    for backend in ("onnxruntime", "openvino"):
        try:
            runner = prepare(model, backend, precision="fp32", console=quiet)
        except Exception as e:  # noqa: BLE001 - a runtime that is not installed is reported, not fatal
            out[backend] = {"skipped": str(e).splitlines()[0]}
            continue
        got = _tensors(runner(x))
        row = {k: float(np.abs(got[k] - ref[k]).max()) for k in ref if k in got}
        if task == "classify":
            mine = predict_inputs(runner, inputs, 16, pre=pre, **post)
            theirs = predict_inputs(model, inputs, 16, pre=pre, **post)
            pairs = [a.agreement(b) for a, b in zip(mine, theirs)]
            row["agree"] = f"{sum(p[0] for p in pairs)}/{sum(p[1] for p in pairs)}"
        out[backend] = row
    return out


def main() -> None:
    only = set(sys.argv[1:])  # model names to run (default: all)
    report = {}
    photos = face_crops()
    for name in (n for n in FACES if not only or n in only):
        task = "landmarks" if name.startswith("landmarks") else "classify"
        opts = {"on": "faces"} if task == "classify" else {}
        report[name] = compare(name, task, photos, **opts)
        print(name, report[name], flush=True)
    coco = sorted((data_root() / "keypoints" / "coco").glob("*.jpg"))
    hym = sorted((data_root() / "hymenoptera" / "val").glob("*/*.jpg"))[::10]
    for name, task in ((n, t) for n, t in OTHERS.items() if not only or n in only):
        inputs = [read_image(p) for p in (coco if task == "pose" else hym)]
        report[name] = compare(name, task, inputs)
        print(name, report[name], flush=True)
    if any(not only or n in only for n in HANDS):
        palm = cvapps.load("palm.mediapipe").eval()
        voc = [read_image(p) for p in sorted((data_root() / "voc-detection" / "images").glob("*.jpg"))[:400]]
        hands = [im for im in voc if len(palm.predict(im)[0])]
        for name in (n for n in HANDS if not only or n in only):
            report[name] = compare(name, "pose", hands)
            print(name, report[name], flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
