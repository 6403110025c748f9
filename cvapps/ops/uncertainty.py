"""Uncertainty scores, "higher = more worth labelling". Shapes: probs (N, C) class
probabilities; mc (T, N, C) probabilities from T stochastic (MC-dropout) passes; preds
(T, N, D) regression / keypoint outputs from T passes. Task models score with these; the
active-learning strategies rank with them."""

from __future__ import annotations

import torch

_EPS = 1e-12


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,) 1 - max probability."""
    return 1 - probs.max(1).values


def margin(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,) 1 - (p_top1 - p_top2): the closest top-2 scores highest."""
    top = probs.topk(min(2, probs.shape[1]), dim=1).values
    second = top[:, 1] if top.shape[1] > 1 else torch.zeros_like(top[:, 0])
    return 1 - (top[:, 0] - second)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N,) predictive entropy in nats."""
    return -(probs * probs.clamp_min(_EPS).log()).sum(1)


def bald(mc: torch.Tensor) -> torch.Tensor:
    """(T, N, C) -> (N,) mutual information H[mean_t p_t] - mean_t H[p_t] (Houlsby et al.);
    zero when all passes agree."""
    mean = mc.mean(0)
    return entropy(mean) - torch.stack([entropy(p) for p in mc]).mean(0)


def variance(preds: torch.Tensor) -> torch.Tensor:
    """(T, N, D) -> (N,) predictive variance over the T passes, averaged over outputs."""
    return preds.float().var(0, unbiased=False).reshape(preds.shape[1], -1).mean(1)
