"""Pose metrics: PCK@0.2 (box-normalised) and COCO OKS AP/AR through pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from ...data.io import coco_index

STAT_NAMES = ["AP", "AP50", "AP75", "APmedium", "APlarge", "AR", "AR50", "AR75", "ARmedium", "ARlarge"]


def pck(pred: np.ndarray, gt: np.ndarray, boxes: np.ndarray, thr: float = 0.2) -> float:
    """pred (N, K, 2), gt (N, K, 3), boxes (N, 4) xyxy -> fraction of labelled points within
    ``thr`` x the longer side of their instance's box."""
    lab = gt[..., 2] > 0
    if not lab.any():
        return float("nan")
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]  # (N, 1)
    d = np.linalg.norm(pred - gt[..., :2], axis=-1)  # (N, K)
    return float((d[lab] <= thr * np.broadcast_to(size, d.shape)[lab]).mean())


def oks_metrics(gt_coco: dict, results: list[dict], sigmas: list[float]) -> dict:
    """COCO keypoint evaluation (pycocotools COCOeval, iouType "keypoints") with the
    schema's sigmas -> {"AP", "AP50", ..., "ARlarge"}; empty results give zeros."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {k: 0.0 for k in STAT_NAMES}
    gt = coco_index(copy.deepcopy(gt_coco))
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
