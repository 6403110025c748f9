"""Pretrained faces and people with no training, on the annotated data we have.

Prints one JSON object:
- ``faces``: for OpenCV's Haar cascade and the converted RetinaFace, on every image of the
  face sets (300-W, WFLW, COFW, AFLW) and the COCO keypoint images: labelled faces found
  (recall) and detections that match no labelled face. A labelled face is found by a
  detection box that contains its two eye centres and its nose tip (box conventions differ
  between detectors and datasets, so no IoU); each detection finds at most one face. COCO
  faces: people whose eyes and nose are labelled visible. Caveat: the WIDER-FACE images of
  WFLW label only some faces of a crowd, so their unmatched detections include real faces
  (``unmatched_by_image`` shows where). RetinaFace runs as `predict` does by default: one
  pass for video and cameras, test-time scales 1,2 for still images, then the face check
  (FaceMesh's face presence >= 0.5 on each face's crop); "_unchecked" rows without it.
- ``nme5``: the default landmark model's 5 points against 5 points derived from the dense
  annotations (``FIVE``: eye centres = mean of each eye's contour points, nose tip, mouth
  corners), normalised by the distance between the two derived eye centres, per set; with
  one pass (the video default) and scales 1,2 (the photo default), both face-checked, and
  scales 1,2 unchecked.
- ``pose``: the default pose model (MoveNet Lightning, converted from TFLite): parity with
  LiteRT running the wheel's own .tflite on the same 192x192 person crops (when
  ``ai-edge-litert`` is installed: ``pip install -e .[bench]``), and COCO OKS AP / PCK@0.2 on
  ``keypoints/coco`` with ground-truth boxes and with the default COCO detector's person boxes.
- ``fps``: end to end (decode, model(s), JSON Lines; nothing drawn), default (contention-safe)
  threads and backend: `predict landmarks` on a 640x480 video of a real 300-W face sliding
  across the frame; `predict pose` (COCO detector + MoveNet per person, and --whole-image) on a
  640x480 video of a real single-person COCO photo seen by a panning camera.
- ``faces.*.face_sets`` / ``every_face_labelled``: recall on the four face sets alone, and
  unmatched detections per image on the sets whose images have every face labelled (300-W,
  COFW, AFLW: one face each) — there an unmatched detection is a false positive.
  ``false_positives``: on those images, the COCO ones and the 100 voc-detection photos
  (COCO and VOC box every person), detections that are surely no face — unmatched, and in
  COCO / VOC centred in no person's box (see ``false_positives``); the WFLW crowd images,
  with unlabelled faces, are left out.
- ``facemesh``: the dense model (facemesh.mediapipe) on the face detector's boxes: 5-point NME
  of points derived from the mesh (``MESH5``), parity with LiteRT on the same crops.
- ``person_segmentation``: person.mediapipe's person IoU against the COCO keypoint images'
  person polygons (union per image, pooled), and parity with LiteRT.

Needs ../shared/data (or $CVAPPS_DATA) and the converted models (fetched from PyPI once)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, make_face_video, make_pan_video, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps.data.io import read_image  # noqa: E402
from cvapps.tasks.keypoints.topdown import HaarFaces  # noqa: E402
from cvapps.tasks.landmarks.verify import VERIFIER, CheckedFaces, FaceCheck  # noqa: E402

# dense annotation -> (left eye centre, right eye centre, nose tip, mouth left, mouth right);
# "left" = image left, the order RetinaFace predicts. Lists are averaged.
FIVE = {
    "300w": ([36, 37, 38, 39, 40, 41], [42, 43, 44, 45, 46, 47], [30], [48], [54]),
    "wflw": (list(range(60, 68)), list(range(68, 76)), [54], [76], [82]),
    "cofw": ([8, 10, 12, 13], [9, 11, 14, 15], [20], [22], [23]),
}
SETS = ["300w", "wflw", "cofw", "aflw"]
EXHAUSTIVE = ["300w", "cofw", "aflw"]  # one face per image, labelled: an unmatched detection there is a false positive
MESH5 = ([33, 133], [362, 263], [1], [61], [291])  # FaceMesh: eye corners (-> centres), nose tip, mouth corners
COCO_FACE = (1, 2, 0)  # left eye, right eye, nose in COCO-17


def five_points(kp: np.ndarray, name: str) -> np.ndarray:
    return np.stack([kp[idx, :2].mean(0) for idx in FIVE[name]])


def labelled_faces(root: Path) -> dict[str, list[np.ndarray]]:
    """image path -> list of (3, 2) reference points (eye centre, eye centre, nose) per face."""
    out: dict[str, list[np.ndarray]] = {}
    for name in SETS:
        d = json.loads(next((root / "keypoints" / name).glob("test_*.json")).read_text())
        files = {im["id"]: root / "keypoints" / name / im["file_name"] for im in d["images"]}
        for a in d["annotations"]:
            kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
            if name == "aflw":  # AFLW-19: eye centres 7 and 10, nose tip 13
                ref = kp[[7, 10, 13], :2]
            else:
                ref = five_points(kp, name)[:3]
            out.setdefault(str(files[a["image_id"]]), []).append(ref)
    d = json.loads((root / "keypoints" / "coco" / "test_coco.json").read_text())
    files = {im["id"]: root / "keypoints" / "coco" / im["file_name"] for im in d["images"]}
    for im in d["images"]:
        out.setdefault(str(files[im["id"]]), [])
    for a in d["annotations"]:
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        if (kp[list(COCO_FACE), 2] > 0).all():
            out[str(files[a["image_id"]])].append(kp[list(COCO_FACE), :2])
    return out


def match(boxes: np.ndarray, scores: np.ndarray, refs: list[np.ndarray]) -> tuple[int, int, list[int]]:
    """-> (faces found, unmatched detections, index of the detection per face or -1)."""
    used, hit = set(), []
    order = np.argsort(-scores)
    for ref in refs:
        j = next((int(k) for k in order if k not in used and (ref[:, 0] >= boxes[k, 0]).all()
                  and (ref[:, 0] <= boxes[k, 2]).all() and (ref[:, 1] >= boxes[k, 1]).all()
                  and (ref[:, 1] <= boxes[k, 3]).all()), -1)
        if j >= 0:
            used.add(j)
        hit.append(j)
    return sum(h >= 0 for h in hit), len(boxes) - len(used), hit


def person_boxes(root: Path) -> dict[str, np.ndarray]:
    """Image path -> (N, 4) xyxy boxes of every labelled person, for the COCO keypoint images
    and the voc-detection images (both datasets box every person; VOC images without people
    get none)."""
    out: dict[str, list] = {}
    for folder, ann in (("keypoints/coco", "keypoints/coco/test_coco.json"),
                        ("voc-detection/images", "voc-detection/annotations/instances_coco.json")):
        d = json.loads((root / ann).read_text())
        person = next(c["id"] for c in d["categories"] if c["name"] == "person")
        files = {im["id"]: str(root / folder / im["file_name"]) for im in d["images"]}
        out.update({f: [] for f in files.values()})
        for a in (a for a in d["annotations"] if a["category_id"] == person):
            x, y, w, h = a["bbox"]
            out[files[a["image_id"]]].append([x, y, x + w, y + h])
    return {k: np.asarray(v, float).reshape(-1, 4) for k, v in out.items()}


def false_positives(boxes: np.ndarray, hit: list[int], people: np.ndarray | None) -> int:
    """Unmatched detections that are surely no face: any, where every face is labelled
    (``people`` None); in a COCO image, those whose centre is in no labelled person's box
    (COCO labels every person, not every face)."""
    extra = [k for k in range(len(boxes)) if k not in set(hit)]
    if people is None:
        return len(extra)
    c = (boxes[extra, :2] + boxes[extra, 2:]) / 2
    inside = ((c[:, None, 0] >= people[None, :, 0]) & (c[:, None, 0] <= people[None, :, 2])
              & (c[:, None, 1] >= people[None, :, 1]) & (c[:, None, 1] <= people[None, :, 3])).any(1)
    return int((~inside).sum())


# retinaface_one_pass: the default for video and cameras; retinaface_scales_1_2: for still images;
# "_unchecked": without the face check (--face-check none)
DETECTORS = ("haar", "retinaface_one_pass", "retinaface_scales_1_2", "retinaface_one_pass_unchecked",
             "retinaface_scales_1_2_unchecked")


def face_predictor(model, det: str):
    """The face detector as `predict landmarks` runs it: ``det`` (see DETECTORS) -> predict(image)
    -> Keypoints, after the face check unless ``det`` is unchecked."""
    scales = (1, 2) if "1_2" in det else None
    check = None if det.endswith("unchecked") else \
        CheckedFaces.by_check(None, FaceCheck(cvapps.load(VERIFIER)), model.schema.eyes)

    def predict(img: np.ndarray):
        p = model.predict(img, scales=scales)[0]
        return p if check is None else check.refine(p, img)

    return predict


def face_detection(faces: dict, model, people: dict[str, np.ndarray]) -> dict:
    haar = HaarFaces()
    rows = {}
    for det in DETECTORS:
        predict = face_predictor(model, det) if det != "haar" else None

        def _detect(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if predict is None:
                boxes, scores = haar(img)
            else:
                p = predict(img)
                boxes, scores = p.boxes, p.box_scores
            return np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float)

        by_image, fp = {}, {}
        for path, refs in faces.items():
            boxes, scores = _detect(read_image(path))
            f, u, hit = match(boxes, scores, refs)
            key = Path(path).parent.name + "/" + Path(path).name
            by_image[key] = {"labelled": len(refs), "found": f, "unmatched": u}
            if key.split("/")[0] in EXHAUSTIVE or path in people:
                fp[key] = by_image[key]["false_positives"] = false_positives(boxes, hit, people.get(path))
        for path in sorted(set(people) - set(faces)):  # the VOC photos: false positives only
            boxes, _ = _detect(read_image(path))
            fp["voc/" + Path(path).name] = false_positives(boxes, [], people[path])
        labelled, found = sum(v["labelled"] for v in by_image.values()), sum(v["found"] for v in by_image.values())
        unmatched = sum(v["unmatched"] for v in by_image.values())
        sets = {k: v for k, v in by_image.items() if k.split("/")[0] in SETS}
        full = {k: v for k, v in by_image.items() if k.split("/")[0] in EXHAUSTIVE}
        rows[det] = {"images": len(faces), "labelled": labelled, "found": found,
                     "recall": round(found / max(labelled, 1), 4), "unmatched": unmatched,
                     "unmatched_per_image": round(unmatched / len(faces), 3),
                     "face_sets": {"images": len(sets), "labelled": sum(v["labelled"] for v in sets.values()),
                                   "found": sum(v["found"] for v in sets.values()),
                                   "recall": round(sum(v["found"] for v in sets.values())
                                                   / max(sum(v["labelled"] for v in sets.values()), 1), 4)},
                     "false_positives": {"images": len(fp), "count": sum(fp.values()),
                                         "per_image": round(sum(fp.values()) / max(len(fp), 1), 3),
                                         "where": {k: v for k, v in fp.items() if v}},
                     "every_face_labelled": {"images": len(full),
                                             "unmatched_per_image": round(sum(v["unmatched"] for v in full.values())
                                                                          / max(len(full), 1), 3)},
                     "unmatched_by_image": by_image}
    return rows


def nme5(root: Path, model, det: str) -> dict:
    out = {}
    all_nme = []
    predict = face_predictor(model, det)
    for name in FIVE:
        d = json.loads(next((root / "keypoints" / name).glob("test_*.json")).read_text())
        files = {im["id"]: root / "keypoints" / name / im["file_name"] for im in d["images"]}
        nmes, missed = [], 0
        for image_id, path in files.items():
            p = predict(read_image(path))
            for a in (a for a in d["annotations"] if a["image_id"] == image_id):
                gt = five_points(np.asarray(a["keypoints"], float).reshape(-1, 3), name)
                _, _, (j,) = match(p.boxes, p.box_scores, [gt[:3]])
                if j < 0:
                    missed += 1
                    continue
                iod = np.linalg.norm(gt[0] - gt[1])
                nmes.append(float(np.linalg.norm(p.points[j] - gt, axis=1).mean() / iod))
        all_nme += nmes
        out[name] = {"faces": len(nmes), "missed": missed, "NME": round(float(np.mean(nmes)), 4) if nmes else None,
                     "max": round(max(nmes), 4) if nmes else None}
    out["all"] = {"faces": len(all_nme), "NME": round(float(np.mean(all_nme)), 4)}
    return out


def _fps(video: Path, task: str, frames: int, **options) -> dict:
    t = time.perf_counter()
    found = sum(len(r.prediction) > 0 for r in cvapps.predict(None, [video], task=task, stream=True, **options))
    dt = time.perf_counter() - t
    return {"frames": frames, "frames_with_an_instance": found, "fps": round(frames / dt, 1)}


def video_fps(root: Path, frames: int) -> dict:
    face = read_image(root / "keypoints" / "300w" / "indoor_029.png")
    person = read_image(root / "keypoints" / "coco" / "000000000785.jpg")  # one skier
    with tempfile.TemporaryDirectory() as d:
        make_face_video(Path(d) / "face.mp4", face, frames)
        make_pan_video(Path(d) / "person.mp4", person, frames)
        cvapps.predict(None, [person], task="pose")  # convert / export once, outside the timing
        return {"landmarks_default": _fps(Path(d) / "face.mp4", "landmarks", frames),
                "pose_default_detector_boxes": _fps(Path(d) / "person.mp4", "pose", frames),
                "pose_whole_image": _fps(Path(d) / "person.mp4", "pose", frames, whole_image=True)}


def facemesh(root: Path, mesh, faces) -> dict:
    """FaceMesh as `predict` runs it (on the face detector's faces, crops rotated upright by
    each face's roll): the 5-point NME of points derived from the mesh (MESH5) as for
    ``nme5``, and parity with LiteRT on the (axis-aligned) crops of the labelled faces."""
    pre = mesh.preprocessor(boxes=None)
    crops, nmes = [], {}
    for name in FIVE:
        d = json.loads(next((root / "keypoints" / name).glob("test_*.json")).read_text())
        files = {im["id"]: root / "keypoints" / name / im["file_name"] for im in d["images"]}
        out = []
        for a in d["annotations"]:
            img = read_image(files[a["image_id"]])
            gt = five_points(np.asarray(a["keypoints"], float).reshape(-1, 3), name)
            det = faces.predict(img)[0]
            _, _, (j,) = match(det.boxes, det.box_scores, [gt[:3]])
            if j < 0:
                continue
            crops.append(pre.crop(img, det.boxes[j])[0])
            # as `predict landmarks --model facemesh.mediapipe` runs: the face detector's boxes and rolls
            mp = next(iter(cvapps.predict(mesh, [img], task="landmarks", stream=True))).prediction
            _, _, (k,) = match(mp.boxes, mp.box_scores, [gt[:3]])
            five = np.stack([mp.points[k][idx].mean(0) for idx in MESH5])
            out.append(float(np.linalg.norm(five - gt, axis=1).mean() / np.linalg.norm(gt[0] - gt[1])))
        nmes[name] = {"faces": len(out), "NME": round(float(np.mean(out)), 4)}
    everything = [v["NME"] for v in nmes.values() for _ in range(v["faces"])]
    nmes["all"] = {"faces": len(everything), "NME": round(float(np.mean(everything)), 4)}
    pre = mesh.preprocessor(boxes=None)
    return {"nme5_from_mesh": nmes, "parity_litert": litert_parity(
        "facemesh.mediapipe", crops, lambda c: c.astype(np.float32) / 255,
        lambda outs: {"points_px": outs["conv2d_21"].reshape(468, 3)[:, :2]},
        lambda c: {"points_px": _raw(mesh, c, pre).points[0].numpy()})}


def _raw(model, u8: np.ndarray, pre=None):
    """``model``'s raw output on one (H, W, 3) uint8 input already at its input size."""
    pre = pre or model.preprocessor()
    with torch.inference_mode():
        return model(pre.normalize(torch.from_numpy(u8).permute(2, 0, 1)[None]))


def litert_parity(name: str, inputs: list[np.ndarray], prepare, theirs, ours) -> dict:
    """max |ours - LiteRT running the wheel's own .tflite| over ``inputs``, per part:
    ``theirs(LiteRT outputs by name)`` and ``ours(input)`` return {part: array}."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return {"skipped": "ai-edge-litert is not installed (pip install -e .[bench])"}
    from cvapps.weights import cvapps_home, get_spec

    it = Interpreter(model_path=str(cvapps_home() / "sources" / get_spec(name).source["filename"]), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    worst: dict[str, float] = {}
    for x in inputs:
        it.set_tensor(inp["index"], prepare(x)[None])
        it.invoke()
        ref = theirs({o["name"]: it.get_tensor(o["index"]) for o in it.get_output_details()})
        for part, a in ours(x).items():
            worst[part] = max(worst.get(part, 0.0), float(np.abs(a - ref[part]).max()))
    return {"inputs": len(inputs), **{f"max_abs_diff_{k}": float(f"{v:.3e}") for k, v in worst.items()}}


def person_segmentation(root: Path) -> dict:
    """person.mediapipe: person IoU against the union of the COCO keypoint images' person
    polygons, and parity with LiteRT on the model's own 256x256 inputs."""
    from pycocotools import mask as mask_utils

    seg = cvapps.load("person.mediapipe")
    coco = root / "keypoints" / "coco"
    d = json.loads((coco / "test_coco.json").read_text())
    inter = union = 0
    per, inputs = {}, []
    for im in d["images"]:
        h, w = im["height"], im["width"]
        gt = np.zeros((h, w), bool)
        for a in (a for a in d["annotations"] if a["image_id"] == im["id"]):
            rle = mask_utils.frPyObjects(a["segmentation"], h, w)
            gt |= mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle).astype(bool)
        img = read_image(coco / im["file_name"])
        pred = seg.predict(img)[0].mask == seg.labels.index("person")
        i, u = int((pred & gt).sum()), int((pred | gt).sum())
        inter, union = inter + i, union + u
        per[im["file_name"]] = round(i / max(u, 1), 4)
        inputs.append(seg.preprocessor().prepare(img)[0].permute(1, 2, 0).numpy())

    return {"model": "person.mediapipe", "person_IoU": round(inter / max(union, 1), 4), "per_image": per,
            "parity_litert": litert_parity(
                "person.mediapipe", inputs, lambda x: x.astype(np.float32) / 255,
                lambda outs: {"prob": next(iter(outs.values()))[0, ..., 0]},
                lambda x: {"prob": _raw(seg, x).logits[0, 1].sigmoid().numpy()})}


