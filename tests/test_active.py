"""Selection strategies on hand-made probability vectors and a toy 2-D set."""

import math

import pytest
import torch

from cvapps.active import bald, entropy, hybrid, k_center_greedy, least_confidence, margin, rank, random_order, \
    variance

P = torch.tensor([[0.90, 0.05, 0.05],   # confident
                  [0.50, 0.45, 0.05],   # close top-2
                  [0.40, 0.30, 0.30],   # least confident, highest entropy
                  [0.60, 0.20, 0.20]])


def test_uncertainty_rankings():
    assert rank(least_confidence(P), 4) == [2, 1, 3, 0]
    assert rank(margin(P), 1) == [1]  # margin picks the closest top-2
    assert rank(entropy(P), 1) == [2]
    assert entropy(torch.tensor([[0.5, 0.5]]))[0] == pytest.approx(math.log(2))
    assert margin(P)[1] == pytest.approx(1 - 0.05)


def test_bald_zero_when_passes_agree_and_positive_when_they_disagree():
    agree = P.expand(5, 4, 3)
    assert torch.allclose(bald(agree), torch.zeros(4), atol=1e-6)
    disagree = torch.stack([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])
    assert bald(disagree)[0] == pytest.approx(math.log(2), abs=1e-5)


def test_variance_over_passes():
    preds = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [3.0, 3.0]]])  # (T=2, N=2, D=2)
    assert variance(preds).tolist() == [0.0, 1.0]


def test_core_set_picks_the_farthest_point_first():
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [-3.0, 0.0]])
    assert k_center_greedy(pts, 1, labelled=[0])[0] == 3
    assert k_center_greedy(pts, 2, labelled=[0]) == [3, 4]
    assert k_center_greedy(pts.half(), 2, labelled=[0]) == [3, 4]  # float16 embeddings
    assert k_center_greedy(pts, 1)[0] == 3  # nothing labelled: farthest from the mean


def test_hybrid_prefilters_by_uncertainty_then_diversifies():
    scores = torch.tensor([0.9, 0.89, 0.88, 0.1, 0.05])
    emb = torch.tensor([[0.0, 0.0], [0.01, 0.0], [4.0, 4.0], [9.0, 9.0], [-9.0, 0.0]])
    picks = hybrid(scores, emb, budget=2, k=1)  # candidates: the 2 most uncertain only
    assert sorted(picks) == [0, 1]
    picks = hybrid(scores, emb, budget=2, k=2)  # candidates 0, 1, 2, 3 -> diverse pair
    assert 3 in picks and 4 not in picks


def test_random_is_seeded():
    assert random_order(10, 3, seed=1) == random_order(10, 3, seed=1)
    assert len(set(random_order(10, 10))) == 10
