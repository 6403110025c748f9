"""Domain adaptation on a real shift: CamVid's 0001TP sequence is filmed at dusk, 0006R0 and
0016E5 by day. FCN-8s on ImageNet MobileNetV2 is trained on the day sequences only (train:
0006R0 + 0016E5's train frames; val: 0016E5's val frames), then adapted to the dusk frames with
no labels (`cvapps adapt --method adabn | self-train | both`) and scored on the dusk frames'
labels (mIoU, 11 classes), before and after. The dusk labels are never used to adapt or to pick
an epoch. Also: AdaBN estimated on the even dusk frames only, scored on the odd ones (held out),
and the day val mIoU of each adapted model (what adapting costs where the model came from).

    CVAPPS_HOME=... .venv/bin/python benchmarks/adapt_camvid.py [--minutes 20] [--size 180x240]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from rich.console import Console

import cvapps
from cvapps.adapting import adapt

from _common import data_root, require


def link_split(src: Path, dst: Path, names: list[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        if not (dst / n).exists():
            (dst / n).symlink_to(src / n)


def datasets(root: Path, work: Path) -> dict[str, Path]:
    """day/ (CamVid-style root), dusk/{images,masks}, dusk_even, dusk_odd."""
    tr = sorted(p.name for p in (root / "train").glob("*.jpg"))
    va = sorted(p.name for p in (root / "val").glob("*.jpg"))
    day_tr = [n for n in tr if not n.startswith("0001TP")]
    dusk = [n for n in tr if n.startswith("0001TP")]
    mask = lambda n: n.rsplit(".", 1)[0] + ".png"  # noqa: E731
    link_split(root / "train", work / "day" / "train", day_tr)
    link_split(root / "trainannot", work / "day" / "trainannot", [mask(n) for n in day_tr])
    link_split(root / "val", work / "day" / "val", va)
    link_split(root / "valannot", work / "day" / "valannot", [mask(n) for n in va])
    out = {"day": work / "day"}
    for name, part in (("dusk", dusk), ("dusk_even", dusk[::2]), ("dusk_odd", dusk[1::2])):
        link_split(root / "train", work / name / "images", part)
        link_split(root / "trainannot", work / name / "masks", [mask(n) for n in part])
        out[name] = work / name
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/adapt-camvid")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget of the day model")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--size", default="180x240")
    ap.add_argument("--adapt-epochs", type=int, default=3)
    args = ap.parse_args()
    root = require(data_root() / "camvid", "camvid")
    work = Path(args.work)
    d = datasets(root, work)
    size = [int(v) for v in args.size.split("x")]
    day_model = work / "day-model" / "best.safetensors"
    report: dict = {"size": size}
    if not day_model.exists():
        t = time.perf_counter()
        r = cvapps.train("segment", str(d["day"]), backbone="mobilenet_v2", weights="mobilenet_v2.imagenet1k",
                         head={"kind": "fcn8s"}, img_size=size, epochs=args.epochs, batch_size=8, lr=2e-3,
                         backbone_lr_ratio=0.2, time_limit_min=args.minutes, out=str(work / "day-model"),
                         console=Console(file=io.StringIO()))
        report["day_training"] = {"epochs_run": r["epochs_run"], "minutes": round((time.perf_counter() - t) / 60, 1)}
    dusk = {"images": str(d["dusk"] / "images"), "masks": str(d["dusk"] / "masks")}
    odd = {"images": str(d["dusk_odd"] / "images"), "masks": str(d["dusk_odd"] / "masks")}
    day_val = {"split": "val"}

    def score(model) -> dict:
        return {"dusk_mIoU": round(float(cvapps.evaluate(model, task="segment", **dusk)["mIoU"]), 4),
                "day_val_mIoU": round(float(cvapps.evaluate(model, str(d["day"]), task="segment",
                                                            **day_val)["mIoU"]), 4)}

    report["day_model"] = score(str(day_model))
    quiet = Console(file=io.StringIO())
    for method in ("adabn", "self-train", "both"):
        t = time.perf_counter()
        adapt(str(day_model), str(d["dusk"] / "images"), out=str(work / method), method=method,
              epochs=args.adapt_epochs, batch_size=8, lr=5e-4, console=quiet)
        report[method] = {**score(str(work / method / "best.safetensors")),
                          "minutes": round((time.perf_counter() - t) / 60, 1)}
        print(method, report[method], flush=True)
    adapt(str(day_model), str(d["dusk_even"] / "images"), out=str(work / "adabn-even"), method="adabn", console=quiet)
    report["held_out_odd_frames"] = {
        "day_model": round(float(cvapps.evaluate(str(day_model), task="segment", **odd)["mIoU"]), 4),
        "adabn_on_even_frames": round(float(cvapps.evaluate(str(work / "adabn-even" / "best.safetensors"),
                                                            task="segment", **odd)["mIoU"]), 4)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
