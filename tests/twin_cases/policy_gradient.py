"""Twin-harness cases for rlhf_edu.{numpy,torch}.policy_gradient."""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(0)
_B, _T = 4, 6
_logp = np.log(_rng.uniform(0.05, 0.95, size=(_B, _T)))
_logp_old = _logp + _rng.normal(scale=0.3, size=(_B, _T))  # ratios on both sides of the clip range
_logp_ref = _logp + _rng.normal(scale=0.3, size=(_B, _T))
_adv_tok = _rng.normal(size=(_B, _T))
_adv_seq = np.array([1.0, -0.5, 0.8, -1.2])
_mask = np.ones((_B, _T), dtype=np.int64)
_mask[1, 3:] = 0
_mask[3, 5:] = 0
_ratio = np.exp(_logp - _logp_old)
_values = _rng.normal(size=(_B, _T))
_returns = _rng.normal(size=(_B, _T))
_old_values = _values + _rng.normal(scale=0.5, size=(_B, _T))
_score = _rng.normal(size=_B)

CASES = {
    "reinforce_loss": [
        Case((_logp, _adv_tok), grad=("logp", "advantages"), id="per_token"),
        Case((_logp, _adv_seq, _mask), grad=("logp", "advantages"), id="per_sequence_mask"),
        Case((_logp[0], _adv_tok[0]), grad=("logp", "advantages"), id="one_row"),
    ],
    "ppo_clip_objective": [
        Case((_ratio, _adv_tok), grad=("ratio",), id="default_eps"),
        Case((_ratio, _adv_tok, 0.1), grad=("ratio",), id="eps_0.1"),
        Case((_ratio, _adv_tok, 0.2, 0.28), grad=("ratio",), id="clip_higher"),
        Case((_ratio, _adv_seq[:, None]), grad=("ratio",), id="broadcast"),
        Case((np.array([3.0, 3.0, 0.5, 0.5, 1.1]), np.array([1.0, -1.0, 1.0, -1.0, 2.0])), grad=("ratio",),
             id="notes_example"),
    ],
    "ppo_clip_loss": [
        Case((_logp, _logp_old, _adv_tok), grad=("logp", "logp_old"), id="per_token"),
        Case((_logp, _logp_old, _adv_seq, _mask), grad=("logp",), id="per_sequence_mask"),
        Case((_logp, _logp_old, _adv_tok, _mask, 0.1, 0.3), grad=("logp",), id="clip_higher"),
        Case((_logp, _logp_old, _adv_tok, _mask), {"return_stats": True}, id="stats"),
        Case((_logp, _logp_old, _adv_tok), {"max_log_ratio": None}, grad=("logp",), id="no_bound"),
    ],
    "value_loss": [
        Case((_values, _returns), grad=("values",), id="plain"),
        Case((_values, _returns, None, None, _mask), grad=("values",), id="mask"),
        Case((_values, _returns, _old_values, 0.2), grad=("values",), id="clipped"),
        Case((_values, _returns, _old_values, 0.2, _mask), grad=("values", "old_values"), id="clipped_mask"),
    ],
    "grpo_loss": [
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask), grad=("logp",), id="sequence_mean"),
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask), {"aggregation": "token_mean"}, grad=("logp",),
             id="token_mean"),
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask), {"aggregation": "dr_grpo"}, grad=("logp",),
             id="dr_grpo"),
        Case((_logp, _logp_old, _logp_ref, _adv_tok, _mask, 0.2, 0.1, "dr_grpo", 10), grad=("logp",),
             id="dr_grpo_max_length"),
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask, 0.2, 0.04, "sequence_mean", None, "k1"),
             grad=("logp", "logp_ref"), id="k1"),
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask), {"estimator": "k2", "clip_eps_high": 0.28},
             grad=("logp",), id="k2_clip_higher"),
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask), {"beta": 0.0}, grad=("logp",), id="beta_0"),
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask), {"return_stats": True}, id="stats"),
        # GSPO: one ratio per sequence; a wide range (clipping some rows) and GSPO's own (clipping nearly all)
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask), {"importance_sampling": "sequence",
             "sequence_clip_eps": 0.1, "sequence_clip_eps_high": 0.15}, grad=("logp", "logp_old"), id="gspo"),
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask, 0.2, 0.0, "token_mean"),
             {"importance_sampling": "sequence"}, grad=("logp",), id="gspo_default_eps_token_mean"),
        Case((_logp, _logp_old, _logp_ref, _adv_tok, _mask, 0.2, 0.04, "dr_grpo"),
             {"importance_sampling": "sequence", "sequence_clip_eps": 0.5, "return_stats": True},
             id="gspo_per_token_advantages_stats"),
        Case((_logp, _logp_old, _logp_ref, _adv_seq, _mask), {"importance_sampling": "sequence",
             "sequence_clip_eps": 0.3}, grad=("logp",), id="gspo_symmetric"),
    ],
    "cispo_loss": [
        Case((_logp, _logp_old, _adv_seq, _mask), grad=("logp",), id="token_mean"),
        Case((_logp, _logp_old, _adv_tok, _mask, 1.2, "sequence_mean"), grad=("logp",), id="sequence_mean_cap"),
        Case((_logp, _logp_old, _adv_seq, _mask, 5.0, "dr_grpo", 8), grad=("logp",), id="dr_grpo_max_length"),
        Case((_logp, _logp_old, _adv_seq, _mask), {"logp_ref": _logp_ref, "beta": 0.1}, grad=("logp",),
             id="k3_kl"),
        Case((_logp, _logp_old, _adv_seq, _mask), {"logp_ref": _logp_ref, "beta": 0.1, "estimator": "k2"},
             grad=("logp",), id="k2_kl"),
        Case((_logp, _logp_old, _adv_seq, _mask), {"logp_ref": _logp_ref, "beta": 0.1, "estimator": "k1",
             "max_log_ratio": 0.2}, grad=("logp",), id="k1_kl_bounded"),
        Case((_logp, _logp_old, _adv_seq, _mask, 1.1), {"logp_ref": _logp_ref, "return_stats": True}, id="stats"),
    ],
    "kl_penalized_rewards": [
        Case((_score, _logp, _logp_ref, _mask, 0.1), grad=("score", "logp", "logp_ref"), id="k1"),
        Case((_score, _logp, _logp_ref, _mask, 0.05, "k3"), grad=("logp",), id="k3"),
        Case((_score, _logp, _logp_ref, np.ones((_B, _T), dtype=bool), 0.0), id="beta_0_bool_mask"),
    ],
}
