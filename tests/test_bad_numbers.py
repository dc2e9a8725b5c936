"""Issue 13: wrong answers and bad numbers that must never reach a model.

Every right value here is computed independently of the library: hand algebra, plain Python loops over
the recursions, brute force over minibatch layouts, or mpmath. NumPy references and torch twins are
checked on the same inputs (the twin harness adds the NaN check for every public function).
"""

from __future__ import annotations

import copy
import math
import re

import mpmath
import numpy as np
import pytest
import torch

from rlhf_edu.lm import char_tokenizer, tiny_causal_lm, token_entropy
from rlhf_edu.numpy import advantages as na
from rlhf_edu.numpy import direct as nd
from rlhf_edu.numpy import divergences as ndiv
from rlhf_edu.numpy import policy_gradient as npg
from rlhf_edu.torch import advantages as ta
from rlhf_edu.torch import direct as td
from rlhf_edu.torch import divergences as tdiv
from rlhf_edu.torch import policy_gradient as tpg
from rlhf_edu.train.data import epoch_minibatches
from rlhf_edu.train.grpo import train_grpo
from rlhf_edu.train.history import History
from rlhf_edu.train.kto import mismatched_indices
from rlhf_edu.train.loop import NonFiniteLossError, check_finite_grads, optimizer_step, run_steps
from rlhf_edu.train.ppo import train_ppo
from rlhf_edu.train.rloo import train_rloo


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _t(x, dtype=torch.float64):
    return torch.tensor(np.asarray(x, dtype=float), dtype=dtype)


# ---------------------------------------------------------------- 1. zero-variance groups, eps = 0

EQUAL_GROUPS = [[0.9, 0.9, 0.9], [0.1, 0.1, 0.1, 0.1, 0.1], [1e-30] * 4, [-3.7] * 6, [123.456] * 3, [0.0] * 2]


@pytest.mark.parametrize("group", EQUAL_GROUPS)
@pytest.mark.parametrize("std", ["population", "sample", None])
@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_equal_rewards_give_exactly_zero_advantage_in_every_dtype(group, std, eps):
    # the right value by hand algebra: r_i - mean = 0 for every i, so A_i = 0 exactly (not 0.056)
    for dtype in (np.float16, np.float32, np.float64):
        r = np.array([group, [1.0, 0.0] + group[2:]], dtype=dtype)
        adv = na.group_normalized_advantages(r, std=std, eps=eps)
        assert adv.dtype == dtype and np.all(adv[0] == 0) and np.all(np.isfinite(adv)), (dtype, adv)
        assert np.all(na.leave_one_out_advantages(r)[0] == 0)
        np.testing.assert_array_equal(na.constant_groups(r), [True, False])
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        r = torch.tensor([group, [1.0, 0.0] + group[2:]], dtype=dtype, requires_grad=True)
        adv = ta.group_normalized_advantages(r, std=std, eps=eps)
        assert adv.dtype == dtype and bool((adv[0] == 0).all()), (dtype, adv)
        assert bool((ta.leave_one_out_advantages(r)[0] == 0).all())
        assert ta.constant_groups(r).tolist() == [True, False]
        (grad,) = torch.autograd.grad(adv.sum(), r)
        assert bool(torch.isfinite(grad).all())  # no 0/0 hidden in the backward pass either


def test_the_reported_float32_case_and_rounding_noise():
    # three rewards of 0.9 in float32 gave about 0.056 each before; rewards equal up to rounding count too
    assert np.all(na.group_normalized_advantages(np.float32([0.9, 0.9, 0.9])) == 0)
    assert bool((ta.group_normalized_advantages(torch.tensor([0.9, 0.9, 0.9])) == 0).all())
    assert bool(na.constant_groups(np.array([0.1 + 0.2, 0.3])))
    assert not bool(na.constant_groups(np.array([0.3, 0.3 + 1e-12])))  # a real (tiny) difference


def test_eps_zero_is_the_papers_formula():
    # hand algebra: rewards (1, 0, 0, 1): mean 1/2, population std 1/2 -> exactly (1, -1, -1, 1)
    r = np.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(na.group_normalized_advantages(r, eps=0.0), [1.0, -1.0, -1.0, 1.0])
    np.testing.assert_array_equal(ta.group_normalized_advantages(_t(r), eps=0.0).numpy(), [1.0, -1.0, -1.0, 1.0])
    for mod, x in ((na, r), (ta, _t(r))):
        with pytest.raises(ValueError, match="eps"):
            mod.group_normalized_advantages(x, eps=-1e-3)


