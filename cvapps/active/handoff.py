"""The picks of a selection handed to a labelling tool: each picked image (or video frame,
already written as an image) with the model's predictions as editable pre-annotations and
the selection score — Label Studio tasks (the score is the prediction score its Data Manager
sorts by) or a CVAT XML to import into a task."""

from __future__ import annotations

from pathlib import Path

from ..data.io import image_size
from ..data.labels import LabelImage, LabelSet, write_labels
from ..data.labels.labelstudio import url_under
from ..data.remote import is_remote_image
from ..tasks.batch import load_input, predict_inputs


def picks_labels(model, sel: list[dict], pre=None, batch_size: int = 16) -> LabelSet:
    """The picks (``select``'s rows) with ``model``'s predictions as labels."""
    paths = [row["path"] for row in sel]
    preds = predict_inputs(model, paths, batch_size, pre=pre) if paths else []
    points = next((p.point_names() for p in preds if p.point_names()), [])
    out = LabelSet([], [] if points else list(model.labels), "cvapps select", point_names=points)
    for i, (row, pred) in enumerate(zip(sel, preds)):
        w, h = image_size(row["path"]) if not is_remote_image(row["path"]) else load_input(row["path"], i)[0].shape[1::-1]
        items = pred.to_labels()
        remote = is_remote_image(row["path"])  # (an object-storage or http URL: named as it is)
        im = LabelImage(row["path"] if remote else Path(row["path"]).name, None if remote else Path(row["path"]), w, h,
                        score=row["score"], **items)
        for ps in im.pointsets:
            out.add_class(ps.label)
        out.images.append(im)
    return out


def write_picks(model, sel: list[dict], fmt: str, out: str | Path, pre=None, document_root=None,
                model_version: str | None = None, ls_config: str | Path | None = None) -> list[Path]:
    """``sel`` as a labelling tool's file: Label Studio tasks with the predictions under
    ``predictions`` (image URLs for its local-files storage under ``document_root``, else the
    image paths), or CVAT XML annotations."""
    labels = picks_labels(model, sel, pre)
    if fmt == "label-studio":
        url = url_under(document_root) or (lambda im: str(im.path) if im.path is not None else im.name)
        return write_labels(fmt, labels, out, url=url, as_predictions=True, model_version=model_version,
                            config=ls_config)
    return write_labels(fmt, labels, out)
