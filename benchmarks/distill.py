"""Knowledge distillation at a fixed label budget (classification, hymenoptera): 20% of the
training labels (every 5th image) and the rest unlabelled.

- teacher: MobileNetV2 (ImageNet weights, frozen) + a head trained on the labelled 20%, at
  224 px;
- student A: the same at --student-size px (default 112: ~4x fewer FLOPs), trained on the
  labelled 20% alone (backbone frozen, or with --student-freeze none trained too);
- student B: the same student recipe distilled from the teacher on all training images
  (its outputs on the unlabelled 80%, its outputs and the labels on the 20%);
- student C: B started from the teacher's weights (``init="teacher"``: its backbone and head)
  instead of ImageNet's.
Prints one JSON object with the validation top-1 of each (153 val images) and B - A;
(``--case all`` or ``self_training``) self-training at the same label budget: MobileNetV2 at
224 on the labelled 20%, then 3 rounds of pseudo-labelling the other 80% at confidence >= 0.9
(with the pseudo-labels' accuracy against the true folders) — the curve against round 0, the
labelled-only baseline; (``all`` or ``self_training_detect``) self-training of the COCO
detector fine-tuned on 10 labelled VOC images (every 5th of the even-numbered half), its pool
the other 40 of that half + CamVid frames + the COCO photos, scored on the 50 odd-numbered VOC
images (never in the pool), rounds against round 0; (``all`` or ``detect``) detection distillation, see
benchmarks/distill_detect.py; (``all`` or ``forgetting``) the new-classes-without-forgetting
case of benchmarks/keep_classes.py, and (``all`` or ``forgetting_classify``) its classifier
case, benchmarks/keep_classes_classify.py.

    python benchmarks/distill.py [--case classify|detect|self_training|self_training_detect|forgetting|
        forgetting_classify|all]
        [--epochs 30] [--student-size 112] [--student-freeze backbone|none] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--student-size", type=int, default=112)
    ap.add_argument("--every", type=int, default=5, help="label every k-th training image")
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0, help="the training seed of teacher and students")
    ap.add_argument("--student-freeze", default="backbone",
                    help="the students' --freeze (none: the whole student trains; the teacher stays frozen)")
    ap.add_argument("--case", choices=("classify", "detect", "self_training", "self_training_detect", "forgetting",
                                       "forgetting_classify", "all"), default="all")
    args = ap.parse_args()
    out = classification(args) if args.case in ("classify", "all") else {}
    if args.case in ("self_training", "all"):
        out["self_training"] = self_training(args)
    if args.case in ("self_training_detect", "all"):
        out["self_training_detect"] = self_training_detect()
    if args.case in ("detect", "all"):
        from distill_detect import run as detect

        out["detection"] = detect()
    if args.case in ("forgetting", "all"):
        from keep_classes import run

        out["forgetting"] = run()
    if args.case in ("forgetting_classify", "all"):
        from keep_classes_classify import run as keep_classify

        out["forgetting_classify"] = keep_classify()
    print(json.dumps(out))


def self_training(args) -> dict:
    root = require(data_root() / "hymenoptera", "hymenoptera")
    train = sorted(p for p in (root / "train").rglob("*.jpg"))
    labelled = train[:: args.every]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "labelled.csv").write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in labelled))
        r = cvapps.self_train("classify", str(d / "labelled.csv"), [str(root / "train")], val=str(root / "val"),
                              rounds=3, threshold=0.9, out=str(d / "st"), console=Console(file=io.StringIO()),
                              weights="mobilenet_v2.imagenet1k", freeze="backbone", epochs=args.epochs, batch_size=32,
                              lr=2e-3)
        for rec in r["rounds"][1:]:  # how right the pseudo-labels were (the pool's true class is its folder)
            with open(d / "st" / f"round{rec['round']}" / "pseudo_labels.csv") as f:
                rows = [line.rstrip("\n").rsplit(",", 1) for line in f.readlines()[1:]]
            rec["pseudo_label_accuracy"] = round(sum(Path(p).parent.name == lab for p, lab in rows) / max(len(rows), 1), 4)
    first = r["rounds"][0]["top1"]
    return {"labelled": len(labelled), "pool": r["pool"], "threshold": 0.9, "rounds": r["rounds"],
            "gain_points_last_round": round(100 * (r["rounds"][-1]["top1"] - first), 2)}


def self_training_detect(rounds: int = 2, threshold: float = 0.5, epochs: int = 15) -> dict:
    from distill_detect import subset_gt

    root = data_root()
    voc = require(root / "voc-detection", "voc-detection")
    gt = json.loads((voc / "annotations" / "instances_coco.json").read_text())
    files = sorted(im["file_name"] for im in gt["images"])
    side, val = files[::2], set(files[1::2])
    labelled = set(side[::5])

    extra = sorted((root / "camvid" / "train").glob("*.jpg"))[::10] + sorted((root / "keypoints" / "coco").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        pool = [str(voc / "images" / f) for f in side if f not in labelled] + [str(p) for p in extra]
        (d / "pool.txt").write_text("\n".join(pool) + "\n")
        r = cvapps.self_train("detect", subset_gt(gt, labelled, d / "labelled.json"), [str(d / "pool.txt")],
                              images=str(voc / "images"), val=subset_gt(gt, val, d / "val.json"), rounds=rounds,
                              threshold=threshold, out=str(d / "st"), console=Console(file=io.StringIO()),
                              weights="ssd_mobilenet_v2.coco", freeze="backbone", epochs=epochs, batch_size=16,
                              lr=5e-4)
        untouched = cvapps.evaluate("ssd_mobilenet_v2.coco", str(d / "val.json"), images=str(voc / "images"))["AP50"]
    first = r["rounds"][0]["AP50"]
    return {"labelled": len(labelled), "pool": r["pool"], "val_images": len(val), "threshold": threshold,
            "epochs": epochs, "rounds": r["rounds"], "coco_detector_untouched_AP50": round(untouched, 4),
            "gain_points_last_round": round(100 * (r["rounds"][-1]["AP50"] - first), 2)}


def classification(args) -> dict:
    root = require(data_root() / "hymenoptera", "hymenoptera")
    train = sorted(p for p in (root / "train").rglob("*.jpg"))
    labelled = train[:: args.every]
    unlabelled = [p for p in train if p not in set(labelled)]
    quiet = Console(file=io.StringIO())
    weights = "mobilenet_v2.imagenet1k"
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "labelled.csv").write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in labelled))
        (d / "unlabelled.txt").write_text("".join(f"{p}\n" for p in unlabelled))
        common = dict(val=str(root / "val"), console=quiet, overwrite=True)
        recipe = dict(backbone="mobilenet_v2", weights=weights, freeze="backbone", epochs=args.epochs, batch_size=32,
                      lr=2e-3, seed=args.seed)
        teacher = cvapps.train("classify", train=str(d / "labelled.csv"), out=str(d / "teacher"), **recipe, **common)
        student = {**recipe, "img_size": args.student_size,
                   "freeze": None if args.student_freeze == "none" else args.student_freeze}
        plain = cvapps.train("classify", train=str(d / "labelled.csv"), out=str(d / "plain"), **student, **common)
        kd = cvapps.distill("classify", str(d / "teacher" / "best.safetensors"), [str(d / "unlabelled.txt")],
                            labels=str(d / "labelled.csv"), val=str(root / "val"), out=str(d / "kd"),
                            temperature=args.temperature, alpha=args.alpha, console=quiet, **student)
        # the same student started from the teacher (its backbone and head) instead of ImageNet
        from_teacher = {k: v for k, v in student.items() if k != "weights"}
        kd_t = cvapps.distill("classify", str(d / "teacher" / "best.safetensors"), [str(d / "unlabelled.txt")],
                              labels=str(d / "labelled.csv"), val=str(root / "val"), out=str(d / "kd_t"), init="teacher",
                              temperature=args.temperature, alpha=args.alpha, console=quiet, **from_teacher)
    out = {"temperature": args.temperature, "alpha": args.alpha, "student_freeze": args.student_freeze, "seed": args.seed, "labelled": len(labelled), "unlabelled": len(unlabelled), "val_images": int(plain["val"]["count"]),
           "teacher_top1": round(teacher["val"]["top1"], 4), "student_labels_only_top1": round(plain["val"]["top1"], 4),
           "student_distilled_top1": round(kd["val"]["top1"], 4)}
    out["distillation_gain_points"] = round(100 * (out["student_distilled_top1"] - out["student_labels_only_top1"]), 2)
    out["student_distilled_from_teacher_top1"] = round(kd_t["val"]["top1"], 4)
    out["distillation_from_teacher_gain_points"] = round(
        100 * (out["student_distilled_from_teacher_top1"] - out["student_labels_only_top1"]), 2)
    return out


if __name__ == "__main__":
    main()