def test_grpo_batch_of_equal_rewards_logs_zero_loss_and_moves_nothing():
    """Equal rewards: every advantage is exactly 0, so without the KL term the gradient is exactly 0 and Adam does
    not move a weight. With the KL term (beta > 0) the step-0 KL between the policy and its copy is 0 only up to
    rounding: the policy's forward pass (with autograd) and the reference's (without) may take different kernels,
    and under PyTorch's generic CPU kernels their log-probs differ by ~1e-7, a gradient Adam would scale up to a
    step of a fraction of lr. That is float32 and Adam, not a signal; the test holds the loss to rounding there."""
    tok = char_tokenizer()
    model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    before = copy.deepcopy(model.state_dict())
    run = dict(group_size=3, prompts_per_step=2, steps=1, max_new_tokens=3, device="cpu", progress=False)
    _, hist = train_grpo(model, tok, ["1+2=", "3+4="], lambda c, p: [0.9] * len(c), beta=0.0, **run)
    assert hist.first("frac_zero_std_groups") == 1.0
    assert hist.first("loss") == 0.0  # A = 0 exactly
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    _, hist = train_grpo(model, tok, ["1+2=", "3+4="], lambda c, p: [0.9] * len(c), **run)   # beta = 0.04
    assert abs(hist.first("loss")) < 1e-12 and abs(hist.first("kl")) < 1e-9, (hist.first("loss"), hist.first("kl"))


# ---------------------------------------------------------------- 2a. a NaN reward never reaches the model

def _one_nan(completions, prompts):
    out = [0.5] * len(completions)
    out[1] = float("nan")
    return out


@pytest.mark.parametrize("trainer", ["grpo", "rloo", "ppo"])
def test_nan_reward_raises_before_any_update_and_leaves_the_model_bit_identical(trainer):
    tok = char_tokenizer()
    model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"reward_fn returned nan for completion 1 \(prompt '.*', completion"):
        if trainer == "grpo":
            train_grpo(model, tok, ["1+2="], _one_nan, group_size=2, prompts_per_step=2, steps=1, max_new_tokens=3,
                       device="cpu", progress=False)
        elif trainer == "rloo":
            train_rloo(model, tok, ["1+2="], _one_nan, group_size=2, prompts_per_step=2, steps=1, max_new_tokens=3,
                       device="cpu", progress=False)
        else:
            train_ppo(model, tok, ["1+2="], _one_nan, steps=1, batch_size=4, minibatch_size=2, max_new_tokens=3,
                      device="cpu", progress=False)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)


@pytest.mark.parametrize("bad, match", [
    (lambda c, p: [float("inf")] * len(c), "returned inf"),
    (lambda c, p: [1.0] * (len(c) - 1), "shape"),
    (lambda c, p: [1e39] * len(c), "1e\\+39"),  # beyond float32, where the trainers compute
])
def test_reward_fn_must_return_one_finite_number_per_completion(bad, match):
    tok = char_tokenizer()
    model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    with pytest.raises(ValueError, match=match):
        train_rloo(model, tok, ["1+2="], bad, group_size=2, prompts_per_step=1, steps=1, max_new_tokens=3,
                   device="cpu", progress=False)


# ---------------------------------------------------------------- 2b. the numeric core refuses NaN and inf

def test_value_errors_name_the_argument():
    cases = [
        (lambda m, x: m.whiten(x), "x"),
        (lambda m, x: m.group_normalized_advantages(x), "rewards"),
        (lambda m, x: m.kl_estimate(x, x * 0 - 1.0), "logp"),
    ]
    mods = {"numpy": (na, ndiv), "torch": (ta, tdiv)}
    for name, (adv, div) in mods.items():
        conv = (lambda a: np.array(a)) if name == "numpy" else (lambda a: _t(a))
        x = conv([-1.0, float("nan"), -2.0])
        with pytest.raises(ValueError, match="x .*contains NaN"):
            adv.whiten(x)
        with pytest.raises(ValueError, match="rewards contains NaN"):
            adv.group_normalized_advantages(x)
        with pytest.raises(ValueError, match="logp contains NaN"):
            div.kl_estimate(x, conv([-1.0, -1.0, -1.0]))
        # -inf is probability 0 for log-probs (allowed), but not a reward
        ok = div.kl_estimate(conv([-1.0, -2.0]), conv([-1.0, float("-inf")]), "k1")
        assert float(ok[1]) == math.inf
        with pytest.raises(ValueError, match="rewards contains -inf"):
            adv.leave_one_out_advantages(conv([1.0, float("-inf")]))
    del cases


