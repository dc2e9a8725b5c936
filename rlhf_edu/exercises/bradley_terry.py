"""Exercise checkers of chapter 1 (rewards from preferences: Bradley-Terry).

- ``check_bt_prob(fn)``: ``fn(r_a, r_b)`` is :math:`P(a \\succ b) = \\sigma(r_a - r_b)`, elementwise with
  broadcasting, exact (no NaN, no overflow) for reward gaps of +-1e4. Reference:
  ``rlhf_edu.numpy.bradley_terry_prob``.
- ``check_bt_loss(fn)``: ``fn(r_chosen, r_rejected)`` is the per-pair loss
  :math:`-\\log\\sigma(r_{chosen} - r_{rejected})`, finite for margins of +-1e4. Reference:
  ``rlhf_edu.numpy.bradley_terry_loss``.
- ``check_bt_loss_grad(fn)``: ``fn(r_chosen, r_rejected)`` returns ``{"r_chosen": ..., "r_rejected": ...}``,
  the gradient of the summed loss with respect to each reward. Reference:
  ``rlhf_edu.numpy.bradley_terry_loss_grad``.
- ``check_ranking_to_pairs(fn)``: ``fn(ranking)`` turns a best-first ranking of K item ids into
  ``(winners, losers, weights)``: every pair of positions i < j in the order (0, 1), (0, 2), ..., (1, 2), ...,
  each weighted 1 / C(K, 2); a repeated id raises ``ValueError``. Reference:
  ``rlhf_edu.numpy.ranking_to_pairs``.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.preferences import (
    bradley_terry_loss,
    bradley_terry_loss_grad,
    bradley_terry_prob,
    ranking_to_pairs,
)

__all__ = ["check_bt_prob", "check_bt_loss", "check_bt_loss_grad", "check_ranking_to_pairs"]

_EXTREME = (np.array([1e4, -1e4, 800.0, -800.0]), np.array([-1e4, 1e4, 0.0, 0.0]))


def _random_rewards(rng):
    n = int(rng.integers(1, 8))
    scale = float(10.0 ** rng.uniform(-1, 1.5))
    return (rng.normal(size=n) * scale, rng.normal(size=n) * scale), {}


def _random_matrix_rewards(rng):
    r = rng.normal(size=int(rng.integers(2, 6))) * 3
    return (r[:, None], r[None, :]), {}  # every pairwise win probability at once (broadcasting)


def _random_prob_case(rng):
    return _random_matrix_rewards(rng) if rng.random() < 0.3 else _random_rewards(rng)


check_bt_prob = make_checker(
    "bt_prob",
    reference=bradley_terry_prob,
    edge_cases=[
        ((np.array(0.0), np.array(0.0)), {}),  # a tie: 1/2
        ((np.array([1.2]), np.array([0.4])), {}),  # the chapter's worked example: sigma(0.8)
        (_EXTREME, {}),
    ],
    random_case=_random_prob_case,
    rtol=1e-9,
    atol=1e-12,
    hint="P(a > b) = 1 / (1 + exp(-(r_a - r_b))); exp(r_a) / (exp(r_a) + exp(r_b)) is the same number on paper "
    "but inf / inf = NaN in floating point for rewards of 1e4; np.logaddexp(0, -d) is -log sigma(d)",
)


check_bt_loss = make_checker(
    "bt_loss",
    reference=bradley_terry_loss,
    edge_cases=[
        ((np.array([1.0, 0.0]), np.array([0.0, 0.0])), {}),  # log(1 + e^-1) = 0.3133 and log 2
        ((np.array([1.2]), np.array([0.4])), {}),
        (_EXTREME, {}),  # loss 0 and 2e4, never inf
    ],
    random_case=_random_rewards,
    rtol=1e-9,
    atol=1e-12,
    hint="loss = -log sigma(r_chosen - r_rejected) = log(1 + exp(-(r_chosen - r_rejected))) = "
    "np.logaddexp(0, -(r_chosen - r_rejected)); the CHOSEN reward comes first",
)


check_bt_loss_grad = make_checker(
    "bt_loss_grad",
    reference=bradley_terry_loss_grad,
    edge_cases=[
        ((np.array([0.0]), np.array([0.0])), {}),  # -1/2 and +1/2
        ((np.array([1.2]), np.array([0.4])), {}),
        (_EXTREME, {}),
    ],
    random_case=_random_rewards,
    rtol=1e-9,
    atol=1e-12,
    hint="with d = r_chosen - r_rejected, d loss / d r_chosen = -sigma(-d) = -(1 - sigma(d)) and "
    "d loss / d r_rejected = +sigma(-d); return a dict with the keys 'r_chosen' and 'r_rejected'",
)


def _random_ranking(rng):
    k = int(rng.integers(2, 8))
    return (rng.permutation(20)[:k],), {}


check_ranking_to_pairs = make_checker(
    "ranking_to_pairs",
    reference=ranking_to_pairs,
    edge_cases=[
        ((np.array([0, 2, 1]),), {}),  # the notes' y1 > y3 > y2
        ((np.array([5, 3]),), {}),  # K = 2: one pair of weight 1
        ((np.array([3, 1, 0, 2]),), {}),  # K = 4: six pairs of weight 1/6
    ],
    random_case=_random_ranking,
    rtol=1e-12,
    atol=1e-12,
    hint="for positions i < j (in the order of np.triu_indices(K, 1)) ranking[i] beat ranking[j]; there are "
    "C(K, 2) = K (K - 1) / 2 such pairs and each weighs 1 / C(K, 2); repeated ids raise ValueError",
    expected_errors=[((np.array([1, 2, 1]),), {}, ValueError)],
)


def _literal_bt_prob(r_a, r_b):
    r_a, r_b = np.asarray(r_a, dtype=float), np.asarray(r_b, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(r_a) / (np.exp(r_a) + np.exp(r_b))  # inf / inf at 1e4


def _swapped_loss(r_chosen, r_rejected):
    return np.logaddexp(0.0, -(np.asarray(r_rejected, float) - np.asarray(r_chosen, float)))


def _sigma_not_one_minus_sigma_grad(r_chosen, r_rejected):
    d = np.asarray(r_chosen, float) - np.asarray(r_rejected, float)
    s = np.exp(-np.logaddexp(0.0, -d))  # sigma(d), where the gradient needs sigma(-d)
    return {"r_chosen": -s, "r_rejected": s}


def _ordered_pairs_weights(ranking):
    ranking = np.asarray(ranking)
    if len(set(ranking.tolist())) != ranking.size:
        raise ValueError("ranking must not repeat an id")
    k = ranking.size
    i, j = np.triu_indices(k, 1)
    return ranking[i], ranking[j], np.full(i.size, 1.0 / (k * (k - 1)))  # counted ordered pairs: half the weight


RIGHT_SOLUTIONS = {
    "check_bt_prob": bradley_terry_prob,
    "check_bt_loss": bradley_terry_loss,
    "check_bt_loss_grad": bradley_terry_loss_grad,
    "check_ranking_to_pairs": ranking_to_pairs,
}
WRONG_SOLUTIONS = {
    "check_bt_prob": _literal_bt_prob,
    "check_bt_loss": _swapped_loss,
    "check_bt_loss_grad": _sigma_not_one_minus_sigma_grad,
    "check_ranking_to_pairs": _ordered_pairs_weights,
}
