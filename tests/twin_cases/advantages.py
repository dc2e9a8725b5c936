"""Twin-harness cases for rlhf_edu.{numpy,torch}.advantages."""

import numpy as np

from twin_harness import Case

_rng = np.random.default_rng(0)
_B, _T = 3, 7
_rewards = _rng.normal(size=(_B, _T))
_values = _rng.normal(size=(_B, _T))
_last = _rng.normal(size=_B)
_dones = np.zeros((_B, _T), dtype=np.int64)
_dones[0, 2] = _dones[0, 5] = 1  # two episodes end mid-row
_dones[1, -1] = 1  # terminated at the last step: last_value must not be used
_dones_bool = _dones.astype(bool)
_rewards3 = _rng.normal(size=(2, 2, 5))
_values3 = _rng.normal(size=(2, 2, 5))
_groups = _rng.normal(size=(4, 6))
_cut = np.zeros((_B, _T), dtype=np.int64)
_cut[0, 3] = _cut[1, 1] = _cut[2, -1] = 1  # time limits: mid-row, and at the last step (overrides last_value)
_cut_values = np.where(_cut == 1, _rng.normal(size=(_B, _T)), 0.0)
_equal = np.array([[0.9, 0.9, 0.9, 0.9], [0.1 + 0.2, 0.3, 0.3, 0.3], [1.0, 0.0, 0.0, 1.0]])
_mask = np.ones((_B, _T), dtype=np.int64)
_mask[1, 4:] = 0
_mask[2, 6:] = 0

CASES = {
    "discounted_returns": [
        Case((_rewards, 0.9), grad=("rewards",), id="no_dones"),
        Case((_rewards, 0.9), {"last_value": _last}, grad=("rewards", "last_value"), id="bootstrap_per_row"),
        Case((_rewards, 0.9), {"last_value": 1.5}, grad=("rewards",), id="bootstrap_scalar"),
        Case((_rewards, 0.95, _dones, _last), grad=("rewards", "last_value"), id="dones_int"),
        Case((_rewards, 0.95), {"dones": _dones_bool}, grad=("rewards",), id="dones_bool"),
        Case((_rewards, 1.0, _dones), id="gamma_1"),
        Case((_rewards, 0.0, None, _last), id="gamma_0"),
        Case((_rewards3, 0.8), {"last_value": _rng.normal(size=(2, 2))}, id="batch_3d"),
        Case((_rewards, 0.9, _dones, _last, _cut, _cut_values), grad=("rewards", "truncation_values"),
             id="dones_and_truncation"),
        Case((np.array([1.0, 1.0, 1.0]), 0.5), {"last_value": 2.0, "truncated": np.array([0, 1, 0]),
             "truncation_values": np.array([0.0, 4.0, 0.0])}, id="truncation_by_hand"),
    ],
    "gae": [
        Case((_rewards, _values, 0.99, 0.95), grad=("rewards", "values"), id="no_dones"),
        Case((_rewards, _values, 0.99, 0.95), {"last_value": _last}, grad=("rewards", "values", "last_value"),
             id="bootstrap_per_row"),
        Case((_rewards, _values, 0.9, 0.8, _dones, _last), grad=("rewards", "values", "last_value"), id="dones"),
        Case((_rewards, _values, 0.9, 0.8, _dones_bool, 0.7), id="dones_bool_scalar_bootstrap"),
        Case((_rewards, _values, 1.0, 1.0, _dones), id="lam_1_gamma_1"),
        Case((_rewards, _values, 0.9, 0.0, _dones, _last), id="lam_0"),
        Case((_rewards3, _values3, 0.97, 0.9), grad=("values",), id="batch_3d"),
        Case((_rewards, _values, 0.9, 0.8, _dones, _last, _cut, _cut_values),
             grad=("rewards", "values", "truncation_values"), id="dones_and_truncation"),
        Case((np.array([1.0, 0.5, -1.0, 2.0]), np.array([0.5, 0.4, 0.3, 0.2]), 0.9, 0.8),
             {"last_value": 2.0, "truncated": np.array([0, 1, 0, 0]),
              "truncation_values": np.array([0.0, 3.0, 0.0, 0.0])}, id="issue13_worked_example"),
    ],
    "group_normalized_advantages": [
        Case((_groups,), grad=("rewards",), id="population"),
        Case((_groups, "sample"), grad=("rewards",), id="sample"),
        Case((_groups, None), grad=("rewards",), id="dr_grpo"),
        Case((_groups, "population", 1e-2), id="eps"),
        Case((np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]),), id="constant_group"),
        Case((_groups[:, :1], "population"), id="group_of_one"),
        Case((_groups, "population", 0.0), grad=("rewards",), id="eps0"),
        Case((_equal, "population", 0.0), id="equal_eps0"),
        Case((_equal, "sample"), id="equal_sample"),
        Case((_equal, None), id="equal_dr_grpo"),
        Case((_groups, "population", 1e-6, "batch"), grad=("rewards",), id="batch_scale"),
        Case((_groups, "sample", 0.0, "batch"), grad=("rewards",), id="batch_scale_sample"),
        Case((_rewards3, "population", 1e-6, "batch"), grad=("rewards",), id="batch_scale_3d"),
        Case((_equal, "population", 0.0, "batch"), id="batch_scale_with_equal_groups"),
        Case((_equal[:2], "population", 0.0, "batch"), id="batch_scale_all_equal"),
        Case((_groups[0], "population", 1e-6, "batch"), id="batch_scale_one_group"),
    ],
    "constant_groups": [
        Case((_equal,), id="equal_and_not"),
        Case((_groups,), id="random"),
    ],
    "leave_one_out_advantages": [
        Case((_groups,), grad=("rewards",), id="groups"),
        Case((_groups[0, :2],), grad=("rewards",), id="pair"),
        Case((_equal,), id="equal"),
    ],
    "whiten": [
        Case((_rewards,), grad=("x",), id="no_mask"),
        Case((_rewards, _mask), grad=("x",), id="mask"),
        Case((_rewards + 3.0, _mask, False), grad=("x",), id="no_shift_mean"),
        Case((_rewards,), {"mask": _mask.astype(bool), "eps": 1e-3}, id="bool_mask_eps"),
    ],
}
