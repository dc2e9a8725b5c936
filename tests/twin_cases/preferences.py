"""Twin-harness cases for rlhf_edu.{numpy,torch}.preferences."""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(1)
_r_a = _rng.normal(size=(4, 5)) * 3
_r_b = _rng.normal(size=(4, 5)) * 3
_scores = _rng.normal(size=6)
_huge = np.array([1e4, -1e4, 0.0, 5e3])
_margins = np.abs(_rng.normal(size=(4, 5)))

CASES = {
    "bradley_terry_prob": [
        Case((_r_a, _r_b), grad=("r_a", "r_b"), id="same-shape"),
        Case((_scores[:, None], _scores[None, :]), grad=("r_a", "r_b"), id="all-pairs-broadcast"),
        Case((_huge, -_huge), grad=("r_a", "r_b"), id="differences-of-2e4"),
    ],
    "bradley_terry_loss": [
        Case((_r_a, _r_b), grad=("r_chosen", "r_rejected"), id="no-margin"),
        Case((_r_a, _r_b), kwargs={"margin": _margins}, grad=("r_chosen", "r_rejected"), id="llama2-margin"),
        Case((_r_a, _r_b), kwargs={"margin": 1.5}, grad=("r_chosen", "r_rejected"), id="scalar-margin"),
        Case((_huge, -_huge), grad=("r_chosen", "r_rejected"), id="differences-of-2e4"),
    ],
    "ranking_to_pairs": [
        # weights are 1/C(K,2): the twin makes them in torch's default float32 whatever the case's dtype
        Case((np.array([3, 0, 2, 1]),), id="K=4", tol=(1e-7, 1e-7)),
        Case((_rng.permuted(np.tile(np.arange(5), (3, 1)), axis=1),), id="batch-3x5", tol=(1e-7, 1e-7)),
    ],
}
