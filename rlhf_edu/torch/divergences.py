"""PyTorch twins of ``rlhf_edu.numpy.divergences`` (chapter 2): same names, same arguments, any device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlhf_edu.numpy.divergences import KL_ESTIMATORS, KL_REDUCTIONS
from rlhf_edu.validation import (
    as_float_tensor,
    check_broadcastable,
    check_choice,
    check_probabilities,
    check_same_shape,
    check_values_in_range,
)

__all__ = ["kl_divergence", "kl_divergence_from_logits", "entropy", "kl_estimate"]


def _kl_terms(p, q):
    """p log(p/q) with 0 log(0/q) = 0. Both logs see 1 where p = 0, so autograd never meets 0 * inf = NaN."""
    positive = p > 0
    ones = torch.ones_like(p)
    log_ratio = torch.log(torch.where(positive, p, ones)) - torch.log(torch.where(positive, q, ones))
    return torch.where(positive, p * log_ratio, torch.zeros_like(log_ratio))


def kl_divergence(p, q, *, reduction="sum"):
    """Exact KL(p || q) of categorical distributions on the last axis, in nats (see the NumPy reference).

    >>> kl_divergence(torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.5, 0.3, 0.2]))
    tensor(0.0851)
    """
    check_choice("reduction", reduction, KL_REDUCTIONS)
    p = as_float_tensor("p", p)
    q = as_float_tensor("q", q, like=p)
    check_probabilities("p", p)
    check_probabilities("q", q)
    check_broadcastable(p=p, q=q)
    p, q = torch.broadcast_tensors(p, q)
    terms = _kl_terms(p, q)
    return terms if reduction == "none" else terms.sum(dim=-1)


def _check_logits(name, logits):
    check_values_in_range(name, logits, -math.inf, math.inf, high_open=True)  # NaN and +inf are errors
    if logits.dim() == 0:
        raise ValueError(f"{name} must have at least one axis (the categories), got a scalar")
    if bool(torch.isneginf(logits).all(dim=-1).any()):
        raise ValueError(f"{name} has a row where every logit is -inf: no distribution")


def kl_divergence_from_logits(logits_p, logits_q):
    """KL(softmax(logits_p) || softmax(logits_q)) via log_softmax (see the NumPy reference).

    >>> kl_divergence_from_logits(torch.tensor([1000.0, 0.0]), torch.tensor([0.0, 1000.0]))
    tensor(1000.)
    """
    a = as_float_tensor("logits_p", logits_p)
    b = as_float_tensor("logits_q", logits_q, like=a)
    _check_logits("logits_p", a)
    _check_logits("logits_q", b)
    check_broadcastable(logits_p=a, logits_q=b)
    logp, logq = F.log_softmax(a, dim=-1), F.log_softmax(b, dim=-1)
    logp, logq = torch.broadcast_tensors(logp, logq)
    p = logp.exp()
    # where p = 0 (a -inf logit) the log-ratio may be -inf - -inf = NaN: replace it before multiplying
    log_ratio = torch.where(p > 0, logp - logq, torch.zeros_like(p))
    return (p * log_ratio).sum(dim=-1)


def entropy(p):
    """Shannon entropy -sum p log p in nats on the last axis, 0 log 0 = 0 (see the NumPy reference).

    >>> entropy(torch.tensor([0.5, 0.5]))
    tensor(0.6931)
    """
    p = as_float_tensor("p", p)
    check_probabilities("p", p)
    positive = p > 0
    logp = torch.log(torch.where(positive, p, torch.ones_like(p)))
    return -torch.where(positive, p * logp, torch.zeros_like(p)).sum(dim=-1)


_K3_SERIES_CUT = 0.5
_FACTORIAL = [float(__import__("math").factorial(k)) for k in range(18)]


def _k3(log_ratio):
    """e^{-l} - 1 + l, accurate in every dtype: Taylor series below |l| = 0.5, expm1(u) - u above (see NumPy)."""
    u = -log_ratio
    small = u.abs() < _K3_SERIES_CUT
    us = torch.where(small, u, torch.zeros_like(u))
    series = torch.zeros_like(us)
    for k in range(17, 1, -1):
        series = series * us + 1.0 / _FACTORIAL[k]
    series = series * us * us
    ul = torch.where(small, torch.full_like(u, _K3_SERIES_CUT), u)
    return torch.where(small, series, torch.expm1(ul) - ul)


def _kl_from_log_ratio(log_ratio, estimator):
    """k1, k2 or k3 of l = log p - log p_ref, without input checks (for internal callers)."""
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    return _k3(log_ratio)


def kl_estimate(logp, logp_ref, estimator="k1"):
    """Per-sample KL(p || p_ref) estimate from samples of p: k1, k2 or k3 (see the NumPy reference).

    k3 is accurate in float32 for tiny log-ratios too (a Taylor series below ``|l| = 0.5``). NaN or +inf
    inputs raise ``ValueError``; -inf log-probs are allowed.

    >>> kl_estimate(torch.tensor([0.0]), torch.tensor([0.0]), "k3")
    tensor([0.])
    """
    check_choice("estimator", estimator, KL_ESTIMATORS)
    logp = as_float_tensor("logp", logp)
    logp_ref = as_float_tensor("logp_ref", logp_ref, like=logp)
    check_same_shape(logp=logp, logp_ref=logp_ref)
    return _kl_from_log_ratio(logp - logp_ref, estimator)
