"""Exercise checkers of chapter 2 (KL divergence and its estimators).

- ``check_kl_divergence(fn)``: ``fn(p, q)`` is the exact KL(p || q) of distributions on the last axis, in
  nats, with :math:`0 \\log 0 = 0` and :math:`+\\infty` where q = 0 < p; it raises ``ValueError`` when p or
  q is not a distribution. Reference: ``rlhf_edu.numpy.kl_divergence``.
- ``check_kl_estimate(fn)``: ``fn(logp, logp_ref, estimator)`` returns k1, k2 or k3 per sample, with k3
  accurate for tiny log-ratios (``expm1``), and raises ``ValueError`` for an unknown estimator.
  Reference: ``rlhf_edu.numpy.kl_estimate``.
- ``check_monte_carlo_bias(fn)``: ``fn(logp, logp_ref, true_kl, estimator)`` returns the Monte Carlo bias
  of the estimator and its standard error. Reference: ``rlhf_edu.figures.divergences.monte_carlo_bias``.

Chapter 2 prints the references of the first two in its section 4; its exercises use these four instead:

- ``check_k2_mean_prediction(fn)``: ``fn()`` predicts the mean of k2 on N(2, 1) against N(0, 1); the checker
  runs the Monte Carlo (predict, then run);
- ``check_reverse_kl_estimate(fn)``: ``fn(logp, logp_ref)``, a per-sample, unbiased, non-negative estimate of
  KL(p_ref || p) from samples of p (a variant);
- ``check_k3_std_gaussian(fn)``: ``fn(mu)``, the standard deviation of k3 for N(mu, 1) against N(0, 1) (a
  derivation checked as a number);
- ``check_sequence_kl(fn)``: ``fn(logp, logp_ref, mask)``, k1 summed over each answer's generated tokens, the
  fix of ``buggy_sequence_kl`` (find the bug).
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
    # GRPO's KL term (DeepSeekMath eq. (4)) typed in as written, r - log r - 1 with log r = -ell: for |ell| ~ 1e-7, exp(-ell) + ell
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


# ---------------------------------------------------------------------------------------------------------
# The chapter's exercises (second edition): none of them is answered by the code that the chapter prints.
# - check_k2_mean_prediction: predict-then-run (the mean of k2 far from the reference);
# - check_reverse_kl_estimate: a variant (a per-sample estimator of the OTHER direction, KL(p_ref || p));
# - check_k3_std_gaussian: a derivation whose result is a number (the spread of k3 on two Gaussians);
# - check_sequence_kl: find the bug (a per-answer KL with the classic mistakes).
# ---------------------------------------------------------------------------------------------------------

import math  # noqa: E402

from rlhf_edu.exercises.bradley_terry import _with_diagnosis  # noqa: E402
from rlhf_edu.exercises.checker import _not_done  # noqa: E402
from rlhf_edu.exercises.checker import ExerciseResult  # noqa: E402

__all__ += ["check_k2_mean_prediction", "check_reverse_kl_estimate", "check_k3_std_gaussian", "check_sequence_kl"]

K2_PREDICTION_SETUP = dict(mu_p=2.0, n=1_000_000, seed=0)


def run_k2_mean(mu_p=2.0, n=1_000_000, seed=0):
    """Monte Carlo mean of k2 and its standard error on ``n`` samples of N(mu_p, 1), reference N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = mu_p + rng.standard_normal(n)
    k2 = kl_estimate(gaussian_logpdf(x, mu_p, 1.0), gaussian_logpdf(x, 0.0, 1.0), "k2")
    return float(k2.mean()), float(k2.std(ddof=1) / math.sqrt(n))


