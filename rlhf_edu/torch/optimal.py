"""PyTorch twins of ``rlhf_edu.numpy.optimal`` (chapters 2 and 6): same names, same arguments, any device."""

from __future__ import annotations

import math

import torch

from rlhf_edu.torch.divergences import kl_divergence
from rlhf_edu.validation import (
    as_float_tensor,
    check_broadcastable,
    check_positive,
    check_probabilities,
    check_values_in_range,
)

__all__ = ["kl_regularized_optimum", "log_partition", "implied_reward", "kl_regularized_objective"]


def _checked(ref_probs, rewards, beta, like=None):
    beta = check_positive("beta", beta)
    ref_probs = as_float_tensor("ref_probs", ref_probs, like=like)
    rewards = as_float_tensor("rewards", rewards, like=ref_probs)
    check_probabilities("ref_probs", ref_probs)
    check_values_in_range("rewards", rewards, -math.inf, math.inf, low_open=True, high_open=True)
    check_broadcastable(ref_probs=ref_probs, rewards=rewards)
    if rewards.dim() == 0:
        raise ValueError("rewards must have one entry per answer (at least one axis), got a scalar")
    return ref_probs, rewards, beta


def kl_regularized_optimum(ref_probs, rewards, beta):
    """pi*(y) = pi_ref(y) exp(r(y)/beta) / Z, a softmax in log space (see the NumPy reference).

    >>> kl_regularized_optimum(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), 1.0)
    tensor([0.7311, 0.2689])
    """
    ref_probs, rewards, beta = _checked(ref_probs, rewards, beta)
    return torch.softmax(torch.log(ref_probs) + rewards / beta, dim=-1)


def log_partition(ref_probs, rewards, beta):
    """log Z = logsumexp(log pi_ref + r/beta) on the last axis (see the NumPy reference).

    >>> log_partition(torch.tensor([0.5, 0.5]), torch.tensor([1.0986123, 0.0]), 1.0)
    tensor(0.6931)
    """
    ref_probs, rewards, beta = _checked(ref_probs, rewards, beta)
    return torch.logsumexp(torch.log(ref_probs) + rewards / beta, dim=-1)


def implied_reward(policy_probs, ref_probs, beta):
    """beta * log(pi / pi_ref): the reward pi implies, up to the constant beta log Z (see the NumPy reference).

    >>> implied_reward(torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.5]), 1.0)
    tensor([-0.6931,  0.4055])
    """
    beta = check_positive("beta", beta)
    policy_probs = as_float_tensor("policy_probs", policy_probs)
    ref_probs = as_float_tensor("ref_probs", ref_probs, like=policy_probs)
    check_probabilities("policy_probs", policy_probs)
    check_probabilities("ref_probs", ref_probs)
    check_broadcastable(policy_probs=policy_probs, ref_probs=ref_probs)
    return beta * (torch.log(policy_probs) - torch.log(ref_probs))


def kl_regularized_objective(policy_probs, ref_probs, rewards, beta):
    """E_pi[r] - beta KL(pi || pi_ref) on the last axis (see the NumPy reference).

    >>> kl_regularized_objective(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), 1.0)
    tensor(0.5000)
    """
    beta = check_positive("beta", beta)
    policy_probs = as_float_tensor("policy_probs", policy_probs)
    ref_probs, rewards, beta = _checked(ref_probs, rewards, beta, like=policy_probs)
    check_probabilities("policy_probs", policy_probs)
    check_broadcastable(policy_probs=policy_probs, ref_probs=ref_probs, rewards=rewards)
    return (policy_probs * rewards).sum(dim=-1) - beta * kl_divergence(policy_probs, ref_probs)
