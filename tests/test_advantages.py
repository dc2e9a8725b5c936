"""Tests of rlhf_edu.{numpy,torch}.advantages: worked examples, identities, properties, bad input, extremes.

(Twin agreement on fixed inputs is in tests/test_twins.py; here the twin is also checked on random
inputs of the property tests.)
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rlhf_edu.numpy import advantages as na
from rlhf_edu.torch import advantages as ta

BOTH = pytest.mark.parametrize("mod", [na, ta], ids=["numpy", "torch"])


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _call(mod, fn, *args, **kwargs):
    """Call ``fn`` of the numpy or torch module, converting float arrays to tensors for torch."""
    if mod is ta:
        conv = lambda a: torch.as_tensor(a) if isinstance(a, np.ndarray) else a  # noqa: E731
        args = [conv(a) for a in args]
        kwargs = {k: conv(v) for k, v in kwargs.items()}
    out = getattr(mod, fn)(*args, **kwargs)
    return tuple(_np(o) for o in out) if isinstance(out, tuple) else _np(out)


# ---------------------------------------------------------------- plain Python loops (the definitions)
def loop_returns(rewards, gamma, dones, last_value):
    out = np.zeros_like(rewards, dtype=float)
    for b in range(rewards.shape[0]):
        g = float(last_value[b])
        for t in reversed(range(rewards.shape[1])):
            g = rewards[b, t] + gamma * (1 - dones[b, t]) * g
            out[b, t] = g
    return out


def loop_gae(rewards, values, gamma, lam, dones, last_value):
    adv = np.zeros_like(rewards, dtype=float)
    for b in range(rewards.shape[0]):
        a, next_v = 0.0, float(last_value[b])
        for t in reversed(range(rewards.shape[1])):
            nd = 1 - dones[b, t]
            delta = rewards[b, t] + gamma * next_v * nd - values[b, t]
            a = delta + gamma * lam * nd * a
            adv[b, t] = a
            next_v = values[b, t]
    return adv, adv + values


# ---------------------------------------------------------------- strategies
_floats = st.floats(-10, 10, allow_nan=False, width=64)


@st.composite
def rollouts(draw):
    b = draw(st.integers(1, 4))
    t = draw(st.integers(1, 9))
    rewards = draw(hnp.arrays(np.float64, (b, t), elements=_floats))
    values = draw(hnp.arrays(np.float64, (b, t), elements=_floats))
    dones = draw(hnp.arrays(np.int64, (b, t), elements=st.integers(0, 1)))
    last = draw(hnp.arrays(np.float64, (b,), elements=_floats))
    gamma = draw(st.floats(0, 1))
    lam = draw(st.floats(0, 1))
    return rewards, values, dones, last, gamma, lam


groups = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(2, 8)),
    elements=st.floats(-100, 100, allow_nan=False),
)


# ---------------------------------------------------------------- discounted returns
@BOTH
def test_discounted_returns_worked_examples(mod):
    r = np.array([1.0, 1.0, 1.0])
    np.testing.assert_allclose(_call(mod, "discounted_returns", r, 0.5), [1.75, 1.5, 1.0])
    # the episode ends after step 1: step 0 sees only steps 0-1, step 2 bootstraps from last_value
    got = _call(mod, "discounted_returns", r, 0.5, dones=np.array([0, 1, 0]), last_value=2.0)
    np.testing.assert_allclose(got, [1.5, 1.0, 2.0])
    # done at the final step: last_value is ignored
    got = _call(mod, "discounted_returns", r, 0.5, dones=np.array([0, 0, 1]), last_value=100.0)
    np.testing.assert_allclose(got, [1.75, 1.5, 1.0])
    # gamma = 1: plain reward-to-go; gamma = 0: the reward itself
    np.testing.assert_allclose(_call(mod, "discounted_returns", np.array([1.0, 2.0, 3.0]), 1.0), [6, 5, 3])
    np.testing.assert_allclose(_call(mod, "discounted_returns", np.array([1.0, 2.0, 3.0]), 0.0), [1, 2, 3])


@settings(max_examples=50, deadline=None)
@given(rollouts())
def test_discounted_returns_match_the_python_loop(data):
    rewards, _, dones, last, gamma, _ = data
    expected = loop_returns(rewards, gamma, dones, last)
    for mod in (na, ta):
        got = _call(mod, "discounted_returns", rewards, gamma, dones, last)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)
        # without dones the filter path must equal the loop with no episode end
        got = _call(mod, "discounted_returns", rewards, gamma, None, last)
        np.testing.assert_allclose(got, loop_returns(rewards, gamma, 0 * dones, last), rtol=1e-10, atol=1e-9)


def test_discounted_returns_per_row_bootstrap_and_batch_axes():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(2, 3, 5))
    last = rng.normal(size=(2, 3))
    got = na.discounted_returns(r, 0.9, last_value=last)
    flat = loop_returns(r.reshape(6, 5), 0.9, np.zeros((6, 5)), last.reshape(6))
    np.testing.assert_allclose(got, flat.reshape(2, 3, 5), rtol=1e-12)


# ---------------------------------------------------------------- GAE
@BOTH
def test_gae_worked_example_by_hand(mod):
    # deltas: 1 + .9*.4 - .5 = .86, 0 + .9*.3 - .4 = -.13, 2 + .9*.6 - .3 = 2.24; gamma*lam = .72
    adv, ret = _call(mod, "gae", np.array([1.0, 0.0, 2.0]), np.array([0.5, 0.4, 0.3]), 0.9, 0.8,
                     last_value=0.6)
    a2 = 2.24
    a1 = -0.13 + 0.72 * a2
    a0 = 0.86 + 0.72 * a1
    np.testing.assert_allclose(adv, [a0, a1, a2], rtol=1e-12)
    np.testing.assert_allclose(ret, adv + np.array([0.5, 0.4, 0.3]), rtol=1e-12)
    np.testing.assert_allclose(adv, [1.927616, 1.4828, 2.24], rtol=1e-12)


@BOTH
def test_gae_docstring_examples(mod):
    adv, ret = _call(mod, "gae", np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), 1.0, 0.0)
    np.testing.assert_allclose(adv, [0.0, 0.0, 0.5])
    np.testing.assert_allclose(ret, [0.5, 0.5, 1.0])
    adv, _ = _call(mod, "gae", np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), 1.0, 1.0)
    np.testing.assert_allclose(adv, [0.5, 0.5, 0.5])


@settings(max_examples=50, deadline=None)
@given(rollouts())
def test_gae_matches_the_python_loop(data):
    rewards, values, dones, last, gamma, lam = data
    exp_adv, exp_ret = loop_gae(rewards, values, gamma, lam, dones, last)
    for mod in (na, ta):
        adv, ret = _call(mod, "gae", rewards, values, gamma, lam, dones, last)
        np.testing.assert_allclose(adv, exp_adv, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ret, exp_ret, rtol=1e-9, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(rollouts())
def test_gae_lambda_1_is_discounted_return_minus_value(data):
    rewards, values, dones, last, gamma, _ = data
    for d in (dones, None):
        adv, ret = na.gae(rewards, values, gamma, 1.0, d, last)
        g = na.discounted_returns(rewards, gamma, d, last)
        np.testing.assert_allclose(adv, g - values, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ret, g, rtol=1e-9, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(rollouts())
def test_gae_lambda_0_is_the_td_residual(data):
    rewards, values, dones, last, gamma, _ = data
    next_values = np.concatenate([values[:, 1:], last[:, None]], axis=1)
    delta = rewards + gamma * next_values * (1 - dones) - values
    adv, _ = na.gae(rewards, values, gamma, 0.0, dones, last)
    np.testing.assert_allclose(adv, delta, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(rollouts())
def test_gae_is_the_discounted_sum_of_td_residuals(data):
    # A_t = sum_l (gamma lam)^l delta_{t+l} (the notes' formula), no episode ends
    rewards, values, _, last, gamma, lam = data
    next_values = np.concatenate([values[:, 1:], last[:, None]], axis=1)
    delta = rewards + gamma * next_values - values
    t = rewards.shape[1]
    weights = np.array([[(gamma * lam) ** (k - s) if k >= s else 0.0 for k in range(t)] for s in range(t)])
    adv, _ = na.gae(rewards, values, gamma, lam, None, last)
    np.testing.assert_allclose(adv, delta @ weights.T, rtol=1e-9, atol=1e-9)


def test_gae_gradient_flows_to_values_and_last_value():
    r = torch.zeros(1, 2, dtype=torch.float64)
    v = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    last = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    adv, _ = ta.gae(r, v, 0.5, 1.0, last_value=last)
    adv.sum().backward()
    # A0 = -V0 + gamma^2 last, A1 = -V1 + gamma last (lam = 1: telescoped)
    np.testing.assert_allclose(v.grad.numpy(), [[-1.0, -1.0]])
    np.testing.assert_allclose(last.grad.numpy(), [0.25 + 0.5])


# ---------------------------------------------------------------- GRPO group advantages
@BOTH
def test_group_normalized_worked_example(mod):
    r = np.array([1.0, 0.0, 0.0, 1.0])  # mean 0.5, population std 0.5, sample std 0.5773
    np.testing.assert_allclose(_call(mod, "group_normalized_advantages", r), [1, -1, -1, 1], atol=1e-5)
    np.testing.assert_allclose(_call(mod, "group_normalized_advantages", r, "sample"),
                               np.array([1, -1, -1, 1]) * 0.5 / np.sqrt(1 / 3), atol=1e-5)
    np.testing.assert_allclose(_call(mod, "group_normalized_advantages", r, None), [0.5, -0.5, -0.5, 0.5])


@settings(max_examples=50, deadline=None)
@given(groups)
def test_group_advantages_zero_mean_unit_population_std(r):
    for std in ("population", "sample", None):
        a = na.group_normalized_advantages(r, std=std)
        # atol: a constant group's rounding residue (~1e-14 |r|) is divided by eps = 1e-6
        np.testing.assert_allclose(a.mean(axis=-1), 0.0, atol=1e-6)
        np.testing.assert_allclose(_np(ta.group_normalized_advantages(torch.as_tensor(r), std=std)), a,
                                   rtol=1e-10, atol=1e-10)
    spread = r.std(axis=-1) > 1e-3
    a = na.group_normalized_advantages(r, "population", eps=1e-12)
    np.testing.assert_allclose(a.std(axis=-1)[spread], 1.0, rtol=1e-6)
    a = na.group_normalized_advantages(r, "sample", eps=1e-12)
    np.testing.assert_allclose(a.std(axis=-1, ddof=1)[spread], 1.0, rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(groups, st.floats(0.1, 10), st.floats(-50, 50))
def test_group_advantages_ignore_shift_and_scale(r, scale, shift):
    spread = r.std(axis=-1) > 1e-2
    a = na.group_normalized_advantages(r, eps=1e-12)[spread]
    b = na.group_normalized_advantages(scale * r + shift, eps=1e-12)[spread]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@BOTH
def test_group_of_equal_rewards_gives_zero_advantage(mod):
    # every completion of a prompt solved (or failed): no signal, not 0/0
    got = _call(mod, "group_normalized_advantages", np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(got, 0.0)


@BOTH
def test_group_of_one(mod):
    np.testing.assert_array_equal(_call(mod, "group_normalized_advantages", np.array([[3.0], [4.0]])), 0.0)
    with pytest.raises(ValueError, match="rewards.*std='sample'"):
        _call(mod, "group_normalized_advantages", np.array([[3.0], [4.0]]), "sample")


# ---------------------------------------------------------------- RLOO
@BOTH
def test_leave_one_out_worked_example(mod):
    got = _call(mod, "leave_one_out_advantages", np.array([1.0, 0.0, 0.0, 1.0]))
    np.testing.assert_allclose(got, [2 / 3, -2 / 3, -2 / 3, 2 / 3])
    np.testing.assert_allclose(_call(mod, "leave_one_out_advantages", np.array([3.0, 1.0])), [2.0, -2.0])


@settings(max_examples=50, deadline=None)
@given(groups)
def test_leave_one_out_sums_to_zero_and_is_scaled_centering(r):
    a = na.leave_one_out_advantages(r)
    g = r.shape[-1]
    np.testing.assert_allclose(a.sum(axis=-1), 0.0, atol=1e-9)
    np.testing.assert_allclose(a, g / (g - 1) * (r - r.mean(axis=-1, keepdims=True)), rtol=1e-9, atol=1e-9)
    loop = np.array([[r[b, i] - np.mean(np.delete(r[b], i)) for i in range(g)] for b in range(r.shape[0])])
    np.testing.assert_allclose(a, loop, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(_np(ta.leave_one_out_advantages(torch.as_tensor(r))), a, rtol=1e-10, atol=1e-10)


def test_leave_one_out_baseline_does_not_depend_on_own_reward():
    # the reason RLOO is unbiased: d baseline_i / d r_i = 0
    r = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: x - ta.leave_one_out_advantages(x), r)
    np.testing.assert_allclose(torch.diagonal(jac).numpy(), 0.0, atol=1e-15)
    np.testing.assert_allclose(jac.numpy() + np.eye(4) / 3, np.full((4, 4), 1 / 3), atol=1e-15)


@BOTH
def test_leave_one_out_needs_two(mod):
    with pytest.raises(ValueError, match="rewards"):
        _call(mod, "leave_one_out_advantages", np.array([[1.0], [2.0]]))


# ---------------------------------------------------------------- whitening
@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, (3, 6), elements=st.floats(-100, 100)),
       hnp.arrays(np.int64, (3, 6), elements=st.integers(0, 1)))
def test_whiten_moments_over_the_mask(x, mask):
    mask[0, 0] = 1
    keep = mask > 0
    for mod in (na, ta):
        w = _call(mod, "whiten", x, mask, eps=1e-12)
        np.testing.assert_array_equal(w[~keep], 0.0)
        assert abs(w[keep].mean()) < 1e-6
        if x[keep].std() > 1e-3:
            np.testing.assert_allclose(w[keep].std(), 1.0, rtol=1e-6)
            unshifted = _call(mod, "whiten", x, mask, shift_mean=False, eps=1e-12)
            np.testing.assert_allclose(unshifted[keep], w[keep] + x[keep].mean(), rtol=1e-9, atol=1e-9)


@BOTH
def test_whiten_worked_example_and_garbage_padding(mod):
    np.testing.assert_allclose(_call(mod, "whiten", np.array([1.0, 2.0, 3.0, 4.0])),
                               np.array([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(1.25 + 1e-8), rtol=1e-12)
    got = _call(mod, "whiten", np.array([1.0, 2.0, 3.0, np.inf]), mask=np.array([1, 1, 1, 0]))
    np.testing.assert_allclose(got, [-np.sqrt(1.5), 0.0, np.sqrt(1.5), 0.0], rtol=1e-6)


# ---------------------------------------------------------------- bad input
@BOTH
@pytest.mark.parametrize("gamma", [-0.1, 1.5])
def test_gamma_outside_unit_interval(mod, gamma):
    with pytest.raises(ValueError, match="gamma"):
        _call(mod, "discounted_returns", np.ones(3), gamma)
    with pytest.raises(ValueError, match="gamma"):
        _call(mod, "gae", np.ones(3), np.ones(3), gamma, 0.9)


@BOTH
@pytest.mark.parametrize("lam", [-0.5, 1.01])
def test_lam_outside_unit_interval(mod, lam):
    with pytest.raises(ValueError, match="lam"):
        _call(mod, "gae", np.ones(3), np.ones(3), 0.9, lam)


@BOTH
def test_shape_and_value_errors(mod):
    with pytest.raises(ValueError, match="values"):
        _call(mod, "gae", np.ones((2, 3)), np.ones((2, 4)), 0.9, 0.9)
    with pytest.raises(ValueError, match="dones"):
        _call(mod, "discounted_returns", np.ones((2, 3)), 0.9, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="dones"):
        _call(mod, "gae", np.ones((2, 3)), np.ones((2, 3)), 0.9, 0.9, np.full((2, 3), 2))
    with pytest.raises(ValueError, match="last_value"):
        _call(mod, "discounted_returns", np.ones((2, 3)), 0.9, None, np.ones(3))
    with pytest.raises(ValueError, match="last_value"):
        _call(mod, "gae", np.ones((2, 3)), np.ones((2, 3)), 0.9, 0.9, None, np.ones((2, 3)))
    with pytest.raises(ValueError, match="rewards"):
        _call(mod, "discounted_returns", np.ones((2, 0)), 0.9)
    with pytest.raises(ValueError, match="std"):
        _call(mod, "group_normalized_advantages", np.ones(4), "unbiased")
    with pytest.raises(ValueError, match="eps"):
        _call(mod, "group_normalized_advantages", np.ones(4), "population", -1e-6)  # eps = 0 is the paper's formula
    with pytest.raises(ValueError, match="mask"):
        _call(mod, "whiten", np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match="mask"):
        _call(mod, "whiten", np.ones(4), np.ones(3))


def test_non_numeric_rewards_raise_type_error():
    with pytest.raises(TypeError, match="rewards"):
        na.discounted_returns(["a", "b"], 0.9)
    with pytest.raises(TypeError, match="rewards"):
        ta.group_normalized_advantages(torch.tensor([True, False]))


# ---------------------------------------------------------------- extremes and dtypes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_extreme_rewards_stay_finite(dtype):
    r = torch.tensor([[1e4, -1e4, 1e4, -1e4], [-1e4, -1e4, 1e4, 1e4]], dtype=dtype, requires_grad=True)
    v = torch.tensor([[1e4, 0.0, -1e4, 5.0]] * 2, dtype=dtype, requires_grad=True)
    dones = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 1]])
    adv, ret = ta.gae(r, v, 0.99, 0.95, dones, 1e4)
    g = ta.discounted_returns(r, 0.99, dones, 1e4)
    grpo = ta.group_normalized_advantages(r, "sample")
    loo = ta.leave_one_out_advantages(r)
    w = ta.whiten(adv)
    total = adv.sum() + ret.sum() + g.sum() + grpo.sum() + loo.sum() + w.sum()
    total.backward()
    for out in (adv, ret, g, grpo, loo, w):
        assert out.dtype == dtype and torch.isfinite(out).all()
    assert torch.isfinite(r.grad).all() and torch.isfinite(v.grad).all()
    for x in (r.detach().numpy(),):
        a, rt = na.gae(x, v.detach().numpy(), 0.99, 0.95, dones.numpy(), 1e4)
        outs = [a, rt, na.discounted_returns(x, 0.99, dones.numpy(), 1e4), na.whiten(a),
                na.group_normalized_advantages(x, "sample"), na.leave_one_out_advantages(x)]
        for o in outs:
            assert o.dtype == x.dtype and np.all(np.isfinite(o))
