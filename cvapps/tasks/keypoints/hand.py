"""The heads of MediaPipe's hand landmark model, as a top-down keypoint head (kind
"mediapipe_hand"): from the pooled encoder features, dense layers to the 21 hand points
(x, y, z in crop pixels; z, relative depth, is not used), a hand-presence logit (every
point's score) and a handedness logit: MediaPipe's score of "Left" on mirrored (selfie)
images, so the probability of the person's right hand in an ordinary photo — the config's
``instance_classes`` ["left", "right"] name classes 0 (1 - p) and 1 (p). MediaPipe's fourth
head (metric "world" points) is not kept."""

from __future__ import annotations

import torch
from torch import nn

from .heads import KEYPOINT_HEADS, KeypointRaw


@KEYPOINT_HEADS.decorator("mediapipe_hand")
class HandHead(nn.Module):
    """feat (B, C, h, w) -> (points (B, K, 3) crop pixels, presence logits (B,), handedness
    logits (B,))."""

    size_multiple = 1  # pooled features

    def __init__(self, cin: int, k: int, dropout: float = 0.0):
        super().__init__()
        self.k = k
        self.dropout = nn.Dropout(dropout)
        self.points = nn.Linear(cin, 3 * k)
        self.presence = nn.Linear(cin, 1)
        self.handedness = nn.Linear(cin, 1)

    @classmethod
    def build(cls, backbone, h) -> "HandHead":
        return cls(backbone.feature_info[-1].channels, h.num_keypoints, h.dropout)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        emb = feat.mean((2, 3))
        return self.points(self.dropout(emb)).view(-1, self.k, 3), self.presence(emb)[:, 0], \
            self.handedness(emb)[:, 0]

    def keypoints(self, feats: list[torch.Tensor], hw: tuple[int, int]) -> KeypointRaw:
        pts, presence, handed = self(feats[-1])
        p = handed.sigmoid()
        return KeypointRaw(pts[..., :2], presence.sigmoid()[:, None].expand(-1, self.k),
                           classes=torch.stack([1 - p, p], 1))
