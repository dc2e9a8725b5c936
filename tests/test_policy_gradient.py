"""Tests of rlhf_edu.{numpy,torch}.policy_gradient.

The notes' examples, gradients, identities, bad input, extremes.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rlhf_edu.numpy import divergences as nd
from rlhf_edu.numpy import policy_gradient as npg
from rlhf_edu.torch import policy_gradient as tpg

BOTH = pytest.mark.parametrize("mod", [npg, tpg], ids=["numpy", "torch"])
AGGREGATIONS = ("sequence_mean", "token_mean", "dr_grpo")


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _conv(a):
    return torch.as_tensor(a) if isinstance(a, np.ndarray) else a


def _call(mod, fn, *args, **kwargs):
    """Call ``fn`` of the numpy or torch module, converting arrays to tensors for torch."""
    if mod is tpg:
        args = [_conv(a) for a in args]
        kwargs = {k: _conv(v) for k, v in kwargs.items()}
    out = getattr(mod, fn)(*args, **kwargs)
    if isinstance(out, tuple):
        return _np(out[0]), {k: float(_np(v)) for k, v in out[1].items()}
    return _np(out)


def _batch(seed=0, b=4, t=5, spread=0.1):
    rng = np.random.default_rng(seed)
    logp = np.log(rng.uniform(0.05, 0.95, size=(b, t)))
    logp_old = logp + rng.normal(scale=spread, size=(b, t))
    logp_ref = logp + rng.normal(scale=0.5, size=(b, t))
    adv = rng.normal(size=b)
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t) < lengths[:, None]).astype(np.int64)
    return logp, logp_old, logp_ref, adv, mask


# ---------------------------------------------------------------- PPO clip: the notes' example
@BOTH
def test_ppo_clip_example_of_the_notes(mod):
    # "unlimited": old probability 0.1, new 0.3 -> ratio 3; eps 0.2 -> clipped to 1.2 for A > 0
    ratio = 0.3 / 0.1
    for a in (1.0, 2.5):
        assert _call(mod, "ppo_clip_objective", np.array([ratio]), np.array([a]))[0] == pytest.approx(1.2 * a)
    # A < 0: min(3A, 1.2A) = 3A, the unclipped (more pessimistic) term is kept
    for a in (-1.0, -0.4):
        assert _call(mod, "ppo_clip_objective", np.array([ratio]), np.array([a]))[0] == pytest.approx(3 * a)
    # the same through the loss, from log-probabilities
    loss = _call(mod, "ppo_clip_loss", np.log([0.3, 0.3]), np.log([0.1, 0.1]), np.array([1.0, -1.0]))
    assert float(loss) == pytest.approx(-(1.2 - 3.0) / 2)


def test_ppo_clip_gradient_of_the_notes_example():
    # clipped with A > 0: no gradient; unclipped with A < 0: gradient A
    g = npg.ppo_clip_objective_grad(np.array([3.0, 3.0]), np.array([1.0, -1.0]))["ratio"]
    np.testing.assert_array_equal(g, [0.0, -1.0])
    ratio = torch.tensor([3.0, 3.0], dtype=torch.float64, requires_grad=True)
    tpg.ppo_clip_objective(ratio, torch.tensor([1.0, -1.0], dtype=torch.float64)).sum().backward()
    np.testing.assert_array_equal(ratio.grad.numpy(), g)


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.float64, 8, elements=st.floats(0.0, 5.0)),
    hnp.arrays(np.float64, 8, elements=st.floats(-5, 5)),
    st.floats(0.01, 0.5),
    st.one_of(st.none(), st.floats(0.01, 0.5)),
)
def test_ppo_objective_properties(ratio, adv, eps, eps_high):
    high = eps if eps_high is None else eps_high
    obj = npg.ppo_clip_objective(ratio, adv, eps, eps_high)
    inside = (ratio >= 1 - eps) & (ratio <= 1 + high)
    # inside the clip range the objective is the plain importance-weighted advantage
    np.testing.assert_allclose(obj[inside], (ratio * adv)[inside], rtol=1e-12)
    # everywhere a lower bound of both terms (pessimistic)
    assert np.all(obj <= ratio * adv + 1e-12)
    assert np.all(obj <= np.clip(ratio, 1 - eps, 1 + high) * adv + 1e-12)
    np.testing.assert_allclose(_np(tpg.ppo_clip_objective(torch.as_tensor(ratio), torch.as_tensor(adv), eps,
                                                          eps_high)), obj, rtol=1e-12)
    # analytic gradient: A where the sample still pushes, 0 where the clip stopped it
    grad = npg.ppo_clip_objective_grad(ratio, adv, eps, eps_high)["ratio"]
    stopped = ((adv > 0) & (ratio > 1 + high)) | ((adv < 0) & (ratio < 1 - eps))
    np.testing.assert_array_equal(grad, np.where(stopped, 0.0, adv))


@BOTH
def test_clip_higher(mod):
    # DAPO: eps_high 0.28 lets a positive-advantage ratio of 1.25 keep pushing; the low side is unchanged
    ratio, adv = np.array([1.25, 0.75, 0.75]), np.array([1.0, -1.0, 1.0])
    np.testing.assert_allclose(_call(mod, "ppo_clip_objective", ratio, adv), [1.2, -0.8, 0.75])
    np.testing.assert_allclose(_call(mod, "ppo_clip_objective", ratio, adv, 0.2, 0.28), [1.25, -0.8, 0.75])


# ---------------------------------------------------------------- PPO loss
def test_ppo_loss_at_the_old_policy_is_the_policy_gradient():
    # ratio 1: loss = -mean(A) and its gradient is the REINFORCE gradient -A/N
    logp, _, _, _, mask = _batch()
    adv = np.random.default_rng(3).normal(size=logp.shape)
    assert float(npg.ppo_clip_loss(logp, logp, adv, mask)) == pytest.approx(-adv[mask > 0].mean())
    x = torch.tensor(logp, requires_grad=True)
    tpg.ppo_clip_loss(x, torch.tensor(logp), torch.tensor(adv), torch.tensor(mask)).backward()
    expected = npg.reinforce_loss_grad(logp, adv, mask)["logp"]
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-15)


@BOTH
def test_ppo_stats(mod):
    logp, logp_old, _, _, mask = _batch(spread=0.5)
    adv = np.random.default_rng(4).normal(size=logp.shape)
    loss, stats = _call(mod, "ppo_clip_loss", logp, logp_old, adv, mask, return_stats=True)
    assert float(loss) == pytest.approx(float(npg.ppo_clip_loss(logp, logp_old, adv, mask)))
    r = np.exp(logp - logp_old)
    keep = mask > 0
    clipped = ((adv > 0) & (r > 1.2)) | ((adv < 0) & (r < 0.8))
    assert stats["clip_fraction"] == pytest.approx(clipped[keep].mean())
    assert 0 < stats["clip_fraction"] < 1
    assert stats["approx_kl"] == pytest.approx(((r - 1) - np.log(r))[keep].mean())
    _, same = _call(mod, "ppo_clip_loss", logp, logp, adv, mask, return_stats=True)
    assert same == {"clip_fraction": 0.0, "approx_kl": 0.0}


@BOTH
def test_masked_padding_is_ignored_even_if_garbage(mod):
    logp, logp_old, _, adv, mask = _batch()
    mask[0, -1] = 0
    dirty = logp.copy()
    dirty[0, -1] = -np.inf
    for fn, args in [("ppo_clip_loss", (logp_old, adv, mask)), ("reinforce_loss", (adv, mask))]:
        clean = _call(mod, fn, logp, *args)
        got = _call(mod, fn, dirty, *args)
        assert np.isfinite(got) and float(got) == pytest.approx(float(clean))


# ---------------------------------------------------------------- REINFORCE
@BOTH
def test_reinforce_worked_example(mod):
    loss = _call(mod, "reinforce_loss", np.log([0.5, 0.25]), np.array([1.0, -1.0]))
    assert float(loss) == pytest.approx(-(np.log(0.5) - np.log(0.25)) / 2)


@BOTH
def test_reinforce_per_sequence_equals_repeated_per_token(mod):
    logp, _, _, adv, mask = _batch()
    per_seq = _call(mod, "reinforce_loss", logp, adv, mask)
    per_tok = _call(mod, "reinforce_loss", logp, np.repeat(adv[:, None], logp.shape[1], axis=1), mask)
    assert float(per_seq) == pytest.approx(float(per_tok))
    manual = -(adv[:, None] * logp)[mask > 0].mean()
    assert float(per_seq) == pytest.approx(manual)


# ---------------------------------------------------------------- value loss
@BOTH
def test_value_loss_examples(mod):
    assert float(_call(mod, "value_loss", np.array([1.0, 2.0]), np.array([0.0, 0.0]))) == pytest.approx(1.25)
    # the clip keeps the prediction within 0.5 of the old value 0, the max takes the worse error
    got = _call(mod, "value_loss", np.array([1.0, 2.0]), np.array([3.0, 3.0]), np.zeros(2), 0.5)
    assert float(got) == pytest.approx(0.5 * 2.5**2)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, (3, 4), elements=st.floats(-10, 10)),
       hnp.arrays(np.float64, (3, 4), elements=st.floats(-10, 10)),
       hnp.arrays(np.float64, (3, 4), elements=st.floats(-10, 10)),
       st.floats(0.01, 5))
def test_value_loss_clipped_bounds(v, r, old, c):
    plain = npg.value_loss(v, r)
    clipped = npg.value_loss(v, r, old, c)
    assert clipped >= plain - 1e-12
    # a clip wider than any move is no clip at all
    assert npg.value_loss(v, r, old, 1e3) == pytest.approx(plain)
    assert float(tpg.value_loss(torch.as_tensor(v), torch.as_tensor(r), torch.as_tensor(old), c)) == \
        pytest.approx(float(clipped))


def test_clipped_value_loss_stops_the_gradient_beyond_the_clip():
    # V moved 1.0 away from old (0) towards... away from the return: the clipped branch is constant
    v = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    tpg.value_loss(v, torch.tensor([-1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64),
                   0.2).backward()
    # unclipped error (1 - (-1))^2 = 4 > clipped (0.2 + 1)^2: the max picks the unclipped, gradient V - R = 2
    assert v.grad.item() == pytest.approx(2.0)
    v.grad = None
    tpg.value_loss(v, torch.tensor([5.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64),
                   0.2).backward()
    # (1-5)^2 = 16 < (0.2-5)^2 = 23.04: the clipped prediction wins and does not depend on V
    assert v.grad.item() == 0.0


# ---------------------------------------------------------------- GRPO
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_gradient_is_the_formula_of_the_notes(aggregation, seed):
    # at logp = logp_old (ratio 1, inside the clip), d(-loss)/d logp = w_it (A_i + beta (pi_ref / pi - 1))
    logp, _, logp_ref, adv, mask = _batch(seed)
    beta = 0.04
    x = torch.tensor(logp, requires_grad=True)
    loss = tpg.grpo_loss(x, torch.tensor(logp), torch.tensor(logp_ref), torch.tensor(adv), torch.tensor(mask),
                         0.2, beta, aggregation)
    (-loss).backward()
    coef = (adv[:, None] + beta * (np.exp(logp_ref - logp) - 1)) * mask
    g, t = logp.shape
    weight = {
        "sequence_mean": 1.0 / (g * mask.sum(axis=1, keepdims=True)),  # 1/G * 1/|o_i|
        "token_mean": 1.0 / mask.sum(),
        "dr_grpo": 1.0 / (g * t),
    }[aggregation]
    np.testing.assert_allclose(x.grad.numpy(), coef * weight, rtol=1e-10, atol=1e-14)


@BOTH
def test_grpo_aggregations_by_hand(mod):
    # per-token loss -A (ratio 1, pi = pi_ref): lengths 1 and 3, A = 1 and 2
    logp = np.log(np.full((2, 3), 0.5))
    mask = np.array([[1, 0, 0], [1, 1, 1]])
    adv = np.array([1.0, 2.0])
    got = {agg: float(_call(mod, "grpo_loss", logp, logp, logp, adv, mask, aggregation=agg))
           for agg in AGGREGATIONS}
    assert got["sequence_mean"] == pytest.approx(-(1 + 2) / 2)
    assert got["token_mean"] == pytest.approx(-(1 + 3 * 2) / 4)
    assert got["dr_grpo"] == pytest.approx(-(1 + 3 * 2) / (2 * 3))
    long = _call(mod, "grpo_loss", logp, logp, logp, adv, mask, aggregation="dr_grpo", max_length=4)
    assert float(long) == pytest.approx(-7 / 8)


@BOTH
def test_grpo_aggregations_agree_on_equal_lengths(mod):
    logp, logp_old, logp_ref, adv, _ = _batch()
    mask = np.ones_like(logp, dtype=np.int64)
    values = [float(_call(mod, "grpo_loss", logp, logp_old, logp_ref, adv, mask, aggregation=a))
              for a in AGGREGATIONS]
    assert values[0] == pytest.approx(values[1]) and values[1] == pytest.approx(values[2])


@BOTH
def test_grpo_with_beta_0_is_ppo_with_token_mean(mod):
    logp, logp_old, logp_ref, adv, mask = _batch(spread=0.4)
    grpo = _call(mod, "grpo_loss", logp, logp_old, logp_ref, adv, mask, 0.2, 0.0, "token_mean")
    ppo = _call(mod, "ppo_clip_loss", logp, logp_old, adv, mask)
    assert float(grpo) == pytest.approx(float(ppo), rel=1e-12)


@BOTH
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_grpo_kl_term_uses_kl_estimate(mod, estimator):
    # zero advantages, ratio 1: the loss is beta times the mean KL estimate (sequence_mean)
    logp, _, logp_ref, _, mask = _batch()
    loss, stats = _call(mod, "grpo_loss", logp, logp, logp_ref, np.zeros(len(logp)), mask, 0.2, 0.1,
                        estimator=estimator, return_stats=True)
    kl = nd.kl_estimate(logp, logp_ref, estimator)
    per_row = (kl * mask).sum(axis=1) / mask.sum(axis=1)
    assert float(loss) == pytest.approx(0.1 * per_row.mean(), rel=1e-10)
    assert stats["kl"] == pytest.approx(kl[mask > 0].mean(), rel=1e-10)
    assert stats["clip_fraction"] == 0.0


# ---------------------------------------------------------------- KL-penalised rewards
@BOTH
def test_kl_penalized_rewards_worked_example(mod):
    got = _call(mod, "kl_penalized_rewards", np.array([1.0]), np.log([[0.5, 0.5, 0.5]]),
                np.log([[0.25, 0.5, 0.5]]), np.array([[1, 1, 0]]), 0.1)
    np.testing.assert_allclose(got, [[-0.1 * np.log(2), 1.0, 0.0]], rtol=1e-12)


@BOTH
def test_kl_penalized_rewards_score_at_last_real_token(mod):
    logp, _, logp_ref, _, _ = _batch(b=3, t=5)
    score = np.array([2.0, -1.0, 0.5])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0]])  # full, right-padded, left+right
    beta = 0.2
    r = _call(mod, "kl_penalized_rewards", score, logp, logp_ref, mask, beta)
    np.testing.assert_array_equal(r[mask == 0], 0.0)
    for i, last in enumerate([4, 1, 3]):
        expected = -beta * (logp[i] - logp_ref[i]) * mask[i]
        expected[last] += score[i]
        np.testing.assert_allclose(r[i], expected, rtol=1e-12)
    # summed over a row: score - beta * log(pi(y) / pi_ref(y)), the notes' KL-regularised reward
    np.testing.assert_allclose(r.sum(axis=1), score - beta * ((logp - logp_ref) * mask).sum(axis=1), rtol=1e-12)
    only_score = _call(mod, "kl_penalized_rewards", score, logp, logp_ref, mask, 0.0)
    np.testing.assert_allclose(only_score.sum(axis=1), score)


# ---------------------------------------------------------------- bad input
@BOTH
def test_bad_input_names_the_argument(mod):
    logp, logp_old, logp_ref, adv, mask = _batch()
    grpo = lambda *a, **k: _call(mod, "grpo_loss", *a, **k)  # noqa: E731
    with pytest.raises(ValueError, match="aggregation"):
        grpo(logp, logp_old, logp_ref, adv, mask, aggregation="mean")
    with pytest.raises(ValueError, match="beta"):
        grpo(logp, logp_old, logp_ref, adv, mask, beta=-0.1)
    with pytest.raises(ValueError, match="mask"):
        grpo(logp, logp_old, logp_ref, adv, np.zeros_like(mask))
    empty_row = mask.copy()
    empty_row[1] = 0
    with pytest.raises(ValueError, match="mask"):
        grpo(logp, logp_old, logp_ref, adv, empty_row)  # sequence_mean would divide by 0
    assert np.isfinite(grpo(logp, logp_old, logp_ref, adv, empty_row, aggregation="token_mean"))
    with pytest.raises(ValueError, match="mask"):
        grpo(logp, logp_old, logp_ref, adv, None)
    with pytest.raises(ValueError, match="estimator"):
        grpo(logp, logp_old, logp_ref, adv, mask, estimator="k4")
    with pytest.raises(ValueError, match="advantages"):
        grpo(logp, logp_old, logp_ref, adv[:-1], mask)
    with pytest.raises(ValueError, match="max_length"):
        grpo(logp, logp_old, logp_ref, adv, mask, aggregation="dr_grpo", max_length=0)
    with pytest.raises(ValueError, match="logp_ref"):
        grpo(logp, logp_old, logp_ref[:, :-1], adv, mask)
    with pytest.raises(ValueError, match="clip_eps"):
        _call(mod, "ppo_clip_loss", logp, logp_old, adv, mask, clip_eps=1.0)
    with pytest.raises(ValueError, match="clip_eps_high"):
        _call(mod, "ppo_clip_objective", np.ones(2), np.ones(2), 0.2, -0.1)
    with pytest.raises(ValueError, match="logp_old"):
        _call(mod, "ppo_clip_loss", logp, logp_old[:2], adv, mask)
    with pytest.raises(ValueError, match="mask"):
        _call(mod, "ppo_clip_loss", logp, logp_old, adv, np.zeros_like(mask))
    with pytest.raises(ValueError, match="mask"):
        _call(mod, "reinforce_loss", logp, adv, np.full_like(mask, 2))
    with pytest.raises(ValueError, match="ratio"):
        _call(mod, "ppo_clip_objective", np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="old_values"):
        _call(mod, "value_loss", np.ones(3), np.ones(3), None, 0.2)
    with pytest.raises(ValueError, match="clip"):
        _call(mod, "value_loss", np.ones(3), np.ones(3), np.ones(3), -0.2)
    with pytest.raises(ValueError, match="returns"):
        _call(mod, "value_loss", np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="score"):
        _call(mod, "kl_penalized_rewards", np.ones(3), logp, logp_ref, mask, 0.1)
    with pytest.raises(ValueError, match="beta"):
        _call(mod, "kl_penalized_rewards", np.ones(len(logp)), logp, logp_ref, mask, -1.0)
    with pytest.raises(ValueError, match="mask"):
        _call(mod, "kl_penalized_rewards", np.ones(len(logp)), logp, logp_ref, empty_row, 0.1)


# ---------------------------------------------------------------- extremes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("margin", [1e4, -1e4])
def test_extreme_log_ratios_give_finite_losses_and_gradients(dtype, margin):
    base = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.1, -1.0]], dtype=dtype)
    offsets = torch.tensor([[margin, -margin, 0.0], [margin, margin, -margin]], dtype=dtype)
    adv = torch.tensor([1.0, -1.0], dtype=dtype)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    for estimator in ("k1", "k2", "k3"):
        for agg in AGGREGATIONS:
            x = base.clone().requires_grad_(True)
            loss = tpg.grpo_loss(x, base + offsets, base - offsets, adv, mask, aggregation=agg,
                                 estimator=estimator)
            loss.backward()
            assert loss.dtype == dtype and torch.isfinite(loss) and torch.isfinite(x.grad).all()
            ref = npg.grpo_loss(_np(base), _np(base + offsets), _np(base - offsets), _np(adv), _np(mask),
                                aggregation=agg, estimator=estimator)
            assert np.isfinite(ref) and ref.dtype == _np(base).dtype
    x = base.clone().requires_grad_(True)
    old = base + offsets
    losses = [
        tpg.ppo_clip_loss(x, old, adv, mask),
        tpg.ppo_clip_loss(x, old, -adv, mask),
        tpg.reinforce_loss(x + offsets, adv, mask),
        tpg.value_loss(x + offsets, old, old, 0.2, mask),
        tpg.kl_penalized_rewards(adv, x, old, mask, 0.1).sum(),
    ]
    sum(losses).backward()
    assert all(torch.isfinite(v) for v in losses) and torch.isfinite(x.grad).all()
    b, o, a, m = _np(base), _np(old), _np(adv), _np(mask)
    for v in (npg.ppo_clip_loss(b, o, a, m), npg.ppo_clip_loss(b, o, -a, m),
              npg.reinforce_loss(b + _np(offsets), a, m), npg.value_loss(b, o, o, 0.2, m),
              npg.kl_penalized_rewards(a, b, o, m, 0.1)):
        assert np.all(np.isfinite(v))


def test_max_log_ratio_only_binds_beyond_its_bound():
    logp, logp_old, _, _, mask = _batch(spread=1.0)
    adv = np.random.default_rng(5).normal(size=logp.shape)
    bounded = npg.ppo_clip_loss(logp, logp_old, adv, mask)
    free = npg.ppo_clip_loss(logp, logp_old, adv, mask, max_log_ratio=None)
    assert bounded == free  # |log ratio| < 20 here: the bound changes nothing
    # beyond the bound, with A < 0 the unbounded loss is infinite, the bounded one is e^20 |A|
    with np.errstate(over="ignore"):
        assert np.isinf(npg.ppo_clip_loss(np.array([1000.0]), np.array([0.0]), np.array([-1.0]),
                                          max_log_ratio=None))
    assert npg.ppo_clip_loss(np.array([1000.0]), np.array([0.0]), np.array([-1.0])) == pytest.approx(np.exp(20))
