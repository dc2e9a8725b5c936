"""The exercises of chapter 7: each checker passes its solution, fails the classic mistakes it is about with a
message that names the input, expected and got and the likely misconception, and the chapter does not print the
answers (the student edition's stub is tested once for every checker in tests/test_exercises.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlhf_edu.exercises import direct_alignment as ex7
from rlhf_edu.numpy import direct as nd

ROOT = Path(__file__).resolve().parents[1]




def test_orpo_checker_catches_naive_log1m_and_a_missing_sft_term():
    def naive(c, r, lw, ll, lam):  # the right P, but log(1 - P) that cancels near P = 1
        mw, ml = c / lw, r / ll
        log_odds = lambda lp: lp - np.log(1 - np.exp(lp))  # noqa: E731
        return -mw + lam * np.logaddexp(0, -(log_odds(mw) - log_odds(ml)))

    def no_sft(c, r, lw, ll, lam):
        return ex7._orpo_right(c, r, lw, ll, lam) + c / lw

    assert not ex7.check_orpo_from_sums(naive, verbose=False)
    assert not ex7.check_orpo_from_sums(no_sft, verbose=False)


def test_orpo_reference_is_the_library_loss_on_means():
    c, r, lw, ll = np.array([-4.0]), np.array([-12.0]), np.array([8]), np.array([6])
    want = nd.orpo_loss(c / lw, r / ll, -c / lw, 0.1)
    np.testing.assert_allclose(ex7.orpo_from_sums_reference(c, r, lw, ll, 0.1), want)


def test_margin_regularization_is_the_logistic_ratio_at_gamma_0_and_matches_autograd():
    import torch

    assert ex7.gpo_margin_regularization_reference(np.array([0.0]))[0] == 0.5  # DPO's 1/2
    for gamma in (-1.0, 0.5, 2.0):
        x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        f = torch.nn.functional.softplus(-(x - gamma))
        (d1,) = torch.autograd.grad(f.sum(), x, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), x)
        assert abs(d2.item() / d1.item()) == pytest.approx(ex7.gpo_margin_regularization_reference(gamma))


def test_the_buggy_simpo_fails_on_both_bugs():
    assert not ex7.check_simpo_fix(ex7.buggy_simpo, verbose=False)
    with np.errstate(all="ignore"):
        out = ex7.buggy_simpo(np.array([-400.0]), np.array([-2.0]), np.array([2]), np.array([2]), 4.0, 1.0)
    assert np.isinf(out).all()  # the overflow the exercise asks to fix


def test_chapter_does_not_print_the_answers():
    text = (ROOT / "chapters" / "07_ipo_kto_simpo.md").read_text()
    outside = []
    inside = False
    for line in text.splitlines():
        if "### BEGIN SOLUTION" in line:
            inside = True
        elif "### END SOLUTION" in line:
            inside = False
        elif not inside:
            outside.append(line)
    body = "\n".join(outside)
    # the references of the three exercises are not printed or called outside the solutions
    for forbidden in ("getsource(rn.simpo_loss)", "getsource(rn.orpo_loss)", "getsource(rn.orpo_log_odds)",
                      "gpo_margin_regularization_reference", "orpo_from_sums_reference", "sigma(-\\gamma)"):
        assert forbidden not in body, forbidden