def person_crops(root: Path, pose) -> list[np.ndarray]:
    """The model's 192x192 crops of every labelled person (VOC detection boxes and the COCO
    keypoint people)."""
    pre = pose.preprocessor()
    return [pre.crop(read_image(path), box)[0] for path, boxes in person_boxes(root).items() for box in boxes]


def pose_parity(root: Path, pose) -> dict:
    """Our MoveNet against LiteRT running the wheel's .tflite on the same uint8 crops: points
    in crop pixels (192) and scores."""
    crops = person_crops(root, pose)
    side = np.array(crops[0].shape[:2])

    def ours(c):
        raw = _raw(pose, c)
        return {"points_px_on_192": raw.points[0].numpy()[:, ::-1], "score": raw.scores[0].numpy()}  # (y, x)

    def theirs(outs):
        out = next(iter(outs.values()))[0, 0]  # (17, (y, x, score)), normalised
        return {"points_px_on_192": out[:, :2] * side, "score": out[:, 2]}

    return {"crops": len(crops), **litert_parity("movenet_lightning.coco17", crops, lambda c: c, theirs, ours)}


def pose_accuracy(root: Path, pose) -> dict:
    coco = root / "keypoints" / "coco"
    keep = ("AP", "AP50", "AP75", "AR", "PCK", "count", "unmatched")
    gt = cvapps.evaluate(pose, str(coco / "test_coco.json"), images=str(coco))
    with tempfile.TemporaryDirectory() as d:
        cvapps.predict(pose, sorted(coco.glob("*.jpg")), task="pose", save_json=f"{d}/p.jsonl",
                       detector="ssd_mobilenet_v2.coco")
        det = cvapps.evaluate_results(f"{d}/p.jsonl", str(coco / "test_coco.json"), task="pose", images=str(coco))
    people = len(json.loads((coco / "test_coco.json").read_text())["annotations"])
    return {"images": 4, "people": people,
            "ground_truth_boxes": {k: round(v, 4) if isinstance(v, float) else v for k, v in gt.items() if k in keep},
            "detector_boxes": {k: round(v, 4) if isinstance(v, float) else v for k, v in det.items() if k in keep}}


