r"""Exercise checkers of chapter 8 (ReST and best-of-N). None of them is answered by what the chapter prints.

- ``check_best_of_n_tiebreak(fn)``: ``fn(ref_probs, rewards, lengths, n)``, the distribution of the best of n
  i.i.d. draws when ties in reward go to the SHORTER answer, and answers tied in both reward and length share
  their mass in proportion to ``ref_probs`` (a variant of ``rlhf_edu.numpy.best_of_n_probs``, whose ties always
  share).
- ``check_best_of_n_level_kl(fn)``: ``fn(level_masses, n)``, the exact :math:`\mathrm{KL}(\pi_{BoN}\|\pi_{ref})`
  from the reference masses of the reward levels alone, worst level first (a derivation: the ratio
  :math:`\pi_{BoN}/\pi_{ref}` is constant on a level). It is below the bound :math:`\log n - (n-1)/n`.
- ``check_max_n_within_kl(fn)``: ``fn(budget)``, the largest n whose analytic bound
  :math:`\log n - (n-1)/n` stays within a KL budget (in nats).
- ``check_rest_filter(fn)``: ``fn(rewards, thresholds)``, ReST's Improve filters on one Grow's rewards, as in
  the paper and the notes: :math:`F(x, y; \tau_i) = \mathbb 1[R(x, y) > \tau_i]`, one row per Improve step,
  with the paper's rules for the thresholds checked (:math:`\tau_1 >` the mean reward of the grown data,
  :math:`\tau_{i+1} > \tau_i`), ``ValueError`` otherwise. (``rlhf_edu.train.train_rest`` keeps
  :math:`R \ge \tau` and leaves the choice of the thresholds to the caller.)
"""

from __future__ import annotations

import math

import numpy as np

from rlhf_edu.exercises.bradley_terry import _with_diagnosis
from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.divergences import kl_divergence
from rlhf_edu.numpy.sampling import best_of_n_kl_bound, best_of_n_probs
# imported under private names: the package re-exports every ``check_*`` of its modules as a checker
from rlhf_edu.validation import as_float_array
from rlhf_edu.validation import check_integer as _check_integer
from rlhf_edu.validation import check_nonnegative as _check_nonnegative

__all__ = [
    "check_best_of_n_tiebreak",
    "check_best_of_n_level_kl",
    "check_max_n_within_kl",
    "check_rest_filter",
]


# ---- 1. best of n, ties in reward broken by the shorter answer ----


def best_of_n_tiebreak_reference(ref_probs, rewards, lengths, n):
    """The solution: rank by (reward, then shorter first); what is tied in both shares in proportion to ref."""
    rewards = as_float_array("rewards", rewards)
    lengths = as_float_array("lengths", lengths)
    _, reward_level = np.unique(rewards, return_inverse=True)
    _, length_rank = np.unique(-lengths, return_inverse=True)  # 0 for the longest: a shorter answer ranks higher
    key = reward_level.reshape(rewards.shape) * (length_rank.max() + 1) + length_rank.reshape(lengths.shape)
    return best_of_n_probs(ref_probs, key.astype(float), n)


def _tiebreak_case(rng):
    k = int(rng.integers(2, 9))
    ref = rng.dirichlet(np.ones(k) * float(rng.uniform(0.3, 3.0)))
    rewards = rng.integers(0, 3, size=k).astype(float) / 2  # few levels: many ties
    lengths = rng.integers(1, 4, size=k)  # ... and ties in length too
    return (ref, rewards, lengths, int(rng.integers(1, 7))), {}


_TIEBREAK_EXAMPLE = (np.array([0.5, 0.25, 0.25]), np.array([0.0, 1.0, 1.0]), np.array([3, 5, 2]), 2)