def check_k2_mean_prediction(student_fn, seed=0, verbose=True):
    """Run the Monte Carlo of the exercise and compare its mean of k2 with the student's prediction."""
    name = "k2_mean_prediction"
    if not callable(student_fn):
        raise TypeError(f"check_{name} expects your function, got {type(student_fn).__name__}")
    try:
        predicted = student_fn()
    except NotImplementedError:
        return _not_done(name, verbose)
    except Exception as exc:  # noqa: BLE001
        message = f"FAIL {name}: your function raised {type(exc).__name__}: {exc}"
        if verbose:
            print(message)
        return ExerciseResult(name, False, 0, message)
    s = K2_PREDICTION_SETUP
    mean, se = run_k2_mean(**s)
    true_kl = s["mu_p"] ** 2 / 2
    setup = (f"input: {s['n']:,} samples of p = N({s['mu_p']}, 1), reference N(0, 1), true KL(p || p_ref) = "
             f"{true_kl:.1f}")
    try:
        predicted = float(predicted)
    except (TypeError, ValueError):
        message = f"FAIL {name}: return one number (the mean of k2), got {type(predicted).__name__}\n  {setup}"
        if verbose:
            print(message)
        return ExerciseResult(name, False, 0, message)
    tol = max(5 * se, 0.01 * abs(mean))
    if abs(predicted - mean) < tol:
        message = f"PASS {name}: you predicted {predicted:.3f}; the Monte Carlo mean is {mean:.3f} +- {2 * se:.3f} ({setup})"
        if verbose:
            print(message)
        return ExerciseResult(name, True, 1, message)
    if abs(predicted - true_kl) < 0.05 * true_kl:
        why = "that is the KL itself: k2 is a biased estimator, and its bias grows as p moves away from p_ref"
    elif predicted < true_kl:
        why = "k2's bias is not negative here: its mean is the KL plus a non-negative term"
    else:
        why = "right direction (above the KL), wrong size: write the mean of l**2 as variance plus squared mean"
    message = (f"FAIL {name}: the prediction is off by more than {tol:.3f}\n  {setup}\n"
               f"  expected (the run): {mean:.4f} +- {2 * se:.4f}\n  got (your prediction): {predicted:.4f}\n"
               f"  likely misconception: {why}")
    if verbose:
        print(message)
    return ExerciseResult(name, False, 0, message)


def _reverse_kl_estimate(logp, logp_ref):
    """Per-sample estimate of KL(p_ref || p) from samples of p: r log r - (r - 1), r = p_ref / p; >= 0 and unbiased."""
    log_r = np.asarray(logp_ref, dtype=float) - np.asarray(logp, dtype=float)
    return np.exp(log_r) * log_r - np.expm1(log_r)


def _random_reverse_case(rng):
    n = int(rng.integers(1, 8))
    logp = np.log(rng.dirichlet(np.ones(6)))[rng.integers(6, size=n)]
    scale = 10.0 ** rng.uniform(-3, 0.5, size=n)
    return (logp, logp + scale * rng.choice([-1.0, 1.0], size=n)), {}


_reverse_base = make_checker(
    "reverse_kl_estimate",
    reference=_reverse_kl_estimate,
    edge_cases=[
        ((np.log([0.5, 0.25]), np.log([0.25, 0.5])), {}),
        ((np.array([-2.0]), np.array([-2.0])), {}),  # p = p_ref on this sample: 0
        ((np.array([-1.0, -1.0]), np.array([-3.0, 1.0])), {}),
    ],
    random_case=_random_reverse_case,
    rtol=1e-6,
    atol=1e-12,
    hint="the samples come from p, not from p_ref: write KL(p_ref || p) as an expectation over p (an importance "
    "weight appears), then add a term whose mean under p is 0, chosen so that every sample gives a value >= 0",
)


def _diagnose_reverse(fn):
    logp, logp_ref = np.log([0.5, 0.25]), np.log([0.25, 0.5])
    got = np.asarray(fn(logp, logp_ref), dtype=float)
    log_r = logp_ref - logp
    r = np.exp(log_r)
    if np.allclose(got, r * log_r):
        return "importance-weighted, so unbiased, but negative on some samples: add a zero-mean control variate"
    if np.allclose(got, np.expm1(-log_r) + log_r):
        return "that is k3 with the arguments swapped: >= 0, but its mean under p is not KL(p_ref || p) (bug 1)"
    if np.allclose(got, np.expm1(log_r) - log_r):
        return "that is k3 of KL(p || p_ref), the direction the chapter already estimates, not KL(p_ref || p)"
    if np.allclose(got, -log_r) or np.allclose(got, log_r):
        return "a plain log-ratio averaged over samples of p estimates KL(p || p_ref) (or minus it), not KL(p_ref || p)"
    return None


check_reverse_kl_estimate = _with_diagnosis("reverse_kl_estimate", _reverse_base, _diagnose_reverse)


def _k3_std_gaussian(mu):
    """Standard deviation of one sample of k3 for p = N(mu, 1), p_ref = N(0, 1)."""
    m = float(mu) ** 2
    return math.sqrt(math.expm1(m) - m)


_k3_std_base = make_checker(
    "k3_std_gaussian",
    reference=_k3_std_gaussian,
    edge_cases=[((0.1,), {}), ((1.0,), {}), ((2.0,), {}), ((-1.5,), {})],
    random_case=lambda rng: ((float(rng.uniform(0.05, 2.5) * rng.choice([-1.0, 1.0])),), {}),
    rtol=1e-6,
    atol=0.0,
    hint="with l = mu z + mu**2 / 2 (section 3.5) and r = exp(-l), Var(k3) = Var(r) + Var(l) + 2 Cov(r, l); "
    "E[exp(t z)] = exp(t**2 / 2) for a standard normal z gives the moments; for Cov, differentiate it in t",
)


