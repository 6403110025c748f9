"""MediaPipe's palm detector (BlazePalm, full) as the pose task's single-stage model (head kind
``blazepalm``): the whole image letterboxed to 192x192 in, every palm's box, score and 7 points
(schema palm7: wrist, the four finger MCPs, thumb CMC and MCP) out. It is the hand landmark
model's default box source: ``instance_frames`` turns a palm into MediaPipe's rotated hand crop.

Head: the ``blazepalm`` encoder's stride-32 map upsampled (bilinear, half-pixel) into the
stride-16 map (1x1 conv + PReLU, added), two BlazeBlocks, then the same into stride 8; per
level 1x1 convs give a logit and 18 numbers (box cx, cy, w, h and 7 x, y offsets) per anchor:
2 anchors per cell at stride 8, 6 at stride 16 (2016 at 192 px). MediaPipe's anchors have
a fixed size (the input), so an offset is input pixels x input / ``box_scale``. Detections
scored >= ``conf`` merge by weighted NMS (MediaPipe's: each cluster of IoU > ``iou`` is the
score-weighted mean of its boxes and points, scored by its best)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from ...backbones.blaze import BlazeBlock
from ...data.transforms import Letterbox
from ...options import Options, opt
from ...ops.keypoints import crop_affine, invert_affine, warp
from ..base import TaskModel
from ..keypoints.postprocess import Keypoints
from ..keypoints.single_stage import SingleStageKeypoints


@dataclass
class PalmOptions(Options):
    """``conf``: minimum palm score; ``iou``: weighted-NMS overlap; ``max_det``: palms per
    image; ``anchors``: per cell at strides 8 and 16; ``box_scale``: the offsets' scale
    (MediaPipe's x/y/w/h_scale); ``shift`` / ``rotation_points``: the hand crop from a palm
    (centre moved ``shift`` palm heights towards the fingers, upright from the first point to
    the second)."""

    what: ClassVar[str] = "palm detector head"
    kind: str = opt("blazepalm", choices=("blazepalm",))
    num_keypoints: int = opt(7, low=1)
    conf: float = opt(0.5, low=0.0, high=1.0)
    iou: float = opt(0.3, low=0.0, high=1.0)
    max_det: int = opt(6, low=1)
    anchors: list = opt([2, 6])
    box_scale: float = opt(192.0, low=0.0, low_open=True)
    shift: float = opt(0.5)
    scale: float = opt(1.3, low=0.0, low_open=True)
    rotation_points: list = opt([0, 2])


@dataclass
class PalmRaw:
    """regress (B, A, 4 + 2K) box cx, cy, w, h and point offsets (input pixels x input /
    box_scale), logits (B, A), anchors (A, 2) cell centres in input pixels."""

    regress: torch.Tensor
    logits: torch.Tensor
    anchors: torch.Tensor


class PalmHead(nn.Module):
    def __init__(self, cins: list[int], h: PalmOptions):
        super().__init__()
        c8, c16, c32 = cins
        a8, a16 = h.anchors
        n = 4 + 2 * h.num_keypoints
        self.up16 = nn.Sequential(nn.Conv2d(c32, c16, 1), nn.PReLU(c16))
        self.blocks16 = nn.Sequential(BlazeBlock(c16, c16, 1, 5), BlazeBlock(c16, c16, 1, 5))
        self.cls16, self.reg16 = nn.Conv2d(c16, a16, 1), nn.Conv2d(c16, a16 * n, 1)
        self.up8 = nn.Sequential(nn.Conv2d(c16, c8, 1), nn.PReLU(c8))
        self.blocks8 = nn.Sequential(BlazeBlock(c8, c8, 1, 5), BlazeBlock(c8, c8, 1, 5))
        self.cls8, self.reg8 = nn.Conv2d(c8, a8, 1), nn.Conv2d(c8, a8 * n, 1)
        self.per_cell, self.n = (a8, a16), n
        self._anchors: dict[tuple, torch.Tensor] = {}

    def anchors(self, sizes: list[tuple[int, int]], strides: list[int], device) -> torch.Tensor:
        key = (tuple(sizes), str(device))
        if key not in self._anchors:
            out = []
            for (fh, fw), s, a in zip(sizes, strides, self.per_cell):
                ys, xs = torch.meshgrid(torch.arange(fh, device=device), torch.arange(fw, device=device), indexing="ij")
                c = (torch.stack([xs, ys], -1).reshape(-1, 1, 2).float() + 0.5) * s  # cell-major, then anchor
                out.append(c.expand(-1, a, 2).reshape(-1, 2))
            self._anchors[key] = torch.cat(out)
        return self._anchors[key]

    def forward(self, feats: list[torch.Tensor], input_hw: tuple[int, int]) -> PalmRaw:
        f8, f16, f32 = feats
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)  # noqa: E731
        flat = lambda t, k: t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, k)  # noqa: E731
        x16 = self.blocks16(f16 + self.up16(up(f32)))  # the file's order: level 16's outputs first
        cls16, reg16 = flat(self.cls16(x16), 1), flat(self.reg16(x16), self.n)
        x8 = self.blocks8(f8 + self.up8(up(x16)))
        logits = torch.cat([flat(self.cls8(x8), 1), cls16], 1)[..., 0]  # anchors: stride 8's, then 16's
        reg = torch.cat([flat(self.reg8(x8), self.n), reg16], 1)
        strides = [input_hw[1] // x8.shape[-1], input_hw[1] // x16.shape[-1]]
        return PalmRaw(reg, logits, self.anchors([tuple(x8.shape[-2:]), tuple(x16.shape[-2:])], strides, x8.device))


def decode_palms(raw: PalmRaw, unit: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> boxes (B, A, 4) xyxy, scores (B, A), points (B, A, K, 2), input pixels; ``unit``:
    input pixels per offset unit (input / box_scale)."""
    r = raw.regress.float() * unit
    c = raw.anchors.float()
    cxy, wh = r[..., :2] + c, r[..., 2:4]
    boxes = torch.cat([cxy - wh / 2, cxy + wh / 2], -1)
    points = r[..., 4:].reshape(*r.shape[:2], -1, 2) + c[:, None]
    return boxes, raw.logits.float().clamp(-100, 100).sigmoid(), points


def weighted_nms(boxes: torch.Tensor, scores: torch.Tensor, points: torch.Tensor, iou: float,
                 max_det: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MediaPipe's weighted NMS: boxes (N, 4), scores (N,), points (N, K, 2) -> the merged
    (M, 4), (M,), (M, K, 2), best first: each cluster (IoU > ``iou`` with its best remaining
    detection) becomes the score-weighted mean of its boxes and points, scored by the best."""
    order = scores.argsort(descending=True)
    boxes, scores, points = boxes[order], scores[order], points[order]
    out_b, out_s, out_p = [], [], []
    rest = torch.arange(len(scores))
    while len(rest) and len(out_s) < max_det:
        ov = box_iou(boxes[rest[:1]], boxes[rest])[0].nan_to_num(0.0)
        ov[0] = 1.0  # the best is in its own cluster even when degenerate (no area)
        group, rest_next = rest[ov > iou], rest[ov <= iou]
        w = scores[group][:, None]
        out_b.append((boxes[group] * w).sum(0) / w.sum())
        out_p.append((points[group] * w[..., None]).sum(0) / w.sum())
        out_s.append(scores[rest[0]])
        rest = rest_next
    if not out_s:
        return boxes[:0], scores[:0], points[:0]
    return torch.stack(out_b), torch.stack(out_s), torch.stack(out_p)


def hand_frames(boxes: np.ndarray, points: np.ndarray, shift: float = 0.5, scale: float = 1.3,
                axis: tuple[int, int] = (0, 2)) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's hand crop from palms (PalmDetectionDetectionToRoi): boxes (N, 4) xyxy,
    points (N, K, 2) -> (square boxes (N, 4) of ``scale`` x the palm's longer side, its centre
    moved ``shift`` palm heights along the hand towards the fingers; rolls (N,) radians,
    clockwise, 0 when the line from point ``axis[0]`` (wrist) to ``axis[1]`` (middle finger
    MCP) points up)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(b):
        return b, np.zeros(0)
    p = np.asarray(points, np.float64).reshape(len(b), -1, 2)
    d = p[:, axis[1]] - p[:, axis[0]]
    roll = np.arctan2(d[:, 1], d[:, 0]) + np.pi / 2
    roll = (roll + np.pi) % (2 * np.pi) - np.pi
    h = b[:, 3] - b[:, 1]
    cx = (b[:, 0] + b[:, 2]) / 2 + shift * h * np.sin(roll)
    cy = (b[:, 1] + b[:, 3]) / 2 - shift * h * np.cos(roll)
    half = scale * np.maximum(b[:, 2] - b[:, 0], h) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1), roll


@dataclass(frozen=True)
class CentredLetterbox(Letterbox):
    """The whole image fitted, centred, into the input as MediaPipe's ImageToTensor does with
    keep_aspect_ratio: a bilinear warp taking pixel indices corner to corner (not pixel
    centres: the image lands 0.5 (1 - scale) input pixels right / down of ours), zero border;
    meta "inv" (2, 3) maps input pixels back as MediaPipe does (normalised coordinates).
    Measured: MediaPipe's very palms (46 of 46 on the shared photos, scores within 3e-6)."""

    def prepare(self, image: np.ndarray, source: str = "", frame: int | None = None) -> tuple[torch.Tensor, dict]:
        h, w = image.shape[:2]
        m = crop_affine(np.array([0, 0, w, h], np.float64), self.hw, 1.0)
        x = torch.from_numpy(np.ascontiguousarray(warp(image, m, self.hw, by_index=True).transpose(2, 0, 1)))
        return x, {"width": w, "height": h, "scale_xy": (m[0, 0], m[1, 1]), "inv": invert_affine(m)}


class PalmDetectorModel(SingleStageKeypoints):
    """Mixed into the pose model class by ``mixed_class``."""

    options: ClassVar[type[Options]] = PalmOptions
    finds: ClassVar[str] = "palms"
    train_hint: ClassVar[str] = ("fine-tune the hand landmark model (cvapps train pose --weights hand21.mediapipe); "
                                 "it crops this detector's palms")

    @classmethod
    def build_head(cls, config: dict, backbone) -> nn.Module:
        return nn.ModuleDict({"main": PalmHead([f.channels for f in backbone.feature_info],
                                               PalmOptions.parse(config["head"]))})

    def forward_head(self, feats, input_hw=None) -> PalmRaw:
        return self.head["main"](feats, tuple(input_hw or self.input_hw))

    def forward(self, x: torch.Tensor) -> PalmRaw:
        return self.forward_head(self.forward_features(x), tuple(x.shape[-2:]))

    def predict(self, inputs, batch_size: int = 16, precision: str = "fp32", conf: float | None = None,
                boxes=None, **_) -> list[Keypoints]:
        """inputs: paths or RGB arrays -> one Keypoints (every palm: box, score, 7 points) per
        input; ``conf``: the palm score needed (default: the config's)."""
        self.preprocessor(boxes)  # refuses boxes
        return TaskModel.predict(self, inputs, batch_size, precision, conf=conf)

    def preprocessor(self, boxes=None) -> CentredLetterbox:
        super().preprocessor(boxes)  # refuses boxes
        pre = self.config["preprocessing"]
        return CentredLetterbox(tuple(pre["mean"]), tuple(pre["std"]), tuple(pre["input_size"]), fill=0)

    def instance_frames(self, boxes: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The hand crops of palms (see ``hand_frames``): a top-down model on this detector's
        boxes crops these."""
        h = self.config["head"]
        return hand_frames(boxes, points, h["shift"], h["scale"], tuple(h["rotation_points"]))

    @torch.no_grad()
    def postprocess(self, raw: PalmRaw | None, metas: list[dict], conf: float | None = None,
                    **_) -> list[Keypoints]:
        h = self.config["head"]
        conf = h["conf"] if conf is None else conf
        if raw is None:
            return [self.empty() for _ in metas]
        boxes, scores, points = decode_palms(raw, self.input_hw[1] / h["box_scale"])
        out = []
        for b, s, p, m in zip(boxes, scores, points, metas):
            keep = s >= conf
            b, s, p = weighted_nms(b[keep], s[keep], p[keep], h["iou"], h["max_det"])
            sc = s.cpu().numpy()
            # unclipped: a palm at the border still frames its whole hand (as in MediaPipe)
            out.append(self.found(p.cpu().numpy(), np.repeat(sc[:, None], p.shape[1], 1), b.cpu().numpy(), sc, m,
                                  clip=False))
        return out

    def uncertainty(self, raw: PalmRaw, metas=None, kind: str = "confidence") -> torch.Tensor:
        """(B,) mean binary entropy (bits) of the 20 highest palm scores."""
        return self.score_entropy(raw.logits.float().sigmoid())
