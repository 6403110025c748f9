"""`cvapps labels`: labels between cvapps and the labelling tools (registered on cvapps.cli's
app; thin: the work is in cvapps.integrations)."""

from __future__ import annotations

from typing import Optional

import typer

from . import DATA, _json, app

labels_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Convert labels between formats; push picks to Label Studio and pull the labels back.")
app.add_typer(labels_app, name="labels")


@labels_app.command()
def convert(
    src: str = typer.Argument(..., help="the labels: a COCO / Label Studio JSON, a CVAT XML, a VOC or YOLO folder, "
                                        "a mask folder or CamVid root, .pts folder, CSV, class-folder tree"),
    task: str = typer.Option(..., help="classify | detect | segment | landmarks | pose"),
    to: str = typer.Option(..., help="coco | yolo | masks | csv | label-studio | cvat (what the task writes)"),
    out: str = typer.Option(..., help="output file (COCO, Label Studio JSON, CVAT XML, CSV) or folder (YOLO, "
                                      "masks)"),
    images: Optional[str] = DATA["images"][1],
    fmt: Optional[str] = DATA["fmt"][1],
    classes: Optional[str] = typer.Option(None, help="class names in order (comma-separated): classes are matched "
                                                     "by name, others are refused"),
    masks: Optional[str] = typer.Option(None, help="segment: the mask folder of --images"),
    palette: Optional[str] = typer.Option(None, help="segment: class -> colour table (JSON)"),
    split: str = typer.Option("train", help="segment: the split of a CamVid root"),
    ls_config: Optional[str] = typer.Option(None, help="--to label-studio: also write the matching labelling "
                                                       "config (XML) here"),
    document_root: Optional[str] = typer.Option(None, help="--to label-studio: image URLs for Label Studio's "
                                                           "local-files storage under this LOCAL_FILES_DOCUMENT_ROOT"),
    skip_bad: bool = DATA["skip_bad"][1],
    allow_outside: bool = DATA["allow_outside"][1],
) -> None:
    """Convert labels: any format cvapps reads for TASK to any it writes; classes matched by
    name. Prints a JSON report: images, files written, and what the target could not hold
    (e.g. a CVAT skeleton holds no box) or was skipped."""
    from ..integrations.labels import convert as _convert

    print(_json(_convert(src, task, to, out, images, fmt, ls_config, document_root, classes=classes, masks=masks,
                         palette=palette, split=split, skip_bad=skip_bad or None, allow_outside=allow_outside or None)))





URL = typer.Option("http://localhost:8080", help="Label Studio's address")
TOKEN = typer.Option(None, help="API token (default: $LABEL_STUDIO_API_KEY; never written to a file)",
                     envvar="LABEL_STUDIO_API_KEY", show_envvar=False)


@labels_app.command()
def push(
    tasks: str = typer.Argument(..., help="a tasks JSON (select --to label-studio FILE wrote it, with predictions)"),
    project: str = typer.Option(..., help="project title (created if absent, with --config) or id"),
    url: str = URL,
    token: Optional[str] = TOKEN,
    config: Optional[str] = typer.Option(None, help="labelling config (XML) for a new project (select --ls-config)"),
    document_root: Optional[str] = typer.Option(None, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT: images are "
                                                           "served from disk by its local-files storage"),
    upload: bool = typer.Option(False, help="upload the images instead (Label Studio on another machine)"),
) -> None:
    """Send picked images with the model's predictions (editable pre-annotations) to a
    Label Studio project."""
    from ..integrations.labelstudio import push as _push

    print(_json(_push(tasks, url, project, token, config, document_root, upload)))


@labels_app.command()
def pull(
    project: str = typer.Option(..., help="project title or id"),
    out: str = typer.Option(..., help="the finished annotations as a Label Studio JSON export (train --format "
                                      "label-studio --data OUT reads it)"),
    url: str = URL,
    token: Optional[str] = TOKEN,
    document_root: Optional[str] = typer.Option(None, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (to name the "
                                                           "labelled images' files)"),
    labelled: Optional[str] = typer.Option(None, help="also write the labelled images' paths here (select --exclude "
                                                      "leaves them out of the next pool)"),
) -> None:
    """Fetch a Label Studio project's finished annotations (cancelled ones left out)."""
    from ..integrations.labelstudio import pull as _pull

    print(_json(_pull(url, project, out, token, document_root, labelled)))
