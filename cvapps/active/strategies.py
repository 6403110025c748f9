"""Selection strategies. Uncertainty scores are "higher = more worth labelling".

Shapes: probs (N, C) class probabilities; mc (T, N, C) probabilities from T stochastic
(MC-dropout) passes; preds (T, N, D) regression/keypoint outputs from T passes;
emb (N, D) pooled backbone embeddings (float16 is fine: distances are computed in float32
chunks, so memory is O(chunk x D) beyond the inputs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def rank(scores: torch.Tensor, budget: int) -> list[int]:
    """Indices of the ``budget`` highest scores, best first (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return order[:budget]


def random_order(n: int, budget: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).permutation(n)[:budget].tolist()


def _min_dist(emb: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(N,) distance from each row of emb to its nearest centre, in float32 chunks."""
    out = torch.empty(emb.shape[0])
    c = centres.float()
    for s in range(0, emb.shape[0], chunk):
        out[s : s + chunk] = torch.cdist(emb[s : s + chunk].float(), c).min(1).values
    return out


def k_center_greedy(emb: torch.Tensor, budget: int, labelled: list[int] | None = None) -> list[int]:
    """Core-set selection (Sener & Savarese): repeatedly take the point farthest from
    everything chosen or labelled. With nothing labelled, the first pick is the point
    farthest from the mean embedding. Returns indices in pick order."""
    n = emb.shape[0]
    if labelled:
        dist = _min_dist(emb, emb[labelled])
    else:
        dist = _min_dist(emb, emb.float().mean(0, keepdim=True))
    dist[labelled or []] = -1
    picks: list[int] = []
    for _ in range(min(budget, n - len(labelled or []))):
        i = int(dist.argmax())
        picks.append(i)
        dist = torch.minimum(dist, _min_dist(emb, emb[i : i + 1]))
        dist[picks] = -1
    return picks


def hybrid(scores: torch.Tensor, emb: torch.Tensor, budget: int, k: int = 5,
           labelled: list[int] | None = None) -> list[int]:
    """Uncertainty pre-filter to the top k x budget, then core-set among them for diversity."""
    pool = rank(scores, k * budget)
    lab = emb[labelled] if labelled else None
    sub = emb[pool] if lab is None else torch.cat([emb[pool], lab])
    chosen = k_center_greedy(sub, budget, list(range(len(pool), len(sub))) if lab is not None else None)
    return [pool[i] for i in chosen]


@dataclass(frozen=True)
class Strategy:
    name: str
    needs: str  # "probs" | "mc" | "mc_regression" | "embeddings" | "probs+embeddings" | "none"
    doc: str


STRATEGIES = {s.name: s for s in [
    Strategy("random", "none", "uniform random order (the baseline)"),
    Strategy("least_confidence", "probs", "1 - max class probability"),
    Strategy("margin", "probs", "closest top-2 class probabilities first"),
    Strategy("entropy", "probs", "highest predictive entropy first"),
    Strategy("bald", "mc", "MC-dropout mutual information (class outputs)"),
    Strategy("variance", "mc_regression", "MC-dropout predictive variance (regression / keypoints)"),
    Strategy("coreset", "embeddings", "k-centre greedy on pooled backbone embeddings"),
    Strategy("hybrid", "probs+embeddings", "entropy pre-filter to k x budget, then core-set"),
]}