def test_plus_inf_reward_in_leave_one_out_is_refused_not_nan():
    # the documented decision: the limit is +inf for that sample and -inf for the others (undefined with
    # two), which no loss can use, so it raises instead of returning NaN
    for x in (np.array([1.0, np.inf, 0.0]), _t([1.0, math.inf, 0.0])):
        mod = na if isinstance(x, np.ndarray) else ta
        with pytest.raises(ValueError, match=r"rewards contains \+inf"):
            mod.leave_one_out_advantages(x)


# ---------------------------------------------------------------- 2c. a non-finite loss stops the run

def test_non_finite_loss_stops_with_step_and_history_and_keeps_the_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snapshots = []

    def step(b):
        x = torch.ones(1, 3)
        loss = model(x).sum() * (float("nan") if b == 2 else 1.0)
        snapshots.append([p.detach().clone() for p in model.parameters()])
        optimizer_step(opt, loss, model.parameters(), max_grad_norm=1.0)
        return {"loss": loss.detach()}

    with pytest.raises(NonFiniteLossError, match=r"stopped at step 2: .*holds the weights after step 1;") as info:
        run_steps(range(5), step, history=History("toy"), total=5, description="toy", progress=False)
    assert info.value.step == 2 and len(info.value.history) == 2
    with pytest.raises(NonFiniteLossError, match=r"stopped at step 0: .*holds its weights from before training"):
        run_steps([2], step, history=History("toy"), total=1, description="toy", progress=False)
    assert info.value.history["step"].tolist() == [0.0, 1.0]
    for p, q in zip(model.parameters(), snapshots[-1]):  # the weights before the NaN step, not NaN
        assert torch.equal(p, q) and bool(torch.isfinite(p).all())


def test_infinite_gradient_is_refused_too():
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.tensor([[0.0]])
    loss = torch.sqrt(model.weight * 0 + x).sum()  # finite loss (0), infinite gradient of sqrt at 0
    with pytest.raises(NonFiniteLossError, match="gradient"):
        optimizer_step(opt, loss, model.parameters(), None)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)
        assert p.grad is None  # the bad gradients are dropped, so no later step uses them
    # a NaN in the last of several tensors is found too (the check reads all tensors' flags at once)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.ones(1, 2)).sum() + torch.sqrt(model[1].bias * 0).sum()  # finite; NaN in the last grad
    assert torch.isfinite(loss)
    with pytest.raises(NonFiniteLossError, match="gradient"):
        optimizer_step(opt, loss, model.parameters(), None)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_grads_finds_one_bad_entry_and_accepts_huge_finite_ones(bad):
    """The check reads the largest |gradient| (one fused pass): any NaN or +-inf entry is found, while finite
    gradients whose 2-norm overflows float32 (3e38 squared) are finite and pass; clipping then scales them."""
    params = [torch.nn.Parameter(torch.zeros(50)), torch.nn.Parameter(torch.zeros(3, 4))]
    params[0].grad, params[1].grad = torch.randn(50), torch.randn(3, 4)
    params[1].grad[2, 1] = bad
    with pytest.raises(NonFiniteLossError, match="gradient"):
        check_finite_grads(params)
    assert all(p.grad is None for p in params)
    params[0].grad, params[1].grad = torch.full((50,), 3e38), torch.full((3, 4), -3e38)
    assert not bool(torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in params])))  # the 2-norm overflows
    check_finite_grads(params)  # no error: every entry is finite


# ---------------------------------------------------------------- 3. values that cannot be log-probabilities

