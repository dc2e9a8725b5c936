"""Tests of rlhf_edu.{numpy,torch}.direct: the lecture notes' formulas and examples, the exact relations
between the losses (GPO <-> DPO / SLiC / IPO, SimPO <-> DPO), properties, bad input and extremes.

Value/gradient agreement of every twin with its reference is in tests/test_twins.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu.numpy import direct as nd
from rlhf_edu.torch import direct as td

LOG2 = math.log(2.0)
TREES = [pytest.param((nd, np.asarray), id="numpy"), pytest.param((td, lambda x: torch.tensor(x)), id="torch")]

logps = st.floats(-60.0, 0.0, allow_nan=False)
betas = st.floats(0.01, 5.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.log1p(np.exp(x))


# ---------------------------------------------------------------- DPO: the notes' formulas and examples


def test_dpo_worked_example():
    # h = (-1 - -2) - (-3 - -2) = 2, beta h = 1: -log sigma(1) = log(1 + e^-1)
    loss = nd.dpo_loss(np.array([-1.0]), np.array([-3.0]), np.array([-2.0]), np.array([-2.0]), beta=0.5)
    assert loss[0] == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    assert loss.shape == (1,)


@pytest.mark.parametrize("tree", TREES)
def test_dpo_at_init_is_log2_and_gradient_weight_is_half(tree):
    mod, T = tree
    x = np.array([-12.0, -3.5, -40.0])
    y = np.array([-8.0, -9.0, -1.0])
    beta = 0.1
    pc, pr = T(x.copy()), T(y.copy())
    if mod is td:
        pc.requires_grad_(True)
        pr.requires_grad_(True)
    loss = mod.dpo_loss(pc, pr, T(x.copy()), T(y.copy()), beta=beta)  # policy == reference
    np.testing.assert_allclose(np.asarray(loss.detach() if mod is td else loss, float), LOG2, rtol=1e-12)
    if mod is td:
        loss.sum().backward()
        # the notes' weight sigma(r_hat_l - r_hat_w) = sigma(0) = 1/2: d/d pc = -beta / 2
        np.testing.assert_allclose(pc.grad.numpy(), -beta / 2, rtol=1e-12)
        np.testing.assert_allclose(pr.grad.numpy(), beta / 2, rtol=1e-12)
    else:
        g = nd.dpo_loss_grad(x, y, x, y, beta=beta)
        np.testing.assert_allclose(g["policy_chosen_logps"], -beta / 2, rtol=1e-12)
        np.testing.assert_allclose(g["policy_rejected_logps"], beta / 2, rtol=1e-12)
        np.testing.assert_allclose(g["ref_chosen_logps"], beta / 2, rtol=1e-12)
        np.testing.assert_allclose(g["ref_rejected_logps"], -beta / 2, rtol=1e-12)


def test_dpo_gradient_is_the_notes_formula_on_a_tiny_policy():
    """grad_theta L = -beta E[ sigma(r_hat(y_l) - r_hat(y_w)) (grad log pi(y_w) - grad log pi(y_l)) ]."""
    torch.manual_seed(0)
    B, V, beta = 5, 7, 0.3
    theta = torch.randn(B, V, dtype=torch.float64, requires_grad=True)  # one categorical "policy" per prompt
    ref_logits = torch.randn(B, V, dtype=torch.float64)
    y_w = torch.tensor([0, 3, 6, 2, 2])
    y_l = torch.tensor([1, 3, 0, 5, 4])  # pair 1 has y_w == y_l: weight times zero
    rows = torch.arange(B)

    logpi = torch.log_softmax(theta, -1)
    logref = torch.log_softmax(ref_logits, -1)
    loss = td.dpo_loss(logpi[rows, y_w], logpi[rows, y_l], logref[rows, y_w], logref[rows, y_l], beta=beta).mean()
    (autograd,) = torch.autograd.grad(loss, theta)

    # the notes, literally: each row's log pi depends only on its own theta row, so E is a mean over rows
    (grad_log_pi_w,) = torch.autograd.grad(torch.log_softmax(theta, -1)[rows, y_w].sum(), theta)
    (grad_log_pi_l,) = torch.autograd.grad(torch.log_softmax(theta, -1)[rows, y_l].sum(), theta)
    with torch.no_grad():
        r_hat_w = beta * (logpi[rows, y_w] - logref[rows, y_w])
        r_hat_l = beta * (logpi[rows, y_l] - logref[rows, y_l])
        weight = torch.sigmoid(r_hat_l - r_hat_w)
        notes = -beta * weight[:, None] * (grad_log_pi_w - grad_log_pi_l) / B
    torch.testing.assert_close(autograd, notes, rtol=1e-12, atol=1e-14)
    # and for a categorical, grad log pi(y) = onehot(y) - softmax(theta): the softmax cancels
    onehot = torch.eye(V, dtype=torch.float64)
    torch.testing.assert_close(autograd, -beta * weight[:, None] * (onehot[y_w] - onehot[y_l]) / B)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_dpo_loss_grad_equals_torch_autograd(label_smoothing):
    rng = np.random.default_rng(1)
    args = [-rng.uniform(1, 30, size=8) for _ in range(4)]
    expected = nd.dpo_loss_grad(*args, beta=0.7, label_smoothing=label_smoothing)
    leaves = [torch.tensor(a, requires_grad=True) for a in args]
    td.dpo_loss(*leaves, beta=0.7, label_smoothing=label_smoothing).sum().backward()
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    for name, leaf in zip(names, leaves):
        np.testing.assert_allclose(leaf.grad.numpy(), expected[name], rtol=1e-12, atol=1e-15)
    # the notes' weight sigma(r_hat_l - r_hat_w) with r_hat = beta (log pi - log pi_ref), for eps = 0
    if label_smoothing == 0.0:
        r_hat_w = nd.dpo_implicit_reward(args[0], args[2], 0.7)
        r_hat_l = nd.dpo_implicit_reward(args[1], args[3], 0.7)
        np.testing.assert_allclose(expected["policy_chosen_logps"], -0.7 * _sigmoid(r_hat_l - r_hat_w), rtol=1e-12)


def test_implicit_reward_margin_is_what_dpo_classifies():
    rng = np.random.default_rng(2)
    pc, pr, rc, rr = (-rng.uniform(1, 30, size=10) for _ in range(4))
    beta = 0.25
    margin = nd.dpo_implicit_reward(pc, rc, beta) - nd.dpo_implicit_reward(pr, rr, beta)
    np.testing.assert_allclose(margin, beta * nd.log_ratio_difference(pc, pr, rc, rr), rtol=1e-12)
    np.testing.assert_allclose(nd.dpo_loss(pc, pr, rc, rr, beta=beta), _softplus(-margin), rtol=1e-10)
    # reward accuracy: the loss is below log 2 exactly where the implicit reward orders the pair correctly
    assert np.array_equal(nd.dpo_loss(pc, pr, rc, rr, beta=beta) < LOG2, margin > 0)
    assert nd.dpo_implicit_reward(np.array([-10.0]), np.array([-11.0]), 0.1)[0] == pytest.approx(0.1)


def test_cdpo_label_smoothing_formula():
    z = np.array([-3.0, 0.0, 2.0])
    pc = z / 0.5 - 10.0  # beta = 0.5, h = pc - (-10): log-probs must be <= 0
    ref = 0 * z - 10.0
    loss = nd.dpo_loss(pc, ref, ref, ref, beta=0.5, label_smoothing=0.1)
    np.testing.assert_allclose(loss, 0.9 * _softplus(-z) + 0.1 * _softplus(z), rtol=1e-12)


# ---------------------------------------------------------------- IPO, GPO and the exact correspondences


def test_ipo_worked_example_and_minimum():
    # h = 2, 1/(2 beta) = 1 -> (2 - 1)^2 = 1
    assert nd.ipo_loss(np.array([-1.0]), np.array([-3.0]), np.array([-2.0]), np.array([-2.0]), 0.5)[0] == 1.0
    # zero exactly at h = 1/(2 beta): the finite target of IPO
    beta = 0.1
    z = np.full(1, -10.0)
    assert nd.ipo_loss(np.array([-5.0]), z, z, z, beta)[0] == pytest.approx(0.0, abs=1e-12)


def test_gpo_table_has_the_six_functions_of_the_notes():
    assert set(nd.GPO_FUNCTIONS) == {"logistic", "hinge", "squared", "exponential", "truncated_quadratic", "savage"}
    assert set(td.GPO_FUNCTIONS) == set(nd.GPO_FUNCTIONS) == set(nd.GPO_FORMULAS)
    x = np.array([-2.0, 0.0, 0.5, 3.0])
    expected = {
        "logistic": np.log(1 + np.exp(-x)),
        "hinge": np.maximum(0, 1 - x),
        "squared": (x - 1) ** 2,
        "exponential": np.exp(-x),
        "truncated_quadratic": np.maximum(0, 1 - x) ** 2,
        "savage": 1 / (1 + np.exp(x)) ** 2,
    }
    for name, want in expected.items():
        np.testing.assert_allclose(nd.gpo_loss(x, 1.0, name), want, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(td.gpo_loss(torch.tensor(x), 1.0, name).numpy(), want, rtol=1e-12, err_msg=name)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(logps, logps, logps, logps), min_size=1, max_size=6), betas)
def test_gpo_reproduces_dpo_slic_and_ipo(rows, beta):
    pc, pr, rc, rr = (np.array(c) for c in zip(*rows))
    rho = nd.log_ratio_difference(pc, pr, rc, rr)
    # logistic with the same beta is DPO
    np.testing.assert_allclose(nd.gpo_loss(rho, beta, "logistic"), nd.dpo_loss(pc, pr, rc, rr, beta=beta), rtol=1e-12)
    # hinge: max(0, 1 - beta rho) = beta * max(0, 1/beta - rho), SLiC's calibration with delta = 1/beta on rho
    np.testing.assert_allclose(
        # (slic_loss takes log-probs <= 0 and depends only on their difference: shift both below 0)
        nd.gpo_loss(rho, beta, "hinge"), beta * nd.slic_loss(rho - max(rho.max(), 0.0) - 1.0,
                                                             0 * rho - max(rho.max(), 0.0) - 1.0,
                                                             delta=1 / beta), rtol=1e-9, atol=1e-9
    )
    # SLiC-HF uses no reference: with equal reference log-probs rho is the plain log-likelihood margin
    rho_no_ref = nd.log_ratio_difference(pc, pr, rc, rc)
    np.testing.assert_allclose(
        nd.gpo_loss(rho_no_ref, beta, "hinge"), beta * nd.slic_loss(pc, pr, delta=1 / beta), rtol=1e-9, atol=1e-9
    )
    # squared with beta' = 2 beta: (2 beta rho - 1)^2 = 4 beta^2 (rho - 1/(2 beta))^2 = 4 beta^2 IPO
    np.testing.assert_allclose(
        nd.gpo_loss(rho, 2 * beta, "squared"), 4 * beta**2 * nd.ipo_loss(pc, pr, rc, rr, beta), rtol=1e-9, atol=1e-9
    )


def test_gpo_exponential_overflows_honestly():
    # e^{-x} is unbounded: at beta rho = -1e4 it is inf (the function), never NaN
    with np.errstate(over="ignore"):
        out = nd.gpo_loss(np.array([-1e4]), 1.0, "exponential")
    assert np.isinf(out).all() and not np.isnan(out).any()


# ---------------------------------------------------------------- SLiC, KTO, SimPO, ORPO, REBEL


def test_slic_worked_example():
    np.testing.assert_array_equal(nd.slic_loss(np.array([-3.0, -1.0]), np.array([-4.0, -5.0]), 2.0), [1.0, 0.0])
    # + lam * (-log P(y_ref)) = 1 + 0.5 * 10
    assert nd.slic_loss(np.array([-3.0]), np.array([-4.0]), 2.0, np.array([10.0]), lam=0.5)[0] == 6.0


@pytest.mark.parametrize("tree", TREES)
def test_kto_asymmetry_lambda_d_vs_lambda_u(tree):
    mod, T = tree
    beta, z0, lam_d, lam_u = 0.5, 0.3, 2.0, 1.0
    r = np.array([-4.0, -1.0, 0.3, 1.0, 5.0])
    ref = np.full_like(r, -10.0)
    pol = ref + r

    def kto(desirable, policy):
        out = mod.kto_loss(T(policy), T(ref), T(np.full(r.shape, desirable)), z0, beta, lambda_d=lam_d, lambda_u=lam_u)
        return np.asarray(out, float)

    good, bad = kto(True, pol), kto(False, pol)
    # the paper's definition: lambda_y - v with v = lambda_D sigma(beta (r - z0)) / lambda_U sigma(beta (z0 - r))
    np.testing.assert_allclose(good, lam_d - lam_d * _sigmoid(beta * (r - z0)), rtol=1e-12)
    np.testing.assert_allclose(bad, lam_u - lam_u * _sigmoid(beta * (z0 - r)), rtol=1e-12)
    # at the reference point both sides lose half their weight: lambda_D / 2 vs lambda_U / 2
    np.testing.assert_allclose([good[2], bad[2]], [lam_d / 2, lam_u / 2], rtol=1e-12)
    # mirror symmetry: a desirable r and an undesirable 2 z0 - r lose the same up to lambda_D / lambda_U
    np.testing.assert_allclose(good / lam_d, kto(False, ref + 2 * z0 - r) / lam_u, rtol=1e-12)
    # desirable losses fall with r, undesirable ones rise
    assert np.all(np.diff(good) < 0) and np.all(np.diff(bad) > 0)


def test_kto_kl_reference_is_clamped_at_zero_and_detached():
    pol, ref = np.array([-3.0, -2.0]), np.array([-2.5, -2.5])
    des = np.array([True, False])
    np.testing.assert_allclose(nd.kto_loss(pol, ref, des, -0.7, 0.1), nd.kto_loss(pol, ref, des, 0.0, 0.1))
    p = torch.tensor(pol, requires_grad=True)
    kl = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    out = td.kto_loss(p, torch.tensor(ref), torch.tensor(des), kl, 0.1)
    out.sum().backward()
    assert kl.grad is None  # z0 is a constant: no gradient reaches the KL estimate
    # desirable pushes its log-prob up (negative gradient), undesirable pushes it down
    assert p.grad[0] < 0 < p.grad[1]
    np.testing.assert_allclose(out.detach().numpy(), nd.kto_loss(pol, ref, des, 0.4, 0.1), rtol=1e-12)


def test_kto_worked_example():
    out = nd.kto_loss(np.array([-1.0, -1.0]), np.array([-1.0, -1.0]), np.array([True, False]), 0.0, 0.1, 2.0, 1.0)
    np.testing.assert_allclose(out, [1.0, 0.5], rtol=1e-12)


def test_simpo_worked_example():
    # 2 * -10/10 - 2 * -30/10 - 1 = 3: -log sigma(3)
    out = nd.simpo_loss(np.array([-10.0]), np.array([-30.0]), np.array([10]), np.array([10]), 2.0, 1.0)
    assert out[0] == pytest.approx(_softplus(-3.0), rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(logps, logps), min_size=1, max_size=6), st.integers(1, 200), betas)
def test_simpo_with_equal_lengths_is_dpo_logistic_on_the_difference(rows, length, beta):
    cw, cl = (np.array(c) for c in zip(*rows))
    L = np.full(cw.shape, length)
    zero = np.zeros_like(cw)
    simpo = nd.simpo_loss(cw, cl, L, L, beta, 0.0)
    # a reference-free DPO on length-normalised log-probs: -log sigma(beta (cw - cl) / L)
    np.testing.assert_allclose(simpo, nd.dpo_loss(cw / length, cl / length, zero, zero, beta=beta), rtol=1e-9)
    np.testing.assert_allclose(simpo, nd.gpo_loss((cw - cl) / length, beta, "logistic"), rtol=1e-9)
    # the margin gamma shifts the argument: gamma = beta * m is DPO on a difference reduced by m
    np.testing.assert_allclose(
        nd.simpo_loss(cw, cl, L, L, beta, 0.5 * beta), nd.gpo_loss((cw - cl) / length - 0.5, beta), rtol=1e-9
    )


def test_simpo_divides_by_each_length():
    # long rejected answers are not favoured by their low summed log-prob once normalised
    out = nd.simpo_loss(np.array([-20.0]), np.array([-40.0]), np.array([10]), np.array([20]), 1.0, 0.0)
    assert out[0] == pytest.approx(LOG2)


@pytest.mark.parametrize("tree", TREES)
def test_orpo_log_odds_against_the_naive_formula(tree):
    mod, T = tree
    lp = np.array([-0.01, -0.1, -0.5, -1.0, -3.0, -10.0])
    p = np.exp(lp)
    naive = np.log(p / (1 - p))
    got = np.asarray(mod.orpo_log_odds(T(lp)), float)
    np.testing.assert_allclose(got, naive, rtol=1e-10)
    # worked example: P = 0.8 vs 0.5: log odds ratio log 4, L_OR = log(1 + 1/4); with L_SFT = -log 0.8
    loss = mod.orpo_loss(T(np.log([0.8])), T(np.log([0.5])), T(-np.log([0.8])), 0.1)
    assert float(loss[0]) == pytest.approx(-math.log(0.8) + 0.1 * math.log(1.25), rel=1e-12)


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_orpo_finite_near_zero_and_far_with_gradients(tree, dtype):
    mod, _ = tree
    lp = np.array([-1e-12, -1e-4, -1e4, 0.0], dtype=dtype)
    if mod is td:
        x = torch.tensor(lp, requires_grad=True)
        out = mod.orpo_log_odds(x)
        out.sum().backward()
        vals, grad = out.detach().numpy(), x.grad.numpy()
        assert out.dtype == x.dtype
        assert np.all(np.isfinite(grad))
    else:
        vals = nd.orpo_log_odds(lp)
        assert vals.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(vals))
    # far from 0 the log-odds is log P itself (1 - P = 1)
    assert vals[2] == pytest.approx(-1e4)
    # log-prob 0 (P = 1) is treated as -eps: odds of 1/eps, the largest value, not inf
    eps = np.finfo(dtype).eps
    assert vals[3] == pytest.approx(-eps - np.log(eps), rel=1e-5) and vals[3] >= vals[0]
    if dtype == "float64":  # -1e-12 is resolved in float64: log odds = -log(1e-12) to first order
        assert vals[0] == pytest.approx(-np.log(-np.expm1(-1e-12)), rel=1e-9)
    # both answers certain: finite loss
    both = mod.orpo_loss(_t(mod, [0.0]), _t(mod, [0.0]), _t(mod, [0.0]), 1.0)
    assert float(both[0]) == pytest.approx(LOG2)


def _t(mod, x):
    return torch.tensor(x, dtype=torch.float64) if mod is td else np.asarray(x, dtype=float)


def test_rebel_worked_example_and_zero_at_its_target():
    out = nd.rebel_loss(np.array([-1.0]), np.array([-2.0]), np.array([-3.0]), np.array([-2.0]),
                        np.array([1.0]), np.array([0.0]), eta=1.0)
    assert out[0] == 1.0  # ((1 - -1)/1 - 1)^2
    rng = np.random.default_rng(3)
    lp_old, lp_old_alt, r, r_alt = rng.normal(size=(4, 5))
    lp_old, lp_old_alt = lp_old - 10.0, lp_old_alt - 10.0  # log-probs: <= 0
    eta = 0.3
    # the mirror-descent step pi_{t+1} = pi_t e^{eta r} / Z makes the loss 0 (log Z cancels)
    log_z = rng.normal(size=5)
    lp, lp_alt = lp_old + eta * r - log_z, lp_old_alt + eta * r_alt - log_z
    np.testing.assert_allclose(nd.rebel_loss(lp, lp_old, lp_alt, lp_old_alt, r, r_alt, eta), 0.0, atol=1e-20)


# ---------------------------------------------------------------- properties


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(logps, logps, logps, logps), min_size=1, max_size=6),
    betas,
    st.sampled_from(sorted(nd.GPO_LOSSES)),
)
def test_every_loss_is_nonnegative(rows, beta, f):
    pc, pr, rc, rr = (np.array(c) for c in zip(*rows))
    lengths = np.arange(1, pc.size + 1)
    des = np.arange(pc.size) % 2 == 0
    rho = nd.log_ratio_difference(pc, pr, rc, rr)
    losses = {
        "dpo": nd.dpo_loss(pc, pr, rc, rr, beta=beta),
        "cdpo": nd.dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=0.3),
        "ipo": nd.ipo_loss(pc, pr, rc, rr, beta),
        "gpo": nd.gpo_loss(rho, min(beta, 0.1), f),  # beta * rho within e^{-x}'s range
        "slic": nd.slic_loss(pc, pr, 1.0, -rc, lam=0.5),
        "kto": nd.kto_loss(pc, rc, des, 0.5, beta, 1.5, 0.7),
        "simpo": nd.simpo_loss(pc, pr, lengths, lengths[::-1], beta, 0.5),
        "orpo": nd.orpo_loss(pc / lengths, pr / lengths, -pc / lengths, 0.2),
        "rebel": nd.rebel_loss(pc, rc, pr, rr, pc - pr, rr, beta),
    }
    for name, loss in losses.items():
        assert np.all(np.isfinite(loss)), name
        assert np.all(loss >= 0), name


@settings(max_examples=50, deadline=None)
@given(st.floats(-1e4, 1e4), st.floats(0.0, 100.0), betas)
def test_dpo_is_decreasing_in_the_margin_and_swapping_negates_it(m, step, beta):
    shift = 2.1e4  # log-probs must be <= 0: shift all four (the margin is unchanged)
    z = np.full(1, -shift)
    def dpo(h):
        return nd.dpo_loss(np.array([h - shift]), z, z, z, beta=beta)[0]
    assert dpo(m + step) <= dpo(m)
    # swapping chosen and rejected negates the margin: softplus(-x) - softplus(x) = -x
    swapped = nd.dpo_loss(z, np.array([m - shift]), z, z, beta=beta)[0]
    assert dpo(m) - swapped == pytest.approx(-beta * m, rel=1e-9, abs=1e-9)
    # cDPO at label_smoothing 1/2 cannot tell the two answers apart
    half = nd.dpo_loss(np.array([m - shift]), z, z, z, beta=beta, label_smoothing=0.5)[0]
    assert half == pytest.approx(
        nd.dpo_loss(z, np.array([m - shift]), z, z, beta=beta, label_smoothing=0.5)[0], rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.floats(-50.0, 50.0), st.floats(0.01, 10.0), betas)
def test_ipo_is_minimised_at_its_target(h, dh, beta):
    z = np.full(1, -100.0)  # log-probs must be <= 0: shift all four (h is unchanged)
    def ipo(x):
        return nd.ipo_loss(np.array([x - 100.0]), z, z, z, beta)[0]
    target = 1 / (2 * beta)
    assert ipo(target) <= ipo(h) + 1e-12
    # symmetric around the target (a regression, unlike DPO's one-sided logistic)
    assert ipo(target + dh) == pytest.approx(ipo(target - dh), rel=1e-9)


# ---------------------------------------------------------------- dtypes and shapes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_keeps_dtype_with_python_scalars_and_int_lengths(dtype):
    x = torch.tensor([-3.0, -5.0], dtype=dtype)
    assert td.kto_loss(x, x - 1, torch.tensor([True, False]), 0.2, 0.1).dtype == dtype
    assert td.simpo_loss(x, x - 1, torch.tensor([3, 4]), torch.tensor([5, 6]), 2.0, 0.5).dtype == dtype
    assert td.rebel_loss(x, x, x, x, 1.0, 0.0, 0.5).dtype == dtype
    assert td.slic_loss(x, x - 1, 1.0, 2.0, 0.1).dtype == dtype


def test_numpy_keeps_float32():
    x = np.array([-3.0, -5.0], dtype=np.float32)
    assert nd.dpo_loss(x, x - 1, x, x).dtype == np.float32
    assert nd.kto_loss(x, x - 1, np.array([True, False]), 0.2, 0.1).dtype == np.float32
    assert nd.simpo_loss(x, x - 1, np.array([3, 4]), np.array([5, 6]), 2.0, 0.5).dtype == np.float32
    assert nd.orpo_loss(x / 10, x / 20, -x / 10, 0.1).dtype == np.float32


def test_any_leading_shape():
    rng = np.random.default_rng(4)
    pc, pr, rc, rr = (-rng.uniform(1, 9, size=(2, 3, 4)) for _ in range(4))
    assert nd.dpo_loss(pc, pr, rc, rr).shape == (2, 3, 4)
    assert td.ipo_loss(*(torch.tensor(a) for a in (pc, pr, rc, rr)), 0.1).shape == (2, 3, 4)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("tree", TREES)
def test_bad_input_names_the_argument(tree):
    mod, T = tree
    a, b = T(np.array([-1.0, -2.0])), T(np.array([-3.0, -4.0]))
    short = T(np.array([-1.0]))
    one = T(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="beta"):
        mod.dpo_loss(a, b, a, b, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        mod.ipo_loss(a, b, a, b, -1.0)
    with pytest.raises(ValueError, match="beta"):
        mod.gpo_loss(a, 0.0)
    with pytest.raises(ValueError, match="beta"):
        mod.kto_loss(a, b, [True, False], 0.0, -0.1)
    with pytest.raises(ValueError, match="beta"):
        mod.dpo_implicit_reward(a, b, 0)
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        mod.dpo_loss(a, short, a, b)
    with pytest.raises(ValueError, match="label_smoothing"):
        mod.dpo_loss(a, b, a, b, label_smoothing=0.7)
    with pytest.raises(ValueError, match="f must be one of"):
        mod.gpo_loss(a, 1.0, "cubic")
    with pytest.raises(ValueError, match="chosen_lengths"):
        mod.simpo_loss(a, b, T(np.array([0.0, 3.0])), one, 1.0, 0.0)
    with pytest.raises(ValueError, match="rejected_lengths"):
        mod.simpo_loss(a, b, one, T(np.array([2.0, -1.0])), 1.0, 0.0)
    with pytest.raises(ValueError, match="rejected_logps"):
        mod.simpo_loss(a, short, one, one, 1.0, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        mod.simpo_loss(a, b, one, one, 1.0, -1.0)
    with pytest.raises(ValueError, match="eta"):
        mod.rebel_loss(a, b, a, b, one, one, 0.0)
    with pytest.raises(ValueError, match="logp_alt"):
        mod.rebel_loss(a, b, short, b, one, one, 1.0)
    with pytest.raises(ValueError, match="desirable"):
        mod.kto_loss(a, b, [0.5, 1.0], 0.0, 0.1)
    with pytest.raises(ValueError, match="desirable"):
        mod.kto_loss(a, b, [True], 0.0, 0.1)
    with pytest.raises(ValueError, match="lambda_u"):
        mod.kto_loss(a, b, [True, False], 0.0, 0.1, lambda_u=-1.0)
    with pytest.raises(ValueError, match="chosen_mean_logps"):
        mod.orpo_loss(T(np.array([0.1, -1.0])), b, one, 0.1)
    with pytest.raises(ValueError, match="chosen_nll"):
        mod.orpo_loss(a, b, T(np.array([-0.5, 1.0])), 0.1)  # the sign slip: passing log-probs as NLL
    with pytest.raises(ValueError, match="mean_logps"):
        mod.orpo_log_odds(T(np.array([np.nan])))
    with pytest.raises(ValueError, match="ref_nll"):
        mod.slic_loss(a, b, 1.0, lam=0.5)
    with pytest.raises(ValueError, match="delta"):
        mod.slic_loss(a, b, -1.0)
    with pytest.raises(ValueError, match="ref_nll"):
        mod.slic_loss(a, b, 1.0, T(np.array([-1.0, 2.0])), 0.5)


@pytest.mark.parametrize("tree", TREES)
def test_non_numeric_input_is_a_type_error(tree):
    mod, T = tree
    a = T(np.array([-1.0, -2.0]))
    with pytest.raises(TypeError, match="policy_chosen_logps"):
        mod.dpo_loss(["a", "b"], a, a, a)
    with pytest.raises(TypeError, match="beta"):
        mod.dpo_loss(a, a, a, a, beta="0.1")


# ---------------------------------------------------------------- extremes: margins of +-1e4


_BIG = np.array([1e4, -1e4, 3e3, -3e3])
_ORPO = np.array([-1e-3, -1e4, -1e-3, -1e4])
_SHIFT = 2e4  # exact in float32: shifted log-probs keep every margin exactly  # mean log-probs: log-odds margins of about +-1e4


def _extreme_losses(mod, T, beta):
    """Every loss at margins of +-1e4, as (name, output, leaves).

    Log-probs must be <= 0: the callers pass x, y and every loss but ORPO sees x - _SHIFT, y - _SHIFT with
    reference log-probs -_SHIFT, which leaves every margin unchanged."""
    z = np.zeros(4) - _SHIFT
    des = np.array([True, False, False, True])
    one = np.ones(4)
    calls = {
        "dpo": lambda x, y: mod.dpo_loss(x, y, T(z), T(z), beta=beta),
        "cdpo": lambda x, y: mod.dpo_loss(x, y, T(z), T(z), beta=beta, label_smoothing=0.1),
        "ipo": lambda x, y: mod.ipo_loss(x, y, T(z), T(z), beta),
        "slic": lambda x, y: mod.slic_loss(x, y, 1.0),
        "kto": lambda x, y: mod.kto_loss(x, y, T(des) if mod is nd else torch.tensor(des), 0.0, beta),
        "simpo": lambda x, y: mod.simpo_loss(x, y, T(one), T(one), beta, 1.0),
        "orpo": lambda x, y: mod.orpo_loss(x, y, T(one), 1.0),  # called with mean log-probs, see _ORPO
        "rebel": lambda x, y: mod.rebel_loss(x, y, y, x, T(one), T(z + _SHIFT), 1.0),
    }
    for f in nd.GPO_LOSSES:
        if f != "exponential":  # e^{-x} is unbounded: inf at -1e4 is the function (tested above)
            calls[f"gpo-{f}"] = lambda x, y, f=f: mod.gpo_loss(x - y, beta, f)
    return {name: (call if name == "orpo" else (lambda x, y, call=call: call(x - _SHIFT, y - _SHIFT)))
            for name, call in calls.items()}


@pytest.mark.parametrize("beta", [0.1, 1.0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_margins_torch_finite_loss_and_gradient(dtype, beta):
    tdtype = getattr(torch, dtype)

    def T(a):
        return torch.tensor(a, dtype=tdtype)

    for name, call in _extreme_losses(td, T, beta).items():
        x = torch.tensor(_BIG, dtype=tdtype, requires_grad=True)
        y = torch.tensor(-_BIG, dtype=tdtype, requires_grad=True)
        if name == "orpo":
            x = torch.tensor(_ORPO, dtype=tdtype, requires_grad=True)
            y = torch.tensor(_ORPO[::-1].copy(), dtype=tdtype, requires_grad=True)
        out = call(x, y)
        assert out.dtype == tdtype, name
        assert torch.isfinite(out).all(), f"{name}: {out}"
        gx, gy = torch.autograd.grad(out.sum(), [x, y])
        assert torch.isfinite(gx).all() and torch.isfinite(gy).all(), f"{name}: gradient {gx} {gy}"


@pytest.mark.parametrize("beta", [0.1, 1.0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_margins_numpy_finite_loss_and_analytic_gradient(dtype, beta):
    def T(a):
        return np.asarray(a, dtype=dtype)

    # no overflow, division by zero or invalid value inside, not only a finite result (underflow to 0 is fine)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        for name, call in _extreme_losses(nd, T, beta).items():
            x, y = T(_BIG), T(-_BIG)
            if name == "orpo":
                x, y = T(_ORPO), T(_ORPO[::-1])
            out = call(x, y)
            assert out.dtype == np.dtype(dtype), name
            assert np.all(np.isfinite(out)), f"{name}: {out}"
        z = T(np.zeros(4) - _SHIFT)
        for eps in (0.0, 0.2):
            g = nd.dpo_loss_grad(T(_BIG - _SHIFT), T(-_BIG - _SHIFT), z, z, beta=beta, label_smoothing=eps)
            assert all(np.all(np.isfinite(v)) for v in g.values())
            # saturated: a right pair has weight ~ 0, a wrong pair the full weight beta (minus eps's share)
            np.testing.assert_allclose(g["policy_chosen_logps"][:2], [eps * beta, -(1 - eps) * beta], atol=1e-6)