def _diagnose_tiebreak(fn):
    ref, rewards, lengths, n = _TIEBREAK_EXAMPLE
    got = np.asarray(fn(ref, rewards, lengths, n), dtype=float)
    if np.allclose(got, best_of_n_probs(ref, rewards, n)):
        return ("the tied answers 1 and 2 still share their level's mass in proportion to ref_probs: with a "
                "tie-break the shorter one (answer 2) takes all of it, as if its reward were a little higher")
    if np.allclose(got, best_of_n_tiebreak_reference(ref, rewards, -lengths, n)):
        return "the LONGER answer wins your tie-break; the exercise asks for the shorter one"
    if got.shape == ref.shape and abs(got.sum() - 1.0) > 1e-6:
        return ("your probabilities do not sum to one: the per-answer formula F^n - (F - p)^n counts a tied level "
                "once per member; rank by (reward, shorter) first, then apply the formula level by level")
    return None


check_best_of_n_tiebreak = _with_diagnosis("best_of_n_tiebreak", make_checker(
    "best_of_n_tiebreak",
    reference=best_of_n_tiebreak_reference,
    edge_cases=[
        (_TIEBREAK_EXAMPLE, {}),
        ((np.array([0.3, 0.3, 0.4]), np.array([1.0, 1.0, 1.0]), np.array([2, 2, 2]), 5), {}),  # all tied: ref back
        ((np.array([0.2, 0.3, 0.5]), np.array([2.0, 1.0, 0.0]), np.array([1, 2, 3]), 3), {}),  # no ties at all
        ((np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 1.0, 1.0, 0.0]), np.array([4, 2, 2, 1]), 4), {}),
    ],
    random_case=_tiebreak_case,
    hint="rank the answers by reward, and among equal rewards by length (shorter ranks higher); answers equal in "
    "both form one level whose mass F(t)^n - F(t-)^n is split in proportion to ref_probs. Likely misconceptions: "
    "splitting a reward tie although the tie-break decides it; letting the longer answer win",
), _diagnose_tiebreak)


# ---- 2. the exact KL of best-of-n from the level masses ----


def best_of_n_level_kl_reference(level_masses, n):
    """The solution: :math:`\\sum_t P_t \\log(P_t / m_t)`, :math:`P_t = F_t^n - F_{t-1}^n` (levels worst first)."""
    masses = as_float_array("level_masses", level_masses)
    n = _check_integer("n", n, minimum=1)
    return float(kl_divergence(best_of_n_probs(masses, np.arange(masses.size, dtype=float), n), masses))


def _level_kl_case(rng):
    k = int(rng.integers(1, 12))
    masses = rng.dirichlet(np.ones(k) * float(rng.uniform(0.3, 3.0)))
    return (masses, int(rng.choice([1, 2, 3, 5, 8, 16, 64]))), {}


def _diagnose_level_kl(fn):
    masses, n = np.array([0.5, 0.3, 0.2]), 4
    got = float(fn(masses, n))
    if abs(got - best_of_n_kl_bound(n)) < 1e-6:
        return ("you returned the bound log n - (n-1)/n: that is the KL only for a continuous reward; on levels with "
                "mass the density n F^(n-1) is averaged over each level and the KL is smaller")
    if abs(got - float(kl_divergence(masses, best_of_n_probs(masses, np.arange(3.0), n)))) < 1e-6:
        return "you computed KL(pi_ref || pi_BoN); the chapter's KL is KL(pi_BoN || pi_ref), best-of-n first"
    return None


check_best_of_n_level_kl = _with_diagnosis("best_of_n_level_kl", make_checker(
    "best_of_n_level_kl",
    reference=best_of_n_level_kl_reference,
    edge_cases=[
        ((np.array([1.0]), 7), {}),                       # one level: best-of-n is the reference, KL 0
        ((np.array([0.5, 0.3, 0.2]), 1), {}),             # n = 1: KL 0
        ((np.array([0.5, 0.3, 0.2]), 4), {}),
        ((np.array([0.4, 0.0, 0.6]), 3), {}),             # an empty level contributes nothing
        ((np.full(1000, 1e-3), 8), {}),                   # many rare levels: close to the bound
    ],
    random_case=_level_kl_case,
    rtol=1e-6,
    atol=1e-9,
    hint="P_t = F_t^n - F_(t-1)^n with F the cumulative mass from the worst level up; within a level best-of-n and "
    "the reference have the same shape, so KL = sum_t P_t log(P_t / m_t) over the levels with m_t > 0. Likely "
    "misconceptions: returning the continuous bound log n - (n-1)/n; the KL in the other direction",
), _diagnose_level_kl)