def test_positive_log_probs_raise_naming_the_argument():
    good = np.array([-3.0, -1.0])
    pos = np.array([-3.0, 12.5])  # e.g. an NLL passed with the wrong sign
    calls = {
        "dpo": lambda m, x: m.dpo_loss(x, good, good, good),
        "ipo": lambda m, x: m.ipo_loss(good, good, x, good, 0.1),
        "log_ratio_difference": lambda m, x: m.log_ratio_difference(good, x, good, good),
        "kto": lambda m, x: m.kto_loss(x, good, np.array([True, False]), 0.0, 0.1),
        "simpo": lambda m, x: m.simpo_loss(good, x, np.ones(2), np.ones(2), 2.0, 0.5),
        "dpo_implicit_reward": lambda m, x: m.dpo_implicit_reward(good, x, 0.1),
    }
    names = {"dpo": "policy_chosen_logps", "ipo": "ref_chosen_logps", "log_ratio_difference": "policy_rejected_logps",
             "kto": "policy_logps", "simpo": "rejected_logps", "dpo_implicit_reward": "ref_logps"}
    for key, call in calls.items():
        for mod, conv in ((nd, np.asarray), (td, _t)):
            with pytest.raises(ValueError, match=f"{names[key]} must be log-probabilities .*sign flip"):
                call(mod, conv(pos) if mod is td else pos)
            # exactly 0 (probability 1) and float rounding just above 0 are valid log-probs
            out = call(mod, np.array([0.0, 1e-6]))
            assert np.all(np.isfinite(np.asarray(out, dtype=float)))


def test_gpo_takes_rho_of_either_sign():
    # rho is a log-ratio difference, not a log-prob: positive values are fine (hand value: log(1 + e^-1))
    assert nd.gpo_loss(np.array([1.0]), 1.0)[0] == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-14)


def test_negative_ratio_in_the_clip_raises():
    for mod, conv in ((npg, np.asarray), (tpg, _t)):
        with pytest.raises(ValueError, match="ratio must be >= 0.*log-ratio"):
            mod.ppo_clip_objective(conv([1.0, -0.2]), conv([1.0, 1.0]))
        # ratio 0 (pi = 0) is valid: min(0 * A, 0.8 * A) by hand
        assert float(mod.ppo_clip_objective(conv([0.0]), conv([1.0]))[0]) == 0.0


def test_dr_grpo_max_length_shorter_than_the_longest_completion_raises():
    logp = np.log(np.full((2, 4), 0.5))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv = np.array([1.0, -1.0])
    for mod, conv in ((npg, np.asarray), (tpg, _t)):
        with pytest.raises(ValueError, match=r"max_length=2 is shorter than the longest completion \(3 tokens"):
            mod.grpo_loss(conv(logp), conv(logp), conv(logp), conv(adv), mask, aggregation="dr_grpo", max_length=2)
        # max_length 3 is fine. By hand at pi = pi_old = pi_ref: sum of -A over tokens / (B * 3) = (-3 + 2) / 6
        out = mod.grpo_loss(conv(logp), conv(logp), conv(logp), conv(adv), mask, aggregation="dr_grpo", max_length=3)
        assert float(out) == pytest.approx(-1.0 / 6.0, rel=1e-12)


# ---------------------------------------------------------------- 4. -inf logits in entropies and KL

def test_token_entropy_with_masked_vocabulary():
    inf = math.inf
    for dtype in (torch.float32, torch.float64):
        z = torch.tensor([[0.0, 0.0, -inf], [5.0, -inf, -inf], [1.0, 2.0, 3.0]], dtype=dtype, requires_grad=True)
        h = token_entropy(z)
        # by hand: log 2; 0; and -sum p log p of softmax(1, 2, 3) from a plain loop
        p = [math.exp(v) / sum(math.exp(u) for u in (1, 2, 3)) for v in (1, 2, 3)]
        want = [math.log(2), 0.0, -sum(q * math.log(q) for q in p)]
        np.testing.assert_allclose(h.detach().double().numpy(), want, rtol=1e-6, atol=1e-7)
        (g,) = torch.autograd.grad(h.sum(), z)
        assert bool(torch.isfinite(g).all())
    with pytest.raises(ValueError, match="every logit is -inf"):
        token_entropy(torch.tensor([-inf, -inf]))
    with pytest.raises(ValueError, match="NaN"):
        token_entropy(torch.tensor([0.0, math.nan]))


def test_kl_from_logits_and_sequence_kl_with_masked_tokens():
    inf = math.inf
    a = np.array([0.0, 0.0, -inf])
    b = np.array([0.0, math.log(3.0), 0.0])
    # by hand: p = (1/2, 1/2, 0), q = (1/5, 3/5, 1/5): KL = 1/2 log(5/2) + 1/2 log(5/6)
    want = 0.5 * math.log(2.5) + 0.5 * math.log(5 / 6)
    assert float(ndiv.kl_divergence_from_logits(a, b)) == pytest.approx(want, rel=1e-12)
    assert float(tdiv.kl_divergence_from_logits(_t(a), _t(b))) == pytest.approx(want, rel=1e-12)

    from rlhf_edu.train.evaluation import sequence_kl

    class Masked(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, input_ids, **kwargs):
            return type("Out", (), {"logits": self.logits.expand(input_ids.shape[0], input_ids.shape[1], -1)})()

    ids = torch.zeros(1, 3, dtype=torch.long)
    ones = torch.ones(1, 3, dtype=torch.long)
    kl, ent = sequence_kl(Masked(_t(a, torch.float32)), Masked(_t(b, torch.float32)), ids, ones, ones)
    assert float(kl) == pytest.approx(2 * want, rel=1e-5)  # two completion positions
    assert float(ent) == pytest.approx(2 * math.log(2), rel=1e-5)


