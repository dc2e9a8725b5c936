"""PyTorch twins of ``rlhf_edu.numpy.preferences`` (chapter 1): same names, same arguments, any device.

``fit_bradley_terry`` is NumPy only (a SciPy fit); in torch a reward model is trained with
``bradley_terry_loss`` and autograd.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlhf_edu.validation import as_float_tensor, check_broadcastable, check_min_size

__all__ = ["bradley_terry_prob", "bradley_terry_loss", "ranking_to_pairs"]


def bradley_terry_prob(r_a, r_b):
    """P(a preferred to b) = sigmoid(r_a - r_b) (Bradley-Terry; see the NumPy reference).

    >>> bradley_terry_prob(torch.tensor([2.0, 1e4]), torch.tensor([0.0, -1e4]))
    tensor([0.8808, 1.0000])
    """
    r_a = as_float_tensor("r_a", r_a)
    r_b = as_float_tensor("r_b", r_b, like=r_a)
    check_broadcastable(r_a=r_a, r_b=r_b)
    return torch.sigmoid(r_a - r_b)


def bradley_terry_loss(r_chosen, r_rejected, margin=0.0):
    """Per-pair -log sigmoid(r_chosen - r_rejected - margin) (see the NumPy reference).

    >>> bradley_terry_loss(torch.tensor([1.0, -1e4]), torch.tensor([0.0, 1e4]))
    tensor([3.1326e-01, 2.0000e+04])
    """
    r_chosen = as_float_tensor("r_chosen", r_chosen)
    r_rejected = as_float_tensor("r_rejected", r_rejected, like=r_chosen)
    margin = as_float_tensor("margin", margin, like=r_chosen)
    check_broadcastable(r_chosen=r_chosen, r_rejected=r_rejected, margin=margin)
    return -F.logsigmoid(r_chosen - r_rejected - margin)


def ranking_to_pairs(ranking, *, dtype=None):
    """All C(K,2) (winner, loser) pairs of a best-first ranking, weights 1/C(K,2) (see the NumPy reference).

    Returns tensors on ``ranking``'s device; ``weights`` has ``dtype`` (default: torch's default float).

    >>> ranking_to_pairs(torch.tensor([2, 0, 1]))[:2]
    (tensor([2, 2, 0]), tensor([0, 1, 1]))
    """
    ranking = torch.as_tensor(ranking)
    if ranking.is_floating_point() or ranking.is_complex() or ranking.dtype == torch.bool:
        raise TypeError(f"ranking must hold integer item ids, got dtype {ranking.dtype}")
    check_min_size("ranking", ranking, 2)
    ordered = torch.sort(ranking, dim=-1).values
    if bool((ordered[..., 1:] == ordered[..., :-1]).any()):
        raise ValueError("ranking must list distinct item ids along its last axis (a repeated id cannot beat itself)")
    k = ranking.shape[-1]
    i, j = torch.triu_indices(k, k, offset=1, device=ranking.device)
    weights = torch.full(
        ranking.shape[:-1] + (i.numel(),), 1.0 / math.comb(k, 2), dtype=dtype, device=ranking.device
    )
    return ranking[..., i], ranking[..., j], weights
