"""Twin-harness cases for rlhf_edu.{numpy,torch}.anatomy (appendix A1).

The router's cases keep the noisy logits of a row well apart (no near-ties), so float32 and float64 pick the
same experts and finite differences do not cross a change of the top k.
"""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(0)

_x = _rng.normal(size=(3, 4, 8))
_gain = 1.0 + 0.3 * _rng.normal(size=8)
_big = 1e3 * _rng.normal(size=(2, 8))  # large activations: the mean square is 1e6

_D, _F = 6, 10
_xs = _rng.normal(size=(2, 3, _D))
_wg, _wu = _rng.normal(size=(_D, _F)) / np.sqrt(_D), _rng.normal(size=(_D, _F)) / np.sqrt(_D)
_wd = _rng.normal(size=(_F, _D)) / np.sqrt(_F)


def _well_separated_router(n, d, e, seed):
    """Inputs whose noisy logits differ by at least 0.05 within every row (checked, seed by seed)."""
    rng = np.random.default_rng(seed)
    x, wg, wn = rng.normal(size=(n, d)), rng.normal(size=(d, e)), 0.3 * rng.normal(size=(d, e))
    noise = rng.normal(size=(n, e))
    h = x @ wg + noise * np.logaddexp(0.0, x @ wn)
    gaps = np.diff(np.sort(h, axis=-1), axis=-1)
    assert gaps.min() > 0.05, f"seed {seed}: noisy logits too close for a twin case"
    return x, wg, wn, noise


_rx, _rwg, _rwn, _rnoise = _well_separated_router(6, 5, 4, seed=3)
_ROUTER = ("x", "w_gate", "w_noise")

CASES = {
    "rms_norm": [
        Case((_x, _gain), grad=("x", "weight"), id="batch"),
        Case((_x[0, 0], np.ones(8)), kwargs={"eps": 1e-5}, grad=("x", "weight"), id="one-vector-llama2-eps"),
        Case((_big, _gain), grad=("x", "weight"), id="large-activations"),
        Case((np.zeros((2, 8)), _gain), grad=("x", "weight"), id="zero-row-eps"),
    ],
    "swiglu": [
        Case((_xs, _wg, _wu, _wd), grad=("x", "w_gate", "w_up", "w_down"), id="batch"),
        Case((_xs[0, 0], _wg, _wu, _wd), grad=("x", "w_gate", "w_up", "w_down"), id="one-token"),
        Case((40 * _xs[0], _wg, _wu, _wd), id="large-negative-gates-no-overflow"),
    ],
    "noisy_top_k_gating": [
        Case((_rx, _rwg, _rwn, 2, _rnoise), grad=_ROUTER, id="noise-given-k2"),
        Case((_rx, _rwg, _rwn, 1), grad=_ROUTER, id="no-noise-k1"),
        Case((_rx, _rwg, _rwn, 4), kwargs={"rng": 7}, grad=_ROUTER, id="dense-k-equals-E"),
        Case((_rx, _rwg, _rwn, 2), kwargs={"rng": 3, "w_importance": 1.0, "w_load": 0.5}, id="seeded-rng"),
    ],
    "llama_parameter_count": [
        Case((32000, 5120, 40, 13824, 40, 40), id="llama2-13b"),
        Case((32000, 8192, 80, 28672, 64, 8), kwargs={"breakdown": True}, id="llama2-70b-breakdown"),
        Case((128256, 2048, 16, 8192, 32, 8, True), kwargs={"head_dim": 64}, id="llama3.2-1b-tied"),
    ],
}
