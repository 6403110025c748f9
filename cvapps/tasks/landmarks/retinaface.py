"""A single-stage face detector with five landmarks (RetinaFace, Deng et al. 2019, in the
MobileNet-0.25 form of biubug6/Pytorch_Retinaface) as a landmarks TaskModel: the whole image
in, every face's box, score and 5 points (schema face5) out. It is the default landmark model
and the default face-box source of the top-down landmark models.

Backbone features at strides 8/16/32 -> FPN (1x1 laterals, nearest x2 upsampling, 3x3
merges) -> one SSH context module per level (3x3 | 5x5 | 7x7 branches as stacked 3x3 convs,
concatenated, ReLU) -> per level 1x1 heads: 2 anchors x (2 class logits, 4 box deltas,
10 landmark deltas). Anchors: square, sides min_sizes[level] at each cell centre (stride
multiples); box / landmark coding with variances (0.1, 0.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_convert, nms

from ...backbones.mobilenet_v1 import conv_bn
from ...errors import ConfigError
from ...options import Options, opt
from ..base import TaskModel
from ..keypoints.postprocess import Keypoints
from ..keypoints.single_stage import SingleStageKeypoints


SMALL_FACE = 64  # extra test-time scales keep faces up to this side (input pixels at scale 1)


@dataclass
class FaceDetectorOptions(Options):
    """``conf``: minimum face score; ``iou``: NMS overlap; ``top_k``: candidates kept
    before NMS; ``max_det``: faces per image; ``min_sizes`` / ``steps``: anchor sides and
    strides per level; ``variances``: centre and size scales of the box coding."""

    what: ClassVar[str] = "face detector head"
    kind: str = opt("retinaface", choices=("retinaface",))
    channels: int = opt(64, low=8)
    conf: float = opt(0.5, low=0.0, high=1.0)
    iou: float = opt(0.4, low=0.0, high=1.0)
    top_k: int = opt(750, low=1)
    max_det: int = opt(300, low=1)
    min_sizes: list = opt([[16, 32], [64, 128], [256, 512]])
    steps: list = opt([8, 16, 32])
    variances: list = opt([0.1, 0.2])
    scales: list = opt([1.0])  # test-time scales (see FaceDetectorModel.infer)


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields (stacked 3x3
    convs sharing the first), channel split 1/2, 1/4, 1/4, concatenated."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv3X3 = conv_bn(cin, cout // 2, act=False)
        self.conv5X5_1 = conv_bn(cin, cout // 4)
        self.conv5X5_2 = conv_bn(cout // 4, cout // 4, act=False)
        self.conv7X7_2 = conv_bn(cout // 4, cout // 4)
        self.conv7x7_3 = conv_bn(cout // 4, cout // 4, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5), self.conv7x7_3(self.conv7X7_2(c5))], 1))


class FPN(nn.Module):
    def __init__(self, cins: list[int], cout: int):
        super().__init__()
        self.output1, self.output2, self.output3 = (conv_bn(c, cout, 1) for c in cins)
        self.merge1, self.merge2 = conv_bn(cout, cout), conv_bn(cout, cout)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


@dataclass
class FaceRaw:
    """loc (B, A, 4) box deltas, logits (B, A, 2) background/face, landmarks (B, A, 10)
    point deltas, anchors (A, 4) cx, cy, w, h input pixels (A over levels, cells, 2 sizes)."""

    loc: torch.Tensor
    logits: torch.Tensor
    landmarks: torch.Tensor
    anchors: torch.Tensor


class RetinaFaceHead(nn.Module):
    def __init__(self, cins: list[int], h: FaceDetectorOptions):
        super().__init__()
        c, a = h.channels, len(h.min_sizes[0])
        self.fpn = FPN(cins, c)
        self.ssh = nn.ModuleList(SSH(c, c) for _ in cins)
        self.cls = nn.ModuleList(nn.Conv2d(c, a * 2, 1) for _ in cins)
        self.box = nn.ModuleList(nn.Conv2d(c, a * 4, 1) for _ in cins)
        self.points = nn.ModuleList(nn.Conv2d(c, a * 10, 1) for _ in cins)
        self.min_sizes, self.steps = h.min_sizes, h.steps
        self._anchors: dict[tuple, torch.Tensor] = {}  # per (feature sizes, device): a video reuses one

    @staticmethod
    def _flat(t: torch.Tensor, k: int) -> torch.Tensor:
        return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, k)  # (B, h*w*A, k): cell-major, then anchor

    def anchors(self, sizes: list[tuple[int, int]], device) -> torch.Tensor:
        key = (tuple(sizes), str(device))
        if key not in self._anchors:
            self._anchors[key] = self._make_anchors(sizes, device)
        return self._anchors[key]

    def _make_anchors(self, sizes: list[tuple[int, int]], device) -> torch.Tensor:
        out = []
        for (fh, fw), step, mins in zip(sizes, self.steps, self.min_sizes):
            ys, xs = torch.meshgrid(torch.arange(fh, device=device), torch.arange(fw, device=device), indexing="ij")
            c = (torch.stack([xs, ys], -1).reshape(-1, 1, 2).float() + 0.5) * step  # (h*w, 1, 2)
            wh = torch.tensor(mins, dtype=torch.float32, device=device)[None, :, None].expand(c.shape[0], -1, 2)
            out.append(torch.cat([c.expand(-1, len(mins), 2), wh], -1).reshape(-1, 4))
        return torch.cat(out)

    def forward(self, feats: list[torch.Tensor]) -> FaceRaw:
        levels = [s(f) for s, f in zip(self.ssh, self.fpn(feats))]
        cat = lambda heads, k: torch.cat([self._flat(h(f), k) for h, f in zip(heads, levels)], 1)  # noqa: E731
        return FaceRaw(cat(self.box, 4), cat(self.cls, 2), cat(self.points, 10),
                       self.anchors([tuple(f.shape[-2:]) for f in levels], levels[0].device))


def decode(raw: FaceRaw, coder: BoxCoder) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> boxes (B, A, 4) xyxy, scores (B, A), points (B, A, 5, 2), input pixels. Boxes use
    torchvision's coder (variances v = weights 1/v); points are centre offsets scaled like
    the box centre."""
    a = raw.anchors.float()
    b, n = raw.loc.shape[:2]
    boxes = coder.decode_single(raw.loc.float().reshape(-1, 4), box_convert(a, "cxcywh", "xyxy").repeat(b, 1))
    pts = raw.landmarks.float().reshape(b, n, 5, 2)
    points = a[:, None, :2] + pts / coder.weights[0] * a[:, None, 2:]
    return boxes.reshape(b, n, 4), raw.logits.float().softmax(-1)[..., 1], points