# ---------------------------------------------------------------- 5. KTO's mismatched pairs

def test_kto_mismatched_pairs_never_match_for_any_n_and_batch_size():
    # brute force over dataset sizes, batch sizes, epochs and shuffles, a minibatch of one included
    for n in range(2, 10):
        for batch_size in range(1, n + 2):
            for seed in range(3):
                for _, idx in epoch_minibatches(n, batch_size, 2, seed):
                    j = mismatched_indices(idx, n)
                    assert j.shape == idx.shape
                    assert bool((j != idx).all()), (n, batch_size, idx.tolist(), j.tolist())
                    assert bool(((j >= 0) & (j < n)).all())
    assert mismatched_indices(torch.tensor([3]), 4).tolist() == [0]
    with pytest.raises(ValueError, match="n must be >= 2"):
        mismatched_indices(torch.tensor([0]), 1)


# ---------------------------------------------------------------- 6. GAE: truncation is not termination

def _gae_loop(r, v, gamma, lam, last, dones, cut, cut_v):
    """Plain-Python GAE, one episode boundary at a time (the independent reference)."""
    T = len(r)
    adv = [0.0] * T
    running = 0.0
    for t in reversed(range(T)):
        if dones[t]:
            next_v, running = 0.0, 0.0
        elif cut[t]:
            next_v, running = cut_v[t], 0.0
        else:
            next_v = v[t + 1] if t + 1 < T else last
        delta = r[t] + gamma * next_v - v[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv


def test_gae_truncation_worked_example():
    r, v = [1.0, 0.5, -1.0, 2.0], [0.5, 0.4, 0.3, 0.2]
    cut, cut_v = np.array([0, 1, 0, 0]), np.array([0.0, 3.0, 0.0, 0.0])
    want = [2.876, 2.8, 1.472, 3.6]  # the hand computation
    assert _gae_loop(r, v, 0.9, 0.8, 2.0, [0] * 4, cut, cut_v) == pytest.approx(want, abs=1e-12)
    adv, ret = na.gae(np.array(r), np.array(v), 0.9, 0.8, last_value=2.0, truncated=cut, truncation_values=cut_v)
    np.testing.assert_allclose(adv, want, atol=1e-12)
    np.testing.assert_allclose(ret, np.array(want) + v, atol=1e-12)
    for dtype in (torch.float64, torch.float32):
        adv_t, _ = ta.gae(_t(r, dtype), _t(v, dtype), 0.9, 0.8, last_value=2.0, truncated=torch.tensor(cut),
                          truncation_values=_t(cut_v, dtype))
        np.testing.assert_allclose(adv_t.double().numpy(), want, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_gae_and_returns_with_dones_and_cuts_match_plain_loops():
    rng = np.random.default_rng(13)
    for _ in range(20):
        T = int(rng.integers(1, 9))
        r, v, cut_v = rng.normal(size=(3, T))
        flags = rng.integers(0, 3, size=T)  # 0 nothing, 1 done, 2 cut: never both
        dones, cut = (flags == 1).astype(int), (flags == 2).astype(int)
        cut_v = np.where(cut == 1, cut_v, np.nan)  # only read where cut: a placeholder elsewhere
        gamma, lam, last = float(rng.uniform(0.5, 1)), float(rng.uniform(0, 1)), float(rng.normal())
        want = _gae_loop(r, v, gamma, lam, last, dones, cut, cut_v)
        got, _ = na.gae(r, v, gamma, lam, dones, last, truncated=cut, truncation_values=cut_v)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        got_t, _ = ta.gae(_t(r), _t(v), gamma, lam, torch.tensor(dones), last, torch.tensor(cut), _t(cut_v))
        np.testing.assert_allclose(got_t.numpy(), want, rtol=1e-12, atol=1e-12)
        # returns: lam = 1 advantages plus values are the bootstrapped discounted returns
        want_g = np.array(_gae_loop(r, v, gamma, 1.0, last, dones, cut, cut_v)) + v
        np.testing.assert_allclose(na.discounted_returns(r, gamma, dones, last, cut, cut_v), want_g, atol=1e-12)
        np.testing.assert_allclose(ta.discounted_returns(_t(r), gamma, torch.tensor(dones), last, torch.tensor(cut),
                                                         _t(cut_v)).numpy(), want_g, atol=1e-12)


def test_discounted_returns_truncation_by_hand_and_bad_flags():
    # G2 = 1 + 0.5 * 2 = 2; cut after step 1 with V = 4: G1 = 1 + 0.5 * 4 = 3; G0 = 1 + 0.5 * 3 = 2.5
    r, cut, cv = np.ones(3), np.array([0, 1, 0]), np.array([0.0, 4.0, 0.0])
    np.testing.assert_array_equal(na.discounted_returns(r, 0.5, last_value=2.0, truncated=cut, truncation_values=cv),
                                  [2.5, 3.0, 2.0])
    for mod, conv in ((na, np.asarray), (ta, _t)):
        with pytest.raises(ValueError, match="go together"):
            mod.discounted_returns(conv(r), 0.5, truncated=cut)
        with pytest.raises(ValueError, match="both 1"):
            mod.gae(conv(r), conv(r), 0.9, 0.9, dones=cut, truncated=cut, truncation_values=conv(cv))
        with pytest.raises(ValueError, match="truncation_values"):
            mod.gae(conv(r), conv(r), 0.9, 0.9, truncated=cut, truncation_values=conv([0.0, np.nan, 0.0]))


# ---------------------------------------------------------------- 7. k3 in float32 for tiny log-ratios

def test_k3_is_accurate_in_float32_for_tiny_log_ratios():
    mpmath.mp.dps = 50
    ls = [s * 10.0**e for e in range(-12, 1) for s in (1.0, -1.0, 3.7, -0.3)]
    for l in ls:
        l32 = float(np.float32(l))  # the input the float32 path really sees
        exact = mpmath.expm1(-mpmath.mpf(l32)) + mpmath.mpf(l32)
        for got in (ndiv.kl_estimate(np.float32([l32]), np.float32([0.0]), "k3")[0],
                    tdiv.kl_estimate(torch.tensor([l32]), torch.tensor([0.0]), "k3")[0].item()):
            assert abs(float(got) - float(exact)) <= 1e-6 * float(exact), (l, got, exact)


# ---------------------------------------------------------------- 2c. optimiser settings that corrupt a run

def _trainer_calls():
    from rlhf_edu.train.dpo import train_dpo
    from rlhf_edu.train.kto import train_kto
    from rlhf_edu.train.orpo import train_orpo
    from rlhf_edu.train.rest import train_rest
    from rlhf_edu.lm import RewardModel
    from rlhf_edu.train.reward_model import train_reward_model
    from rlhf_edu.train.sft import train_sft
    from rlhf_edu.train.simpo import train_simpo

    pairs = [{"prompt": "a", "chosen": " b.", "rejected": " c."}] * 2
    kto = [{"prompt": "a", "completion": " b.", "label": True}, {"prompt": "a", "completion": " c.", "label": False}]
    reward = lambda c, p: [0.0] * len(c)  # noqa: E731
    online = dict(max_new_tokens=2, device="cpu", progress=False)
    return {
        "sft": lambda m, t, **kw: train_sft(m, t, [("a", " b.")] * 2, progress=False, **kw),
        "reward_model": lambda m, t, **kw: train_reward_model(RewardModel(m), t, pairs, progress=False, **kw),
        "dpo": lambda m, t, **kw: train_dpo(m, t, pairs, progress=False, **kw),
        "kto": lambda m, t, **kw: train_kto(m, t, kto, progress=False, **kw),
        "simpo": lambda m, t, **kw: train_simpo(m, t, pairs, progress=False, **kw),
        "orpo": lambda m, t, **kw: train_orpo(m, t, pairs, progress=False, **kw),
        "grpo": lambda m, t, **kw: train_grpo(m, t, ["a"], reward, group_size=2, steps=1, **online, **kw),
        "rloo": lambda m, t, **kw: train_rloo(m, t, ["a"], reward, group_size=2, steps=1, **online, **kw),
        "ppo": lambda m, t, **kw: train_ppo(m, t, ["a"], reward, steps=1, batch_size=2, minibatch_size=2, **online,
                                            **kw),
        "rest": lambda m, t, **kw: train_rest(m, t, ["a"], reward, **online, **kw),
    }


# A negative clip norm made clip_grad_norm_ flip every gradient (the loss climbed: 5.73 -> 6.15 in 5 SFT
# steps); lr=inf wrote NaN into the weights at the first update; a negative weight decay grows the weights.
BAD_SETTINGS = [
    (dict(max_grad_norm=-1.0), "max_grad_norm must be finite and > 0"),
    (dict(max_grad_norm=0.0), "max_grad_norm must be finite and > 0"),
    (dict(max_grad_norm=float("inf")), "max_grad_norm must be finite and > 0"),
    (dict(lr=float("inf")), "lr must be finite and > 0"),
    (dict(lr=-1e-3), "lr must be finite and > 0"),
    (dict(weight_decay=-0.1), "weight_decay must be finite and >= 0"),
]


def _trainer_fn(trainer):
    import importlib

    module = importlib.import_module(f"rlhf_edu.train.{trainer}")
    return getattr(module, "train_reward_model" if trainer == "reward_model" else f"train_{trainer}")


def _settings_cases():
    """(trainer, bad setting, message) for every trainer that takes the setting (ReST has no max_grad_norm,
    GRPO/RLOO/PPO/ReST no weight_decay)."""
    import inspect

    return [pytest.param(trainer, bad, match, id=f"{trainer}-{key}={value}")
            for trainer in sorted(_trainer_calls())
            for bad, match in BAD_SETTINGS for key, value in bad.items()
            if key in inspect.signature(_trainer_fn(trainer)).parameters]


@pytest.mark.parametrize("trainer, bad, match", _settings_cases())
def test_every_trainer_refuses_settings_that_corrupt_the_run_before_any_update(trainer, bad, match):
    tok = char_tokenizer()
    model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=re.escape(match)):
        _trainer_calls()[trainer](model, tok, **bad)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)


