"""MoveNet (Google, 2021): a CenterNet-style single-person keypoint head on a MobileNetV2,
as a top-down keypoint head (head kind "movenet"); the converted MoveNet Lightning is the
default pose model.

Backbone features at strides 4/8/16/32 -> FPN (1x1 laterals, bilinear x2 upsampling with
half-pixel centres, depthwise-separable merges with ReLU) -> one stride-4 map -> four heads
(depthwise 3x3, 1x1 + ReLU, 1x1): person centre (1), keypoint regression from the centre
(2K), keypoint heatmaps (K), keypoint offsets (2K). Decoding (MoveNet's own, in torch): the
centre is the argmax of the centre heatmap weighted towards the crop centre; each keypoint is
the argmax of its heatmap divided by the distance to the point regressed from that centre
(+1.8 cells), refined by the offset at that cell (cvapps.ops.keypoints.decode_movenet).
Channel pairs are (y, x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...ops.keypoints import decode_movenet
from .heads import KEYPOINT_HEADS, KeypointRaw


def separable(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 (bias, no activation) -> pointwise 1x1 (bias) -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))


@KEYPOINT_HEADS.decorator("movenet")
class MoveNetHead(nn.Module):
    """feats: the backbone's maps; the last one at each of strides 4, 8, 16, 32 is used ->
    (centre (B, 1, H/4, W/4), regress (B, 2K, ..), heatmaps (B, K, ..), offsets (B, 2K, ..)),
    all logits / raw values."""

    def __init__(self, feature_info, k: int, fpn: tuple[int, ...] = (64, 32, 24), hidden: int = 96):
        super().__init__()
        strides = [f.stride for f in feature_info]
        missing = [s for s in (4, 8, 16, 32) if s not in strides]
        if missing:
            raise ConfigError(f"the MoveNet head needs backbone features at strides 4, 8, 16 and 32; "
                              f"the backbone has none at {missing}")
        self.index = [max(i for i, t in enumerate(strides) if t == s) for s in (4, 8, 16, 32)]
        c4, c8, c16, c32 = (feature_info[i].channels for i in self.index)
        self.lateral = nn.ModuleList([nn.Conv2d(c4, fpn[2], 1), nn.Conv2d(c8, fpn[1], 1), nn.Conv2d(c16, fpn[0], 1),
                                      nn.Conv2d(c32, fpn[0], 1)])
        self.fpn = nn.ModuleList([separable(fpn[0], fpn[1]), separable(fpn[1], fpn[2]), separable(fpn[2], fpn[2])])
        self.k = k
        self.heads = nn.ModuleDict({name: nn.Sequential(*separable(fpn[2], hidden), nn.Conv2d(hidden, n, 1))
                                    for name, n in (("centre", 1), ("heatmap", k), ("offset", 2 * k),
                                                    ("regress", 2 * k))})
        for name in ("centre", "heatmap"):  # start at p = 0.1 (CenterNet): the focal loss is sane from step one
            nn.init.constant_(self.heads[name][-1].bias, -2.19)

    @classmethod
    def build(cls, backbone, h) -> "MoveNetHead":
        return cls(backbone.feature_info, h.num_keypoints)

    def keypoints(self, feats: list[torch.Tensor], hw: tuple[int, int]) -> KeypointRaw:
        maps = self(feats)
        cells, scores, hm = decode_movenet(*maps)  # points in map cells
        stride = torch.tensor([hw[1] / hm.shape[-1], hw[0] / hm.shape[-2]], device=cells.device)
        return KeypointRaw(cells * stride, scores, hm, maps=maps)

    def loss(self, raw: KeypointRaw, gt: torch.Tensor, weights: torch.Tensor, options: dict,
             hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """gt (B, K, 2) crop pixels, weights (B, K) -> ``movenet_loss`` in map cells."""
        stride = torch.tensor([hw[1] / raw.heatmaps.shape[-1], hw[0] / raw.heatmaps.shape[-2]], device=gt.device)
        return movenet_loss(raw.maps, gt / stride, weights, float(options["sigma"]))

    outputs = ("centre", "regress", "heatmap", "offset")

    def merged(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The FPN's stride-4 map (B, 24, H/4, W/4) every head reads."""
        f4, f8, f16, f32 = (feats[i] for i in self.index)
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)  # noqa: E731
        x = self.fpn[0](up(self.lateral[3](f32)) + self.lateral[2](f16))
        x = self.fpn[1](up(x) + self.lateral[1](f8))
        return self.fpn[2](up(x) + self.lateral[0](f4))

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = self.merged(feats)
        return tuple(self.heads[n](x) for n in self.outputs)


