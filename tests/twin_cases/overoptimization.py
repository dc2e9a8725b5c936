"""Twin-harness cases for rlhf_edu.{numpy,torch}.overoptimization.

``fit_gold_curve`` is NumPy only (``NUMPY_ONLY``); its case here serves the harness's NaN check. Gradients are
taken at d > 0: the derivative of d log d is -inf at d = 0.
"""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(9)
_d = np.sqrt(np.log(2.0 ** np.arange(1, 8)) - (2.0 ** np.arange(1, 8) - 1) / 2.0 ** np.arange(1, 8))  # best-of-2..128
_d_zero = np.array([0.0, 0.1, 1.0, 2.5, 7.0])
_alpha = _rng.uniform(0.1, 1.0, size=(3, 1))
_beta = _rng.uniform(0.01, 0.3, size=(3, 1))

CASES = {
    "best_of_n_gold": [
        Case((_d, 0.4, 0.1), grad=("d",), id="scalars"),
        Case((_d_zero, 0.3, 0.05), id="with-d=0"),
        Case((_d, _alpha, _beta), grad=("d", "alpha", "beta"), id="broadcast-3-curves"),
    ],
    "rl_gold": [
        Case((_d, 0.4, 0.1), grad=("d",), id="scalars"),
        Case((_d_zero, 0.3, 0.05), id="with-d=0"),
        Case((_d, _alpha, _beta), grad=("d", "alpha", "beta"), id="broadcast-3-curves"),
    ],
    "fit_gold_curve": [
        Case((_d, 0.4 * _d - 0.1 * _d**2 + 0.01 * _rng.normal(size=_d.size), "best_of_n"), id="noisy-bon"),
    ],
}