def test_optimizer_step_refuses_a_bad_clip_norm_from_a_hand_written_loop():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.ones(1, 2)).sum()
    before = model.weight.detach().clone()
    with pytest.raises(ValueError, match="max_grad_norm"):
        optimizer_step(optimizer, loss, model.parameters(), -1.0)
    assert torch.equal(model.weight, before)


@pytest.mark.parametrize("trainer", sorted(_trainer_calls()))
def test_every_trainer_refuses_a_tokenizer_with_more_tokens_than_the_model_has_embeddings(trainer):
    # another family's tokenizer failed deep in the embedding ("IndexError: index out of range in self"; on a
    # GPU a device-side assert), or trained on the wrong tokens when its ids happened to fit
    tok = char_tokenizer()
    model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    model.resize_token_embeddings(len(tok) - 5)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=rf"tokenizer.s vocabulary has {len(tok)} tokens but the model.s input "
                                         rf"embedding has {len(tok) - 5} rows"):
        _trainer_calls()[trainer](model, tok)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)


def test_a_reward_model_scoring_with_a_tokenizer_it_cannot_read_is_refused():
    from rlhf_edu.lm import RewardModel
    from rlhf_edu.train.rollouts import as_reward_fn

    tok = char_tokenizer()
    backbone = tiny_causal_lm(tok, d_model=32, n_layer=1)
    backbone.resize_token_embeddings(len(tok) - 1)
    with pytest.raises(ValueError, match="input embedding has"):
        as_reward_fn(RewardModel(backbone), tok)


