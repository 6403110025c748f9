"""Keypoint schemas: names, left/right flip pairs, skeleton edges, the two eye points
NME normalises by, and OKS sigmas. Built in: COCO-17 body, CrowdPose-14, 68-point
iBUG 300-W, 98-point WFLW, 29-point COFW, 19-point AFLW, 5-point faces; any other
schema comes from the dataset file (names, skeleton) with flip pairs found by name.

A core module: the data readers and the keypoint tasks both use it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConfigError

_COCO_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
               "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
               "right_knee", "left_ankle", "right_ankle"]
_COCO_SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8],
                  [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]]
# COCO keypoint evaluation's per-keypoint falloff (cocoapi), and CrowdPose's
_COCO_SIGMAS = [.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089]
_CROWD_NAMES = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"]
_CROWD_SIGMAS = [.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089, .079, .079]
_CROWD_SKELETON = [[12, 13], [13, 0], [13, 1], [0, 2], [2, 4], [1, 3], [3, 5], [0, 6], [1, 7], [6, 7], [6, 8],
                   [8, 10], [7, 9], [9, 11]]


def _ibug68_pairs() -> list[list[int]]:
    pairs = [[i, 16 - i] for i in range(8)]  # jaw
    pairs += [[17 + i, 26 - i] for i in range(5)]  # brows
    pairs += [[31, 35], [32, 34]]  # nostrils
    pairs += [[36, 45], [37, 44], [38, 43], [39, 42], [40, 47], [41, 46]]  # eyes
    pairs += [[48, 54], [49, 53], [50, 52], [59, 55], [58, 56], [60, 64], [61, 63], [67, 65]]  # mouth
    return pairs


def _wflw_pairs() -> list[list[int]]:
    pairs = [[i, 32 - i] for i in range(16)]
    pairs += [[33 + i, 46 - i] for i in range(5)] + [[38 + i, 50 - i] for i in range(4)]
    pairs += [[55, 59], [56, 58]]
    pairs += [[60 + i, 72 - i] for i in range(5)] + [[65, 75], [66, 74], [67, 73]]
    pairs += [[76, 82], [77, 81], [78, 80], [83, 87], [84, 86], [88, 92], [89, 91], [93, 95], [96, 97]]
    return pairs


def _chain(*runs: tuple[int, int]) -> list[list[int]]:
    return [[i, i + 1] for a, b in runs for i in range(a, b)]


BUILTIN: dict[str, dict] = {
    "coco17": {"keypoints": _COCO_NAMES, "skeleton": _COCO_SKELETON, "sigmas": _COCO_SIGMAS, "eyes": [1, 2]},
    "crowdpose14": {"keypoints": _CROWD_NAMES, "skeleton": _CROWD_SKELETON, "sigmas": _CROWD_SIGMAS, "eyes": None},
    "ibug68": {"keypoints": [f"p{i}" for i in range(68)], "flip_pairs": _ibug68_pairs(), "eyes": [36, 45],
               "skeleton": _chain((0, 16), (17, 21), (22, 26), (27, 30), (31, 35), (36, 41), (42, 47), (48, 59),
                                  (60, 67))},
    "wflw98": {"keypoints": [f"p{i}" for i in range(98)], "flip_pairs": _wflw_pairs(), "eyes": [60, 72],
               "skeleton": _chain((0, 32), (33, 41), (42, 50), (51, 54), (55, 59), (60, 67), (68, 75), (76, 87),
                                  (88, 95))},
    "cofw29": {"keypoints": [f"p{i}" for i in range(29)], "eyes": [8, 9], "skeleton": [],
               "flip_pairs": [[0, 1], [2, 3], [4, 6], [5, 7], [8, 9], [10, 11], [12, 14], [13, 15], [16, 17],
                              [18, 19], [22, 23]]},
    # AFLW is conventionally normalised by the face box, not the eyes
    "aflw19": {"keypoints": [f"p{i}" for i in range(19)], "eyes": None, "skeleton": [],
               "flip_pairs": [[0, 5], [1, 4], [2, 3], [6, 11], [7, 10], [8, 9], [12, 14], [15, 17]]},
    "face5": {"keypoints": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"], "eyes": [0, 1],
              "skeleton": [], "flip_pairs": [[0, 1], [3, 4]]},
    # MediaPipe's (and COCO-WholeBody's / OpenPose's) 21 hand points; a mirrored hand keeps its names
    "hand21": {"keypoints": ["wrist"] + [f"{f}_{j}" for f, joints in
                                         (("thumb", ("cmc", "mcp", "ip", "tip")),) +
                                         tuple((f"{n}_finger", ("mcp", "pip", "dip", "tip"))
                                               for n in ("index", "middle", "ring")) +
                                         (("pinky", ("mcp", "pip", "dip", "tip")),) for j in joints],
               "eyes": None, "flip_pairs": [],
               "skeleton": [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [5, 9], [9, 10],
                            [10, 11], [11, 12], [9, 13], [13, 14], [14, 15], [15, 16], [13, 17], [0, 17], [17, 18],
                            [18, 19], [19, 20]]},
}
FACE_BY_COUNT = {68: "ibug68", 98: "wflw98", 29: "cofw29", 19: "aflw19", 5: "face5"}

_R = range
# Where one schema's points lie in another's: for each point of the target, the source points
# whose mean it is. Face schemas to the 5 points (eye centres = the mean of each eye's contour
# or centre points, the nose tip, the mouth corners; "left" = the image's left, as the face
# detector predicts), and FaceMesh's 468 vertices to iBUG's 68 (for each of the 68, the vertex
# chosen among its anatomical neighbours by the smallest error on the shared 68-point faces: NME
# 0.064 / 0.072 on the two 300-W faces, against 0.075 / 0.084 for the first anatomical guess).
CORRESPONDENCES: dict[tuple[str, str], tuple[tuple[int, ...], ...]] = {
    ("ibug68", "face5"): (tuple(_R(36, 42)), tuple(_R(42, 48)), (30,), (48,), (54,)),
    ("wflw98", "face5"): (tuple(_R(60, 68)), tuple(_R(68, 76)), (54,), (76,), (82,)),
    ("cofw29", "face5"): ((8, 10, 12, 13), (9, 11, 14, 15), (20,), (22,), (23,)),
    ("aflw19", "face5"): ((7,), (10,), (13,), (15,), (17,)),
    ("facemesh468", "face5"): ((33, 133), (362, 263), (1,), (61,), (291,)),
    ("facemesh468", "ibug68"): tuple((v,) for v in (
        162, 234, 93, 132, 172, 136, 150, 176, 152, 400, 379, 365, 397, 361, 323, 454, 389,  # jaw
        70, 63, 52, 66, 107, 336, 296, 282, 293, 300,  # brows
        168, 6, 195, 4, 240, 99, 2, 328, 460,  # nose
        33, 160, 158, 243, 153, 144, 463, 385, 387, 263, 373, 380,  # eyes
        61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91, 62, 81, 13, 311, 292, 318, 14, 88)),  # mouth
}


def correspondence(source: str, target: str) -> tuple[tuple[int, ...], ...] | None:
    """For each point of schema ``target``, the points of schema ``source`` whose mean it is
    (identity for one schema), or None when the two do not correspond."""
    if source == target:
        return None
    return CORRESPONDENCES.get((source, target))


def convert_points(kp, groups: tuple[tuple[int, ...], ...]):
    """(..., K, C) points of the source schema -> (..., K', C) of the target: x, y averaged over
    each group; a third column (visibility / score) is the group's minimum (a point is as
    labelled, or as sure, as its least one)."""
    kp = np.asarray(kp, np.float64)
    out = np.stack([kp[..., list(g), :].mean(-2) for g in groups], -2)
    if kp.shape[-1] > 2:
        out[..., 2:] = np.stack([kp[..., list(g), 2:].min(-2) for g in groups], -2)
    return out
FACE_SCHEMAS = frozenset(FACE_BY_COUNT.values())
DEFAULT_SIGMA = 0.05  # OKS falloff for keypoints without a published sigma


@dataclass(frozen=True)
class Schema:
    """K named keypoints. ``skeleton`` / ``flip_pairs``: index pairs (0-based); ``sigmas``: K
    OKS falloffs; ``eyes``: the two indices NME normalises by (None: the box diagonal)."""

    name: str
    keypoints: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    flip_pairs: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] = ()
    eyes: tuple[int, int] | None = None

    def __post_init__(self):
        k = len(self.keypoints)
        for field in ("skeleton", "flip_pairs"):
            for e in getattr(self, field):
                if len(e) != 2 or not all(0 <= int(i) < k for i in e):
                    raise ConfigError(f"schema {self.name!r}: {field} entry {list(e)} is not a pair of indices "
                                      f"below {k}")
        if len(self.sigmas) != k:
            raise ConfigError(f"schema {self.name!r}: {len(self.sigmas)} sigmas for {k} keypoints")
        if self.eyes is not None and (len(self.eyes) != 2 or not all(0 <= i < k for i in self.eyes)):
            raise ConfigError(f"schema {self.name!r}: eyes must be two keypoint indices")

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def is_face(self) -> bool:
        return self.name in FACE_SCHEMAS

    @property
    def flip_perm(self) -> list[int]:
        """Index map that swaps every left/right pair (identity elsewhere)."""
        perm = list(range(len(self)))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def to_dict(self) -> dict:
        """The JSON form stored in model-file configs."""
        d = asdict(self)
        d["keypoints"] = list(self.keypoints)
        for k in ("skeleton", "flip_pairs"):
            d[k] = [list(e) for e in getattr(self, k)]
        d["sigmas"], d["eyes"] = list(self.sigmas), list(self.eyes) if self.eyes is not None else None
        return d

    @classmethod
    def from_dict(cls, d: "dict | Schema") -> "Schema":
        if isinstance(d, Schema):
            return d
        unknown = set(d) - {"name", "keypoints", "skeleton", "flip_pairs", "sigmas", "eyes"}
        if unknown:
            raise ConfigError(f"unknown schema fields {sorted(unknown)}")
        return complete(d.get("name", "custom"), d)

    def __getitem__(self, key: str):
        raise TypeError(f"Schema is a dataclass: use schema.{key}")


def _pairs_by_name(names: list[str]) -> list[list[int]]:
    """left_x / right_x (also l_ / r_, Left / Right) name pairs."""
    pat = re.compile(r"^(left|right|l|r)([_\- ].*)$", re.I)
    index = {n.lower(): i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        m = pat.match(n)
        if m and m.group(1).lower() in ("left", "l"):
            other = ("right" if m.group(1).lower() == "left" else "r") + m.group(2).lower()
            if other in index:
                pairs.append([i, index[other]])
    return pairs


def complete(name: str, spec: dict) -> Schema:
    """A full schema from a partial spec (flip pairs by name, default sigmas)."""
    if "keypoints" not in spec or not spec["keypoints"]:
        raise ConfigError(f"schema {name!r} lists no keypoints")
    names = [str(n) for n in spec["keypoints"]]
    eyes = spec.get("eyes")
    pairs = spec.get("flip_pairs")
    return Schema(name, tuple(names), tuple(tuple(int(i) for i in e) for e in spec.get("skeleton") or []),
                  tuple(tuple(int(i) for i in p) for p in (pairs if pairs is not None else _pairs_by_name(names))),
                  tuple(float(v) for v in spec.get("sigmas") or [DEFAULT_SIGMA] * len(names)),
                  tuple(int(i) for i in eyes) if eyes is not None else None)


def builtin(name: str) -> Schema:
    if name not in BUILTIN:
        raise ConfigError(f"unknown keypoint schema {name!r}", hint=f"built in: {', '.join(BUILTIN)}")
    return complete(name, BUILTIN[name])


def resolve(schema: "str | dict | Schema") -> Schema:
    """A built-in name, a schema dict (a model file's, or a partial spec) or a Schema."""
    return builtin(schema) if isinstance(schema, str) else Schema.from_dict(schema)


def from_dataset(names: list[str], skeleton_1based: list | None, count: int) -> Schema:
    """The schema of a dataset file: known names / counts map to the built-ins (which carry
    flip pairs, eyes and sigmas); anything else becomes a user-defined schema."""
    if names:
        if len(names) != count:
            raise ConfigError(f"the category lists {len(names)} keypoint names but annotations have {count} points")
        for key in ("coco17", "crowdpose14"):
            if [n.lower() for n in names] == [n.lower() for n in BUILTIN[key]["keypoints"]]:
                return builtin(key)
        if [n.lower() for n in names] == ["head_top" if n == "head" else n for n in _CROWD_NAMES]:
            return builtin("crowdpose14")
        skel = [[a - 1, b - 1] for a, b in skeleton_1based or []]
        lower = [n.lower() for n in names]
        eyes = [lower.index("left_eye"), lower.index("right_eye")] if {"left_eye", "right_eye"} <= set(lower) else None
        return complete("custom", {"keypoints": names, "skeleton": skel, "eyes": eyes})
    if count in FACE_BY_COUNT:
        return builtin(FACE_BY_COUNT[count])
    return complete("custom", {"keypoints": [f"p{i}" for i in range(count)]})
