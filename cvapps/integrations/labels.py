"""``cvapps labels convert``: any labels format a task reads to any it writes, through the
task's own records (classes matched by name), with what the target cannot hold counted."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.labels import FORMATS, LabelSet, tool_formats, write_labels
from ..data.labels.labelstudio import url_under
from ..data.remote import staged
from ..errors import ConfigError
from ..options import DataOptions
from ..tasks import TASKS


def name_images(labels: LabelSet, images: str | Path | None) -> LabelSet:
    """Image names relative to the ``images`` folder (as the target files name them)."""
    if images is None:
        return labels
    root = Path(images).resolve()
    for im in labels.images:
        if im.path is not None:
            rel = os.path.relpath(Path(im.path).resolve(), root)
            im.name = Path(rel).as_posix() if not rel.startswith("..") else im.name
    return labels


def targets(task: str) -> list[str]:
    return sorted([*tool_formats(), *TASKS.get(task).label_writers])


def convert(src: str | Path, task: str, to: str, out: str | Path, images: str | Path | None = None,
            fmt: str | None = None, ls_config: str | Path | None = None, document_root: str | Path | None = None,
            **data_options) -> dict:
    """Read ``src`` (``fmt`` or guessed, as ``train`` reads it; ``data_options``: classes,
    masks, palette, split, skip_bad, allow_outside ...) as ``task`` labels and write them as
    ``to`` at ``out``. Returns a report: images, files written, what was dropped or skipped."""
    spec = TASKS.get(task)
    if to not in targets(task):
        raise ConfigError(f"{task} labels convert to {' | '.join(targets(task))}, not {to!r}")
    opts = staged(DataOptions.parse({k: v for k, v in data_options.items() if v is not None}, data=str(src),
                                    images=None if images is None else str(images), fmt=fmt))
    data = spec.read_labelled(opts)
    report = {"task": task, "from": fmt or "(from the files)", "to": to, "images": len(data)}
    if to in tool_formats():
        labels = name_images(spec.labels_of(data), images)
        extra = {"url": url_under(document_root), "config": ls_config} if to == "label-studio" else {}
        written = write_labels(to, labels, out, **extra)
        report["dropped"] = {k: v for k, v in labels.dropped.items() if v}
    else:
        written = spec.write_native(data, to, Path(out))
        report["dropped"] = {}
    report["written"] = [str(p) for p in written[:5]] + ([f"... {len(written) - 5} more"] if len(written) > 5 else [])
    if data.skipped:
        report["skipped"] = sorted(set(data.skipped))
    return report


__all__ = ["FORMATS", "convert", "name_images", "targets"]