def test_added_special_tokens_beyond_the_embedding_are_allowed_but_not_as_pad():
    # Gemma 3: 262,144 embedding rows, and an added <image_soft_token> at id 262,144 that text never produces
    from rlhf_edu.lm import check_vocabulary

    tok = char_tokenizer()
    model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    assert len(tok) == model.get_input_embeddings().num_embeddings + 1
    check_vocabulary(model, tok)
    tok.pad_token = "<image>"
    with pytest.raises(ValueError, match="pad token has id"):
        check_vocabulary(model, tok)


def test_a_model_without_an_input_embedding_is_not_checked_and_a_wrapped_backbone_is():
    """check_vocabulary's documented escape: a model that exposes no input embedding (a custom module, or a
    transformers model whose get_input_embeddings is not implemented) is not checked; a wrapper with a
    ``backbone`` (RewardModel) is checked through it."""
    from rlhf_edu.lm import RewardModel, check_vocabulary

    tok = char_tokenizer()

    class NoEmbedding(torch.nn.Module):
        def get_input_embeddings(self):
            raise NotImplementedError

    check_vocabulary(NoEmbedding(), tok)  # nothing to compare with: no error
    check_vocabulary(torch.nn.Linear(2, 2), tok)  # no get_input_embeddings and no backbone
    small = tiny_causal_lm(tok, d_model=32, n_layer=1)
    small.resize_token_embeddings(len(tok) - 3)
    with pytest.raises(ValueError, match=f"input embedding has {len(tok) - 3} rows"):
        check_vocabulary(RewardModel(small), tok)