class FaceDetectorModel(SingleStageKeypoints):
    """Mixed into the landmarks model class by ``mixed_class`` (so it stays the
    landmarks task's model: same spec, predictions, CLI)."""

    options: ClassVar[type[Options]] = FaceDetectorOptions
    finds: ClassVar[str] = "faces"
    points: ClassVar[int] = 5
    train_hint: ClassVar[str] = ("train a top-down landmark model (cvapps train landmarks): it crops this detector's "
                                 "faces by default")

    @classmethod
    def build_head(cls, config: dict, backbone) -> nn.Module:
        return RetinaFaceHead([f.channels for f in backbone.feature_info], FaceDetectorOptions.parse(config["head"]))

    def __init__(self, config, backbone, head):
        super().__init__(config, backbone, head)
        v = config["head"]["variances"]
        self.coder = BoxCoder((1 / v[0], 1 / v[0], 1 / v[1], 1 / v[1]))

    def forward_head(self, feats, input_hw=None) -> FaceRaw:
        return self.head(feats)

    def runtime_blocker(self, post: dict) -> str | None:
        if set(post.get("scales") or self.config["head"].get("scales", (1,))) - {1}:
            return ("test-time scales (the default for still images; --scales 1 for one pass) run the network at "
                    "other input sizes than an exported graph's")
        return None

    def infer(self, x: torch.Tensor, scales=None, **_) -> FaceRaw:
        """``scales`` (test-time, e.g. (1, 2)): also run on the input enlarged s times and
        keep that pass's anchors up to SMALL_FACE input pixels, for faces too small for the
        16-pixel anchors at scale 1; NMS in ``postprocess`` merges the passes."""
        raw = self(x)
        for s in sorted(set(scales or self.config["head"].get("scales", (1,))) - {1}):
            up = self(F.interpolate(x, scale_factor=float(s), mode="bilinear", align_corners=False))
            keep = up.anchors[:, 2] / s <= SMALL_FACE
            raw = FaceRaw(torch.cat([raw.loc, up.loc[:, keep]], 1), torch.cat([raw.logits, up.logits[:, keep]], 1),
                          torch.cat([raw.landmarks, up.landmarks[:, keep]], 1),
                          torch.cat([raw.anchors, up.anchors[keep] / s]))
        return raw

    def predict(self, inputs, batch_size: int = 16, precision: str = "fp32", conf: float | None = None,
                iou: float | None = None, scales=None, boxes=None, flip_test: bool = False) -> list[Keypoints]:
        """inputs: paths or RGB arrays -> one Keypoints (every face: box, score, 5 points) per
        input. ``conf`` / ``iou``: score threshold and NMS overlap (default: the config's);
        ``scales``: test-time scales, e.g. (1, 2) for tiny faces (see ``infer``)."""
        self.preprocessor(boxes)  # refuses boxes
        if flip_test:
            raise ConfigError("flip test averages a top-down model's crops; the face detector has none")
        return TaskModel.predict(self, inputs, batch_size, precision, conf=conf, iou=iou, scales=scales)

    @torch.no_grad()
    def postprocess(self, raw: FaceRaw | None, metas: list[dict], conf: float | None = None,
                    iou: float | None = None, **_) -> list[Keypoints]:
        h = self.config["head"]
        conf = h["conf"] if conf is None else conf
        iou = h["iou"] if iou is None else iou
        if raw is None:
            return [self.empty() for _ in metas]
        boxes, scores, points = decode(raw, self.coder)
        out = []
        for b, s, p, m in zip(boxes, scores, points, metas):
            keep = torch.nonzero(s > conf).flatten()
            keep = keep[s[keep].argsort(descending=True)[: h["top_k"]]]
            keep = keep[nms(b[keep], s[keep], iou)[: h["max_det"]]]
            sc = s[keep].cpu().numpy()
            out.append(self.found(p[keep].cpu().numpy(), np.repeat(sc[:, None], 5, 1), b[keep].cpu().numpy(), sc, m))
        return out

    def uncertainty(self, raw: FaceRaw, metas=None, kind: str = "confidence") -> torch.Tensor:
        """(B,) mean binary entropy (bits) of the 20 highest face scores."""
        return self.score_entropy(raw.logits.float().softmax(-1)[..., 1])

