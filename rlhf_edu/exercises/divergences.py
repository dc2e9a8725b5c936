"""Exercise checkers of chapter 2 (KL divergence and its estimators).

- ``check_kl_divergence(fn)``: ``fn(p, q)`` is the exact KL(p || q) of distributions on the last axis, in
  nats, with :math:`0 \\log 0 = 0` and :math:`+\\infty` where q = 0 < p; it raises ``ValueError`` when p or
  q is not a distribution. Reference: ``rlhf_edu.numpy.kl_divergence``.
- ``check_kl_estimate(fn)``: ``fn(logp, logp_ref, estimator)`` returns k1, k2 or k3 per sample, with k3
  accurate for tiny log-ratios (``expm1``), and raises ``ValueError`` for an unknown estimator.
  Reference: ``rlhf_edu.numpy.kl_estimate``.
- ``check_monte_carlo_bias(fn)``: ``fn(logp, logp_ref, true_kl, estimator)`` returns the Monte Carlo bias
  of the estimator and its standard error. Reference: ``rlhf_edu.figures.divergences.monte_carlo_bias``.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.figures.divergences import gaussian_kl, gaussian_logpdf, monte_carlo_bias
from rlhf_edu.numpy.divergences import KL_ESTIMATORS, kl_divergence, kl_estimate

__all__ = ["check_kl_divergence", "check_kl_estimate", "check_monte_carlo_bias"]


def _random_distributions(rng):
    k = int(rng.integers(2, 7))
    rows = int(rng.integers(1, 4))
    p = rng.dirichlet(np.ones(k), size=rows)
    q = rng.dirichlet(np.ones(k), size=rows)
    if rng.random() < 0.5:  # a zero in p: its term must be 0, whatever q is there (even 0)
        j = int(rng.integers(k))
        p[:, j] = 0.0
        p /= p.sum(axis=-1, keepdims=True)
        if rng.random() < 0.5:
            q[:, j] = 0.0
            q /= q.sum(axis=-1, keepdims=True)
    return (p, q), {}


check_kl_divergence = make_checker(
    "kl_divergence",
    reference=kl_divergence,
    edge_cases=[
        ((np.array([0.7, 0.2, 0.1]), np.array([0.5, 0.3, 0.2])), {}),  # the lecture notes' example
        ((np.array([0.5, 0.5]), np.array([0.5, 0.5])), {}),  # KL(p || p) = 0
        ((np.array([1.0, 0.0]), np.array([0.5, 0.5])), {}),  # 0 log 0 = 0
        ((np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.9, 0.1])), {}),  # p = q = 0: still 0, not NaN
        ((np.array([0.5, 0.5]), np.array([1.0, 0.0])), {}),  # q = 0 < p: +inf
    ],
    random_case=_random_distributions,
    rtol=1e-9,
    atol=1e-12,
    hint="sum p * log(p / q) over the LAST axis, but only where p > 0 (np.where); let q = 0 < p give +inf, "
    "and raise ValueError when p or q has a negative entry or does not sum to 1",
    expected_errors=[
        ((np.array([0.7, 0.2, 0.2]), np.array([0.5, 0.3, 0.2])), {}, ValueError),  # p sums to 1.1
        ((np.array([0.5, 0.5]), np.array([1.2, -0.2])), {}, ValueError),  # negative q
    ],
)


def _random_log_ratios(rng):
    n = int(rng.integers(1, 8))
    logp_ref = np.log(rng.dirichlet(np.ones(6)))[rng.integers(6, size=n)]
    # log-ratios from tiny (1e-7, where a naive k3 cancels) to large (|l| ~ 3)
    scale = 10.0 ** rng.uniform(-7, 0.5, size=n)
    logp = logp_ref + scale * rng.choice([-1.0, 1.0], size=n)
    return (logp, logp_ref, KL_ESTIMATORS[int(rng.integers(3))]), {}


check_kl_estimate = make_checker(
    "kl_estimate",
    reference=kl_estimate,
    edge_cases=[((np.log([0.5, 0.25]), np.log([0.25, 0.5]), k), {}) for k in KL_ESTIMATORS]
    + [((np.array([-2.0]), np.array([-2.0]), k), {}) for k in KL_ESTIMATORS]  # equal log-probs: 0
    + [((np.array([-1.0, -1.0]), np.array([-1.0 - 1e-6, -1.0 + 1e-7]), "k3"), {})],  # tiny log-ratios
    random_case=_random_log_ratios,
    rtol=1e-6,
    atol=0.0,
    hint="with l = logp - logp_ref: k1 = l, k2 = l**2 / 2, k3 = (r - 1) - log r with r = exp(-l); write k3 "
    "as np.expm1(-l) + l, since exp(-l) + l - 1 rounds away the answer when l is tiny; raise ValueError for an "
    "estimator that is not 'k1', 'k2' or 'k3'",
    expected_errors=[((np.array([0.0]), np.array([0.0]), "k4"), {}, ValueError)],
)


def _random_gaussian_samples(rng):
    mu_p = float(rng.uniform(-1.5, 1.5))
    sigma_p = float(rng.uniform(0.7, 1.3))
    n = int(rng.integers(20, 200))
    x = mu_p + sigma_p * rng.standard_normal(n)
    logp, logp_ref = gaussian_logpdf(x, mu_p, sigma_p), gaussian_logpdf(x, 0.0, 1.0)
    true_kl = float(gaussian_kl(mu_p, sigma_p, 0.0, 1.0))
    return (logp, logp_ref, true_kl, KL_ESTIMATORS[int(rng.integers(3))]), {}


check_monte_carlo_bias = make_checker(
    "monte_carlo_bias",
    reference=monte_carlo_bias,
    edge_cases=[
        ((np.array([0.0, 0.0]), np.array([0.0, -1.0]), 0.5, "k1"), {}),
        ((np.array([0.0, 0.0, 0.0]), np.array([0.0, -1.0, 1.0]), 0.1, "k2"), {}),
    ],
    random_case=_random_gaussian_samples,
    rtol=1e-9,
    atol=1e-12,
    hint="k = kl_estimate(logp, logp_ref, estimator); bias = mean(k) - true_kl; the standard error of a "
    "mean of n samples is std(k, ddof=1) / sqrt(n); return (bias, standard_error)",
)


def _naive_kl(p, q):
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(p * np.log(p / q), axis=-1)  # 0 * log(0 / q) = 0 * -inf = NaN


def _naive_k3(logp, logp_ref, estimator):
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    ell = np.asarray(logp, dtype=float) - np.asarray(logp_ref, dtype=float)
    if estimator == "k1":
        return ell
    if estimator == "k2":
        return 0.5 * ell**2
    # GRPO's eq. (2) typed in as written, r - log r - 1 with log r = -ell: for |ell| ~ 1e-7, exp(-ell) + ell
    # rounds to 1 and the result is 0 or one rounding error
    return np.exp(-ell) + ell - 1


def _std_not_standard_error(logp, logp_ref, true_kl, estimator):
    k = kl_estimate(np.asarray(logp, float), np.asarray(logp_ref, float), estimator)
    return float(k.mean() - true_kl), float(k.std(ddof=1))  # forgot the 1/sqrt(n)


RIGHT_SOLUTIONS = {
    "check_kl_divergence": kl_divergence,
    "check_kl_estimate": kl_estimate,
    "check_monte_carlo_bias": monte_carlo_bias,
}
WRONG_SOLUTIONS = {
    "check_kl_divergence": _naive_kl,
    "check_kl_estimate": _naive_k3,
    "check_monte_carlo_bias": _std_not_standard_error,
}