def _diagnose_k3_std(fn):
    mu = 1.0
    got = float(fn(mu))
    if math.isclose(got, abs(mu)):
        return "that is the spread of k1 (= mu); k3 adds r - 1, which changes the spread"
    if math.isclose(got, math.sqrt(math.expm1(mu**2))):
        return "you kept Var(r) only: l's variance and the covariance of r and l count too"
    if math.isclose(got, math.sqrt(math.expm1(mu**2) + mu**2)):
        return "you added the variances as if r and l were independent; they are strongly (negatively) correlated"
    if math.isclose(got, math.sqrt(math.expm1(mu**2) + 3 * mu**2)):
        return "check the sign of Cov(r, l): r = exp(-l) falls when l rises"
    return None


check_k3_std_gaussian = _with_diagnosis("k3_std_gaussian", _k3_std_base, _diagnose_k3_std)


def _sequence_kl(logp, logp_ref, mask):
    """k1 summed over the generated tokens of each answer: an unbiased estimate of KL(pi || pi_ref) per sequence."""
    logp, logp_ref, mask = (np.asarray(a, dtype=float) for a in (logp, logp_ref, mask))
    return np.sum((logp - logp_ref) * mask, axis=-1)


def buggy_sequence_kl(logp, logp_ref, mask):
    """The exercise's given function (two classic bugs)."""
    logp, logp_ref, mask = (np.asarray(a, dtype=float) for a in (logp, logp_ref, mask))
    return np.mean((logp_ref - logp) * mask, axis=-1)


def _random_sequences(rng):
    b, t = int(rng.integers(1, 5)), int(rng.integers(2, 9))
    logp = np.log(rng.uniform(0.05, 1.0, size=(b, t)))
    logp_ref = np.log(rng.uniform(0.05, 1.0, size=(b, t)))
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(float)
    return (logp, logp_ref, mask), {}


_sequence_base = make_checker(
    "sequence_kl",
    reference=_sequence_kl,
    edge_cases=[
        ((np.log([[0.5, 0.4, 0.9]]), np.log([[0.25, 0.5, 0.1]]), np.array([[1.0, 1.0, 0.0]])), {}),
        ((np.log([[0.5, 0.2]]), np.log([[0.5, 0.2]]), np.array([[1.0, 1.0]])), {}),  # same model: 0
    ],
    random_case=_random_sequences,
    rtol=1e-9,
    atol=1e-12,
    hint="which model drew the samples decides the order of the log-probabilities, and an answer's log-ratio "
    "is built from its own tokens only (section 3.7): padding must not change it, nor the padded width",
)


def _diagnose_sequence(fn):
    logp, logp_ref = np.log([[0.5, 0.4, 0.9, 0.3]]), np.log([[0.25, 0.5, 0.1, 0.6]])
    mask = np.array([[1.0, 1.0, 0.0, 0.0]])
    got = np.asarray(fn(logp, logp_ref, mask), dtype=float)
    ref = _sequence_kl(logp, logp_ref, mask)
    for sign, direction in ((1, ""), (-1, "the log-ratio is flipped (log pi_ref - log pi): minus the KL; ")):
        for scale, what in ((1, ""), (4, "divided by the padded width, so padding changes the answer; "),
                            (2, "a per-token average, not the sequence KL of 3.7; ")):
            if (sign, scale) != (1, 1) and np.allclose(got, sign * ref / scale):
                return (direction + what).rstrip("; ")
    if np.allclose(got, np.sum(logp - logp_ref, axis=-1)):
        return "the padded positions were summed too: multiply by the mask"
    return None


check_sequence_kl = _with_diagnosis("sequence_kl", _sequence_base, _diagnose_sequence)


def _flipped_reverse(logp, logp_ref):
    return kl_estimate(np.asarray(logp_ref, float), np.asarray(logp, float), "k3")


RIGHT_SOLUTIONS.update({
    "check_k2_mean_prediction": lambda: 4.0,
    "check_reverse_kl_estimate": _reverse_kl_estimate,
    "check_k3_std_gaussian": _k3_std_gaussian,
    "check_sequence_kl": _sequence_kl,
})
WRONG_SOLUTIONS.update({
    "check_k2_mean_prediction": lambda: 2.0,
    "check_reverse_kl_estimate": _flipped_reverse,
    "check_k3_std_gaussian": lambda mu: abs(mu),
    "check_sequence_kl": buggy_sequence_kl,
})