def focal(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss summed over the maps ``mask`` (B, C) keeps, per
    positive: logits / target (B, C, h, w), target exactly 1 at the positives."""
    pos = target.eq(1).float() * mask[..., None, None]
    neg = (1 - target).pow(4) * (1 - pos) * mask[..., None, None]
    p = logits.float().sigmoid()
    loss = -(pos * (1 - p).pow(2) * F.logsigmoid(logits.float()) + neg * p.pow(2) * F.logsigmoid(-logits.float()))
    return loss.sum() / pos.sum().clamp_min(1)


def movenet_loss(maps: tuple[torch.Tensor, ...], cells: torch.Tensor, weights: torch.Tensor,
                 sigma: float) -> dict[str, torch.Tensor]:
    """CenterNet-style targets, one person per crop: maps (centre, regress, heatmap, offset)
    as MoveNetHead returns them; cells (B, K, 2) x, y of the points in map cells; weights
    (B, K), 0 = not labelled. Heatmaps and the centre map: focal loss on Gaussians (``sigma``
    cells) at the integer cell (floor) of each point and of the person's centre (the mean of
    its labelled points); offsets (point - its cell) and the regression from the centre cell:
    L1 in cells."""
    centre, regress, heatmap, offset = maps
    b, k, h, w = heatmap.shape
    idx = cells.floor().long()
    lab = (weights > 0) & (idx[..., 0] >= 0) & (idx[..., 0] < w) & (idx[..., 1] >= 0) & (idx[..., 1] < h)
    ix, iy = idx[..., 0].clamp(0, w - 1), idx[..., 1].clamp(0, h - 1)
    ys = torch.arange(h, device=cells.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=cells.device, dtype=torch.float32)[None, :]
    gauss = lambda y, x: torch.exp(-((xs - x[..., None, None]) ** 2 + (ys - y[..., None, None]) ** 2)  # noqa: E731
                                   / (2 * sigma**2))
    labf = lab.float()
    hm = focal(heatmap, gauss(iy.float(), ix.float()), labf)
    # the person's centre: the mean of its labelled points (what MoveNet's centre map peaks at)
    mean = (cells * labf[..., None]).sum(1) / labf.sum(1, keepdim=True).clamp_min(1)  # (B, 2)
    cx, cy = mean[:, 0].floor().long().clamp(0, w - 1), mean[:, 1].floor().long().clamp(0, h - 1)  # (B,)
    has = lab.any(1, keepdim=True).float()  # (B, 1): crops with a labelled point have a person
    ctr = focal(centre, gauss(cy[:, None].float(), cx[:, None].float()), has)
    n = labf.sum().clamp_min(1) * 2
    fi = (iy * w + ix)[:, :, None, None].expand(-1, -1, 2, 1)
    off = offset.float().flatten(2).view(b, k, 2, h * w).gather(3, fi)[..., 0]  # (B, K, (dy, dx))
    off_t = torch.stack([cells[..., 1] - iy, cells[..., 0] - ix], -1)
    off_l = ((off - off_t).abs() * labf[..., None]).sum() / n
    ci = (cy * w + cx)[:, None, None].expand(-1, 2 * k, 1)
    reg = regress.float().flatten(2).gather(2, ci)[..., 0].view(b, k, 2)  # at each crop's centre cell
    reg_t = torch.stack([cells[..., 1] - cy[:, None], cells[..., 0] - cx[:, None]], -1)
    reg_l = ((reg - reg_t).abs() * labf[..., None]).sum() / n
    total = hm + ctr + off_l + reg_l
    return {"loss": total, "main": hm.detach(), "centre": ctr.detach(), "offset": off_l.detach(),
            "regress": reg_l.detach()}
