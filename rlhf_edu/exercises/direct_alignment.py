r"""Exercise checkers of chapter 7 (IPO, KTO, SimPO, ORPO, SLiC and the GPO family).

Chapter 7 prints the library's GPO, IPO, KTO, SLiC and REBEL losses, so its exercises ask for what it does not
print:

- ``check_orpo_from_sums(fn)``: a variant, ORPO's per-pair loss from what a trainer has at hand, SUMMED
  log-probabilities and lengths, :math:`\mathcal{L}_{SFT} + \lambda\mathcal{L}_{OR}` with the odds of the
  per-token (geometric-mean) likelihood, stable for likelihoods near 1;
- ``check_gpo_margin_regularization(fn)``: a derivation with a number, the regularisation strength
  :math:`|f''(0)/f'(0)|` of the logistic loss with a margin, :math:`f(x) = \log(1 + e^{-(x - \gamma)})`, as a
  function of :math:`\gamma`;
- ``check_simpo_fix(fn)``: find the bug, a SimPO loss that scales the margin by beta and overflows.

The solutions are ``rlhf_edu.numpy.direct.orpo_loss``, a one-line formula and ``rlhf_edu.numpy.direct.simpo_loss``.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.direct import orpo_loss, simpo_loss

__all__ = ["check_orpo_from_sums", "check_gpo_margin_regularization", "check_simpo_fix"]


# ---- ORPO from summed log-probabilities ----


def orpo_from_sums_reference(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, lam):
    """The solution: ``orpo_loss`` on the mean per-token log-probs, with the chosen answer's per-token NLL."""
    chosen_mean = np.asarray(chosen_logps, dtype=float) / np.asarray(chosen_lengths, dtype=float)
    rejected_mean = np.asarray(rejected_logps, dtype=float) / np.asarray(rejected_lengths, dtype=float)
    return orpo_loss(chosen_mean, rejected_mean, -chosen_mean, lam)


def _orpo_case(rng):
    n = int(rng.integers(1, 7))
    len_w, len_l = rng.integers(2, 40, size=n), rng.integers(2, 40, size=n)
    per_token_w, per_token_l = -rng.uniform(0.02, 3.0, size=n), -rng.uniform(0.02, 3.0, size=n)
    return (per_token_w * len_w, per_token_l * len_l, len_w, len_l, float(rng.choice([0.1, 0.25, 1.0]))), {}


check_orpo_from_sums = make_checker(
    "orpo_from_sums",
    reference=orpo_from_sums_reference,
    edge_cases=[
        # per-token likelihoods 0.8 and 0.5 over 4 and 10 tokens: odds 4 and 1
        ((4 * np.log([0.8]), 10 * np.log([0.5]), np.array([4]), np.array([10]), 0.1), {}),
        # answers the model is almost sure of (per-token log-probs -1e-7 and -1e-13): 1 - P cancels in floats
        ((np.array([-2e-6, -3.0]), np.array([-20.0, -1e-12]), np.array([20, 6]), np.array([8, 10]), 1.0), {}),
        # very unlikely answers (per-token log-prob -60): e^{-60} must not break log(1 - P)
        ((np.array([-600.0]), np.array([-1200.0]), np.array([10]), np.array([20]), 0.25), {}),
    ],
    random_case=_orpo_case,
    rtol=1e-6,
    hint="likely misconceptions: odds of the whole-sequence probability exp(sum) instead of the per-token "
    "(geometric-mean) likelihood P = exp(sum / |y|) (the lecture notes' wording); log(1 - P) computed as "
    "np.log(1 - np.exp(log_p)), which loses every digit when P is close to 1 (use np.log(-np.expm1(log_p))); "
    "forgetting the SFT term, the chosen answer's per-token NLL -sum_w / |y_w|; lam on the wrong term",
)


# ---- the regularisation of the logistic loss with a margin ----


def gpo_margin_regularization_reference(gamma):
    r""":math:`|f''(0)/f'(0)|` for :math:`f(x) = \log(1 + e^{-(x-\gamma)})`: :math:`\sigma(-\gamma)`."""
    gamma = np.asarray(gamma, dtype=float)
    return 1.0 / (1.0 + np.exp(gamma))


