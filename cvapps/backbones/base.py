"""Backbone contract: multi-scale features in order of increasing stride, described by
``feature_info``; stages for freezing; optional max-pool indices (VGG-style encoders)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from .layers import same_padding


@dataclass(frozen=True)
class FeatureSpec:
    channels: int
    stride: int
    name: str


class Backbone(nn.Module):
    """Wraps a ``nn.Sequential`` of named children (a torchvision model's own modules, so
    state-dict keys stay torchvision's) and taps the outputs of chosen children.

    forward(x: (B, 3, H, W)) -> list of (B, C_i, H/s_i, W/s_i), strides increasing.
    ``stages``: groups of child names, earliest first; ``stage:N`` freezing counts them.
    """

    def __init__(self, name: str, body: nn.Sequential, taps: list[str], stages: list[list[str]]):
        super().__init__()
        self.name = name
        self.body = body
        names = [n for n, _ in body.named_children()]
        missing = [n for s in stages for n in s if n not in names]
        if missing:
            raise ValueError(f"backbone {name}: unknown child names {missing}")
        self.stage_names = [list(s) for s in stages]
        self._set_taps(taps)
        self.feature_info = self._probe()

    def _set_taps(self, taps: list[str]) -> None:
        """Taps are child names ("18") or dotted paths inside a child ("14.conv.0": the output of
        that module, e.g. the expansion inside a MobileNetV2 block, as TF's SSD taps it)."""
        names = [n for n, _ in self.body.named_children()]
        for t in taps:
            try:
                self.body.get_submodule(t)
            except AttributeError:
                raise ConfigError(f"backbone {self.name}: no module {t!r} to tap",
                                  hint=f"taps are child names ({', '.join(names[:4])}, ...) or dotted paths inside "
                                       "them") from None
        self.taps = list(taps)
        self._nested = [t for t in taps if "." in t]
        self._last = max(names.index(t.split(".")[0]) for t in taps)

    def configure(self, taps: list[str] | None = None, tf_same: bool = False, bn_eps: float | None = None) -> None:
        """Options a pretrained model may need: other ``taps``; TensorFlow "SAME" padding on
        every strided conv (``tf_same``: TF-trained weights expect it); a BatchNorm epsilon
        (``bn_eps``; TF uses 1e-3, torchvision 1e-5). Parameter names do not change."""
        if taps:
            self._set_taps(list(taps))
        if tf_same:
            same_padding(self.body)
        if bn_eps is not None:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eps = float(bn_eps)
        self.feature_info = self._probe()

    @torch.no_grad()
    def _probe(self, size: int = 64) -> list[FeatureSpec]:
        was_training = self.training
        self.eval()
        feats = self.forward(torch.zeros(1, 3, size, size))
        self.train(was_training)
        info = [FeatureSpec(int(f.shape[1]), size // int(f.shape[-1]), t) for f, t in zip(feats, self.taps)]
        strides = [s.stride for s in info]
        if strides != sorted(strides):
            raise ValueError(f"backbone {self.name}: feature strides must not decrease, got {strides}")
        return info

    @property
    def out_channels(self) -> int:
        return self.feature_info[-1].channels

    def stages(self) -> list[nn.Module]:
        """Stage modules, earliest first (one nn.ModuleList per stage)."""
        return [nn.ModuleList(getattr(self.body, n) for n in names) for names in self.stage_names]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ShapeError(f"backbone {self.name} expects (B, 3, H, W), got {tuple(x.shape)}")
        got: dict[str, torch.Tensor] = {}
        hooks = [self.body.get_submodule(t).register_forward_hook(lambda m, i, o, t=t: got.__setitem__(t, o))
                 for t in self._nested]
        try:
            for i, (n, m) in enumerate(self.body.named_children()):
                x = m(x)
                got[n] = x
                if i == self._last:
                    break
        finally:
            for h in hooks:
                h.remove()
        return [got[t] for t in self.taps]

    def forward_with_pool_indices(self, x: torch.Tensor):
        """For encoders with max-pool layers (SegNet): returns (features, pools) where
        pools is a list of (indices (B,C,h,w) int64, pre-pool size (H,W)) per MaxPool2d."""
        pools: list[tuple[torch.Tensor, torch.Size]] = []
        out = []
        for n, m in self.body.named_children():
            for sub in (m if isinstance(m, nn.Sequential) else [m]):
                if isinstance(sub, nn.MaxPool2d):
                    size = x.shape[-2:]
                    x, idx = nn.functional.max_pool2d(
                        x, sub.kernel_size, sub.stride, sub.padding, sub.dilation, sub.ceil_mode, return_indices=True
                    )
                    pools.append((idx, size))
                else:
                    x = sub(x)
            if n in self.taps:
                out.append(x)
        return out, pools


def stages_at(names: list[str], taps: list[str]) -> list[list[str]]:
    """Child ``names`` split into stages, each ending at a tap (freezing's ``stage:N`` units)."""
    stages, start = [], 0
    for t in taps:
        end = names.index(t)
        stages.append(names[start : end + 1])
        start = end + 1
    return stages


def named_sequential(model: nn.Module, children: list[str], rename: dict[str, str] | None = None) -> nn.Sequential:
    """nn.Sequential over some of ``model``'s children, keeping their names."""
    rename = rename or {}
    return nn.Sequential(OrderedDict((rename.get(c, c), getattr(model, c)) for c in children))
