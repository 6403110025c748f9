"""Keypoint heads on backbone features: direct regression, deconvolution heatmaps, and a
cascade stage that refines each point from a local feature patch around it.

Every main head is registered by its kind (``KEYPOINT_HEADS``; MoveNet and FaceMesh heads in
their own modules) and has ``build(backbone, options)`` and ``keypoints(feats, input_hw) ->
KeypointRaw``, and may bring its own ``loss(raw, gt, weights, options, input_hw)``: a new head
kind is one class in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import roi_align

from ...backbones import Backbone
from ...errors import ConfigError
from ...ops.keypoints import decode_heatmaps
from ...registry import Registry

KEYPOINT_HEADS: Registry = Registry("keypoint head kind")


@dataclass
class KeypointRaw:
    """points (B, K, 2) input pixels (after the cascade when there is one); scores (B, K)
    in [0, 1] (heatmap peaks; 1 for regression); heatmaps (B, K, H/4, W/4) or None;
    coarse (B, K, 2) first-stage points of a cascade, else None; maps: a head's raw maps its
    loss needs (MoveNet; not exported), else None; classes (B, C): a head's per-instance class
    probabilities (the hand model's handedness; names in the config's ``instance_classes``)."""

    points: torch.Tensor
    scores: torch.Tensor
    heatmaps: torch.Tensor | None = None
    coarse: torch.Tensor | None = None
    maps: tuple | None = None
    classes: torch.Tensor | None = None


@KEYPOINT_HEADS.decorator("regression")
class RegressionHead(nn.Module):
    """Pooled last features (B, C) -> dropout -> Linear -> (B, K, 2) points as fractions of
    the crop (0..1, x then y). DeepPose / Sun et al.: no spatial decoding, just numbers.
    The dropout stays the MC-dropout source for uncertainty."""

    size_multiple = 1  # pooled features: any crop size

    def __init__(self, in_channels: int, k: int, dropout: float = 0.2):
        super().__init__()
        self.k = k
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, 2 * k)
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.zeros_(self.fc.bias)

    @classmethod
    def build(cls, backbone: Backbone, h) -> "RegressionHead":
        return cls(backbone.feature_info[-1].channels, h.num_keypoints, h.dropout)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        emb = feat.mean((2, 3))  # (B, C)
        return (self.fc(self.dropout(emb)) + 0.5).view(-1, self.k, 2)  # (B, K, 2)

    def keypoints(self, feats: list[torch.Tensor], hw: tuple[int, int]) -> KeypointRaw:
        frac = self(feats[-1])  # (B, K, 2) fractions of the crop
        pts = frac * torch.tensor([hw[1], hw[0]], dtype=frac.dtype, device=frac.device)
        return KeypointRaw(pts, torch.ones(pts.shape[:2], device=pts.device))


@KEYPOINT_HEADS.decorator("heatmap")
class HeatmapHead(nn.Module):
    """SimpleBaseline-style: 1x1 reduce, then k4/s2 deconvolutions (+BN+ReLU) from the last
    stride up to stride 4, then a 1x1 conv to K heatmaps (B, K, H/4, W/4)."""

    def __init__(self, in_channels: int, in_stride: int, k: int, channels: int = 128, out_stride: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        n_up = int(round(math.log2(in_stride / out_stride)))
        if n_up < 0 or 2**n_up * out_stride != in_stride:
            raise ConfigError(f"heatmap head needs a backbone stride that is a power-of-two multiple of "
                              f"{out_stride}, got {in_stride}")
        self.out_stride = out_stride
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                   nn.ReLU(inplace=True)]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout)
        self.final = nn.Conv2d(channels, k, 1)
        nn.init.normal_(self.final.weight, std=1e-3)
        nn.init.zeros_(self.final.bias)

    @classmethod
    def build(cls, backbone: Backbone, h) -> "HeatmapHead":
        last = backbone.feature_info[-1]
        return cls(last.channels, last.stride, h.num_keypoints, h.channels, dropout=h.dropout)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.final(self.dropout(self.up(feat)))  # (B, K, h, w)

    def keypoints(self, feats: list[torch.Tensor], hw: tuple[int, int]) -> KeypointRaw:
        hm = self(feats[-1])  # (B, K, h, w)
        points, scores = decode_heatmaps(hm.detach(), self.out_stride)
        points = points * torch.tensor([hw[1] / (hm.shape[-1] * self.out_stride),
                                        hw[0] / (hm.shape[-2] * self.out_stride)], device=points.device)
        return KeypointRaw(points, scores.clamp(0, 1), hm)


class CascadeRefiner(nn.Module):
    """Stage two of a cascade (Sun et al. CVPR 2013, on shared features): for every first
    estimate, RoI-align a ``patch`` x ``patch`` window of the stride-``feat_stride`` feature
    map centred on it (side = ``window`` x crop width), and regress a per-point offset.
    Offsets are fractions of the window, so the refinement range is bounded."""

    def __init__(self, in_channels: int, feat_stride: int, k: int, window: float = 0.2, patch: int = 5,
                 hidden: int = 128):
        super().__init__()
        self.k, self.window, self.patch, self.feat_stride = k, window, patch, feat_stride
        # GroupNorm: the patches of one batch are few and correlated; batch statistics would not transfer
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, 64, 1, bias=False), nn.GroupNorm(8, 64), nn.ReLU(inplace=True))
        self.shared = nn.Sequential(nn.Flatten(), nn.Linear(64 * patch * patch, hidden), nn.ReLU(inplace=True))
        self.embed = nn.Parameter(torch.zeros(k, hidden))  # which landmark this patch is for
        self.out = nn.Parameter(torch.zeros(k, hidden, 2))  # per-landmark offset regressor

    def forward(self, feat: torch.Tensor, points: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        """feat (B, C, h, w); points (B, K, 2) input pixels (detached first estimates) ->
        refined points (B, K, 2) input pixels."""
        b, k, _ = points.shape
        half = self.window * input_hw[1] / 2
        p = points.detach().reshape(-1, 2)  # (B*K, 2)
        rois = torch.cat([torch.arange(b, device=p.device, dtype=p.dtype).repeat_interleave(k)[:, None],
                          p - half, p + half], 1)  # (B*K, 5)
        f = self.reduce(feat)
        patches = roi_align(f, rois.to(f.dtype), self.patch, spatial_scale=1 / self.feat_stride, sampling_ratio=2,
                            aligned=True)  # (B*K, 64, P, P)
        h = self.shared(patches).view(b, k, -1) + self.embed  # (B, K, hidden)
        offset = torch.einsum("bkh,khd->bkd", torch.relu(h), self.out)  # (B, K, 2)
        return points.detach() + offset.tanh() * half


def cascade_feature_index(backbone: Backbone, stride: int = 8) -> int:
    """Index of the backbone feature closest to ``stride`` (finer preferred)."""
    strides = [f.stride for f in backbone.feature_info]
    return min(range(len(strides)), key=lambda i: (abs(math.log2(strides[i] / stride)), strides[i]))
