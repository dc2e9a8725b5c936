"""Twin-harness cases for rlhf_edu.{numpy,torch}.sampling.

``best_of_n_probs`` has no gradient case: gradcheck's perturbations of ``ref_probs`` break the sum-to-one
check. ``tests/test_sampling.py`` checks its torch gradient along directions that keep the sum.
"""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(3)
_ref = _rng.dirichlet(np.ones(8), size=3)
_r = _rng.normal(size=(3, 8))
_r_ties = np.round(_r)  # a handful of reward levels shared by several answers
_ref_zeros = np.array([0.0, 0.4, 0.0, 0.35, 0.25, 0.0])
_tail = np.full(200, 1.0 / 200)

CASES = {
    "best_of_n_probs": [
        Case((_ref, _r, 1), id="n=1"),
        Case((_ref, _r, 4), id="n=4-distinct"),
        Case((_ref, _r_ties, 5), id="n=5-ties"),
        Case((_ref[0], _r, 3), id="broadcast-ref"),
        Case((_ref_zeros, np.array([3.0, 1.0, 2.0, 1.0, 0.0, -1.0]), 6), id="zero-probabilities"),
        Case((_tail, np.arange(200.0), 64), id="200-answers-n=64"),
    ],
    "best_of_n_kl_bound": [Case((1,), id="n=1"), Case((7,), id="n=7"), Case((1024,), id="n=1024")],
}