check_gpo_margin_regularization = make_checker(
    "gpo_margin_regularization",
    reference=gpo_margin_regularization_reference,
    edge_cases=[((np.array([0.0]),), {}), ((np.array([1.0, 2.0]),), {})],
    random_case=lambda rng: ((rng.uniform(-3.0, 5.0, size=int(rng.integers(1, 6))),), {}),
    hint="write f'(x) = -sigma(-(x - gamma)) and f''(x) = sigma(x - gamma) sigma(-(x - gamma)), evaluate both at "
    "x = 0 and divide; likely misconceptions: a sign slip that gives sigma(+gamma) (the margin makes the "
    "regularisation WEAKER, not stronger); evaluating at x = gamma (that gives 1/2 for every gamma)",
)


# ---- find the bug: SimPO ----


def buggy_simpo(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, beta, gamma):
    """A first SimPO: the margin ends up multiplied by beta, and log(sigmoid) overflows for bad pairs."""
    z = beta * (chosen_logps / chosen_lengths - rejected_logps / rejected_lengths - gamma)
    return -np.log(1.0 / (1.0 + np.exp(-z)))


def _simpo_case(rng):
    n = int(rng.integers(1, 7))
    len_w, len_l = rng.integers(1, 40, size=n), rng.integers(1, 40, size=n)
    c, r = -rng.uniform(0.05, 3.0, size=n) * len_w, -rng.uniform(0.05, 3.0, size=n) * len_l
    return (c, r, len_w, len_l, float(rng.choice([2.0, 2.5, 10.0])), float(rng.choice([0.5, 1.0, 1.6]))), {}


check_simpo_fix = make_checker(
    "simpo_fix",
    reference=simpo_loss,
    edge_cases=[
        ((np.array([-10.0]), np.array([-30.0]), np.array([10]), np.array([10]), 2.0, 1.0), {}),
        # a pair the model gets badly wrong: margin about -800, where exp(800) overflows
        ((np.array([-400.0]), np.array([-2.0]), np.array([2]), np.array([2]), 4.0, 1.0), {}),
    ],
    random_case=_simpo_case,
    hint="likely misconceptions: the margin gamma multiplied by beta (SimPO subtracts gamma AFTER scaling the "
    "rewards: beta * mean_w - beta * mean_l - gamma; some libraries take gamma / beta as their parameter for this "
    "reason); -log(sigmoid(z)) computed as written, which gives inf for very negative z (use np.logaddexp(0, -z)); "
    "summed instead of mean log-probs",
)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _orpo_sequence_probability(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, lam):
    # the notes' wording: odds of the whole-sequence probability (and a naive log(1 - P))
    c, r = np.asarray(chosen_logps, dtype=float), np.asarray(rejected_logps, dtype=float)
    with np.errstate(divide="ignore"):
        odds = lambda lp: lp - np.log(1.0 - np.exp(lp))  # noqa: E731
        log_or = odds(c) - odds(r)
    return -c / np.asarray(chosen_lengths) + lam * np.logaddexp(0.0, -log_or)


def _orpo_right(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, lam):
    mw = np.asarray(chosen_logps, dtype=float) / np.asarray(chosen_lengths, dtype=float)
    ml = np.asarray(rejected_logps, dtype=float) / np.asarray(rejected_lengths, dtype=float)
    log_odds = lambda lp: lp - np.log(-np.expm1(lp))  # noqa: E731
    return -mw + lam * np.logaddexp(0.0, -(log_odds(mw) - log_odds(ml)))


def _simpo_right(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, beta, gamma):
    z = beta * chosen_logps / chosen_lengths - beta * rejected_logps / rejected_lengths - gamma
    return np.logaddexp(0.0, -z)


RIGHT_SOLUTIONS = {
    "check_orpo_from_sums": _orpo_right,
    "check_gpo_margin_regularization": lambda gamma: 1.0 / (1.0 + np.exp(np.asarray(gamma, dtype=float))),
    "check_simpo_fix": _simpo_right,
}

WRONG_SOLUTIONS = {
    "check_orpo_from_sums": _orpo_sequence_probability,
    # the sign slip: sigma(+gamma)
    "check_gpo_margin_regularization": lambda gamma: 1.0 / (1.0 + np.exp(-np.asarray(gamma, dtype=float))),
    # only the overflow fixed: gamma still scaled by beta
    "check_simpo_fix": lambda c, r, lw, ll, beta, gamma: np.logaddexp(0.0, -beta * (c / lw - r / ll - gamma)),
}
