"""Multi-task training (`cvapps train-bundle`) against single-task models with the same budget.

Mixed sets: voc-detection (every 5th of the 100 images held out: 80 train, 20 scored; COCO AP50)
and CamVid (every 4th of the 367 training scenes: 92, and the 101 val scenes; mIoU), an ImageNet
MobileNetV2 at one input size. The single-task models train on their data alone with the same
epochs, batch and learning rate; the bundle takes one batch of each task per step and its epoch
is the larger set once, so the segmentation head sees the steps its single-task model sees and
the detection head 92/80 of them (VOC repeats within the epoch); the backbone sees all.
One image set with two tasks' labels: the 4 COCO keypoint photos (14 people: boxes and polygons
-> person detection and person / background segmentation), scored on themselves (a smoke figure).
Speed: the bundle's predict (one backbone pass) against the two models predicting one after the
other, on the 20 held-out VOC photos, default backend, same process, after a first untimed run of
each (which exports and caches the ONNX graphs); the times include loading the model files.

    CVAPPS_HOME=... .venv/bin/python benchmarks/multitask.py [--epochs 12] [--img-size 256]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from rich.console import Console

import cvapps
from _common import data_root, require
from cvapps.data.detection import read_coco, write_coco
from cvapps.tasks.spec import split_every_kth


def link_subset(src: Path, dst: Path, every: int) -> Path:
    """CamVid layout with every ``every``-th training scene and all val scenes (symlinks)."""
    for split, annot, step in (("train", "trainannot", every), ("val", "valannot", 1)):
        (dst / split).mkdir(parents=True, exist_ok=True)
        (dst / annot).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / split).iterdir())[::step]:
            for folder, name in ((split, f.name), (annot, f.stem + ".png")):
                link = dst / folder / name
                if not link.exists():
                    link.symlink_to(src / folder / name)
    return dst


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/multitask")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--camvid-every", type=int, default=4, help="every k-th CamVid training scene")
    ap.add_argument("--arms", default="detect,segment,bundle_uncertainty,bundle_magnitude,bundle_equal,coco")
    args = ap.parse_args()
    voc, camvid = require(data_root() / "voc-detection", "voc-detection"), require(data_root() / "camvid", "camvid")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    quiet = Console(file=io.StringIO())
    train, val = split_every_kth(read_coco(voc / "annotations" / "instances_coco.json", voc / "images"), 0.2)
    write_coco(train, work / "voc_train.json")
    write_coco(val, work / "voc_val.json")
    cam = link_subset(camvid, work / "camvid", args.camvid_every)
    common = dict(weights="mobilenet_v2.imagenet1k", img_size=args.img_size, epochs=args.epochs,
                  batch_size=args.batch_size, lr=2e-3, seed=0, overwrite=True, console=quiet)
    det_opts = {"images": str(voc / "images"), "val": str(work / "voc_val.json"), "val_images": str(voc / "images")}
    seg_opts = {}
    report = {"img_size": args.img_size, "epochs": args.epochs, "batch_per_task": args.batch_size,
              "voc": {"train": len(train), "scored": len(val)},
              "camvid": {"train": len(list((cam / "train").iterdir())), "scored": len(list((cam / "val").iterdir()))}}
    arms = args.arms.split(",")
    for task, data, opts, key in (("detect", str(work / "voc_train.json"), det_opts, "AP50"),
                                  ("segment", str(cam), seg_opts, "mIoU")):
        if task in arms:
            minutes = timed(lambda: cvapps.train(task, data, out=str(work / task), **opts, **common)) / 60
            m = cvapps.evaluate(str(work / task / "last.safetensors"), data if task == "segment" else
                                str(work / "voc_val.json"), task=task,
                                **({"images": str(voc / "images")} if task == "detect" else {}))
            report[task] = {key: round(m[key], 4), "minutes": round(minutes, 1)}
            print(task, report[task], flush=True)
    tasks = [("detect", str(work / "voc_train.json"), det_opts), ("segment", str(cam), seg_opts)]
    for weighting in ("uncertainty", "magnitude", "equal"):
        arm = f"bundle_{weighting}"
        if arm not in arms:
            continue
        out = work / arm
        minutes = timed(lambda: cvapps.train_bundle(tasks, weighting=weighting, out=str(out), **common)) / 60
        det = cvapps.evaluate(str(out / "last" / "detect.safetensors"), str(work / "voc_val.json"),
                              images=str(voc / "images"))
        seg = cvapps.evaluate(str(out / "last" / "segment.safetensors"), str(cam), task="segment")
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        report[arm] = {"AP50": round(det["AP50"], 4), "mIoU": round(seg["mIoU"], 4), "minutes": round(minutes, 1),
                       "task_weights_last_epoch": {t: round(last.get(f"{t}_weight", 1.0), 3)
                                                   for t in ("detect", "segment")}}
        print(arm, report[arm], flush=True)
    if "bundle_uncertainty" in report and "detect" in report and "segment" in report:
        b = work / "bundle_uncertainty" / "last"
        photos = [str(r.path) for r in val.records]
        def separate():
            for m in ("detect", "segment"):
                cvapps.predict(str(work / m / "last.safetensors"), photos, task=m, console=quiet)

        def bundle():
            cvapps.predict_bundle([str(b / "detect.safetensors"), str(b / "segment.safetensors")], photos,
                                  console=quiet)

        separate(), bundle()  # the first run of a model file exports and caches its ONNX graph: not timed
        alone, together = timed(separate), timed(bundle)
        report["speed"] = {"photos": len(photos), "separate_s": round(alone, 2), "bundle_s": round(together, 2),
                           "bundle_speedup": round(alone / together, 2)}
        print("speed", report["speed"], flush=True)
    if "coco" in arms:
        kp = require(data_root() / "keypoints" / "coco", "keypoints/coco")
        ann = str(kp / "test_coco.json")
        both = {"images": str(kp), "val": ann, "val_images": str(kp), "classes": ["person"]}
        small = {**common, "epochs": 30, "batch_size": 4}
        cvapps.train("detect", ann, out=str(work / "coco_detect"), **both, **small)
        cvapps.train("segment", ann, out=str(work / "coco_segment"), **both, **small)
        cvapps.train_bundle([("detect", ann, both), ("segment", ann, both)], out=str(work / "coco_bundle"), **small)
        rows = {}
        for name, files in (("single", {"detect": work / "coco_detect" / "last.safetensors",
                                        "segment": work / "coco_segment" / "last.safetensors"}),
                            ("bundle", {t: work / "coco_bundle" / "last" / f"{t}.safetensors"
                                        for t in ("detect", "segment")})):
            d = cvapps.evaluate(str(files["detect"]), ann, images=str(kp))
            s = cvapps.evaluate(str(files["segment"]), ann, images=str(kp), task="segment")
            rows[name] = {"AP50": round(d["AP50"], 4), "mIoU": round(s["mIoU"], 4)}
        report["coco_keypoint_photos"] = {"images": 4, "epochs": 30, **rows}
        print("coco", report["coco_keypoint_photos"], flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
