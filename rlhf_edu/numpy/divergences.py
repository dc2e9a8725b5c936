"""KL divergence, entropy and the sample estimators of KL (chapter 2, "KL divergence and its estimators").

The RLHF objective pays :math:`\\beta\\,\\mathrm{KL}(\\pi_\\theta \\| \\pi_{ref})` for moving away from the
reference model. This module computes KL exactly for categorical distributions (from probabilities or
from logits), the entropy, and the per-sample estimators k1, k2, k3 that PPO and GRPO use when only
samples are available.

NumPy references; the PyTorch twins are in ``rlhf_edu.torch.divergences``.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.validation import (
    as_float_array,
    check_broadcastable,
    check_choice,
    check_probabilities,
    check_same_shape,
    check_values_in_range,
)

__all__ = [
    "kl_divergence",
    "kl_divergence_grad",
    "kl_divergence_from_logits",
    "kl_divergence_from_logits_grad",
    "entropy",
    "entropy_grad",
    "kl_estimate",
]

KL_ESTIMATORS = ("k1", "k2", "k3")
KL_REDUCTIONS = ("sum", "none")


def _sum_to_shape(g, shape):
    """Sum a broadcast gradient back to the shape of the argument it belongs to."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def _kl_terms(p, q):
    """The summands p log(p/q), with 0 log(0/q) = 0 and p log(p/0) = +inf for p > 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)


def kl_divergence(p, q, *, reduction="sum"):
    r"""Exact :math:`\mathrm{KL}(p \| q) = \sum_i p_i \log(p_i / q_i)` of categorical distributions (last axis).

    In nats (natural log; divide by :math:`\log 2` for bits). Terms with :math:`p_i = 0` are 0
    (:math:`0 \log 0 = 0`); the result is :math:`+\infty` where :math:`q_i = 0 < p_i`. ``p`` and ``q``
    must be distributions on the last axis (non-negative, summing to 1) and broadcast together.
    ``reduction="sum"`` (default) returns the divergence per distribution; ``"none"`` returns the
    individual terms :math:`p_i \log(p_i/q_i)` (some are negative; only their sum is >= 0).

    Source: Kullback and Leibler (1951); the lecture notes' worked example (chapter 2), which is the
    doctest below: P = (0.7, 0.2, 0.1), Q = (0.5, 0.3, 0.2).

    >>> kl_divergence([0.7, 0.2, 0.1], [0.5, 0.3, 0.2], reduction="none").round(4)
    array([ 0.2355, -0.0811, -0.0693])
    >>> float(kl_divergence([0.7, 0.2, 0.1], [0.5, 0.3, 0.2]).round(4))
    0.0851
    """
    check_choice("reduction", reduction, KL_REDUCTIONS)
    p = as_float_array("p", p)
    q = as_float_array("q", q)
    check_probabilities("p", p)
    check_probabilities("q", q)
    check_broadcastable(p=p, q=q)
    terms = _kl_terms(p, q)
    return terms if reduction == "none" else terms.sum(axis=-1)


def kl_divergence_grad(p, q, *, reduction="sum"):
    r"""Analytic gradient of ``sum(kl_divergence(p, q))`` (the same for both reductions).

    .. math:: \frac{\partial\,\mathrm{KL}}{\partial p_i} = \log\frac{p_i}{q_i} + 1, \qquad
              \frac{\partial\,\mathrm{KL}}{\partial q_i} = -\frac{p_i}{q_i}

    Partial derivatives with every entry free (not projected on the simplex). Where :math:`p_i = 0` the
    term is the constant 0, so both derivatives are reported as 0 there (the twin's autograd agrees;
    the one-sided derivative in :math:`p_i` would be :math:`-\infty`). Chapter 2.

    >>> {k: v.round(4) for k, v in kl_divergence_grad([0.5, 0.5], [0.25, 0.75]).items()}
    {'p': array([1.6931, 0.5945]), 'q': array([-2.    , -0.6667])}
    """
    p = as_float_array("p", p)
    q = as_float_array("q", q)
    check_probabilities("p", p)
    check_probabilities("q", q)
    check_broadcastable(p=p, q=q)
    positive = p > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        grad_p = np.where(positive, np.log(np.where(positive, p, 1.0)) - np.log(q) + 1.0, 0.0)
        grad_q = np.where(positive, -p / q, 0.0)
    return {"p": _sum_to_shape(grad_p, p.shape), "q": _sum_to_shape(grad_q, q.shape)}


def _log_softmax(logits):
    # shift by the max so exp never overflows; -inf logits (masked entries) give log-probability -inf
    m = np.max(logits, axis=-1, keepdims=True)
    shifted = logits - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _check_logits(name, logits):
    check_values_in_range(name, logits, -np.inf, np.inf, high_open=True)  # NaN and +inf are errors
    if logits.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (the categories), got a scalar")
    if np.any(np.all(np.isneginf(logits), axis=-1)):
        raise ValueError(f"{name} has a row where every logit is -inf: no distribution")


def kl_divergence_from_logits(logits_p, logits_q):
    r""":math:`\mathrm{KL}(\mathrm{softmax}(a) \| \mathrm{softmax}(b))` from logits, via log-softmax.

    With :math:`\log p = a - \mathrm{logsumexp}(a)` and :math:`\log q = b - \mathrm{logsumexp}(b)`:

    .. math:: \mathrm{KL} = \sum_i p_i (\log p_i - \log q_i)

    This is how a language model's per-token KL to the reference model is computed: never through
    ``softmax`` then ``log`` (which underflows to log 0 for logits far apart). Logits of -inf (masked
    tokens) are allowed: they are probability 0. Source: the lecture notes' KL penalty (chapter 2).

    >>> float(kl_divergence_from_logits(np.log([0.7, 0.2, 0.1]), np.log([0.5, 0.3, 0.2])).round(4))
    0.0851
    >>> float(kl_divergence_from_logits([1000.0, 0.0], [0.0, 1000.0]))
    1000.0
    """
    a = as_float_array("logits_p", logits_p)
    b = as_float_array("logits_q", logits_q)
    _check_logits("logits_p", a)
    _check_logits("logits_q", b)
    check_broadcastable(logits_p=a, logits_q=b)
    logp, logq = _log_softmax(a), _log_softmax(b)
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(p > 0, p * (logp - logq), 0.0), axis=-1)


def kl_divergence_from_logits_grad(logits_p, logits_q):
    r"""Analytic gradient of ``sum(kl_divergence_from_logits(a, b))``.

    .. math:: \frac{\partial\,\mathrm{KL}}{\partial a_j} = p_j\left(\log\frac{p_j}{q_j} - \mathrm{KL}\right), \qquad
              \frac{\partial\,\mathrm{KL}}{\partial b_j} = q_j - p_j

    (differentiate through the softmax: :math:`\partial p_i/\partial a_j = p_i(\delta_{ij} - p_j)`;
    the gradient in the logits of q is the familiar "predicted minus target" of cross-entropy). Chapter 2.

    >>> {k: v.round(4) for k, v in kl_divergence_from_logits_grad([0.0, 0.0], [0.0, np.log(3)]).items()}
    {'logits_p': array([ 0.2747, -0.2747]), 'logits_q': array([-0.25,  0.25])}
    """
    a = as_float_array("logits_p", logits_p)
    b = as_float_array("logits_q", logits_q)
    _check_logits("logits_p", a)
    _check_logits("logits_q", b)
    check_broadcastable(logits_p=a, logits_q=b)
    logp, logq = _log_softmax(a), _log_softmax(b)
    p, q = np.exp(logp), np.exp(logq)
    with np.errstate(invalid="ignore"):
        log_ratio = np.where(p > 0, logp - logq, 0.0)
    kl = np.sum(p * log_ratio, axis=-1, keepdims=True)
    return {
        "logits_p": _sum_to_shape(p * (log_ratio - kl), a.shape),
        "logits_q": _sum_to_shape(q - p, b.shape),
    }


def entropy(p):
    r"""Shannon entropy :math:`H(p) = -\sum_i p_i \log p_i` in nats (last axis), with :math:`0 \log 0 = 0`.

    :math:`0 \le H(p) \le \log K` for K categories (uniform: the maximum), and
    :math:`H(p) = \log K - \mathrm{KL}(p \| u)` with u uniform. Source: Shannon (1948); the lecture
    notes' PPO entropy bonus. Chapter 2 (used again in chapter 5).

    >>> float(entropy([0.5, 0.5]).round(4)), float(entropy([0.25] * 4).round(4))
    (0.6931, 1.3863)
    """
    p = as_float_array("p", p)
    check_probabilities("p", p)
    with np.errstate(divide="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def entropy_grad(p):
    r"""Analytic gradient of ``sum(entropy(p))``: :math:`\partial H / \partial p_i = -(\log p_i + 1)`.

    Entries with :math:`p_i = 0` are reported as 0, as in ``kl_divergence_grad``. Chapter 2.

    >>> {k: v.round(4) for k, v in entropy_grad([0.5, 0.5]).items()}
    {'p': array([-0.3069, -0.3069])}
    """
    p = as_float_array("p", p)
    check_probabilities("p", p)
    return {"p": np.where(p > 0, -(np.log(np.where(p > 0, p, 1.0)) + 1.0), 0.0)}


#: Below this |log-ratio| k3 is summed as its Taylor series (see ``_k3``).
_K3_SERIES_CUT = 0.5


def _k3(log_ratio):
    r"""k3 = :math:`e^{-\ell} - 1 + \ell` accurate to a few ulps in every dtype, with u = -l.

    ``expm1(u) - u`` cancels for small u (in float32 it is 9% off at |l| = 1e-6 and, before expm1, 0 at
    1e-9): below |u| = 0.5 the sum :math:`\sum_{k=2}^{17} u^k / k!` is used instead (truncation error
    < 1e-18 relative), above it ``expm1(u) - u`` loses at most a factor ~5 of the dtype's precision.
    Each branch only sees inputs on its side of the cut, so neither overflows nor gives NaN gradients.
    """
    u = -log_ratio
    small = np.abs(u) < _K3_SERIES_CUT
    us = np.where(small, u, 0.0)
    series = np.zeros_like(us)
    for k in range(17, 1, -1):  # Horner: u^2 (1/2! + u (1/3! + u (... + u / 17!)))
        series = series * us + 1.0 / _FACTORIAL[k]
    series = series * us * us
    ul = np.where(small, _K3_SERIES_CUT, u)
    with np.errstate(over="ignore"):
        large = np.expm1(ul) - ul
    return np.where(small, series, large).astype(log_ratio.dtype, copy=False)


_FACTORIAL = [float(__import__("math").factorial(k)) for k in range(18)]


def _kl_from_log_ratio(log_ratio, estimator):
    """k1, k2 or k3 of the log-ratio l = log p - log p_ref, without input checks (for internal callers)."""
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    return _k3(log_ratio)


def kl_estimate(logp, logp_ref, estimator="k1"):
    r"""Per-sample estimate of KL(p || p_ref) from samples x ~ p (Schulman, "Approximating KL", 2020).

    With the log-ratio :math:`\ell = \log p(x) - \log p_{ref}(x)` and :math:`r = p_{ref}(x)/p(x) = e^{-\ell}`:

    - ``"k1"``: :math:`\ell` (unbiased, high variance, can be negative; what PPO for LMs puts in the reward);
    - ``"k2"``: :math:`\tfrac12 \ell^2` (biased, low variance, always >= 0);
    - ``"k3"``: :math:`(r - 1) - \log r` (unbiased, always >= 0; GRPO's eq. (2),
      :math:`\pi_{ref}/\pi_\theta - \log(\pi_{ref}/\pi_\theta) - 1`). Computed with relative accuracy
      close to the dtype's precision for every log-ratio, float32 included: ``expm1(-l) + l`` for
      :math:`|\ell| \ge 0.5` and its Taylor series :math:`\sum_{k\ge2} (-\ell)^k/k!` below, where the
      two terms of ``expm1(-l) + l`` would cancel (9% off at :math:`\ell = 10^{-6}` in float32). So
      k3 of :math:`\ell = 10^{-6}` is :math:`5\cdot10^{-13}(1 - \ell/3)` in float32 too.

    Every estimator is 0 where ``logp == logp_ref``. Shapes: ``logp`` and ``logp_ref`` the same, any
    shape; the output has that shape. ``-inf`` log-probs are allowed (probability 0); NaN or ``+inf``
    raise ``ValueError`` naming the argument.

    >>> kl_estimate(np.log([0.5, 0.25]), np.log([0.25, 0.5]), "k3").round(4)
    array([0.1931, 0.3069])
    >>> round(float(kl_estimate(np.float32([1e-6]), np.float32([0.0]), "k3")[0]) / 5e-13, 5)   # l^2/2 = 5e-13
    1.0
    """
    check_choice("estimator", estimator, KL_ESTIMATORS)
    logp = as_float_array("logp", logp)
    logp_ref = as_float_array("logp_ref", logp_ref)
    check_same_shape(logp=logp, logp_ref=logp_ref)
    with np.errstate(invalid="ignore"):
        log_ratio = logp - logp_ref
    return _kl_from_log_ratio(log_ratio, estimator)
