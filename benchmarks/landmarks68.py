"""68-point face landmarks with no training: `landmarks68.faceapi` (face-api's FaceLandmark68Net,
converted from the TF.js files of the npm package @vladmandic/face-api@1.7.15).

1. Parity with TF.js: the converted model against face-api's own forward run by tfjs-core in
   node (benchmarks/js/faceapi_nets.js), on face crops of face-api's demo photos and
   noise — max |delta| of the points in crop pixels. Needs node and, in --tfjs DIR,
   `npm install @tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-backend-cpu@4.22.0`.
2. NME (inter-ocular, outer eye corners) on the shared 68-point faces with their boxes
   cropped: 300-W, and the faces of COCO-WholeBody (`face_kpts`, `face_box`).

    CVAPPS_HOME=... .venv/bin/python benchmarks/landmarks68.py [--tfjs /tmp/tfjsnode]
"""

from __future__ import annotations

import argparse
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

import cvapps  # noqa: E402
from cvapps import weights as W  # noqa: E402

NAME = "landmarks68.faceapi"


def parity(tfjs: Path, tmp: Path) -> dict:
    if shutil.which("node") is None or not (tfjs / "node_modules" / "@tensorflow" / "tfjs-core").is_dir():
        return {"skipped": f"needs node and tfjs-core installed in {tfjs}"}
    manifest = W.pull_source(W.get_spec(NAME))
    model = cvapps.load(NAME).eval()
    tgz = next((W.cvapps_home() / "npm").glob("@vladmandic+face-api-*.tgz"))
    import tarfile

    crops = []
    with tarfile.open(tgz) as t:
        for n in ("sample1.jpg", "sample2.jpg", "sample3.jpg"):
            data = np.frombuffer(t.extractfile(f"package/demo/{n}").read(), np.uint8)
            im = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            h, w = im.shape[:2]
            s = min(h, w)
            crops.append(cv2.resize(im[:s, (w - s) // 2:(w - s) // 2 + s], (112, 112), interpolation=cv2.INTER_AREA))
    crops.append(np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8))
    x = np.stack(crops).astype(np.float32)
    x.tofile(tmp / "in.f32")
    script = Path(__file__).resolve().parent / "js" / "faceapi_nets.js"
    subprocess.run(["node", str(script), "landmarks68", str(manifest), str(tmp / "in.f32"), str(tmp / "out.f32")],
                   check=True, cwd=tfjs, env={"NODE_PATH": str(tfjs / "node_modules"), "PATH": "/usr/bin:/bin"},
                   capture_output=True)
    ref = np.fromfile(tmp / "out.f32", np.float32).reshape(len(crops), 68, 2)
    pre = model.config["preprocessing"]
    t = (torch.from_numpy(x).permute(0, 3, 1, 2) / 255 - torch.tensor(pre["mean"]).view(1, 3, 1, 1))
    with torch.no_grad():
        ours = model.head.main(model.backbone(t)[-1]).numpy()
    return {"crops": len(crops), "max_abs_delta_crop_px": float(np.abs(ours - ref).max() * 112)}


def wholebody_faces(tmp: Path) -> Path:
    """COCO-WholeBody's valid faces as a 68-point COCO keypoint file (face_box as the box)."""
    d = json.loads(require(data_root() / "keypoints" / "coco" / "test_coco_wholebody.json", "keypoints").read_text())
    cat = json.loads((data_root() / "keypoints" / "300w" / "test_300w.json").read_text())["categories"][0]
    anns = []
    for a in d["annotations"]:
        if not a.get("face_valid"):
            continue
        k = a["face_kpts"]
        kp = [v for i in range(68) for v in (k[3 * i], k[3 * i + 1], 2 if k[3 * i + 2] > 0 else 0)]
        anns.append({"id": a["id"], "image_id": a["image_id"], "category_id": cat["id"], "bbox": a["face_box"],
                     "keypoints": kp, "num_keypoints": sum(1 for v in kp[2::3] if v), "iscrowd": 0,
                     "area": a["face_box"][2] * a["face_box"][3]})
    path = tmp / "wholebody_faces68.json"
    path.write_text(json.dumps({"images": d["images"], "annotations": anns, "categories": [cat]}))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tfjs", default="/tmp/tfjsnode", help="a folder with tfjs-core installed by npm")
    args = ap.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report["parity_tfjs"] = parity(Path(args.tfjs), tmp)
        root = data_root() / "keypoints"
        for name, data, images in (("300w", root / "300w" / "test_300w.json", root / "300w"),
                                   ("coco_wholebody_faces", wholebody_faces(tmp), root / "coco")):
            m = cvapps.evaluate(NAME, str(data), images=str(images), task="landmarks")
            report[name] = {"faces": m["count"], "NME": round(m["NME"], 4), "FR@0.08": m["FR@0.08"]}
            print(name, report[name], flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
