"""Active-learning selection: strategies over per-image scores and embeddings."""

from .strategies import STRATEGIES, bald, entropy, hybrid, k_center_greedy, least_confidence, margin, rank, \
    random_order, variance

__all__ = ["STRATEGIES", "bald", "entropy", "hybrid", "k_center_greedy", "least_confidence", "margin", "rank",
           "random_order", "variance"]
