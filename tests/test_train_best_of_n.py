"""Best-of-n sampling and its reward/KL curve (rlhf_edu.train.best_of_n)."""

import doctest
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu.lm import char_tokenizer, generate, tiny_causal_lm
from rlhf_edu.numpy import best_of_n_kl_bound
import rlhf_edu.train.best_of_n as best_of_n_module
from rlhf_edu.train.best_of_n import sample_best_of_n, best_of_n_curve, best_of_n_from_pool

PROMPTS = ["1+2=", "3+4=", "5+6="]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small():
    tok = char_tokenizer()
    return tiny_causal_lm(tok, d_model=32, n_layer=1), tok


def digit_share(completions, prompts):
    return np.array([sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions])


def test_doctests():
    assert doctest.testmod(best_of_n_module).failed == 0


def test_best_of_n_keeps_the_first_best(small):
    model, tok = small
    out = sample_best_of_n(model, tok, PROMPTS, digit_share, n=6, max_new_tokens=4, gold_reward_fn=digit_share,
                    device="cpu")
    assert len(out) == 3 and out.all_rewards.shape == (3, 6) and len(out.all_completions[0]) == 6
    for i in range(3):
        best = out.all_rewards[i].max()
        first = int(np.flatnonzero(out.all_rewards[i] == best)[0])  # ties go to the first sample
        assert out.index[i] == first and out.rewards[i] == best
        assert out.completions[i] == out.all_completions[i][first]
    np.testing.assert_array_equal(out.all_rewards, digit_share(sum(out.all_completions, []), None).reshape(3, 6))
    np.testing.assert_array_equal(out.gold_rewards, out.rewards)


def test_the_samples_are_the_policys_samples(small):
    model, tok = small
    out = sample_best_of_n(model, tok, PROMPTS, digit_share, n=4, max_new_tokens=4, seed=7, device="cpu")
    same = generate(model, tok, PROMPTS, 4, num_samples=4, generator=7)
    assert sum(out.all_completions, []) == same.completions
    # Cut into one generate call per prompt (batch_size=n): other draws, but the same twice.
    chunked = [sample_best_of_n(model, tok, PROMPTS, digit_share, n=4, max_new_tokens=4, seed=7, batch_size=4,
                         device="cpu") for _ in range(2)]
    assert chunked[0].all_completions == chunked[1].all_completions
    assert [len(c) for c in chunked[0].all_completions] == [4, 4, 4]


def test_bad_input(small):
    model, tok = small
    with pytest.raises(ValueError, match="n"):
        sample_best_of_n(model, tok, PROMPTS, digit_share, n=0, device="cpu")
    with pytest.raises(ValueError, match="prompts is empty"):
        sample_best_of_n(model, tok, [], digit_share, n=2, device="cpu")
    with pytest.raises(ValueError, match="samples_per_prompt"):
        best_of_n_curve(model, tok, PROMPTS, digit_share, ns=(1, 8), samples_per_prompt=4, device="cpu")
    with pytest.raises(ValueError, match="ns"):
        best_of_n_from_pool(np.zeros((2, 3)), ns=())
    with pytest.raises(ValueError, match="gold_rewards"):
        best_of_n_from_pool(np.zeros((2, 3)), ns=(1,), gold_rewards=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        best_of_n_from_pool([0.0, np.nan], ns=(1,))


def brute_force(rewards, gold, n):
    """Enumerate all M^n draws with replacement; random tie-break among the draws with the best reward."""
    M = len(rewards)
    weights = np.zeros(M)
    for draw in itertools.product(range(M), repeat=n):
        best = max(rewards[j] for j in draw)
        winners = [j for j in draw if rewards[j] == best]
        for j in winners:
            weights[j] += 1.0 / len(winners) / M**n
    return (weights * rewards).sum(), (weights * gold).sum(), sum(w * math.log(M * w) for w in weights if w > 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=5), st.integers(1, 3))
def test_pool_estimates_match_brute_force(levels, n):
    rewards = np.array(levels, dtype=float)  # few levels: ties are common
    gold = np.arange(len(levels), dtype=float) ** 2  # differs among tied samples
    est = best_of_n_from_pool(rewards, ns=(n,), gold_rewards=gold)
    reward, g, kl = brute_force(rewards, gold, n)
    assert est["reward"][0] == pytest.approx(reward, abs=1e-9)
    assert est["gold_reward"][0] == pytest.approx(g, abs=1e-9)
    assert est["kl"][0] == pytest.approx(max(kl, 0.0), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=30))
def test_pool_estimates_rise_with_n_and_respect_the_bound(values):
    est = best_of_n_from_pool(np.array(values), ns=(1, 2, 4, 8))
    assert np.all(np.diff(est["reward"]) >= -1e-9)  # the best of more draws is never worse
    assert est["kl"][0] == 0.0 and np.all(np.diff(est["kl"]) >= -1e-9)
    assert np.all(est["kl"] <= est["kl_bound"] + 1e-9)  # Beirami et al. 2024
    assert np.all(est["kl"] <= math.log(len(values)) + 1e-9)


def test_distinct_rewards_approach_the_bound():
    # A large pool of distinct rewards is the continuous case: the KL tends to log n - (n - 1) / n.
    est = best_of_n_from_pool(np.arange(4000.0), ns=(2, 4, 16))
    np.testing.assert_allclose(est["kl"], [best_of_n_kl_bound(n) for n in (2, 4, 16)], rtol=2e-3)
    # ... and the expected best of n uniform ranks is M * n / (n + 1), roughly.
    np.testing.assert_allclose(est["reward"] / 4000, [2 / 3, 4 / 5, 16 / 17], rtol=2e-3)


def test_one_repeated_answer_has_no_kl():
    est = best_of_n_from_pool(np.ones((3, 10)), ns=(1, 4, 8))
    np.testing.assert_allclose(est["kl"], 0.0, atol=1e-12)
    np.testing.assert_allclose(est["reward"], 1.0)


def test_gold_reward_of_best_of_n_rises_with_n_on_the_sentiment_sft_model(sentiment_sft):
    policy, tok, task, _ = sentiment_sft
    curve = best_of_n_curve(policy, tok, task.all_prompts("test"), task.reward, ns=(1, 2, 4, 8),
                            samples_per_prompt=32, gold_reward_fn=task.reward, device="cpu")
    assert np.all(np.diff(curve["gold_reward"]) > 0.02), curve["gold_reward"]
    assert curve["gold_reward"][-1] > curve["gold_reward"][0] + 0.2
    assert curve["kl"][0] == 0.0 and np.all(np.diff(curve["kl"]) > 0)
    assert np.all(curve["kl"] <= curve["kl_bound"] + 1e-9)
    assert curve["samples"].all_rewards.shape == (8, 32)