def parity(paths: list[str], model) -> dict:
    """The converted model against ONNX Runtime running the wheel's own ONNX graph on the same
    input (BGR, mean-subtracted as the original expects)."""
    import onnxruntime as ort

    from cvapps.convert.onnx_file import model_bytes
    from cvapps.weights import cvapps_home, get_spec

    src = cvapps_home() / "sources" / get_spec("retinaface.face5").source["filename"]
    sess = ort.InferenceSession(model_bytes(src), providers=["CPUExecutionProvider"])
    pre = model.preprocessor()
    worst = {"loc": 0.0, "conf": 0.0, "landmarks": 0.0}
    same = 0
    for path in paths:
        u8, meta = pre.prepare(read_image(path))
        x = pre.normalize(u8[None])
        with torch.inference_mode():
            raw = model(x)
        bgr = (u8[None].float().flip(1) - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)).numpy()
        loc, conf, lm = sess.run(None, {"input": bgr})
        for k, a, b in (("loc", raw.loc, loc), ("conf", raw.logits.softmax(-1), conf), ("landmarks", raw.landmarks, lm)):
            worst[k] = max(worst[k], float(np.abs(a.numpy() - b).max()))
        ours = model.postprocess(raw, [meta])[0]
        theirs = model.postprocess(type(raw)(torch.from_numpy(loc), torch.from_numpy(np.log(conf + 1e-12)),
                                             torch.from_numpy(lm), raw.anchors), [meta])[0]
        same += len(ours) == len(theirs) and np.allclose(ours.boxes, theirs.boxes, atol=0.01)
    return {"images": len(paths), "same_faces": same, "max_abs_diff": {k: float(f"{v:.2e}") for k, v in worst.items()}}


def main() -> None:
    root = require(data_root() / "keypoints", "keypoint data").parent
    model = cvapps.load("retinaface.face5")
    faces = labelled_faces(root)
    pose = cvapps.load("movenet_lightning.coco17")
    out = {"model": "retinaface.face5", "parity_onnxruntime": parity(sorted(faces), model),
           "faces": face_detection(faces, model, person_boxes(root)),
           "nme5": {"one_pass_video_default": nme5(root, model, "retinaface_one_pass"),
                    "scales_1_2_photo_default": nme5(root, model, "retinaface_scales_1_2"),
                    "scales_1_2_unchecked": nme5(root, model, "retinaface_scales_1_2_unchecked")},
           "pose": {"model": "movenet_lightning.coco17", "parity_litert": pose_parity(root, pose),
                    "coco_keypoints": pose_accuracy(root, pose)},
           "facemesh": facemesh(root, cvapps.load("facemesh.mediapipe"), model),
           "person_segmentation": person_segmentation(root),
           "fps": video_fps(root, 150)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
