"""Detection data plumbing for cvapps.api: datasets for training and evaluation, metrics
(COCO or VOC), and evaluating a results file without a model."""

from __future__ import annotations

from pathlib import Path

from ...data.detection import DetectionData, DetectionDataset, read_detection
from ...data.io import load_json
from ...data.transforms import Letterbox, detection_augment
from ...errors import ConfigError, DataError
from .metrics import coco_metrics, voc_metrics


def split(data, val_fraction: float):
    """Deterministic hold-out of any data with len() and subset() (detection, segmentation,
    keypoints): every k-th image (k = round(1 / val_fraction)) goes to val. -> (train, val | None)."""
    if not val_fraction:
        return data, None
    k = max(2, round(1 / val_fraction))
    idx = range(len(data))
    return data.subset([i for i in idx if i % k != k - 1]), data.subset([i for i in idx if i % k == k - 1])


def datasets(model, train_data: DetectionData, val_data: DetectionData | None):
    pre = model.config["preprocessing"]
    box = Letterbox.from_config(pre)

    def make_train(augment: bool):
        return DetectionDataset(train_data, box, detection_augment(pre) if augment else None)

    return make_train, DetectionDataset(val_data, box) if val_data is not None else None


def metrics_for(gt: dict, results: list[dict], metric: str = "coco", iou: float = 0.5,
                eleven_point: bool = False) -> dict:
    if metric == "coco":
        return coco_metrics(gt, results)
    if metric == "voc":
        return voc_metrics(gt, results, iou, eleven_point)
    raise ConfigError(f"unknown metric {metric!r}", hint="coco or voc")


def evaluate_results_file(results: str | Path, data: str | Path, metric: str = "coco", iou: float = 0.5,
                          eleven_point: bool = False) -> dict:
    """Any detector's COCO-results JSON against a COCO ground-truth file."""
    res_path = Path(results)
    gt, rows = load_json(data), load_json(res_path, "results file")
    if not isinstance(rows, list):
        raise DataError("a COCO results file is a JSON list of detections", path=str(res_path))
    known = {i["id"] for i in gt.get("images", [])}
    for n, r in enumerate(rows):
        if not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise DataError(f"record {n}: needs image_id, category_id, bbox, score", path=str(res_path))
        if r["image_id"] not in known:
            raise DataError(f"record {n}: image_id {r['image_id']} is not in {gt_path.name}", path=str(res_path))
    return metrics_for(gt, rows, metric, iou, eleven_point)


def load_eval_data(data: str, images: str | None, fmt: str | None, model, skip_bad: bool) -> DetectionData:
    if images is None:
        raise ConfigError("detection evaluation needs --images DIR")
    d = read_detection(data, images, fmt, labels=model.labels if fmt in ("voc", "yolo") else None,
                       skip_bad=skip_bad)
    if d.labels != model.labels:
        raise DataError(f"the annotation classes {d.labels[:5]}... differ from the model's {model.labels[:5]}...",
                        path=data)
    return d