# ---- 3. the largest n within a KL budget ----


def max_n_within_kl_reference(budget):
    """The solution: the largest integer n >= 1 with log n - (n-1)/n <= budget (the bound grows with n)."""
    budget = _check_nonnegative("budget", budget)
    if budget > 30:
        raise ValueError(f"budget must be at most 30 nats (n would pass e^31), got {budget}")
    # log n - (n-1)/n <= budget  <=>  n <= e^(budget + 1 - 1/n): start just above the continuous answer
    n = max(1, int(math.exp(budget + 1.0)) + 2)
    while n > 1 and best_of_n_kl_bound(n) > budget:
        n -= 1
    return n


def _diagnose_max_n(fn):
    got = int(fn(2.0))
    if got == int(math.exp(2.0)):
        return "you solved log n <= budget; the bound is log n - (n-1)/n, so n can be larger (19 for 2 nats, not 7)"
    if got == 20:
        return "one too many: the bound of the n you return must not exceed the budget (n = 20 gives 2.046 > 2)"
    return None


check_max_n_within_kl = _with_diagnosis("max_n_within_kl", make_checker(
    "max_n_within_kl",
    reference=max_n_within_kl_reference,
    edge_cases=[((0.0,), {}), ((0.19,), {}), ((best_of_n_kl_bound(2),), {}), ((2.0,), {}), ((5.0,), {})],
    random_case=lambda rng: ((float(rng.uniform(0.0, 8.0)),), {}),
    rtol=0.0,
    atol=0.0,
    hint="the bound log n - (n-1)/n grows with n: return the largest n whose bound is <= budget (n = 1 for "
    "budget 0). Likely misconceptions: log n <= budget (ignoring the (n-1)/n); an off-by-one at the boundary",
), _diagnose_max_n)


# ---- 4. ReST's Improve filter ----


def rest_filter_reference(rewards, thresholds):
    """The solution: ``keep[i, j] = rewards[j] > thresholds[i]`` after the paper's checks of the thresholds."""
    rewards = as_float_array("rewards", rewards)
    if rewards.ndim != 1 or rewards.size == 0:
        raise ValueError(f"rewards must be a non-empty 1-D array (one Grow step's data), got shape {rewards.shape}")
    taus = as_float_array("thresholds", thresholds)
    if taus.ndim != 1 or taus.size == 0:
        raise ValueError("thresholds must hold one threshold per Improve step")
    if np.any(np.diff(taus) <= 0):
        raise ValueError(f"thresholds must rise strictly (tau_(i+1) > tau_i), got {taus.tolist()}")
    if taus[0] <= rewards.mean():
        raise ValueError(f"the first threshold must exceed the mean reward {rewards.mean():.4g} of the grown data "
                         f"(tau_1 > V), got {taus[0]}")
    return rewards[None, :] > taus[:, None]


_GOLD_LEVELS = np.array([0.0, 0.1192, 0.2689, 0.3655, 0.5, 0.7311, 0.8808, 0.9526])  # the review task's levels


def _rest_case(rng):
    m = int(rng.integers(1, 12))
    if rng.random() < 0.5:
        rewards = rng.choice(_GOLD_LEVELS, size=m)  # discrete levels: rewards exactly at a threshold happen
        above = np.sort(rng.choice(_GOLD_LEVELS[_GOLD_LEVELS > rewards.mean()], size=int(rng.integers(1, 4)),
                                   replace=True)) if np.any(_GOLD_LEVELS > rewards.mean()) else np.array([1.0])
        taus = np.unique(above)
    else:
        rewards = rng.normal(size=m)
        taus = rewards.mean() + np.cumsum(rng.uniform(0.05, 1.0, size=int(rng.integers(1, 4))))
    return (rewards, taus), {}


