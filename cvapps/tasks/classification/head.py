"""Classification head: global average pool -> [Linear -> act] -> dropout -> Linear."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError

KINDS = ("multiclass", "multilabel", "regression", "binned")
_ACTS = {"relu": nn.ReLU, "hardswish": nn.Hardswish, "silu": nn.SiLU}


class ClassificationHead(nn.Module):
    """(B, C_in, h, w) last feature map -> logits (B, num_outputs), embedding (B, C_in).

    ``hidden`` adds the MLP layer of torchvision's MobileNetV3 classifier so its ImageNet
    weights load; parameter names: ``hidden`` and ``fc``.
    """

    def __init__(self, in_channels: int, num_outputs: int, hidden: int | None = None,
                 activation: str = "hardswish", dropout: float = 0.2):
        super().__init__()
        if num_outputs < 1:
            raise ConfigError(f"classification head needs num_outputs >= 1, got {num_outputs}")
        if activation not in _ACTS:
            raise ConfigError(f"unknown head activation {activation!r}", hint=f"one of {sorted(_ACTS)}")
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


def head_from_config(in_channels: int, head: dict) -> ClassificationHead:
    known = {"kind", "num_outputs", "hidden", "activation", "dropout", "label_smoothing", "loss", "bins"}
    unknown = set(head) - known
    if unknown:
        raise ConfigError(f"unknown classification head options {sorted(unknown)}", hint=f"known: {sorted(known)}")
    if head.get("kind", "multiclass") not in KINDS:
        raise ConfigError(f"unknown classification kind {head.get('kind')!r}", hint=f"one of {KINDS}")
    return ClassificationHead(in_channels, int(head["num_outputs"]), head.get("hidden"),
                              head.get("activation", "hardswish"), float(head.get("dropout", 0.2)))
