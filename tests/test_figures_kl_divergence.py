"""The experiments behind chapter 2's figures (rlhf_edu/figures/kl_divergence.py): real checks, not smoke."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu import numpy as rn
from rlhf_edu.figures import divergences as kl


def test_gaussian_kl_matches_a_quadrature_of_the_definition():
    mu_p, s_p, mu_q, s_q = 0.3, 0.8, -0.5, 1.7
    x = np.linspace(-12, 12, 200_001)
    logp, logq = kl.gaussian_logpdf(x, mu_p, s_p), kl.gaussian_logpdf(x, mu_q, s_q)
    numeric = np.sum(np.exp(logp) * (logp - logq)) * (x[1] - x[0])
    assert abs(kl.gaussian_kl(mu_p, s_p, mu_q, s_q) - numeric) < 1e-8


@settings(max_examples=50, deadline=None)
@given(mu_p=st.floats(-3, 3), mu_q=st.floats(-3, 3), s_p=st.floats(0.2, 3), s_q=st.floats(0.2, 3))
def test_gaussian_kl_is_nonnegative_and_zero_only_at_equality(mu_p, mu_q, s_p, s_q):
    assert kl.gaussian_kl(mu_p, s_p, mu_q, s_q) >= -1e-12
    assert abs(kl.gaussian_kl(mu_p, s_p, mu_p, s_p)) < 1e-12


def test_gaussian_kl_rejects_bad_widths():
    with pytest.raises(ValueError, match="sigma_q"):
        kl.gaussian_kl(0.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        kl.gaussian_logpdf(0.0, 0.0, -1.0)


def test_estimator_samples_reproduce_schulmans_numbers():
    # p = N(0.1, 1) vs N(0, 1): KL = 0.005, k1 relative std 2 / mu = 20, k2 and k3 about sqrt(2) = 1.42
    s = kl.estimator_samples(mu_p=0.1, n=400_000, seed=0)
    assert abs(s["true_kl"] - 0.005) < 1e-12
    assert abs(s["k1"].std() / 0.005 - 20.0) < 0.3
    assert abs(s["k2"].std() / 0.005 - math.sqrt(2.01)) < 0.03
    np.testing.assert_allclose(s["k1"], s["logp"] - s["logp_ref"])


def test_monte_carlo_bias_finds_k2s_bias_and_not_k1s_or_k3s():
    s = kl.estimator_samples(mu_p=1.0, n=200_000, seed=4)
    for k, expected in (("k1", 0.0), ("k2", 0.125), ("k3", 0.0)):  # k2's bias is mu^4 / 8
        bias, se = kl.monte_carlo_bias(s["logp"], s["logp_ref"], s["true_kl"], k)
        assert abs(bias - expected) < 4 * se, (k, bias, se)


def test_monte_carlo_bias_by_hand_and_bad_input():
    bias, se = kl.monte_carlo_bias([0.0, 0.0, 0.0], [0.0, -1.0, -2.0], true_kl=0.5, estimator="k1")
    assert abs(bias - 0.5) < 1e-12 and abs(se - 1.0 / math.sqrt(3)) < 1e-12
    with pytest.raises(ValueError, match="estimator"):
        kl.monte_carlo_bias([0.0, 0.0], [0.0, 0.0], 0.0, "k4")
    with pytest.raises(ValueError, match="logp"):
        kl.monte_carlo_bias([0.0], [0.0], 0.0, "k1")  # one sample has no standard error


def test_estimator_bias_std_table():
    stats = kl.estimator_bias_std([0.5, 1.0], n=100_000, seed=0)
    np.testing.assert_allclose(stats["true_kl"], [0.125, 0.5])
    np.testing.assert_allclose(stats["bias"]["k2"], [0.0625, 0.25], atol=4 * stats["se"]["k2"].max())
    np.testing.assert_allclose(stats["std"]["k1"], [4.0, 2.0], rtol=0.02)


def test_forward_kl_covers_and_reverse_kl_seeks():
    grid, p = kl.bimodal_target()
    mu_f, s_f, kl_f, q_f = kl.fit_gaussian_on_grid(p, grid, "forward")
    mu_r, s_r, kl_r, _ = kl.fit_gaussian_on_grid(p, grid, "reverse")
    assert abs(mu_f) < 1e-9 and s_f > 2.5  # one wide bump over both modes
    assert abs(abs(mu_r) - 2.5) < 1e-9 and abs(s_r - 0.6) < 0.03  # sits on one mode
    var = lambda d: d @ grid**2 - (d @ grid) ** 2  # noqa: E731
    assert abs(var(q_f) - var(p)) / var(p) < 0.03  # forward KL over Gaussians matches moments
    assert abs(kl_r - math.log(2)) < 0.01
    with pytest.raises(ValueError, match="direction"):
        kl.fit_gaussian_on_grid(p, grid, "sideways")


def test_notes_example_constants():
    assert abs(rn.kl_divergence(kl.NOTES_P, kl.NOTES_Q) - 0.0851) < 5e-5
    ref, rewards = np.array(kl.TOY_REF_PROBS), np.array(kl.TOY_REWARDS)
    assert abs(ref.sum() - 1) < 1e-12 and rewards.argmax() == ref.argmin()