_REST_EXAMPLE = (np.array([0.5, 0.7311, 0.2689, 0.8808, 0.5, 0.0]), np.array([0.5, 0.7311]))


def _diagnose_rest(fn):
    rewards, taus = _REST_EXAMPLE
    got = np.asarray(fn(rewards, taus))
    if got.shape == (2, 6) and np.array_equal(got.astype(bool), rewards[None, :] >= taus[:, None]):
        return ("you kept R >= tau; the paper's (and the notes') filter is R > tau: a review exactly at the "
                "threshold (0.5, the neutral level) is dropped. With continuous scores the two never differ, with "
                "the gold reward's levels they do (rlhf_edu.train.train_rest keeps >=)")
    if got.shape == (6, 2):
        return "one ROW per Improve step: shape (len(thresholds), len(rewards))"
    return None


check_rest_filter = _with_diagnosis("rest_filter", make_checker(
    "rest_filter",
    reference=rest_filter_reference,
    edge_cases=[
        (_REST_EXAMPLE, {}),
        ((np.array([0.1, 0.2, 0.9]), np.array([0.5])), {}),
        ((np.array([-1.0, 0.0, 1.0, 2.0]), np.array([0.6, 1.0, 1.5])), {}),
    ],
    random_case=_rest_case,
    expected_errors=[
        ((np.array([0.2, 0.8]), np.array([0.6, 0.6])), {}, ValueError),   # not rising
        ((np.array([0.2, 0.8]), np.array([0.9, 0.7])), {}, ValueError),   # falling
        ((np.array([0.2, 0.8]), np.array([0.5, 0.9])), {}, ValueError),   # tau_1 = the mean reward: not above it
        ((np.array([0.2, 0.8]), np.array([0.3, 0.9])), {}, ValueError),   # tau_1 below the mean
    ],
    hint="keep[i] = rewards > thresholds[i] (strict, as F = 1[R > tau] in the paper), a boolean array of shape "
    "(Improve steps, samples); raise ValueError unless the thresholds rise strictly and the first exceeds the mean "
    "reward of the grown data. Likely misconceptions: >= instead of >; no check of the thresholds; tau_1 compared "
    "with the median or the best reward instead of the mean",
), _diagnose_rest)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _tiebreak_shared(ref_probs, rewards, lengths, n):
    return best_of_n_probs(ref_probs, rewards, n)  # the tie-break forgotten: reward ties still share


def _level_kl_bound(level_masses, n):
    return best_of_n_kl_bound(n)  # the continuous formula, whatever the levels


def _max_n_log_only(budget):
    return max(1, int(math.floor(math.exp(budget))))  # log n <= budget: the (n-1)/n forgotten


def _rest_filter_at_least(rewards, thresholds):
    rewards, taus = np.asarray(rewards, dtype=float), np.asarray(thresholds, dtype=float)
    rest_filter_reference(rewards, thresholds)  # the same checks ...
    return rewards[None, :] >= taus[:, None]  # ... but >= keeps the rewards exactly at a threshold


RIGHT_SOLUTIONS = {
    "check_best_of_n_tiebreak": best_of_n_tiebreak_reference,
    "check_best_of_n_level_kl": best_of_n_level_kl_reference,
    "check_max_n_within_kl": max_n_within_kl_reference,
    "check_rest_filter": rest_filter_reference,
}

WRONG_SOLUTIONS = {
    "check_best_of_n_tiebreak": _tiebreak_shared,
    "check_best_of_n_level_kl": _level_kl_bound,
    "check_max_n_within_kl": _max_n_log_only,
    "check_rest_filter": _rest_filter_at_least,
}
