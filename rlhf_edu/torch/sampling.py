"""PyTorch twins of ``rlhf_edu.numpy.sampling`` (chapter 8): same names, same arguments, any device.

``n`` stays a Python int; ``best_of_n_probs`` is differentiable in ``ref_probs``.
"""

from __future__ import annotations

import math

import torch

from rlhf_edu.validation import (
    as_float_tensor,
    check_broadcastable,
    check_integer,
    check_probabilities,
    check_values_in_range,
)

__all__ = ["best_of_n_probs", "best_of_n_kl_bound"]


def best_of_n_probs(ref_probs, rewards, n):
    """Exact distribution of the best of n i.i.d. draws from ref_probs ranked by rewards (see the NumPy reference).

    Ties split a level's mass in proportion to ref_probs.

    >>> best_of_n_probs(torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.0, 1.0, 1.0]), 2)
    tensor([0.2500, 0.3750, 0.3750])
    """
    n = check_integer("n", n, minimum=1)
    ref_probs = as_float_tensor("ref_probs", ref_probs)
    rewards = as_float_tensor("rewards", rewards, like=ref_probs)
    check_probabilities("ref_probs", ref_probs)
    check_values_in_range("rewards", rewards, -math.inf, math.inf)  # NaN cannot be ranked; +-inf can
    shape = check_broadcastable(ref_probs=ref_probs, rewards=rewards)
    if len(shape) == 0:
        raise ValueError("ref_probs and rewards must have at least one axis (the answers)")
    probs, r = torch.broadcast_tensors(ref_probs, rewards)

    # sort each row by reward (stable); equal rewards form one level
    r_sorted, order = torch.sort(r, dim=-1, stable=True)
    p_sorted = torch.gather(probs, -1, order)
    starts_level = torch.ones_like(r_sorted, dtype=torch.bool)
    starts_level[..., 1:] = r_sorted[..., 1:] != r_sorted[..., :-1]
    level = torch.cumsum(starts_level.long(), dim=-1) - 1

    # m(t) per level (slots 0..L-1 of each row) and F(t) = cumulative mass
    mass = torch.zeros_like(p_sorted).scatter_add(-1, level, p_sorted)
    cdf = torch.cumsum(mass, dim=-1)

    # P(level) = F^n (1 - (1 - m/F)^n); the safe values keep autograd away from 0/0 and log(0)
    zeros, ones = torch.zeros_like(cdf), torch.ones_like(cdf)
    ratio = torch.where(cdf > 0, mass / torch.where(cdf > 0, cdf, ones), zeros)
    interior = ratio < 1
    safe = torch.where(interior, ratio, zeros)
    not_all_below = torch.where(interior, -torch.expm1(n * torch.log1p(-safe)), ones)
    level_prob = cdf**n * not_all_below
    per_unit_mass = torch.where(mass > 0, level_prob / torch.where(mass > 0, mass, ones), zeros)

    out_sorted = p_sorted * torch.gather(per_unit_mass, -1, level)
    return torch.zeros_like(out_sorted).scatter(-1, order, out_sorted)


def best_of_n_kl_bound(n):
    """log n - (n - 1)/n, the analytic upper bound on KL(best-of-n || ref) (see the NumPy reference).

    >>> round(best_of_n_kl_bound(4), 4)
    0.6363
    """
    n = check_integer("n", n, minimum=1)
    return math.log(n) - (n - 1) / n
