"""Classification head: global average pool -> [Linear -> act] -> dropout -> Linear, and
its typed options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...errors import ConfigError
from ...options import Options, opt

KINDS = ("multiclass", "multilabel", "regression", "binned", "embedding")
_ACTS = {"relu": nn.ReLU, "hardswish": nn.Hardswish, "silu": nn.SiLU}


@dataclass
class ClassifyHeadOptions(Options):
    """``kind``: multiclass (softmax + CE) | multilabel (sigmoid + BCE) | regression (MSE / L1)
    | binned (softmax over ``bins`` = [low, high, n], expected value) | embedding (the outputs
    are a descriptor, e.g. a face's identity: compared by distance, not trained by cvapps's
    losses); ``hidden``: an MLP
    layer (MobileNetV3's ImageNet classifier has one)."""

    what: ClassVar[str] = "classification head"
    kind: str = opt("multiclass", choices=KINDS)
    num_outputs: int = opt(1, low=1)
    hidden: int | None = opt(None, low=1)
    activation: str = opt("hardswish", choices=tuple(_ACTS))
    dropout: float = opt(0.2, low=0.0, high=0.95)
    label_smoothing: float = opt(0.0, low=0.0, high=0.95)
    loss: str = opt("mse", choices=("mse", "l1"))
    bins: list | None = None
    # distillation (targets that are a teacher's logits, cvapps distill): softening temperature
    # and the weight of the cross-entropy on the images that also have a label
    kd_temperature: float = opt(4.0, low=0.0, low_open=True)
    kd_alpha: float = opt(0.5, low=0.0, high=1.0)

    def validate(self) -> None:
        if self.label_smoothing is None:
            self.label_smoothing = 0.0
        if self.kind == "binned":
            b = self.bins
            if not b or len(b) != 3 or not float(b[1]) > float(b[0]) or int(b[2]) < 2:
                raise ConfigError(f"binned regression needs --bins LOW,HIGH,N (HIGH > LOW, N >= 2), got {b}")
            self.bins = [float(b[0]), float(b[1]), int(b[2])]
            self.num_outputs = int(b[2])
        if self.kind == "regression":
            self.num_outputs = 1


class ClassificationHead(nn.Module):
    """(B, C_in, h, w) last feature map -> logits (B, num_outputs), embedding (B, C_in).

    ``hidden`` adds the MLP layer of torchvision's MobileNetV3 classifier so its ImageNet
    weights load; parameter names: ``hidden`` and ``fc``.
    """

    def __init__(self, in_channels: int, num_outputs: int, hidden: int | None = None,
                 activation: str = "hardswish", dropout: float = 0.2):
        super().__init__()
        width = in_channels
        if hidden:
            self.hidden = nn.Linear(in_channels, hidden)
            self.act = _ACTS[activation]()
            width = hidden
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_outputs)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = feat.mean(dim=(2, 3))  # (B, C_in)
        x = self.act(self.hidden(emb)) if hasattr(self, "hidden") else emb
        return self.fc(self.dropout(x)), emb
