"""Twin-harness cases for rlhf_edu.{numpy,torch}.direct.

Gradient cases keep away from kinks (hinge at 0) and from the ORPO clip at log-prob 0, where finite
differences are not the derivative.
"""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(0)
_B = 6
_pc, _pr, _rc, _rr = (-_rng.uniform(5.0, 40.0, size=_B) for _ in range(4))
_FOUR = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")

# margins of +-1e4 nats: the losses and gradients must stay finite in both dtypes
_big = np.array([1e4, -1e4, 5e3, -5e3])
_zeros = np.zeros(4)
# log-probs must be <= 0: the margin cases shift all log-probs by -2e4 (exact in float32), margins unchanged
_S = 2e4
_bigc, _bigr, _refs = _big - _S, -_big - _S, _zeros - _S

# a (3, 2) batch: any leading shape works
_pc2, _pr2, _rc2, _rr2 = (-_rng.uniform(1.0, 10.0, size=(3, 2)) for _ in range(4))

_rho = np.array([-3.0, -0.7, -0.2, 0.3, 0.6, 2.5, 4.0])  # beta * rho stays away from the hinge at 1
_desirable = np.array([True, False, True, False, True, False])
_kl_per_example = _rng.uniform(-0.5, 2.0, size=_B)

_mean_w = np.array([-0.05, -0.3, -1.0, -2.5, -7.0, -40.0])
_mean_l = np.array([-0.9, -0.1, -2.0, -0.4, -9.0, -30.0])

CASES = {
    "log_ratio_difference": [Case((_pc, _pr, _rc, _rr), grad=_FOUR, id="random")],
    "dpo_implicit_reward": [
        Case((_pc, _rc, 0.1), grad=("policy_logps", "ref_logps"), id="beta0.1"),
        Case((_pc2, _rc2), {"beta": 2.0}, grad=("policy_logps", "ref_logps"), id="2d-beta2"),
    ],
    "dpo_loss": [
        Case((_pc, _pr, _rc, _rr), grad=_FOUR, id="default-beta"),
        Case((_pc, _pr, _rc, _rr), {"beta": 0.5}, grad=_FOUR, id="beta0.5"),
        Case((_pc, _pr, _rc, _rr), {"beta": 0.3, "label_smoothing": 0.1}, grad=_FOUR, id="cdpo0.1"),
        Case((_pc, _pr, _rc, _rr), {"label_smoothing": 0.5}, grad=_FOUR, id="cdpo0.5"),
        Case((_bigc, _bigr, _refs, _refs), {"beta": 1.0}, grad=_FOUR, id="margin1e4"),
        Case((_pc2, _pr2, _rc2, _rr2), {"beta": 0.2}, grad=_FOUR, id="2d"),
    ],
    "ipo_loss": [
        Case((_pc, _pr, _rc, _rr, 0.1), grad=_FOUR, id="beta0.1"),
        Case((_pc2, _pr2, _rc2, _rr2, 1.5), grad=_FOUR, id="2d-beta1.5"),
        Case((_bigc, _bigr, _refs, _refs, 1.0), grad=_FOUR, id="margin1e4"),
    ],
    "gpo_loss": [
        Case((_rho, 0.8, f), grad=("rho",), id=f)
        for f in ("logistic", "hinge", "squared", "exponential", "truncated_quadratic", "savage")
    ]
    + [
        Case((_rho,), {"beta": 1.0}, grad=("rho",), id="default-f"),
        Case((_big, 1.0, "logistic"), grad=("rho",), id="logistic-1e4"),
        Case((_big, 1.0, "savage"), grad=("rho",), id="savage-1e4"),
    ],
    # kahneman_tversky_value: gradient cases keep away from z = z0, where the slope is infinite
    "kahneman_tversky_value": [
        Case((_rho, np.array(0.0)), grad=("z", "z0"), id="defaults"),
        Case((_rho, np.array(0.5), 0.5, 2.0), grad=("z", "z0"), id="z0-0.5-alpha0.5"),
        Case((_rho.reshape(7, 1), np.array([-4.0, 5.0]), 1.0, 1.0), grad=("z", "z0"), id="broadcast-linear"),
    ],
    "slic_loss": [
        Case((_pc, _pr, 3.0), grad=("chosen_logps", "rejected_logps"), id="calibration"),
        Case(
            (np.array([-3.0, -1.0, -10.0]), np.array([-4.0, -5.0, -2.0]), 2.0, np.array([10.0, 1.0, 4.0]), 0.5),
            grad=("chosen_logps", "rejected_logps", "ref_nll"),
            id="with-ref-nll",
        ),
    ],
    "kto_loss": [
        Case((_pc, _rc, _desirable, 0.3, 0.1), grad=("policy_logps", "ref_logps"), id="scalar-kl"),
        Case(
            (_pc, _rc, _desirable, _kl_per_example, 0.5),
            {"lambda_d": 1.33, "lambda_u": 1.0},
            grad=("policy_logps", "ref_logps"),
            id="per-example-kl-lambdas",
        ),
        Case((_pc, _rc, _desirable, -1.0, 0.1), grad=("policy_logps",), id="negative-kl-clamped"),
        Case((_bigc, _bigr, np.array([True, False, False, True]), 0.0, 1.0), grad=("policy_logps",), id="1e4"),
    ],
    "simpo_loss": [
        Case(
            (_pc, _pr, np.array([5, 9, 12, 3, 30, 7]), np.array([8, 4, 10, 6, 25, 7]), 2.0, 0.5),
            grad=("chosen_logps", "rejected_logps"),
            id="int-lengths",
        ),
        Case(
            (_pc2, _pr2, np.full((3, 2), 4.0), np.array([2.0, 6.0]), 2.5, 0.0),
            grad=("chosen_logps", "rejected_logps"),
            id="2d-broadcast-lengths",
        ),
        Case((_bigc, _bigr, np.ones(4), np.ones(4), 1.0, 1.0), grad=("chosen_logps",), id="margin1e4"),
    ],
    "orpo_log_odds": [
        Case((_mean_w,), grad=("mean_logps",), id="moderate"),
        Case((np.array([-1e-4, -1e-2, -1e4, -7e2]),), id="near-0-and-far"),
    ],
    "orpo_loss": [
        Case((_mean_w, _mean_l, -_mean_w, 0.1), grad=("chosen_mean_logps", "rejected_mean_logps", "chosen_nll"),
             id="lam0.1"),
        Case((_mean_w, _mean_l, np.full(6, 2.0), 1.0), grad=("chosen_mean_logps", "rejected_mean_logps"),
             id="lam1"),
        Case((np.array([-1e4, -0.2]), np.array([-0.2, -1e4]), np.array([1e4, 0.2]), 0.5), id="extreme"),
    ],
    "rebel_loss": [
        Case(
            (_pc, _rc, _pr, _rr, _rng.normal(size=_B), _rng.normal(size=_B), 1.0),
            grad=("logp", "logp_old", "logp_alt", "logp_old_alt", "reward", "reward_alt"),
            id="eta1",
        ),
        Case(
            (_pc2, _rc2, _pr2, _rr2, np.ones((3, 2)), 0.5, 0.3),
            grad=("logp", "logp_alt"),
            id="2d-eta0.3-scalar-reward",
        ),
    ],
}
