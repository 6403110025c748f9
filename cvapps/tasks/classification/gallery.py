"""Who is this face: a gallery of enrolled people's descriptors (from an embedding model such
as ``face_descriptor.faceapi``) and nearest-neighbour identification under a distance
threshold — dlib's rule: two descriptors of its face network closer than 0.6 (Euclidean)
are the same person; a face farther than that from everyone enrolled stays "unknown".

The gallery is a JSON file: {"model": the descriptor model's name or file, "threshold",
"dims", "people": {name: [descriptor, ...]}} — plain numbers, nothing executable."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ...data.io import atomic_write, load_json
from ...errors import ConfigError, DataError
from .postprocess import ClassPrediction, InstanceClasses

DLIB_THRESHOLD = 0.6
UNKNOWN = "unknown"


@dataclass
class Gallery:
    model: str
    dims: int
    threshold: float = DLIB_THRESHOLD
    people: dict[str, list[list[float]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "Gallery":
        d = load_json(path, "gallery")
        if not isinstance(d, dict) or not isinstance(d.get("people"), dict) or not isinstance(d.get("model"), str):
            raise DataError("not a cvapps gallery: expected {model, dims, threshold, people: {name: [descriptor]}}",
                            path=str(path))
        dims = int(d.get("dims") or 0)
        for name, rows in d["people"].items():
            ok = isinstance(rows, list) and rows and all(isinstance(r, list) and len(r) == dims and
                                                          all(isinstance(v, (int, float)) for v in r) for r in rows)
            if not ok:
                raise DataError(f"person {name!r}: expected a list of {dims}-number descriptors", path=str(path))
        t = d.get("threshold", DLIB_THRESHOLD)
        if not isinstance(t, (int, float)) or not t > 0:
            raise DataError(f"threshold must be a positive number, got {t!r}", path=str(path))
        return cls(d["model"], dims, float(t), d["people"])

    def save(self, path: str | Path) -> None:
        doc = {"model": self.model, "dims": self.dims, "threshold": self.threshold, "people": self.people}
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc)))

    def add(self, name: str, descriptors: np.ndarray) -> None:
        """descriptors (K, dims) of ``name`` (appended to what the gallery has of them)."""
        if not name or name == UNKNOWN:
            raise ConfigError(f"a person's name must not be empty or {UNKNOWN!r}")
        d = np.asarray(descriptors, np.float64).reshape(-1, self.dims)
        self.people.setdefault(name, []).extend([[round(float(v), 6) for v in r] for r in d])

    @property
    def names(self) -> list[str]:
        return list(self.people)

    def distances(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, dims) -> (N, P) Euclidean distance to each person's nearest enrolled descriptor."""
        q = np.asarray(descriptors, np.float64).reshape(-1, self.dims)
        out = np.full((len(q), len(self.people)), np.inf)
        for j, rows in enumerate(self.people.values()):
            r = np.asarray(rows, np.float64)
            out[:, j] = np.sqrt(((q[:, None, :] - r[None]) ** 2).sum(-1)).min(1)
        return out

    def identify(self, descriptors: np.ndarray) -> list[tuple[str, float]]:
        """(N, dims) -> per descriptor (the nearest person, or "unknown" when no one is closer
        than the threshold; that distance)."""
        d = self.distances(descriptors)
        if d.shape[1] == 0:
            return [(UNKNOWN, float("inf"))] * len(d)
        best = d.argmin(1)
        return [(self.names[j] if d[i, j] < self.threshold else UNKNOWN, float(d[i, j])) for i, j in enumerate(best)]

    def refine(self, pred: InstanceClasses, image=None) -> InstanceClasses:
        """A prediction of descriptors per face -> the same faces named: each face's class is its
        person (``topk``: the nearest people with their distances), ``labels`` the person's index
        (-1 unknown); the descriptors stay (the tracker's appearance cue)."""
        vecs = [c.vector for c in pred.classes]
        if not vecs:
            return replace(pred, names=self.names)
        d = self.distances(np.stack(vecs))
        classes, labels = [], []
        for row, v in zip(d, vecs):
            order = np.argsort(row)[:3]
            known = len(order) and row[order[0]] < self.threshold
            top = [(int(j), self.names[j], float(row[j])) for j in order]
            if not known:
                top = [(-1, UNKNOWN, float(row[order[0]]) if len(order) else float("inf"))] + top
            classes.append(ClassPrediction(scores=row.astype(np.float32), topk=top, vector=v))
            labels.append(top[0][0])
        return replace(pred, names=self.names, labels=np.asarray(labels, np.int64), classes=classes)
