"""Tests of rlhf_edu.{numpy,torch}.optimal: the KL-regularised optimum behind DPO (chapters 2 and 6)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from rlhf_edu.numpy import divergences as nd
from rlhf_edu.numpy import optimal as no
from rlhf_edu.numpy import preferences as npref
from rlhf_edu.torch import optimal as to


def _instance(seed, k=6):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(k)), rng.normal(size=k) * 2, float(rng.uniform(0.2, 3.0))


@pytest.mark.parametrize("seed", range(5))
def test_optimum_maximises_the_objective_against_a_numerical_optimiser(seed):
    ref, r, beta = _instance(seed)

    def negative_objective(theta):  # optimise over the simplex through softmax parameters
        pi = np.exp(theta - theta.max())
        return -no.kl_regularized_objective(pi / pi.sum(), ref, r, beta)

    best = minimize(negative_objective, np.zeros_like(r), method="BFGS", options={"gtol": 1e-10})
    pi_star = no.kl_regularized_optimum(ref, r, beta)
    value = no.kl_regularized_objective(pi_star, ref, r, beta)
    assert value == pytest.approx(-best.fun, abs=1e-8)  # nothing the optimiser finds beats pi*
    assert value >= -best.fun - 1e-12
    theta = best.x
    np.testing.assert_allclose(np.exp(theta - theta.max()) / np.exp(theta - theta.max()).sum(), pi_star, atol=1e-4)
    # the maximum value is beta log Z
    assert value == pytest.approx(beta * no.log_partition(ref, r, beta), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 20.0))
def test_objective_equals_beta_log_z_minus_beta_kl_to_the_optimum(seed, beta):
    # the lecture notes' rewrite: J(pi) = beta log Z - beta KL(pi || pi*); Gibbs gives the maximum
    rng = np.random.default_rng(seed)
    ref, r, pi = rng.dirichlet(np.ones(5)), rng.normal(size=5), rng.dirichlet(np.ones(5))
    pi_star = no.kl_regularized_optimum(ref, r, beta)
    lhs = no.kl_regularized_objective(pi, ref, r, beta)
    rhs = beta * no.log_partition(ref, r, beta) - beta * nd.kl_divergence(pi, pi_star)
    assert lhs == pytest.approx(rhs, rel=1e-9, abs=1e-9)
    assert lhs <= no.kl_regularized_objective(pi_star, ref, r, beta) + 1e-12


def test_worked_example_two_answers():
    # uniform reference, rewards (1, 0), beta 1: pi* = (e, 1) / (e + 1) = (sigmoid(1), sigmoid(-1))
    pi = no.kl_regularized_optimum([0.5, 0.5], [1.0, 0.0], 1.0)
    np.testing.assert_allclose(pi, [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))], rtol=1e-14)
    assert no.log_partition([0.5, 0.5], [1.0, 0.0], 1.0) == pytest.approx(math.log((math.e + 1) / 2))
    # beta = 0.5 doubles the exponent
    np.testing.assert_allclose(no.kl_regularized_optimum([0.5, 0.5], [1.0, 0.0], 0.5)[0], 1 / (1 + math.exp(-2)))


@pytest.mark.parametrize("seed", range(4))
def test_implied_reward_of_the_optimum_recovers_the_reward_up_to_beta_log_z(seed):
    ref, r, beta = _instance(seed)
    ref2, r2 = np.stack([ref, ref[::-1]]), np.stack([r, r + 10.0])  # two prompts, different constants
    pi_star = no.kl_regularized_optimum(ref2, r2, beta)
    recovered = no.implied_reward(pi_star, ref2, beta)
    log_z = no.log_partition(ref2, r2, beta)
    np.testing.assert_allclose(recovered + beta * log_z[:, None], r2, atol=1e-10)
    # so reward differences, hence Bradley-Terry preferences, are recovered exactly (Z cancels: DPO)
    np.testing.assert_allclose(
        npref.bradley_terry_prob(recovered[:, 0], recovered[:, 1]),
        npref.bradley_terry_prob(r2[:, 0], r2[:, 1]),
        rtol=1e-10,
    )
    t = to.implied_reward(torch.tensor(pi_star), torch.tensor(ref2), beta)
    np.testing.assert_allclose(t.numpy(), recovered, rtol=1e-12)


def test_stationarity_the_lagrange_multiplier_is_beta_log_z_minus_beta():
    # the lecture notes' Lagrangian: dJ/dpi(y) = r - beta(log(pi/ref) + 1) is the same constant for all y
    ref, r, beta = _instance(7)
    pi_star = no.kl_regularized_optimum(ref, r, beta)
    g = no.kl_regularized_objective_grad(pi_star, ref, r, beta)["policy_probs"]
    np.testing.assert_allclose(g, beta * no.log_partition(ref, r, beta) - beta, atol=1e-10)
    # while at another policy it is not constant
    g_ref = no.kl_regularized_objective_grad(ref, ref, r, beta)["policy_probs"]
    assert np.ptp(g_ref) > 1e-2


def test_beta_to_zero_gives_argmax_and_to_infinity_gives_the_reference():
    ref = np.array([0.1, 0.4, 0.2, 0.3])
    r = np.array([0.0, 1.0, 3.0, 2.0])
    np.testing.assert_allclose(no.kl_regularized_optimum(ref, r, 1e-4), [0, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(no.kl_regularized_optimum(ref, r, 1e8), ref, atol=1e-7)
    # ties at the top: the mass is split in proportion to the reference
    r_tie = np.array([0.0, 3.0, 3.0, 2.0])
    np.testing.assert_allclose(no.kl_regularized_optimum(ref, r_tie, 1e-4), [0, 4 / 6, 2 / 6, 0], atol=1e-12)
    # KL to the reference falls monotonically as beta grows
    kls = [nd.kl_divergence(no.kl_regularized_optimum(ref, r, b), ref) for b in (0.1, 0.5, 1, 5, 50)]
    assert all(a > b for a, b in zip(kls, kls[1:]))


def test_zero_reference_probability_stays_zero():
    ref = np.array([0.5, 0.0, 0.5])
    pi = no.kl_regularized_optimum(ref, [0.0, 100.0, 1.0], 0.1)
    assert pi[1] == 0.0 and pi.sum() == pytest.approx(1.0)
    # a policy with mass off the reference's support has objective -inf and implied reward +inf
    assert no.kl_regularized_objective([0.0, 1.0, 0.0], ref, [0.0, 100.0, 1.0], 0.1) == -math.inf
    assert no.implied_reward([0.0, 1.0, 0.0], ref, 1.0)[1] == math.inf


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 100.0))
def test_log_partition_between_mean_and_max_reward(seed, beta):
    rng = np.random.default_rng(seed)
    ref, r = rng.dirichlet(np.ones(6)), rng.normal(size=6) * 5
    log_z = no.log_partition(ref, r, beta)
    assert ref @ r / beta - 1e-9 <= log_z <= r.max() / beta + 1e-9  # Jensen, and the max


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_reward_over_beta_does_not_overflow(dtype):
    ref = np.array([0.25, 0.25, 0.5], dtype=dtype)
    r = np.array([1e4, -1e4, 9999.0], dtype=dtype)
    beta = 1e-3  # r / beta = 1e7, exp would overflow
    with np.errstate(over="raise", invalid="raise"):
        pi = no.kl_regularized_optimum(ref, r, beta)
        log_z = no.log_partition(ref, r, beta)
        grads = no.log_partition_grad(ref, r, beta)
    np.testing.assert_allclose(pi, [1.0, 0.0, 0.0])
    assert log_z == pytest.approx(1e7 + math.log(0.25), rel=1e-6)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    t_r = torch.tensor(r, requires_grad=True)
    t_ref = torch.tensor(ref, requires_grad=True)
    t_pi = to.kl_regularized_optimum(t_ref, t_r, beta)
    t_lz = to.log_partition(t_ref, t_r, beta)
    assert t_pi.dtype == tdtype and torch.isfinite(t_pi).all() and torch.isfinite(t_lz)
    (t_pi[0] + t_lz).backward()
    assert torch.isfinite(t_r.grad).all() and torch.isfinite(t_ref.grad).all()


def test_analytic_gradients_match_finite_differences():
    ref, r, beta = _instance(3, k=4)
    pi = np.random.default_rng(9).dirichlet(np.ones(4))
    eps = 1e-7  # keeps the perturbed distributions within the sum-to-one tolerance
    g_obj = no.kl_regularized_objective_grad(pi, ref, r, beta)
    g_lz = no.log_partition_grad(ref, r, beta)
    g_ir = no.implied_reward_grad(pi, ref, beta)
    for i in range(4):
        e = np.eye(4)[i] * eps
        fd = (no.kl_regularized_objective(pi + e, ref, r, beta) - no.kl_regularized_objective(pi - e, ref, r, beta))
        assert g_obj["policy_probs"][i] == pytest.approx(fd / (2 * eps), rel=1e-5)
        fd = no.kl_regularized_objective(pi, ref + e, r, beta) - no.kl_regularized_objective(pi, ref - e, r, beta)
        assert g_obj["ref_probs"][i] == pytest.approx(fd / (2 * eps), rel=1e-5)
        fd = no.log_partition(ref, r + e, beta) - no.log_partition(ref, r - e, beta)
        assert g_lz["rewards"][i] == pytest.approx(fd / (2 * eps), rel=1e-5)
        fd = no.log_partition(ref + e, r, beta) - no.log_partition(ref - e, r, beta)
        assert g_lz["ref_probs"][i] == pytest.approx(fd / (2 * eps), rel=1e-5)
        fd = no.implied_reward(pi + e, ref, beta)[i] - no.implied_reward(pi - e, ref, beta)[i]
        assert g_ir["policy_probs"][i] == pytest.approx(fd / (2 * eps), rel=1e-5)
    np.testing.assert_allclose(g_lz["rewards"], no.kl_regularized_optimum(ref, r, beta) / beta)
    np.testing.assert_allclose(g_obj["rewards"], pi)


@pytest.mark.parametrize("tree", ["numpy", "torch"])
def test_bad_inputs_name_the_argument(tree):
    m = no if tree == "numpy" else to
    if tree == "numpy":
        arr = lambda x: np.asarray(x, dtype=float)  # noqa: E731
    else:
        arr = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    ref, r = arr([0.5, 0.5]), arr([1.0, 0.0])
    for beta in (0.0, -1.0):
        with pytest.raises(ValueError, match="beta"):
            m.kl_regularized_optimum(ref, r, beta)
        with pytest.raises(ValueError, match="beta"):
            m.implied_reward(ref, ref, beta)
    with pytest.raises(TypeError, match="beta"):
        m.log_partition(ref, r, "1")
    with pytest.raises(ValueError, match="ref_probs"):
        m.log_partition(arr([0.5, 0.6]), r, 1.0)
    with pytest.raises(ValueError, match="ref_probs"):
        m.kl_regularized_optimum(arr([1.5, -0.5]), r, 1.0)
    with pytest.raises(ValueError, match="rewards"):
        m.kl_regularized_optimum(ref, arr([np.nan, 0.0]), 1.0)
    with pytest.raises(ValueError, match="rewards"):
        m.log_partition(ref, arr([np.inf, 0.0]), 1.0)
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        m.kl_regularized_optimum(ref, arr([1.0, 0.0, 2.0]), 1.0)
    with pytest.raises(ValueError, match="policy_probs"):
        m.kl_regularized_objective(arr([0.9, 0.9]), ref, r, 1.0)
    with pytest.raises(ValueError, match="policy_probs"):
        m.implied_reward(arr([0.2, 0.2]), ref, 1.0)
