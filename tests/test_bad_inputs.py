"""Every bad input, option or model mix-up gets a one-line error (exit code 2, naming the file
or option and the fix, no traceback, no result file claiming success), or a correct result.

A table: each case is one line — an id, the command (with {placeholders} for the fixtures
below), the expected exit code, and what the single error line must mention."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import COLOURS, colour_image, interrupt_at_epoch, run_cli, write_image
from detdata import make_detection_set
from kpdata import write_faces
from segdata import make_seg_set

import cvapps

TRAIN = "--backbone mobilenet_v3_small --epochs 1 --batch-size 4"

CASES = [
    # 1. silent wrong results: data a detector cannot learn from
    ("det-no-boxes", "train detect --data {empty_coco} --images {det}/images " + TRAIN + " --out {tmp}/r", 2,
     ["empty.json", "no boxes"]),
    ("det-no-images", "train detect --data {no_images} --images {det}/images " + TRAIN + " --out {tmp}/r", 2,
     ["noimg.json", "no usable images"]),
    ("yolo-no-labels", "train detect --data {yolo_nolabels} --images {det}/images " + TRAIN + " --out {tmp}/r", 2,
     ["no YOLO label file", "obj_train_data"]),
    # 2. head / kind / loss options are validated
    ("head-typo", "train detect --data {det}/coco.json --images {det}/images --head faster-rcnn " + TRAIN +
     " --out {tmp}/r", 2, ["detection head", "faster-rcnn", "fasterrcnn"]),
    ("head-unknown", "train detect --data {det}/coco.json --images {det}/images --head yolo " + TRAIN +
     " --out {tmp}/r", 2, ["'yolo'", "ssd"]),
    ("loss-typo", "train detect --data {det}/coco.json --images {det}/images --cls-loss focl " + TRAIN +
     " --out {tmp}/r", 2, ["--cls-loss", "'focl'", "focal"]),
    ("seg-head-typo", "train segment --data {seg} --head fcn9s --img-size 32 " + TRAIN + " --out {tmp}/r", 2,
     ["--kind", "fcn9s", "fcn8s"]),
    ("kp-head-typo", "train landmarks --data {faces}/faces.json --images {faces} --head heatmaps " + TRAIN +
     " --out {tmp}/r", 2, ["heatmaps", "heatmap"]),
    # 3. resume into another run
    ("resume-classes", "train classify --data {colours2} --resume --img-size 32 " + TRAIN + " --out {run}", 2,
     ["checkpoint.pt", "labels", "resume with the same"]),
    ("resume-backbone", "train classify --data {colours} --resume --img-size 32 --backbone resnet18 --epochs 1 "
     "--batch-size 4 --out {run}", 2, ["checkpoint.pt", "backbone", "mobilenet_v3_small", "resnet18"]),
    ("retrain-overwrites", "train classify --data {colours} --img-size 32 " + TRAIN + " --out {run}", 2,
     ["already holds a trained model", "--overwrite", "--resume"]),
    # 4. a model of another task
    ("eval-pose-with-faces", "eval pose --model {lm_model} --data {faces}/faces.json --images {faces}", 2,
     ["is a landmarks model", "cvapps eval landmarks"]),
    ("eval-landmarks-with-pose", "eval landmarks --model {pose_model} --data {faces}/faces.json --images {faces}", 2,
     ["is a pose model"]),
    ("predict-landmarks-with-pose", "predict landmarks {faces}/face0.png --model {pose_model}", 2,
     ["is a pose model", "cvapps predict pose"]),
    ("eval-classify-with-det", "eval classify --model {det_model} --data {colours}", 2, ["is a detect model"]),
    ("eval-classify-with-seg", "eval classify --model {seg_model} --data {colours}", 2, ["is a segment model"]),
    # 5. values outside their range
    ("val-fraction", "train detect --data {det}/coco.json --images {det}/images --val-fraction 1.5 " + TRAIN +
     " --out {tmp}/r", 2, ["--val-fraction", "at most 0.9", "1.5"]),
    ("img-size-zero", "train detect --data {det}/coco.json --images {det}/images --img-size 0 " + TRAIN +
     " --out {tmp}/r", 2, ["--img-size", "positive"]),
    ("precision-train", "train classify --data {colours} --precision fp16 --img-size 32 " + TRAIN + " --out {tmp}/r",
     2, ["--precision", "'fp16'", "bf16"]),
    ("precision-predict", "predict classify {colours}/val --model {cls_model} --precision fp16", 2,
     ["--precision", "fp16"]),
    ("device-index", "predict classify {colours}/val --model {cls_model} --device cpu:1", 2,
     ["--device", "cpu:1"]),
    ("lm-results-match-nothing", "eval landmarks --results {stray_jsonl} --data {faces}/faces.json", 2,
     ["stray.jsonl", "no prediction matches"]),
    ("pose-boxes-for-video", "predict pose {video} --model {pose_model} --boxes {boxes}", 2,
     ["boxes.json", "none of the 1 inputs", "--detector"]),
    # 7. a hold-out that leaves nothing to validate on
    ("val-fraction-empty-lm", "train landmarks --data {faces}/faces.json --images {faces} --val-fraction 0.2 "
     "--img-size 32 " + TRAIN + " --out {tmp}/r", 2, ["--val-fraction 0.2", "only 4", "no validation image"]),
    ("val-fraction-empty-pose", "train pose --data {faces}/faces.json --images {faces} --val-fraction 0.2 "
     "--img-size 32 " + TRAIN + " --out {tmp}/r", 2, ["no validation image"]),
    ("val-fraction-empty-det", "train detect --data {det}/coco.json --images {det}/images --val-fraction 0.1 " +
     TRAIN + " --out {tmp}/r", 2, ["coco.json", "no validation image"]),
    # 9. a segmentation set without masks
    ("seg-box-only-coco", "train segment --data {det}/coco.json --images {det}/images --img-size 32 " + TRAIN +
     " --out {tmp}/r", 2, ["coco.json", "no masks", "cvapps train detect"]),
    # 10. crashes before
    ("cuda-missing", "predict classify {colours}/val --model {cls_model} --device cuda", 2,
     ["--device cuda", "CUDA is not available"]),
    ("batch-zero", "train classify --data {colours} --batch-size 0 --img-size 32 --out {tmp}/r", 2,
     ["--batch-size", "at least 1"]),
    ("vid-stride-zero", "predict classify {video} --model {cls_model} --vid-stride 0", 2, ["--vid-stride"]),
    ("img-size-text-seg", "train segment --data {seg} --img-size abc " + TRAIN + " --out {tmp}/r", 2,
     ["--img-size 'abc'", "HxW"]),
    ("img-size-text-lm", "train landmarks --data {faces}/faces.json --images {faces} --img-size abc " + TRAIN +
     " --out {tmp}/r", 2, ["--img-size 'abc'"]),
    ("epochs-zero", "train classify --data {colours} --epochs 0 --img-size 32 --out {tmp}/r", 2,
     ["--epochs", "at least 1"]),
    ("epochs-negative", "train classify --data {colours} --epochs -1 --img-size 32 --out {tmp}/r", 2, ["--epochs"]),
    # 11. README examples with defaults too large for the data
    ("simulate-too-many", "al-simulate classify --data {colours} --backbone mobilenet_v3_small --img-size 32", 2,
     ["--initial 100", "pool has 18 images", "--rounds"]),
    # 12. untrusted input bounded, integrity checked as a whole (issue: a newcomer's sweep)
    ("image-bomb", "predict classify {bomb} --model {cls_model} --backend torch", 2, ["bomb.png", "declares", "over the limit"]),
    ("max-pixels-text", "predict classify {colours}/val --model {cls_model} --max-pixels lots", 2,
     ["--max-pixels 'lots'"]),
    ("coco-duplicate-image-id", "train detect --data {dup_ids} --images {det}/images " + TRAIN + " --out {tmp}/r", 2,
     ["dup_ids.json", "also used by another image"]),
    ("coco-negative-width", "eval detect --model {det_model} --data {neg_width} --images {det}/images", 2,
     ["neg_width.json", "bbox [40, 10, -30, 5]: width -30 is not positive"]),
    ("coco-path-escape", "train detect --data {escape} --images {det}/images " + TRAIN + " --out {tmp}/r", 2,
     ["escape.json", "points outside the images folder", "--allow-outside-images"]),
    ("coco-results-nan", "eval detect --results {nan_results} --data {det}/coco.json", 2,
     ["nan_results.json", "record 0", "not a finite number"]),
    ("model-flipped-bytes", "predict classify {colours}/val --model {flipped}", 2, ["flipped.safetensors",
                                                                                   "sha256 mismatch"]),
    ("model-labels-vs-head", "predict classify {colours}/val --model {long_labels}", 2,
     ["long_labels.safetensors", "4 labels for a head of 3 outputs"]),
    ("model-std-zero", "eval classify --model {std0} --data {colours}", 2, ["std0.safetensors", "holds 0"]),
    ("out-is-a-file", "predict classify {colours}/val --model {cls_model} --out {afile}", 2,
     ["afile", "is an existing file"]),
    ("train-out-is-a-file", "train classify --data {colours} --img-size 32 " + TRAIN + " --out {afile}", 2,
     ["afile", "is an existing file"]),
    ("select-budget-zero", "select --model {cls_model} --pool {colours}/val --budget 0 --out {tmp}/s", 2,
     ["--budget must be at least 1"]),
    ("no-such-camera", "predict classify 7 --model {cls_model} --reconnect 0 --backend torch", 2, ["no camera 7"]),
    ("unknown-task", "predict tracking {video}", 2, ["has no task 'tracking'", "detect"]),
    ("voc-folder-missing", "train detect --data {tmp}/nosuch --format voc --images {det}/images " + TRAIN +
     " --out {tmp}/r", 2, ["nosuch", "no such folder", "VOC"]),
    ("yolo-folder-missing", "train detect --data {tmp}/nosuch --format yolo --images {det}/images " + TRAIN +
     " --out {tmp}/r", 2, ["nosuch", "no such folder", "YOLO"]),
    ("seg-classes-not-the-models", "eval segment --model {seg_model} --data {camvid_like}", 2,
     ["s0.png", "label values [2, 3, 4, 5, 6] outside 0..1", "class list"]),
    ("schema-without-correspondence", "eval landmarks --model {lm_model} --data {pose_set} --images {faces}", 2,
     ["do not correspond", "ibug68->face5"]),
]


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict:
    """The files the commands above refer to (tiny, synthetic)."""
    root = tmp_path_factory.mktemp("bad")
    det = root / "det"
    coco = make_detection_set(det)
    empty = {**coco, "annotations": []}
    (det / "empty.json").write_text(json.dumps(empty))
    (det / "noimg.json").write_text(json.dumps({**coco, "images": [], "annotations": []}))
    nolab = det / "yolo_nolabels"
    nolab.mkdir()
    shutil.copy(det / "yolo" / "classes.txt", nolab / "obj.names")
    colours = root / "colours"
    for split, n in (("train", 6), ("val", 3)):
        for c, rgb in COLOURS.items():
            for i in range(n):
                write_image(colours / split / c / f"{c}{i}.png", colour_image(rgb, seed=i))
    colours2 = root / "colours2"  # other classes
    shutil.copytree(colours, colours2)
    for split in ("train", "val"):
        (colours2 / split / "blue").rename(colours2 / split / "cyan")
    run = root / "run"
    code = cvapps.train("classify", str(colours), out=str(run), backbone="mobilenet_v3_small", img_size=32, epochs=1,
                        batch_size=4, console=_quiet())
    assert code["epochs_run"] == 1
    faces = root / "faces"
    write_faces(faces, 4)
    seg = make_seg_set(root / "seg")
    torch.manual_seed(0)
    models = {
        "cls_model": cvapps.create_model("classify", "mobilenet_v3_small", labels=list(COLOURS), img_size=32),
        "det_model": cvapps.create_model("detect", "mobilenet_v3_small", labels=["red", "blue"], img_size=64),
        "seg_model": cvapps.create_model("segment", "mobilenet_v3_small", labels=["a", "b"], img_size=32),
        "lm_model": cvapps.create_model("landmarks", "mobilenet_v3_small", img_size=[32, 32], schema="face5"),
        "pose_model": cvapps.create_model("pose", "mobilenet_v3_small", img_size=[32, 32]),
    }
    paths = {k: str(cvapps.save(m, root / f"{k}.safetensors")) for k, m in models.items()}
    video = root / "clip.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        vw.write(colour_image((30 * i, 100, 200)))
    vw.release()
    (root / "boxes.json").write_text(json.dumps([{"image_id": 1, "bbox": [1, 1, 20, 20], "score": 1}]))
    (root / "stray.jsonl").write_text(json.dumps({"source": "elsewhere.png", "predictions": [
        {"keypoints": [1, 1, 1] * 5, "bbox": [0, 0, 5, 5]}]}) + "\n")
    hostile = _hostile_files(root, coco, det, paths["cls_model"], faces)
    return {"det": det, "empty_coco": det / "empty.json", "no_images": det / "noimg.json", "yolo_nolabels": nolab,
            "colours": colours, "colours2": colours2, "run": run, "faces": faces, "seg": seg, "video": video,
            "boxes": root / "boxes.json", "stray_jsonl": root / "stray.jsonl", **paths, **hostile}


def _hostile_files(root, coco, det, cls_model, faces) -> dict:
    """Files a careless export or an attacker makes: a decompression bomb, COCO files broken as
    a whole, model files whose bytes or config were edited, an output path that is a file."""
    from test_modelfile import _edited
    from test_untrusted import bomb_png

    (root / "bomb.png").write_bytes(bomb_png(30000, 30000))
    out = {"bomb": root / "bomb.png"}

    def coco_file(name, change):
        d = json.loads(json.dumps(coco))
        change(d)
        (det / name).write_text(json.dumps(d))
        out[name.split(".")[0]] = det / name

    coco_file("dup_ids.json", lambda d: d["images"][1].update(id=d["images"][0]["id"]))
    coco_file("neg_width.json", lambda d: d["annotations"][0].update(bbox=[40, 10, -30, 5]))
    coco_file("escape.json", lambda d: d["images"][0].update(file_name="../../x.png"))
    (det / "nan_results.json").write_text('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": NaN}]')
    out["nan_results"] = det / "nan_results.json"
    data = bytearray(Path(cls_model).read_bytes())
    for i in range(20):
        data[-2000 - 13 * i] ^= 0xFF
    (root / "flipped.safetensors").write_bytes(bytes(data))
    out["flipped"] = root / "flipped.safetensors"
    out["long_labels"] = _edited(root, cls_model, "long_labels.safetensors", lambda c: c.update(labels=c["labels"] + ["x"]))
    out["std0"] = _edited(root, cls_model, "std0.safetensors", lambda c: c["preprocessing"].update(std=[0.0, 0.2, 0.2]))
    (root / "afile").write_text("not a folder")
    cam = root / "camvid"  # the CamVid layout: its 11 classes, void 11
    write_image(cam / "val" / "s0.png", colour_image((90, 120, 60)))
    (cam / "valannot").mkdir()
    cv2.imwrite(str(cam / "valannot" / "s0.png"), (np.arange(48 * 64).reshape(48, 64) % 12).astype(np.uint8))
    out["camvid_like"] = cam
    out["afile"] = root / "afile"
    pose = json.loads((faces / "faces.json").read_text())  # face annotations relabelled as 17-point people
    for a in pose["annotations"]:
        a["keypoints"] = (a["keypoints"] * 4)[: 17 * 3]
    for c in pose["categories"]:
        c["keypoints"], c["skeleton"] = [f"point{i}" for i in range(17)], []
    (root / "pose_set.json").write_text(json.dumps(pose))
    out["pose_set"] = root / "pose_set.json"
    return out


def _quiet():
    import io

    from rich.console import Console

    return Console(file=io.StringIO())


@pytest.mark.parametrize("name,command,code,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input(capsys, tmp_path, fx, name, command, code, needles):
    args = command.format(tmp=tmp_path, **fx).split()
    before = sorted(p.name for p in Path(fx["run"]).iterdir())
    got, out, err = run_cli(capsys, *args)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert got == code, err
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not (tmp_path / "r" / "best.safetensors").exists()  # nothing that claims success
    assert sorted(p.name for p in Path(fx["run"]).iterdir()) == before  # the earlier run untouched


# cases whose right answer is a result, not an error -----------------------------------
def test_yolo_labels_in_obj_train_data_are_found(tmp_path):
    make_detection_set(tmp_path)
    export = tmp_path / "yolo_export"
    (export / "obj_train_data").mkdir(parents=True)
    shutil.copy(tmp_path / "yolo" / "classes.txt", export / "obj.names")
    for f in (tmp_path / "yolo").glob("img*.txt"):
        shutil.copy(f, export / "obj_train_data" / f.name)
    from cvapps.data.detection import read_detection

    d = read_detection(export, tmp_path / "images", "yolo")
    assert sum(len(r.boxes) for r in d.records) == 5 and d.labels == ["red", "blue"]


def test_eval_json_has_no_nan_and_maps_voc_classes_by_name(tmp_path, capsys):
    make_detection_set(tmp_path)
    torch.manual_seed(0)
    m = cvapps.create_model("detect", "mobilenet_v3_small", labels=["blue", "red", "cat"], img_size=64)  # other order
    path = cvapps.save(m, tmp_path / "m.safetensors")
    code, out, err = run_cli(capsys, "eval", "detect", "--model", path, "--data", tmp_path / "voc", "--format",
                             "voc", "--images", tmp_path / "images")
    assert code == 0, err

    def no_nan(c):
        raise AssertionError(f"{c} is not JSON")

    metrics = json.loads(out.strip().splitlines()[-1], parse_constant=no_nan)
    assert set(metrics["per_class"]) == {"red", "blue"}  # classes with ground truth, by name


def test_truncated_video_is_reported_and_its_frames_kept(tmp_path, capsys, tiny_model_file):
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(60):
        vw.write(colour_image((4 * i, 100, 200), seed=i))
    vw.release()
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    code, out, err = run_cli(capsys, "predict", "classify", cut, "--model", tiny_model_file, "--save-json",
                             tmp_path / "p.jsonl")
    frames = (tmp_path / "p.jsonl").read_text().splitlines()
    assert code == 0 and 0 < len(frames) < 60
    assert f"video ended after {len(frames)} of its 60 frames" in " ".join(err.split())


def test_api_arrays_grey_rgba_float_like_files(tiny_model):
    rgb = colour_image(COLOURS["red"])
    ref = tiny_model.predict(rgb)[0].scores
    f = tiny_model.predict(rgb.astype(np.float32) / 255)[0].scores
    np.testing.assert_allclose(f, ref, atol=1e-6)  # float in [0, 1] is the same image
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], 2)
    np.testing.assert_allclose(tiny_model.predict(rgba)[0].scores, ref, atol=1e-6)
    grey = rgb[..., 0]
    assert tiny_model.predict(grey)[0].scores.shape == ref.shape
    with pytest.raises(cvapps.DataError, match=r"float image arrays must hold values in \[0, 1\]"):
        tiny_model.predict(rgb.astype(np.float32))
    with pytest.raises(cvapps.ShapeError, match=r"\(H, W, 3\) RGB"):
        tiny_model.predict(np.zeros((4, 5, 2), np.uint8))


# smaller things -----------------------------------------------------------------------
def test_non_ascii_names_drawn_and_written_as_utf8(tmp_path, capsys):
    from cvapps import draw

    img = np.full((60, 200, 3), 255, np.uint8)
    a = draw.labels(img, [("Äpfel ёж", 2, 30, (200, 200, 200))], 16)
    b = draw.labels(img, [("????? ??", 2, 30, (200, 200, 200))], 16)
    assert not np.array_equal(a, b)
    torch.manual_seed(0)
    m = cvapps.create_model("classify", "mobilenet_v3_small", labels=["Äpfel", "ёж"], img_size=32)
    write_image(tmp_path / "a.png", colour_image((10, 200, 10)))
    code, _, err = run_cli(capsys, "predict", "classify", tmp_path / "a.png", "--model",
                           cvapps.save(m, tmp_path / "m.safetensors"), "--save-json", tmp_path / "p.jsonl")
    assert code == 0, err
    text = (tmp_path / "p.jsonl").read_text(encoding="utf-8")
    assert "Äpfel" in text and "\\u" not in text


def test_version_and_fast_help():
    import subprocess
    import sys
    import time

    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cvapps", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("cvapps ")
    r = subprocess.run([sys.executable, "-c", "import sys, cvapps.cli; sys.exit('torch' in sys.modules)"],
                       timeout=60)
    assert r.returncode == 0, "cvapps --help must not import torch"
    assert time.perf_counter() - t < 60


def test_training_says_random_weights_and_bad_image_hint(tmp_path, capsys, colour_folder):
    (colour_folder / "train" / "red" / "broken.png").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "train", "classify", "--data", colour_folder, "--img-size", 32, "--backbone",
                           "mobilenet_v3_small", "--epochs", 1, "--out", tmp_path / "r")
    flat = " ".join(err.split())
    assert "starts from random weights" in flat
    assert code == 2 and "broken.png" in flat and "--skip-bad" in flat


def test_interrupted_training_says_what_was_kept(tmp_path, colour_folder, monkeypatch):
    import io

    from rich.console import Console

    interrupt_at_epoch(monkeypatch, 1)
    log = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        cvapps.train("classify", str(colour_folder), out=str(tmp_path / "r"), backbone="mobilenet_v3_small",
                     img_size=32, epochs=3, batch_size=6, console=Console(file=log, width=200))
    assert "interrupted during epoch 2" in log.getvalue() and "--resume" in log.getvalue()
    assert (tmp_path / "r" / "checkpoint.pt").is_file()