def test_a_reward_model_that_cannot_read_a_text_is_refused_by_name_before_any_work():
    """A GPT-2 reward model (a learned position table of 16 rows) given a 43-token text: as_reward_fn names the
    row before the forward pass (torch's IndexError deep in the model otherwise; a device-side assert on a
    GPU), and an online trainer refuses prompts + max_new_tokens + <eos> beyond it before sampling. A rotary
    model (Llama) reads past its context: scored, not stopped. A forward that fails restores the mode."""
    from rlhf_edu.lm import RewardModel
    from rlhf_edu.train import check_reward_model_room, reward_model_room, sample_best_of_n, train_grpo
    from rlhf_edu.train.rollouts import as_reward_fn

    tok = char_tokenizer()
    rm = RewardModel(tiny_causal_lm(tok, d_model=16, n_layer=1, max_length=16))
    rm.train()
    score = as_reward_fn(rm, tok)
    with pytest.raises(ValueError, match=r"reads at most 16 positions, but prompt \+ completion 1 with its <eos> "
                                         r"is 43 tokens \('p' \+ 'x{40}'\)"):
        score(["ok", "x" * 40], ["p", "p"])  # <bos> p x*40 <eos>
    assert rm.training and len(score(["ok"], ["p"])) == 1 and rm.training
    assert reward_model_room(rm, tok, ["1+1=", "p"]) == 10  # 16 - 5 - 1
    check_reward_model_room(rm, tok, ["1+1="], 10)
    with pytest.raises(ValueError, match=r"longest prompt \(5 tokens\) \+ max_new_tokens=11 .* max_new_tokens <= 10"):
        train_grpo(tiny_causal_lm(tok, d_model=16, n_layer=1, max_length=32), tok, ["1+1="], rm, max_new_tokens=11,
                   steps=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"longest prompt \(16 tokens\) and the <eos> it scores with already fill"):
        check_reward_model_room(rm, tok, ["p" * 15], 1)
    with pytest.raises(ValueError, match=r"max_new_tokens <= 10"):  # best-of-n checks before sampling too
        sample_best_of_n(tiny_causal_lm(tok, d_model=16, n_layer=1, max_length=32), tok, ["1+1="], rm, n=2,
                         max_new_tokens=11, device="cpu", progress=False)
    # rows that fit in a table that does not (left-padded prompts + right-padded completions: 28 columns):
    # scored right-padded, each row as it scores alone (GPT-Neo indexes its attention mask by the table's
    # width: the 28-column table raised a RuntimeError)
    from transformers import AutoConfig, AutoModelForCausalLM

    neo = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "gpt_neo", hidden_size=16, num_layers=2, num_heads=2, max_position_embeddings=16, window_size=8,
        attention_types=[[["global", "local"], 1]], vocab_size=len(tok), pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    neo_score = as_reward_fn(RewardModel(neo, seed=0), tok)
    prompts, completions = ["p" * 13, "q"], ["a", "b" * 13]
    for model_score in (score, neo_score):
        together = model_score(completions, prompts)
        alone = [model_score([c], [p])[0] for p, c in zip(prompts, completions)]
        np.testing.assert_allclose(together, alone, atol=1e-5)
    rotary = RewardModel(tiny_causal_lm(tok, arch="llama", d_model=16, n_layer=1, n_head=2, max_length=16))
    assert reward_model_room(rotary, tok, ["1+1="]) is None
    assert len(as_reward_fn(rotary, tok)(["x" * 40], ["p"])) == 1
    assert reward_model_room(lambda completions, prompts: [0.0] * len(completions), tok, ["1+1="]) is None

    def broken(*args, **kwargs):
        raise RuntimeError("broken head")

    rm.head.forward = broken
    with pytest.raises(RuntimeError, match="broken head"):
        score(["ok"], ["p"])
    assert rm.training  # scored in eval mode, the mode it came in restored
