"""``--precision auto``: a faster precision only where it is measured to give fp32's answers.

The first time a model runs with ``auto`` on a machine, each reduced-precision candidate this
machine has (OpenVINO bf16 on CPUs with bf16 units) runs the calibration images beside the
fp32 default (ONNX Runtime): it is chosen only when its predictions agree with fp32's on at
least AGREEMENT of what fp32 answers with a margin (top-1 labels that beat the runner-up
by 0.1, boxes and points scored 0.5 or more at IoU 0.8 / within 2% of their instance,
pixels; ``Prediction.agreement``: near-ties flip between CPUs' roundings in fp32 too) and it
is at least MIN_SPEEDUP faster on them. The decision, with its figures, is kept in $CVAPPS_HOME/runtimes/ keyed by the model's
graph digest and the machine (CPU model, ISA flags, runtime versions), so later runs decide
nothing (delete the file to decide again, e.g. after measuring on a busy machine) — and a machine without the units, or a model that fails the check, runs fp32."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata, resources
from pathlib import Path

import cv2
import numpy as np

from ..data.io import atomic_write, read_image
from ..exporting import model_digest
from ..runtime import cpu_features
from ..weights import cvapps_home

AGREEMENT = 0.97  # of the calibration images' answers (64 images: a classifier's top-1 may flip once)
MIN_SPEEDUP = 1.2  # smaller gains are within the noise of a busy machine; fp32 stays
MIN_COMPARED = 16  # answers compared, at least (a model that finds nothing in the photos is not judged)


def sample_images() -> list[np.ndarray]:
    """The calibration images: the photos shipped with cvapps (examples/), each in 16 views —
    flipped, cropped, turned, scaled, lighter, darker, blurred — 64 RGB images, so a single
    answer in 64 may differ (98.4%) but two may not (96.9% < AGREEMENT)."""
    try:
        root = resources.files("cvapps.samples")
    except ModuleNotFoundError:  # a source checkout
        root = Path(__file__).resolve().parents[2] / "examples"
    out = []
    for p in sorted(Path(str(f)) for f in root.iterdir() if str(f).endswith(".jpg")):
        img = read_image(p)
        out += _views(img)
    return out


def _views(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape[:2]

    def crop(f, cy=0.5, cx=0.5):
        ch, cw = int(h * f), int(w * f)
        y, x = int((h - ch) * cy), int((w - cw) * cx)
        return img[y: y + ch, x: x + cw]

    views = [img, img[:, ::-1], crop(0.8), crop(0.6), crop(0.7, 0, 0), crop(0.7, 1, 1), crop(0.7, 0, 1),
             crop(0.7, 1, 0), cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(img, cv2.ROTATE_180),
             cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
             cv2.convertScaleAbs(img, alpha=1.25, beta=10), cv2.convertScaleAbs(img, alpha=0.7, beta=0),
             cv2.GaussianBlur(img, (5, 5), 1.5), img[::-1], crop(0.9, 0.2, 0.8)]
    return [np.ascontiguousarray(v) for v in views]


def machine_key() -> str:
    """What the decision depends on besides the model: CPU, its ISA and the runtimes' versions."""
    versions = []
    for pkg in ("onnxruntime", "openvino"):
        try:
            versions.append(metadata.version(pkg))
        except metadata.PackageNotFoundError:
            versions.append("-")
    return hashlib.sha256(json.dumps([cpu_features(), platform.machine(), versions]).encode()).hexdigest()[:12]


def agreement(reference: list, candidate: list) -> tuple[int, int]:
    agree = total = 0
    for a, b in zip(reference, candidate):
        x, n = a.agreement(b)
        agree, total = agree + x, total + n
    return agree, total


def _speedup(baseline, runner, images, predict) -> float:
    """baseline's time / runner's on ``images``: best of three, the two interleaved so a busy
    neighbour slows both alike."""
    predict(baseline, images[:2]), predict(runner, images[:2])  # warm
    best = [float("inf"), float("inf")]
    for _ in range(3):
        for k, r in enumerate((baseline, runner)):
            t = time.perf_counter()
            predict(r, images)
            best[k] = min(best[k], time.perf_counter() - t)
    return best[0] / best[1]


def decide(model, baseline, candidates: list, predict, console=None, say=None) -> tuple[object, dict]:
    """The runner to use and the decision record: ``baseline`` (fp32, the default runtime's) or
    the first of ``candidates`` [(label, build())] that agrees and is faster. ``predict(runner,
    images) -> predictions``. Cached per model digest and machine."""
    path = cvapps_home() / "runtimes" / f"{model_digest(model)[:24]}-{machine_key()}.json"
    labels = [label for label, _ in candidates]
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            record = {}
        if record.get("candidates") == labels:
            chosen = dict(candidates).get(record.get("choice"))
            return (chosen() if chosen else baseline), record
    images = sample_images()
    ref = predict(baseline, images)
    record = {"choice": "fp32", "candidates": labels, "threshold": AGREEMENT, "min_speedup": MIN_SPEEDUP,
              "images": len(images), "checked": {}}
    chosen_runner = baseline
    for label, build in candidates:
        runner = build()
        agree, total = agreement(ref, predict(runner, images))
        speedup = _speedup(baseline, runner, images, predict)
        ok = total >= MIN_COMPARED and agree / total >= AGREEMENT and speedup >= MIN_SPEEDUP
        record["checked"][label] = {"agreement": round(agree / max(total, 1), 4), "agreeing": agree,
                                    "compared": total, "speedup": round(speedup, 2), "chosen": ok}
        if ok:
            record["choice"], chosen_runner = label, runner
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    return chosen_runner, record
