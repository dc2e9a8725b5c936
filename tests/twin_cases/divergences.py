"""Twin-harness cases for rlhf_edu.{numpy,torch}.divergences."""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(0)
_logp = np.log(_rng.dirichlet(np.ones(6), size=4))
_logp_ref = np.log(_rng.dirichlet(np.ones(6), size=4))
_p = _rng.dirichlet(np.ones(6), size=4)
_q = _rng.dirichlet(np.ones(6), size=4)
_p_zeros = np.array([[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0]])
_q_full = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
_logits_a = _rng.normal(size=(3, 7)) * 2
_logits_b = _rng.normal(size=(3, 7)) * 2
_masked = _logits_a.copy()
_masked[:, [1, 4]] = -np.inf  # masked tokens: probability 0 under p

CASES = {
    "kl_estimate": [
        Case((_logp, _logp_ref, est), grad=("logp", "logp_ref"), id=est) for est in ("k1", "k2", "k3")
    ] + [
        # tiny log-ratios: k3 ~ l^2 / 2 must keep its relative precision in float32 (no atol to hide behind)
        Case((-np.array([1e-9, 1e-7, 1e-6, 3e-5, 1e-3, 0.4, 0.6]), np.zeros(7), "k3"), grad=("logp",),
             id="k3-tiny", tol=(2e-6, 0.0)),
        Case((np.zeros(5), -np.array([1e-9, 1e-6, 0.49, 0.51, 3.0]), "k3"), grad=("logp_ref",), id="k3-tiny-neg",
             tol=(2e-6, 0.0)),
    ],
    "kl_divergence": [
        Case((_p, _q), grad=("p", "q"), id="sum"),
        Case((_p, _q), kwargs={"reduction": "none"}, grad=("p", "q"), id="none"),
        Case((_p, _q[0]), grad=("p", "q"), id="broadcast-q"),
        Case((_p_zeros, _q_full), grad=("p", "q"), id="zeros-in-p"),
        Case((np.array([0.5, 0.5]), np.array([1.0, 0.0])), id="q-zero-where-p-positive-is-inf"),
        Case((np.array([0.7, 0.2, 0.1]), np.array([0.5, 0.3, 0.2])), grad=("p", "q"), id="lecture-example"),
    ],
    "kl_divergence_from_logits": [
        Case((_logits_a, _logits_b), grad=("logits_p", "logits_q"), id="random"),
        Case((_logits_a * 500, _logits_b * 500), grad=("logits_p", "logits_q"), id="huge-logits"),
        Case((_masked, _logits_b), grad=("logits_p", "logits_q"), id="masked-p"),
        Case((_logits_a, _logits_b[0]), grad=("logits_p", "logits_q"), id="broadcast"),
    ],
    "entropy": [
        Case((_p,), grad=("p",), id="dirichlet"),
        Case((_p_zeros,), grad=("p",), id="zeros"),
    ],
}
