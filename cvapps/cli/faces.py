"""`cvapps faces`: enrol people into a gallery and name faces by it (registered on cvapps.cli's
app; thin: the work is in cvapps.faces)."""

from __future__ import annotations

from typing import List, Optional

import typer

from . import DEVICE, PREDICT, TRACK, _json, _print_summary, app, command, err

faces_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Face identity: enrol people from photos, then name the faces of photos and videos.")
app.add_typer(faces_app, name="faces")
GALLERY = typer.Option(..., help="the gallery file (JSON: each person's face descriptors)")


@faces_app.command()
def enroll(
    name: str = typer.Argument(..., help="the person's name"),
    images: List[str] = typer.Argument(..., help="photos of them (the largest face of each is taken)"),
    gallery: str = GALLERY,
    model: Optional[str] = typer.Option(None, help="a new gallery's descriptor model (default "
                                                   "face_descriptor.faceapi)"),
    face_check: Optional[str] = typer.Option(None, help="the second look at each face (default the FaceMesh "
                                                        "check); 'none' keeps every face"),
    device: str = DEVICE["device"][1],
    backend: str = PREDICT["backend"][1],
) -> None:
    """Add a person's face descriptors to a gallery (created when missing). Prints a JSON
    report: faces enrolled, photos with no face or several."""
    from ..faces import enroll as _enroll

    print(_json(_enroll(name, images, gallery, model, device, backend, console=err, face_check=face_check)))


@faces_app.command("list")
def list_people(gallery: str = typer.Argument(..., help="the gallery file")) -> None:
    """The people of a gallery, with how many descriptors each has (JSON)."""
    from ..faces import people

    print(_json(people(gallery)))


IDENTIFY = {k: v for k, v in PREDICT.items() if k not in ("model",)}


@command(faces_app, "identify", IDENTIFY,
         {"gallery": (str, GALLERY), "face_check": (Optional[str], typer.Option(
             None, help="the second look at each face (default the FaceMesh check); 'none' keeps every face"))}, TRACK,
         help="Name every face of images, videos and cameras by the gallery (unknown when no enrolled person is "
              "within its distance threshold): a line per image, JSON Lines with --save-json, annotated images / "
              "videos with --out; --track keeps identities over video.")
def identify(sources, gallery, **kw) -> None:
    from ..faces import identify as _identify

    s = _identify(sources, gallery, console=err, **{k: v for k, v in kw.items() if v is not None})
    if s.errors and not s.processed:
        raise s.errors[0]
    _print_summary(s, kw.get("out_dir"), kw.get("save_json"))
