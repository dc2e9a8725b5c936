"""Exercise checkers of chapter 9 (reward overoptimisation).

The chapter derives where the best-of-n form :math:`d(\\alpha - \\beta d)` peaks, fits both of Gao et al.'s forms by
ordinary least squares (``rlhf_edu.numpy.fit_gold_curve``) and combines reward models by their mean and their
minimum. Its exercises ask for what it does not show:

- ``check_rl_peak(fn)``: a derivation with numbers, where the RL form :math:`d(\\alpha - \\beta\\log d)` peaks and
  how high, ``fn(alpha, beta) -> (d_star, gain_star)``, and a ``ValueError`` where it has no peak;
- ``check_weighted_gold_fit(fn)``: a variant, the fit by *weighted* least squares when every measured point comes
  with its own standard error, ``fn(d, gain, se, form) -> (alpha, beta, alpha_se, beta_se)``;
- ``check_uwo_ensemble(fn)``: a variant, Coste et al.'s uncertainty-weighted ensemble reward (the mean of the
  standardised members minus ``lam`` times their variance), ``fn(member_rewards, ref_rewards, lam) -> rewards``.
"""

from __future__ import annotations

import math

import numpy as np

from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.overoptimization import rl_gold

__all__ = ["check_rl_peak", "check_weighted_gold_fit", "check_uwo_ensemble"]


# ---- exercise 1: where the RL form peaks ----


def rl_peak_reference(alpha, beta):
    """The solution: :math:`d^* = e^{\\alpha/\\beta - 1}`, where :math:`\\alpha - \\beta(\\log d + 1) = 0`, and the gain there,
    :math:`d^*(\\alpha - \\beta\\log d^*) = \\beta d^*`. For :math:`\\beta \\le 0` the form grows without bound: no peak."""
    alpha, beta = float(alpha), float(beta)
    if not beta > 0:
        raise ValueError(f"beta must be > 0 for the RL form to have a peak, got {beta}")
    d_star = math.exp(alpha / beta - 1.0)
    return d_star, beta * d_star


def _peak_case(rng):
    beta = float(rng.uniform(0.05, 0.5))
    alpha = float(beta * rng.uniform(0.5, 3.0))
    return (alpha, beta), {}


check_rl_peak = make_checker(
    "rl_peak",
    reference=rl_peak_reference,
    edge_cases=[((0.2, 0.2), {}), ((0.3, 0.1), {}), ((0.0, 0.25), {})],
    random_case=_peak_case,
    expected_errors=[((0.3, 0.0), {}, ValueError), ((0.3, -0.1), {}, ValueError)],
    hint="set the derivative of d * (alpha - beta * log d) to zero: alpha - beta * (log d + 1) = 0 (the 1 comes from "
    "the product rule, d * (1/d)); the gain there simplifies to beta * d_star; a peak exists only for beta > 0",
)


# ---- exercise 2: weighted least squares with known standard errors ----


def weighted_gold_fit_reference(d, gain, se, form):
    """The solution: weights :math:`w_i = 1/\\sigma_i^2`, :math:`\\hat b = (X^\\top W X)^{-1} X^\\top W y`,
    :math:`\\mathrm{Cov}(\\hat b) = (X^\\top W X)^{-1}` (the variances are known: no residual rescaling)."""
    d, gain, se = (np.asarray(x, dtype=float) for x in (d, gain, se))
    if np.any(se <= 0):
        raise ValueError("se must be > 0 everywhere")
    x2 = d**2 if form == "best_of_n" else np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    X = np.stack([d, -x2], axis=1)
    w = 1.0 / se**2
    xtwx = X.T @ (w[:, None] * X)
    coef = np.linalg.solve(xtwx, X.T @ (w * gain))
    cov = np.linalg.inv(xtwx)
    return float(coef[0]), float(coef[1]), float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))


def _weighted_case(rng):
    n = int(rng.integers(4, 10))
    d = np.sort(rng.uniform(0.2, 4.0, size=n))
    form = str(rng.choice(["best_of_n", "rl"]))
    alpha, beta = rng.uniform(0.1, 0.6), rng.uniform(0.02, 0.2)
    truth = alpha * d - beta * (d**2 if form == "best_of_n" else d * np.log(d))
    se = rng.uniform(0.01, 0.1, size=n)
    return (d, truth + se * rng.normal(size=n), se, form), {}


