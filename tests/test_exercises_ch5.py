"""The exercises of chapter 5: each checker passes its solution, fails the classic mistake it is about with a
message that names the input (or the prediction and the run) and the likely misconception (that the student
edition's stub is reported as not done is tested for every checker in tests/test_exercises.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_edu.exercises import grpo as ex5





def test_the_buggy_function_of_the_exercise_is_right_for_one_prompt_only():
    one = np.array([1.1, 0.1, 0.0, 1.1])
    np.testing.assert_allclose(ex5.buggy_group_advantages(one, 4), ex5.group_layout_reference(one, 4), rtol=1e-9)
    two = np.array([1.1, 0.1, 1.1, 0.1, 0.0, 0.0, 1.1, 0.1])
    assert not np.allclose(ex5.buggy_group_advantages(two, 4), ex5.group_layout_reference(two, 4))


def test_aggregation_prediction_values_by_hand():
    got = ex5.aggregation_prediction_reference()
    assert got["sequence_mean"] == pytest.approx((1 / 2, -1 / 2))   # A_i / B
    assert got["token_mean"] == pytest.approx((2 / 12, -10 / 12))   # A_i |o_i| / sum |o|
    assert got["dr_grpo"] == pytest.approx((2 / 20, -10 / 20))      # A_i |o_i| / (B L)
    msg = ex5.check_aggregation_prediction({"sequence_mean": (0.5, -0.5), "token_mean": (2 / 12, -10 / 12),
                                            "dr_grpo": (0.2, -1.0)}, verbose=False).message
    assert "dr_grpo" in msg and "B * max_length" in msg


def test_rloo_kl_advantages_reference_by_hand():
    # one group of two: R = r - beta * sum_t (logp - logp_ref) over the real tokens; A = R_i - R_other
    logp = np.log([[0.5, 0.5, 0.9], [0.25, 0.9, 0.9]])
    ref = np.log([[0.25, 0.5, 0.1], [0.25, 0.1, 0.1]])
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    r0, r1 = 1.0 - 0.5 * np.log(2), 0.0 - 0.0
    got = ex5.rloo_kl_advantages_reference(np.array([1.0, 0.0]), logp, ref, mask, 0.5, 2)
    np.testing.assert_allclose(got, [r0 - r1, r1 - r0], rtol=1e-12)
