"""The 2025 variants of GRPO's loss and advantage (chapter 5): GSPO's sequence ratio, CISPO's capped weight and the
batch std of REINFORCE++ / Lite PPO, checked against values and gradients computed by hand (plain Python floats,
finite differences), in both the NumPy reference and the torch twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhf_edu.numpy import advantages as nadv
from rlhf_edu.numpy import policy_gradient as npg
from rlhf_edu.torch import advantages as tadv
from rlhf_edu.torch import policy_gradient as tpg

BOTH = pytest.mark.parametrize("tree", ["numpy", "torch"])


def _call(tree, name, *args, **kwargs):
    if tree == "numpy":
        module = npg if hasattr(npg, name) and name != "group_normalized_advantages" else nadv
        return np.asarray(getattr(module, name)(*args, **kwargs), dtype=float)
    module = tpg if hasattr(tpg, name) and name != "group_normalized_advantages" else tadv
    conv = [torch.tensor(a, dtype=torch.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
            for a in args]
    kw = {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
          for k, v in kwargs.items()}
    return getattr(module, name)(*conv, **kw).detach().numpy()


# Two completions: lengths 2 and 3 (one padding token in row 0); token ratios chosen by hand.
P_OLD = np.array([[0.5, 0.4, 0.3], [0.2, 0.6, 0.5]])
RATIOS = np.array([[1.2, 0.9, 1.0], [1.1, 1.05, 0.8]])
MASK = np.array([[1, 1, 0], [1, 1, 1]])
ADV = np.array([1.0, -0.5])


def _logps():
    logp_old = np.log(P_OLD)
    logp = np.log(P_OLD * RATIOS)
    return logp, logp_old


def _gspo_by_hand(eps_low, eps_high):
    """Plain-Python GSPO loss (sequence_mean, beta 0) and its gradient in logp."""
    loss, grad = 0.0, np.zeros_like(P_OLD)
    for i in range(2):
        n = int(MASK[i].sum())
        s = math.prod(RATIOS[i, :n]) ** (1.0 / n)  # the geometric mean of the token ratios
        a = ADV[i]
        clipped = min(max(s, 1 - eps_low), 1 + eps_high)
        loss += -min(s * a, clipped * a) / 2
        active = not ((a > 0 and s > 1 + eps_high) or (a < 0 and s < 1 - eps_low))
        if active:  # d(-s a / B)/d logp_t = -a s / (B n): every token of the row gets the same share
            grad[i, :n] = -a * s / (2 * n)
    return loss, grad


@BOTH
@pytest.mark.parametrize("eps", [(0.2, 0.2), (3e-4, 4e-4), (0.05, 0.06)])
def test_gspo_value_is_the_geometric_mean_ratio_clipped(tree, eps):
    logp, logp_old = _logps()
    got = _call(tree, "grpo_loss", logp, logp_old, logp, ADV, MASK, beta=0.0, importance_sampling="sequence",
                sequence_clip_eps=eps[0], sequence_clip_eps_high=eps[1])
    want, _ = _gspo_by_hand(*eps)
    assert float(got) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("eps", [(0.2, 0.2), (3e-4, 4e-4), (0.05, 0.06)])
def test_gspo_gradient_flows_through_the_sequence_ratio(eps):
    # autograd of the twin against the hand formula -A s_i / (B |o_i|), and the NumPy loss by finite differences
    logp, logp_old = _logps()
    x = torch.tensor(logp, requires_grad=True)
    loss = tpg.grpo_loss(x, torch.tensor(logp_old), torch.tensor(logp), torch.tensor(ADV), torch.tensor(MASK),
                         beta=0.0, importance_sampling="sequence", sequence_clip_eps=eps[0],
                         sequence_clip_eps_high=eps[1])
    loss.backward()
    _, want = _gspo_by_hand(*eps)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-10, atol=1e-14)
    h, fd = 1e-6, np.zeros_like(logp)
    for idx in np.ndindex(logp.shape):
        up, down = logp.copy(), logp.copy()
        up[idx] += h
        down[idx] -= h
        f = [npg.grpo_loss(z, logp_old, z, ADV, MASK, beta=0.0, importance_sampling="sequence",
                           sequence_clip_eps=eps[0], sequence_clip_eps_high=eps[1]) for z in (up, down)]
        fd[idx] = (f[0] - f[1]) / (2 * h)
    np.testing.assert_allclose(fd, want, atol=1e-7)


def test_gspo_equals_grpo_at_ratio_one_and_differs_after_a_step():
    logp, logp_old = _logps()
    for lp in (logp_old, logp):
        values = {}
        for mode in ("token", "sequence"):
            x = torch.tensor(lp, requires_grad=True)
            loss = tpg.grpo_loss(x, torch.tensor(logp_old), torch.tensor(logp_old), torch.tensor(ADV),
                                 torch.tensor(MASK), beta=0.0, importance_sampling=mode, sequence_clip_eps=0.2,
                                 sequence_clip_eps_high=0.2)
            loss.backward()
            values[mode] = (loss.item(), x.grad.numpy().copy())
        same = np.allclose(values["token"][1], values["sequence"][1], rtol=1e-12, atol=1e-15)
        assert same == (lp is logp_old), "GSPO's gradient is GRPO's at ratio 1 (sequence_mean), not after a step"
        assert values["token"][0] == pytest.approx(values["sequence"][0], rel=1e-12) or lp is logp


def test_gspo_ratio_is_the_length_normalised_sequence_ratio():
    # s_i = (pi(y|x) / pi_old(y|x)) ** (1 / |y|), from the product of the token probabilities
    logp, logp_old = _logps()
    _, stats = npg.grpo_loss(logp, logp_old, logp, ADV, MASK, beta=0.0, importance_sampling="sequence",
                             sequence_clip_eps=0.01, sequence_clip_eps_high=0.01, return_stats=True)
    s = [(np.prod(np.exp(logp[i, :n])) / np.prod(np.exp(logp_old[i, :n]))) ** (1 / n) for i, n in enumerate((2, 3))]
    # s_0 = sqrt(1.08) = 1.039 > 1.01 with A > 0: clipped (2 tokens); s_1 = 0.924^(1/3) = 0.974 < 0.99, A < 0: clipped
    assert s[0] == pytest.approx(math.sqrt(1.2 * 0.9)) and s[1] == pytest.approx((1.1 * 1.05 * 0.8) ** (1 / 3))
    assert float(stats["clip_fraction"]) == 1.0


def test_gspo_clip_higher_and_bad_options():
    logp, logp_old = _logps()
    # s_0 = 1.0392 with A > 0: clipped at 1 + eps_high; raising eps_high to 0.05 frees it
    row = (logp[:1], logp_old[:1], logp[:1], ADV[:1], MASK[:1])
    low = npg.grpo_loss(*row, beta=0.0, importance_sampling="sequence", sequence_clip_eps=0.01,
                        sequence_clip_eps_high=0.01)
    high = npg.grpo_loss(*row, beta=0.0, importance_sampling="sequence", sequence_clip_eps=0.01,
                         sequence_clip_eps_high=0.05)
    assert float(low) == pytest.approx(-1.01) and float(high) == pytest.approx(-math.sqrt(1.08))
    for mod in (npg, tpg):
        conv = (lambda a: a) if mod is npg else torch.tensor
        with pytest.raises(ValueError, match="importance_sampling"):
            mod.grpo_loss(conv(logp), conv(logp_old), conv(logp), conv(ADV), conv(MASK), importance_sampling="seq")
        with pytest.raises(ValueError, match="sequence_clip_eps"):
            mod.grpo_loss(conv(logp), conv(logp_old), conv(logp), conv(ADV), conv(MASK),
                          importance_sampling="sequence", sequence_clip_eps=1.5)
        empty_row = np.array([[1, 1, 0], [0, 0, 0]])
        with pytest.raises(ValueError, match="mask"):  # a sequence ratio needs a real token
            mod.grpo_loss(conv(logp), conv(logp_old), conv(logp), conv(ADV), conv(empty_row),
                          aggregation="token_mean", importance_sampling="sequence")


# ---------------------------------------------------------------- CISPO
def _cispo_by_hand(ratio_max, aggregation):
    logp, logp_old = _logps()
    n_tokens = MASK.sum()
    loss, grad = 0.0, np.zeros_like(P_OLD)
    for i in range(2):
        n = int(MASK[i].sum())
        for t in range(n):
            w = min(RATIOS[i, t], ratio_max)
            weight = 1 / n_tokens if aggregation == "token_mean" else 1 / (2 * n)
            loss += -w * ADV[i] * logp[i, t] * weight
            grad[i, t] = -w * ADV[i] * weight
    return loss, grad


@BOTH
@pytest.mark.parametrize("ratio_max", [5.0, 1.1, 0.95])
@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_cispo_value_by_hand(tree, ratio_max, aggregation):
    logp, logp_old = _logps()
    got = _call(tree, "cispo_loss", logp, logp_old, ADV, MASK, ratio_max, aggregation)
    want, _ = _cispo_by_hand(ratio_max, aggregation)
    assert float(got) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("ratio_max", [5.0, 1.1])
@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_cispo_gradient_keeps_every_token_where_ppo_drops_the_clipped_ones(ratio_max, aggregation):
    logp, logp_old = _logps()
    x = torch.tensor(logp, requires_grad=True)
    tpg.cispo_loss(x, torch.tensor(logp_old), torch.tensor(ADV), torch.tensor(MASK), ratio_max, aggregation).backward()
    _, want = _cispo_by_hand(ratio_max, aggregation)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(npg.cispo_loss_grad(logp, logp_old, ADV, MASK, ratio_max, aggregation)["logp"], want,
                               rtol=1e-12, atol=1e-15)
    assert np.all((want != 0) == (MASK == 1))  # every real token has a gradient
    # PPO's clip (eps 0.1): the token with ratio 1.2 and A > 0 gets none
    y = torch.tensor(logp, requires_grad=True)
    tpg.ppo_clip_loss(y, torch.tensor(logp_old), torch.tensor(ADV), torch.tensor(MASK), clip_eps=0.1).backward()
    assert y.grad[0, 0].item() == 0.0 and want[0, 0] < 0


def test_cispo_at_ratio_one_is_reinforce():
    logp, _ = _logps()
    x, y = (torch.tensor(logp, requires_grad=True) for _ in range(2))
    tpg.cispo_loss(x, torch.tensor(logp), torch.tensor(ADV), torch.tensor(MASK)).backward()
    tpg.reinforce_loss(y, torch.tensor(ADV), torch.tensor(MASK)).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-14, atol=1e-16)


def test_cispo_kl_term_and_stats():
    logp, logp_old = _logps()
    logp_ref = logp_old - 0.1
    plain = npg.cispo_loss(logp, logp_old, ADV, MASK)
    with_kl, stats = npg.cispo_loss(logp, logp_old, ADV, MASK, logp_ref=logp_ref, beta=0.5, return_stats=True)
    l = 0.1 + np.log(RATIOS)  # log pi - log pi_ref
    k3 = np.exp(-l) - 1 + l
    assert float(with_kl - plain) == pytest.approx(0.5 * (k3 * MASK).sum() / MASK.sum(), rel=1e-12)
    assert float(stats["kl"]) == pytest.approx((k3 * MASK).sum() / MASK.sum(), rel=1e-12)
    _, stats = npg.cispo_loss(logp, logp_old, ADV, MASK, ratio_max=1.08, return_stats=True)
    assert float(stats["clip_fraction"]) == pytest.approx(2 / 5)  # ratios 1.2 and 1.1 exceed the cap
    for mod in (npg, tpg):
        conv = (lambda a: a) if mod is npg else torch.tensor
        args = (conv(logp), conv(logp_old), conv(ADV), conv(MASK))
        with pytest.raises(ValueError, match="ratio_max"):
            mod.cispo_loss(*args, ratio_max=0.0)
        with pytest.raises(ValueError, match="logp_ref"):
            mod.cispo_loss(*args, beta=0.1)
        with pytest.raises(ValueError, match="aggregation"):
            mod.cispo_loss(*args, aggregation="mean")


# ---------------------------------------------------------------- the batch std
@BOTH
def test_batch_scale_by_hand(tree):
    r = np.array([[1.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3], [2.0, 0.0, 1.0, 1.0]])
    centred = [[0.5, -0.5, -0.5, 0.5], [0.0] * 4, [1.0, -1.0, 0.0, 0.0]]
    flat = [c for row in centred for c in row]
    sigma = math.sqrt(sum(c * c for c in flat) / 12)  # population std over the batch (mean 0)
    got = _call(tree, "group_normalized_advantages", r, "population", 0.0, "batch")
    np.testing.assert_allclose(got, np.array(centred) / sigma, rtol=1e-12)
    assert np.all(got[1] == 0.0)  # the constant group stays exactly 0
    sample = math.sqrt(sum(c * c for c in flat) / 11)
    got = _call(tree, "group_normalized_advantages", r, "sample", 0.0, "batch")
    np.testing.assert_allclose(got, np.array(centred) / sample, rtol=1e-12)


def test_batch_scale_constant_groups_are_zero_in_float32_and_one_group_agrees_with_group_scale():
    r = np.array([[0.9, 0.9, 0.9], [0.1 + 0.2, 0.3, 0.3], [1.0, 0.0, 1.0]], dtype=np.float32)
    for out in (nadv.group_normalized_advantages(r, eps=0.0, scale="batch"),
                tadv.group_normalized_advantages(torch.tensor(r), eps=0.0, scale="batch").numpy()):
        assert out.dtype == np.float32 and np.all(out[:2] == 0.0) and np.all(out[2] != 0.0)
    all_equal = np.full((2, 3), 0.7, dtype=np.float32)
    assert np.all(nadv.group_normalized_advantages(all_equal, scale="batch") == 0.0)
    x = torch.tensor(all_equal, requires_grad=True)
    tadv.group_normalized_advantages(x, scale="batch").sum().backward()
    assert torch.isfinite(x.grad).all()
    one = np.array([0.2, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(nadv.group_normalized_advantages(one, scale="batch"),
                               nadv.group_normalized_advantages(one), rtol=1e-12)
    with pytest.raises(ValueError, match="scale"):
        nadv.group_normalized_advantages(one, scale="global")
    with pytest.raises(ValueError, match="scale"):
        tadv.group_normalized_advantages(torch.tensor(one), scale="global")
