"""A cvapps model as a CVAT auto-annotation function (``cvat_sdk.auto_annotation``, the
``[cvat]`` extra; MIT):

    cvat-cli task auto-annotate TASK_ID --function-module cvapps.integrations.cvat \\
        -p model=str:ssd_mobilenet_v2.coco [-p device=str:cpu] [--conf-threshold 0.4]

Detection models give rectangles, segmentation models masks (polygons when CVAT asks for
``--conv-mask-to-poly``), landmark and pose models skeletons (points the model is unsure of
marked outside), classifiers tags. The spec declares the model's classes; CVAT matches them to
the task's labels by name (``--allow-unmatched-labels`` to ignore the rest)."""

from __future__ import annotations

from functools import cached_property

import cv2
import numpy as np

from ..api import _model
from ..serving import ServeOptions, Served, model_name

try:
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk.masks import encode_mask
except ImportError as e:  # the module is only useful beside cvat-sdk
    raise ImportError("cvapps.integrations.cvat needs cvat-sdk: pip install 'cvapps[cvat]'") from e

TYPES = {"boxes": "rectangle", "masks": "mask", "choices": "tag"}


class CvappsFunction:
    """The detection function of one cvapps model (file or weights name)."""

    def __init__(self, model: str, device: str = "cpu", backend: str = "auto"):
        opts = ServeOptions(device=device, backend=backend)
        m = _model(model, None, device)
        self.labels = m.spec.tool_labels(m)
        self.served = Served(model_name(model), m, opts)

    @cached_property
    def spec(self) -> cvataa.DetectionFunctionSpec:
        if "pointsets" in self.labels:
            parts = [cvataa.keypoint_spec(n, j) for j, n in enumerate(self.labels["points"])]
            return cvataa.DetectionFunctionSpec(labels=[cvataa.skeleton_label_spec(self.labels["pointsets"][0], 0,
                                                                                   parts)])
        (kind, names), = self.labels.items()
        return cvataa.DetectionFunctionSpec(labels=[cvataa.label_spec(n, i, type=TYPES[kind])
                                                    for i, n in enumerate(names)])

    def detect(self, context, image) -> list:
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        u8, meta = self.served.pre.prepare(rgb, context.frame_name, None)
        pred = self.served.run([(u8, meta, rgb, None)])[0]
        items = pred.to_labels()
        conf = context.conf_threshold
        sure = (lambda score: True) if conf is None else (lambda score: score is None or score >= conf)
        out = []
        if "pointsets" in self.labels:
            for ps in items.get("pointsets", []):
                if sure(ps.score):
                    out.append(cvataa.skeleton(0, elements=[
                        cvataa.keypoint(j, [float(x), float(y)], outside=bool(v == 0))
                        for j, (x, y, v) in enumerate(ps.points.tolist())]))
            return out
        ids = {n: i for i, n in enumerate(next(iter(self.labels.values())))}
        for c in items.get("choices", []):
            if c in ids:
                out.append(cvataa.tag(ids[c]))
        for b in items.get("boxes", []):
            if b.label in ids and sure(b.score):
                out.append(cvataa.rectangle(ids[b.label], [float(v) for v in b.xyxy]))
        for m in items.get("masks", []):
            if m.label not in ids or not m.mask.any() or not sure(m.score):
                continue
            if context.conv_mask_to_poly:
                contours, _ = cv2.findContours(m.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                out += [cvataa.polygon(ids[m.label], c.reshape(-1).astype(float).tolist())
                        for c in contours if len(c) >= 3]
            else:
                out.append(cvataa.mask(ids[m.label], encode_mask(m.mask)))
        return out


create = CvappsFunction  # cvat-cli's -p NAME=TYPE:VALUE become create()'s keyword arguments
