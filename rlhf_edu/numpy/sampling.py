r"""Best-of-n sampling, exactly (chapter 8, "ReST and best-of-N").

Best-of-n draws n answers i.i.d. from the reference policy, scores them with a reward model and keeps the
best. ReST's Improve step and rejection-sampling fine-tuning (Llama 2 and 3) train on such filtered samples; at
inference time best-of-n is the simplest way to trade compute for reward. For a discrete reference
distribution the distribution of the kept answer is known in closed form, and so is a bound on how far
(in KL) it moves from the reference: :math:`\log n - (n-1)/n`.

NumPy references; the PyTorch twins are in ``rlhf_edu.torch.sampling``.
"""

from __future__ import annotations

import math

import numpy as np

from rlhf_edu.validation import (
    as_float_array,
    check_broadcastable,
    check_integer,
    check_probabilities,
    check_values_in_range,
)

__all__ = ["best_of_n_probs", "best_of_n_kl_bound"]


def best_of_n_probs(ref_probs, rewards, n):
    r"""Exact distribution of the best of ``n`` i.i.d. draws from ``ref_probs``, ranked by ``rewards``.

    Let :math:`F(t) = P_{y\sim\pi_{ref}}(r(y) \le t)` and :math:`F(t^-) = P(r(y) < t)`. The best of n draws
    has reward level t when all n draws are at most t but not all are below t:

    .. math:: P(\text{best has level } t) = F(t)^n - F(t^-)^n .

    **Ties**: answers with equal rewards are equivalent to the ranker; the mass of a tied level is split
    among its members in proportion to ``ref_probs`` (exactly what "keep the first of the best draws"
    does, since each draw's identity given its level is distributed as :math:`\pi_{ref}` on the level).
    So with :math:`m(t) = F(t) - F(t^-)` the level's reference mass,

    .. math:: \pi_{BoN}(y) = \pi_{ref}(y)\,\frac{F(t)^n - F(t^-)^n}{m(t)}, \qquad t = r(y),

    and with distinct rewards :math:`\pi_{BoN}(y) = F(r(y))^n - (F(r(y)) - \pi_{ref}(y))^n`. The difference
    is computed as :math:`F^n \cdot (1 - (1 - m/F)^n)` with ``expm1``/``log1p``, accurate when m is tiny
    next to F (a long tail of rare answers). ``n = 1`` gives ``ref_probs`` back. ``ref_probs`` and
    ``rewards`` broadcast; the last axis holds the answers. Source: order statistics of a discrete
    distribution (e.g. Beirami et al., 2024, "Theoretical guarantees on the best-of-n alignment
    policy"). Chapter 8.

    Three answers with rewards 0 < 1 < 2, uniform reference, n = 2: F = 1/3, 2/3, 1, so
    P = 1/9, 4/9 - 1/9, 1 - 4/9.

    >>> best_of_n_probs([1/3, 1/3, 1/3], [0.0, 1.0, 2.0], n=2).round(4)
    array([0.1111, 0.3333, 0.5556])
    >>> best_of_n_probs([0.5, 0.25, 0.25], [0.0, 1.0, 1.0], n=2)  # a tie: 0.75 split 1:1
    array([0.25 , 0.375, 0.375])
    """
    n = check_integer("n", n, minimum=1)
    ref_probs = as_float_array("ref_probs", ref_probs)
    rewards = as_float_array("rewards", rewards)
    check_probabilities("ref_probs", ref_probs)
    check_values_in_range("rewards", rewards, -np.inf, np.inf)  # NaN cannot be ranked; +-inf can
    shape = check_broadcastable(ref_probs=ref_probs, rewards=rewards)
    if len(shape) == 0:
        raise ValueError("ref_probs and rewards must have at least one axis (the answers)")
    dtype = np.result_type(ref_probs, rewards)
    k = shape[-1]
    probs = np.broadcast_to(ref_probs, shape).reshape(-1, k).astype(dtype)
    r = np.broadcast_to(rewards, shape).reshape(-1, k)
    rows = np.arange(probs.shape[0])[:, None]

    # sort each row by reward (stable); equal rewards form one level
    order = np.argsort(r, axis=-1, kind="stable")
    r_sorted, p_sorted = r[rows, order], probs[rows, order]
    starts_level = np.ones(r_sorted.shape, dtype=bool)
    starts_level[:, 1:] = r_sorted[:, 1:] != r_sorted[:, :-1]
    level = np.cumsum(starts_level, axis=-1) - 1  # level index of each sorted answer, 0, 1, ...

    # m(t): the reference mass of each level (levels fill slots 0..L-1 of each row, the rest stay 0)
    mass = np.zeros_like(p_sorted)
    np.add.at(mass, (np.broadcast_to(rows, level.shape), level), p_sorted)
    cdf = np.cumsum(mass, axis=-1)  # F(t) of each level

    # P(level) = F^n - (F - m)^n = F^n (1 - (1 - m/F)^n); the lowest level with mass has m = F
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cdf > 0, mass / cdf, 0.0)
        safe = np.where(ratio < 1, ratio, 0.0)
        not_all_below = np.where(ratio < 1, -np.expm1(n * np.log1p(-safe)), 1.0)  # 1 - (1 - m/F)^n
        level_prob = cdf**n * not_all_below
        per_unit_mass = np.where(mass > 0, level_prob / np.where(mass > 0, mass, 1.0), 0.0)

    out_sorted = p_sorted * per_unit_mass[rows, level]
    out = np.empty_like(out_sorted)
    out[rows, order] = out_sorted
    return out.reshape(shape)


def best_of_n_kl_bound(n):
    r"""The analytic "KL of best-of-n": :math:`\log n - \frac{n-1}{n}` nats, an upper bound on the true KL.

    For a continuous reward distribution (no ties, no answer with positive probability) the best of n
    has density :math:`n F^{n-1}` relative to the reference, so
    :math:`\mathrm{KL}(\pi_{BoN}\|\pi_{ref}) = \log n + (n-1)\,\mathbb{E}[\log F] = \log n - (n-1)/n`
    (:math:`F` of the best is Beta(n, 1), :math:`\mathbb{E}\log F = -1/n`). Stiennon et al. (2020) and
    Gao et al. (2022, reward-model overoptimisation) use it as the KL of best-of-n; Beirami et al. (2024)
    prove that for discrete distributions it is only an upper bound, approached when every answer has
    small probability and distinct reward. ``n = 1`` gives 0; it grows like :math:`\log n`. Chapter 8.

    >>> best_of_n_kl_bound(1), round(best_of_n_kl_bound(4), 4)
    (0.0, 0.6363)
    """
    n = check_integer("n", n, minimum=1)
    return math.log(n) - (n - 1) / n
