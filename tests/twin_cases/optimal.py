"""Twin-harness cases for rlhf_edu.{numpy,torch}.optimal."""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(2)
_ref = _rng.dirichlet(np.ones(5), size=3)
_pi = _rng.dirichlet(np.ones(5), size=3)
_r = _rng.normal(size=(3, 5))
_ref_zeros = np.array([0.5, 0.0, 0.3, 0.2, 0.0])
_huge_r = np.array([1e4, -1e4, 0.0, 5e3, 1e4 - 1.0])

CASES = {
    "kl_regularized_optimum": [
        Case((_ref, _r, 0.5), grad=("rewards",), id="beta=0.5"),
        Case((_ref, _r, 20.0), grad=("rewards",), id="beta=20"),
        Case((_ref[0], _r, 1.0), grad=("rewards",), id="broadcast-ref"),
        Case((_ref_zeros, _r[0], 0.3), grad=("rewards",), id="ref-zeros"),
        Case((_ref[0], _huge_r, 1e-3), id="r/beta=1e7"),
    ],
    "log_partition": [
        Case((_ref, _r, 0.5), grad=("ref_probs", "rewards"), id="beta=0.5"),
        Case((_ref, _r, 7.0), grad=("ref_probs", "rewards"), id="beta=7"),
        Case((_ref[0], _r, 1.0), grad=("ref_probs", "rewards"), id="broadcast-ref"),
        Case((_ref[0], _huge_r, 1e-3), id="r/beta=1e7"),
    ],
    "implied_reward": [
        Case((_pi, _ref, 0.1), grad=("policy_probs", "ref_probs"), id="beta=0.1"),
        Case((_pi, _ref[0], 2.0), grad=("policy_probs", "ref_probs"), id="broadcast-ref"),
    ],
    "kl_regularized_objective": [
        Case((_pi, _ref, _r, 0.5), grad=("policy_probs", "ref_probs", "rewards"), id="beta=0.5"),
        Case((_pi, _ref[0], _r[0], 3.0), grad=("policy_probs", "ref_probs", "rewards"), id="broadcast"),
        Case((_ref_zeros, _ref[0], _r[0], 1.0), grad=("policy_probs", "ref_probs", "rewards"), id="policy-zeros"),
    ],
}
