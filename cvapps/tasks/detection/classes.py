"""Dataset classes onto a detector's, by name: VOC / COCO synonyms, user class maps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...data.detection import DetectionData
from ...data.io import load_json
from ...errors import DataError


# the same class under the names of PASCAL VOC and COCO (all 20 VOC classes exist in COCO)
SYNONYMS = [("aeroplane", "airplane"), ("diningtable", "dining table"), ("motorbike", "motorcycle"),
            ("pottedplant", "potted plant"), ("sofa", "couch"), ("tvmonitor", "tv")]


def class_mapping(data_labels: list[str], model_labels: list[str], class_map: dict | None = None):
    """Dataset class index -> model class index, by name: ``class_map`` (dataset name -> model
    name) first, then the same name (case-insensitive), then SYNONYMS. -> (mapping, names
    the model does not know)."""
    by_name = {n.lower(): i for i, n in enumerate(model_labels)}
    syn = {a: b for a, b in SYNONYMS} | {b: a for a, b in SYNONYMS}
    mapping, unknown = {}, []
    for i, name in enumerate(data_labels):
        target = (class_map or {}).get(name, name).lower()
        j = by_name.get(target, by_name.get(syn.get(target, ""), None))
        if j is None:
            unknown.append(name)
        else:
            mapping[i] = j
    return mapping, unknown


def remap(data: DetectionData, model_labels: list[str], model_ids: list[int], class_map: dict | None = None):
    """``data`` with its classes renamed to the model's (boxes of classes the model does not
    know dropped) -> (DetectionData over the model's labels, unknown class names)."""
    mapping, unknown = class_mapping(data.labels, model_labels, class_map)
    if not mapping:
        raise DataError(f"none of the data's classes {data.labels[:6]} is a class of the model "
                        f"({', '.join(model_labels[:6])}...)", path=data.source,
                        hint="pass --class-map FILE.json mapping dataset names to the model's")
    lut = np.array([mapping.get(i, -1) for i in range(len(data.labels))], np.int64)
    records = []
    for r in data.records:
        new = lut[r.labels] if len(r.labels) else r.labels
        keep = new >= 0
        records.append(replace(r, boxes=r.boxes[keep], labels=new[keep], iscrowd=r.iscrowd[keep]))
    # the first dataset class of a shared name keeps its id: results can be written in the file's ids
    file_ids = {model_ids[j]: data.category_ids[i] for i, j in sorted(mapping.items(), reverse=True)}
    return DetectionData(records, list(model_labels), list(model_ids), data.source, data.skipped,
                         file_ids=file_ids), unknown


def read_class_map(path: str | None) -> dict | None:
    if not path:
        return None
    m = load_json(path, "class map")
    if not isinstance(m, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
        raise DataError('a class map is a JSON object {"dataset class": "model class", ...}', path=path)
    return m
