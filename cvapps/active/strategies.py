"""Selection strategies: rank uncertainty scores (cvapps.ops.uncertainty, re-exported here),
core-set and hybrid selection on embeddings. emb (N, D) pooled backbone embeddings (float16
is fine: distances are computed in float32 chunks, so memory is O(chunk x D) beyond the
inputs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ops.uncertainty import bald, entropy, least_confidence, margin, variance  # noqa: F401  (re-exported)

def rank(scores: torch.Tensor, budget: int) -> list[int]:
    """Indices of the ``budget`` highest scores, best first (ties: lower index first)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return np.argsort(-s, kind="stable")[:budget].tolist()  # (stable: equal scores keep index order)


def random_order(n: int, budget: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).permutation(n)[:budget].tolist()


def _min_dist(emb: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(N,) distance from each row of emb to its nearest centre, in float32 chunks."""
    out = torch.empty(emb.shape[0])
    c = centres.float()
    for s in range(0, emb.shape[0], chunk):
        out[s : s + chunk] = torch.cdist(emb[s : s + chunk].float(), c).min(1).values
    return out


FLOAT32_BYTES = 4 << 30  # float16 embeddings up to this size in float32 are converted once: each pick is then a GEMV


def k_center_greedy(emb: torch.Tensor, budget: int, labelled: list[int] | None = None,
                    with_distances: bool = False):
    """Core-set selection (Sener & Savarese): repeatedly take the point farthest from
    everything chosen or labelled. With nothing labelled, the first pick is the point
    farthest from the mean embedding. Returns indices in pick order (and, with
    ``with_distances``, each pick's distance to what was covered when it was taken).
    Each pick costs one pass over the embeddings (the distances to the newest centre):
    float32 embeddings (float16 ones up to FLOAT32_BYTES converted once) make it one
    matrix-vector product; larger float16 sets are converted chunk by chunk per pick."""
    n = emb.shape[0]
    if emb.dtype != torch.float32 and n * emb.shape[1] * 4 <= FLOAT32_BYTES:
        emb = emb.float()
    fast = emb.dtype == torch.float32
    sq = torch.cat([(c * c).sum(1) for c in emb.split(65536)]) if fast else None  # (N,) squared norms, chunked

    def to(centre: torch.Tensor) -> torch.Tensor:
        if not fast:
            return _min_dist(emb, centre)
        c = centre.reshape(-1).float()
        return (sq - 2 * (emb @ c) + c @ c).clamp_min_(0).sqrt_()

    if labelled:
        dist = _min_dist(emb, emb[labelled])
    else:
        dist = to(emb.mean(0, keepdim=True, dtype=torch.float32))
    dist[labelled or []] = -1
    picks: list[int] = []
    gaps: list[float] = []
    for _ in range(min(budget, n - len(labelled or []))):
        i = int(dist.argmax())
        picks.append(i)
        gaps.append(float(dist[i]))
        dist = torch.minimum(dist, to(emb[i]))
        dist[picks] = -1
    return (picks, gaps) if with_distances else picks


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
