"""Losses per classification kind. targets: multiclass (B,) int64 — or, distilling, (B, C + 1)
float: a teacher's logits and the label index (-1: none); multilabel (B, C) float {0,1};
regression (B,) or (B, C) float; binned (B,) float values."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError


def bin_centers(bins: list) -> torch.Tensor:
    """bins = [low, high, n] -> (n,) centres of n equal bins over [low, high]."""
    lo, hi, n = float(bins[0]), float(bins[1]), int(bins[2])
    edges = torch.linspace(lo, hi, n + 1)
    return (edges[:-1] + edges[1:]) / 2


def value_to_bin(values: torch.Tensor, bins: list) -> torch.Tensor:
    lo, hi, n = float(bins[0]), float(bins[1]), int(bins[2])
    return ((values - lo) / (hi - lo) * n).floor().clamp(0, n - 1).long()


def expected_value(logits: torch.Tensor, bins: list) -> torch.Tensor:
    """(B, n) bin logits -> (B,) softmax-weighted mean of bin centres."""
    return logits.softmax(-1) @ bin_centers(bins).to(logits)


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
                      alpha: float) -> dict[str, torch.Tensor]:
    """Hinton et al.'s knowledge distillation: T² · KL(softmax(teacher / T) ‖ softmax(logits / T))
    (batch mean), plus ``alpha`` × cross-entropy on the images with a label (``labels`` >= 0),
    the KL weighted 1 - alpha then. logits, teacher (B, C); labels (B,) int64."""
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(logits.float() / t, -1), F.log_softmax(teacher.float() / t, -1), log_target=True,
                    reduction="batchmean") * t * t
    known = labels >= 0
    if not bool(known.any()):
        return {"loss": soft, "kd": soft.detach()}
    hard = F.cross_entropy(logits[known], labels[known])
    return {"loss": (1 - alpha) * soft + alpha * hard, "kd": soft.detach(), "ce": hard.detach()}


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, head: dict) -> dict[str, torch.Tensor]:
    kind = head.get("kind", "multiclass")
    if kind == "multiclass" and targets.dim() == 2:
        if targets.shape[1] != logits.shape[1] + 1:
            raise ConfigError(f"distillation targets have {targets.shape[1] - 1} classes, the model {logits.shape[1]}")
        return distillation_loss(logits, targets[:, :-1], targets[:, -1].long(), head.get("kd_temperature", 4.0),
                                 head.get("kd_alpha", 0.5))
    if kind == "multiclass":
        loss = F.cross_entropy(logits, targets.long(), label_smoothing=float(head.get("label_smoothing", 0.0)))
    elif kind == "multilabel":
        loss = F.binary_cross_entropy_with_logits(logits, targets.float())
    elif kind == "regression":
        pred = logits.squeeze(-1) if targets.ndim == 1 else logits
        fn = {"mse": F.mse_loss, "l1": F.l1_loss}.get(head.get("loss", "mse"))
        if fn is None:
            raise ConfigError(f"unknown regression loss {head.get('loss')!r}", hint="use mse or l1")
        loss = fn(pred, targets.float())
    elif kind == "binned":
        loss = F.cross_entropy(logits, value_to_bin(targets.float(), head["bins"]))
    else:
        raise ConfigError(f"unknown classification kind {kind!r}")
    return {"loss": loss}