_D4 = np.array([0.5, 1.0, 1.5, 2.0])
check_weighted_gold_fit = make_checker(
    "weighted_gold_fit",
    reference=weighted_gold_fit_reference,
    edge_cases=[
        # equal errors: the ordinary least-squares coefficients
        ((_D4, np.array([0.18, 0.31, 0.38, 0.41]), np.full(4, 0.02), "best_of_n"), {}),
        # one point known 10 times better than the others pulls the fit through it
        ((_D4, np.array([0.18, 0.31, 0.38, 0.41]), np.array([0.05, 0.05, 0.005, 0.05]), "rl"), {}),
        # noise-free points of the RL form with alpha 0.3, beta 0.1: recovered exactly, whatever the errors
        ((_D4, rl_gold(_D4, 0.3, 0.1), np.array([0.01, 0.02, 0.03, 0.04]), "rl"), {}),
    ],
    random_case=_weighted_case,
    expected_errors=[((_D4, np.zeros(4), np.array([0.1, 0.0, 0.1, 0.1]), "rl"), {}, ValueError)],
    hint="likely misconceptions: weights 1/se instead of 1/se**2 (the weight of a squared residual is one over its "
    "variance); multiplying the covariance by the residual variance s**2 (with known errors (X^T W X)^-1 is already "
    "the covariance); an intercept column (the forms are 0 at d = 0); d**2 for the RL form (it is d * log d)",
)


# ---- exercise 3: the uncertainty-weighted ensemble reward ----


def uwo_ensemble_reference(member_rewards, ref_rewards, lam):
    """The solution: standardise member k by the mean and (population) std of its rewards on the reference samples,
    then :math:`\\bar r - \\lambda\\,\\mathrm{Var}_k(r_k)` over the members (Coste et al., 2023)."""
    r = np.asarray(member_rewards, dtype=float)
    ref = np.asarray(ref_rewards, dtype=float)
    z = (r - ref.mean(axis=1, keepdims=True)) / ref.std(axis=1, keepdims=True)
    return z.mean(axis=0) - lam * z.var(axis=0)


def _uwo_case(rng):
    k, n, m = int(rng.integers(2, 5)), int(rng.integers(1, 7)), int(rng.integers(5, 20))
    offsets, scales = rng.normal(scale=3.0, size=(k, 1)), rng.uniform(0.3, 3.0, size=(k, 1))
    ref = offsets + scales * rng.normal(size=(k, m))
    rewards = offsets + scales * rng.normal(size=(k, n))
    return (rewards, ref, float(rng.choice([0.0, 0.5, 1.0, 2.0]))), {}


check_uwo_ensemble = make_checker(
    "uwo_ensemble",
    reference=uwo_ensemble_reference,
    edge_cases=[
        # two members that agree once standardised: no penalty, whatever lam
        ((np.array([[1.0, 3.0], [10.0, 30.0]]), np.array([[0.0, 2.0, 4.0], [0.0, 20.0, 40.0]]), 1.0), {}),
        # they disagree: the variance term bites
        ((np.array([[4.0], [0.0]]), np.array([[0.0, 2.0, 4.0], [0.0, 2.0, 4.0]]), 0.5), {}),
    ],
    random_case=_uwo_case,
    hint="likely misconceptions: no standardisation (raw members differ by arbitrary offsets and scales, so the "
    "variance measures those, not disagreement); standardising with the statistics of the rewards being scored "
    "instead of the reference samples; the std instead of the variance; the sample (n - 1) variance",
)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _rl_peak_forgot_product_rule(alpha, beta):
    if not float(beta) > 0:
        raise ValueError("beta must be > 0")
    d_star = math.exp(alpha / beta)  # from alpha - beta log d = 0: forgot the + 1 of the product rule
    return d_star, d_star * (alpha - beta * math.log(d_star))


def _weighted_fit_one_over_se(d, gain, se, form):
    return weighted_gold_fit_reference(d, gain, np.sqrt(np.asarray(se, dtype=float)), form)  # weights 1/se


def _uwo_raw(member_rewards, ref_rewards, lam):
    r = np.asarray(member_rewards, dtype=float)
    return r.mean(axis=0) - lam * r.var(axis=0)  # no standardisation


RIGHT_SOLUTIONS = {
    "check_rl_peak": rl_peak_reference,
    "check_weighted_gold_fit": weighted_gold_fit_reference,
    "check_uwo_ensemble": uwo_ensemble_reference,
}

WRONG_SOLUTIONS = {
    "check_rl_peak": _rl_peak_forgot_product_rule,
    "check_weighted_gold_fit": _weighted_fit_one_over_se,
    "check_uwo_ensemble": _uwo_raw,
}
