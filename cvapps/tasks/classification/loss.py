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


def keep_classes_loss(logits: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, columns: torch.Tensor,
                      temperature: float = 2.0) -> dict[str, torch.Tensor]:
    """Learning without forgetting (Li & Hoiem 2016) for one softmax over old + new classes.
    logits (B, C) over old + new; teacher (B, K): the frozen original's logits over its K
    classes, which are the student's ``columns`` (K,); targets (B,) a class index, or -1 for a
    negative image (none of the data's classes). Labelled rows: cross-entropy over all C plus
    T² · KL(teacher ‖ student over ``columns``); negative rows: T² · KL against the teacher's
    distribution placed in ``columns`` and 0 on the new classes — the only thing that teaches
    the new classes where they end. Each KL is averaged over its own rows, so the negatives'
    pull does not depend on their share of a batch (with the mean over all rows, 50 negatives
    beside 244 labelled images still left 38% of them called by a new class)."""
    t = float(temperature)
    log_q = F.log_softmax(teacher.float() / t, -1)
    known = targets >= 0

    def kl(log_p):  # per row KL(teacher ‖ student)
        return F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(-1)

    # labelled: KL over the old columns only (the new ones are the labels' business)
    kl_old = kl(F.log_softmax(logits[:, columns].float() / t, -1))
    # negative: the same distribution over every column, new ones 0 (0 · log 0 terms vanish)
    kl_all = kl(F.log_softmax(logits.float() / t, -1)[:, columns])
    kd = sum(kl[rows].mean() for kl, rows in ((kl_old, known), (kl_all, ~known)) if bool(rows.any())) * t * t
    if not bool(known.any()):
        return {"loss": kd, "kd": kd.detach()}
    ce = F.cross_entropy(logits[known].float(), targets[known].long())
    return {"loss": ce + kd, "ce": ce.detach(), "kd": kd.detach()}


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
