"""Face identity: enrol people from photos into a gallery, then name the faces of photos and
videos by it (dlib's rule: nearer than the gallery's threshold, else "unknown"). The work is
``predict classify --on faces`` with a descriptor model (face_descriptor.faceapi by default)
and the gallery as its refinement (cvapps.tasks.classification.gallery); in video the
descriptors are the tracker's appearance cue, so a face keeps its track id through turns."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from rich.console import Console

from . import api
from .errors import ConfigError, DataError
from .tasks.classification.gallery import Gallery

DESCRIPTOR = "face_descriptor.faceapi"


def enroll(name: str, images: Iterable, gallery: str | Path, model: str | None = None, device: str = "cpu",
           backend: str = "auto", console: Console | None = None, face_check: str | None = None) -> dict:
    """Add ``name``'s face from each image (the largest face, when a photo shows several) to the
    gallery file (created with ``model``'s descriptors, default DESCRIPTOR; an existing
    gallery keeps its own model). Images with no face are named in the result, not fatal;
    none at all is a DataError (the gallery is left as it was). ``face_check``: as predict's
    (default the FaceMesh check; "none" keeps every face)."""
    path = Path(gallery)
    g = Gallery.load(path) if path.exists() else None
    if g is not None and model is not None and model != g.model:
        raise ConfigError(f"the gallery holds descriptors of {g.model}, not {model}", path=str(path),
                          hint="enrol with the gallery's model (or start a new gallery)")
    chosen = g.model if g is not None else (model or DESCRIPTOR)
    found, no_face, several = [], [], []
    extra = {"face_check": face_check} if face_check is not None else {}
    for r in api.predict(chosen, list(images), task="classify", on="faces", device=device, backend=backend,
                         stream=True, console=console, **extra):
        faces = r.prediction
        if not len(faces):
            no_face.append(r.source)
            continue
        if len(faces) > 1:
            several.append(r.source)
        areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
        found.append(faces.classes[int(np.argmax(areas))].vector)
    if not found:
        raise DataError(f"no face found in any of the {len(no_face)} images of {name}", path=str(path),
                        hint="enrol photos in which the face is visible and at least ~20 px across")
    if g is None:
        g = Gallery(chosen, int(len(found[0])))
    g.add(name, np.stack(found))
    g.save(path)
    return {"person": name, "enrolled": len(found), "no_face": no_face, "several_faces_took_largest": several,
            "gallery": str(path), "people": len(g.people), "model": g.model}


def identify(sources: Iterable, gallery: str | Path, **options):
    """Name every face of ``sources`` (images, folders, videos, cameras) by the gallery: the
    predict API with the gallery's descriptor model (``options``: those of api.predict, e.g.
    out_dir, save_json, track (default on: in video a face keeps its track id), stream)."""
    g = Gallery.load(gallery)
    options["track"] = True if options.get("track") is None else options["track"]
    return api.predict(g.model, sources, task="classify", gallery=str(gallery), **options)


def people(gallery: str | Path) -> dict:
    g = Gallery.load(gallery)
    return {"model": g.model, "threshold": g.threshold, "people": {n: len(r) for n, r in g.people.items()}}
