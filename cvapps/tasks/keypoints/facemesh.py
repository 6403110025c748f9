"""The FaceMesh head (MediaPipe face landmark model, Kartynnik et al. 2019) on the
``blazemesh`` encoder, as a top-down keypoint head (kind "facemesh"): 468 face points on a
192x192 face crop plus a face-presence score.

From the encoder's 6x6x128 map, two branches: mesh — a strided BlazeBlock, two BlazeBlocks,
1x1 to 32 + PReLU, a BlazeBlock, (dropout,) a 3x3 stride-3 conv to 3K values: (x, y, z) per
point in input pixels (z, relative depth, is not used); presence — a strided BlazeBlock, 1x1
to 32 + PReLU, a BlazeBlock, a 3x3 stride-3 conv to one logit. Trained as a regression head
(L1 / Wing on the points); its confidence is the presence probability."""

from __future__ import annotations

import torch
from torch import nn

from ...backbones.blaze import BlazeBlock, blaze_stage
from .heads import KEYPOINT_HEADS, KeypointRaw


def reduce(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.PReLU(cout))


@KEYPOINT_HEADS.decorator("facemesh")
class FaceMeshHead(nn.Module):
    """feat (B, C, h, w) (6x6 for a 192 crop) -> (points (B, K, 3) input pixels, presence
    logits (B,))."""

    def __init__(self, cin: int, k: int, dropout: float = 0.0, width: int = 128):
        super().__init__()
        self.k = k
        self.mesh = nn.Sequential(*blaze_stage(cin, width), reduce(width, 32), BlazeBlock(32, 32))
        self.dropout = nn.Dropout(dropout)
        self.mesh_out = nn.Conv2d(32, 3 * k, 3, 3)
        self.presence = nn.Sequential(*blaze_stage(cin, width, residual=0), reduce(width, 32), BlazeBlock(32, 32))
        self.presence_out = nn.Conv2d(32, 1, 3, 3)

    @classmethod
    def build(cls, backbone, h) -> "FaceMeshHead":
        return cls(backbone.feature_info[-1].channels, h.num_keypoints, h.dropout)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pts = self.mesh_out(self.dropout(self.mesh(feat))).mean((2, 3))  # (B, 3K): 1x1 for a 192 crop
        logit = self.presence_out(self.presence(feat)).mean((1, 2, 3))  # (B,)
        return pts.view(-1, self.k, 3), logit

    def keypoints(self, feats: list[torch.Tensor], hw: tuple[int, int]) -> KeypointRaw:
        pts, logit = self(feats[-1])
        return KeypointRaw(pts[..., :2], logit.sigmoid()[:, None].expand(-1, self.k))
