"""RLOO trainer (rlhf_edu.train.rloo): direction of the effect, the KL in the reward, determinism, bad input."""

import copy
import doctest

import numpy as np
import pytest
import torch

from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
from rlhf_edu.train import evaluate_policy
import rlhf_edu.train.rloo as rloo_module
from rlhf_edu.train.rloo import train_rloo

PROMPTS = ["1+2=", "3+4=", "5+6=", "7+8="]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def digit_share(completions, prompts):
    return np.array([sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions])


def without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history.rows]


def small(arch="gpt2"):
    tok = char_tokenizer()
    return tiny_causal_lm(tok, arch=arch, d_model=32, n_layer=1), tok


def quick(model, tok, reward=digit_share, **kwargs):
    options = dict(group_size=4, prompts_per_step=2, steps=2, max_new_tokens=4, device="cpu", progress=False)
    options.update(kwargs)
    return train_rloo(model, tok, PROMPTS, reward, **options)


def test_doctests():
    assert doctest.testmod(rloo_module).failed == 0


def test_same_seed_same_history():
    runs = [quick(*small(), lr=1e-2, seed=5)[1] for _ in range(2)]
    assert without_time(runs[0]) == without_time(runs[1])
    assert without_time(quick(*small(), lr=1e-2, seed=6)[1]) != without_time(runs[0])


def test_kl_is_in_the_reward():
    model, tok = small()
    beta = 0.3
    _, hist = quick(model, tok, beta=beta, lr=3e-2, steps=4, gold_reward_fn=digit_share)
    for key in ("loss", "reward", "penalized_reward", "gold_reward", "kl", "kl_penalty", "entropy", "length",
                "seconds"):
        assert key in hist, key
    assert "clip_fraction" not in hist  # no ratio, nothing to clip
    # R = r - beta * sum_t log(pi / pi_ref) (k1, the default estimator): batch means obey the same identity.
    np.testing.assert_allclose(hist["penalized_reward"], hist["reward"] - beta * hist["kl_penalty"], rtol=1e-5,
                               atol=1e-6)
    # the policy starts as the reference: both are 0 up to rounding
    assert hist.first("kl") == pytest.approx(0.0, abs=1e-6) and hist.first("kl_penalty") == pytest.approx(0.0, abs=1e-6)
    assert np.any(np.abs(hist["kl_penalty"][1:]) > 1e-6)
    assert np.all(hist["kl"] >= -1e-6) and np.any(hist["kl"][1:] > 1e-6)  # k3: never negative (up to rounding)
    np.testing.assert_allclose(hist["gold_reward"], hist["reward"], rtol=1e-6)  # float64 vs float32 means


def test_constant_reward_teaches_nothing():
    model, tok = small()
    before = copy.deepcopy(model.state_dict())
    _, hist = quick(model, tok, reward=lambda c, p: np.full(len(c), 0.7), beta=0.0)
    # Leave-one-out advantages of equal rewards are all 0: the loss and the gradient vanish.
    assert np.all(hist["loss"] == 0.0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_sequence_and_token_aggregations_differ_in_scale():
    # The same batch (same seed, one step): the sequence loss is -sum_i A_i log pi(o_i) / N, the token mean
    # -sum_i A_i log pi(o_i) / sum_i |o_i|, so the first is the mean length sum_i |o_i| / N times the second
    # (|o| times with equal lengths). Which lengths the sampler draws is not part of the claim.
    _, h_seq = quick(*small(), steps=1, max_new_tokens=4, reward=digit_share)
    _, h_tok = quick(*small(), steps=1, max_new_tokens=4, reward=digit_share, aggregation="token_mean")
    length = h_seq.first("length")
    assert 1.0 <= length <= 4.0 and h_tok.first("length") == length  # the same samples in both runs
    assert h_seq.first("loss") == pytest.approx(length * h_tok.first("loss"), rel=1e-4)


@pytest.mark.parametrize("options", [dict(estimator="k2"), dict(estimator="k3"), dict(aggregation="token_mean"),
                                     dict(max_grad_norm=None), dict(temperature=1.5)])
def test_every_option_runs(options):
    _, hist = quick(*small(), lr=1e-2, **options)
    assert np.isfinite(hist["loss"]).all() and np.isfinite(hist["kl"]).all()


def test_llama_and_evaluation_rows():
    model, tok = small("llama")
    _, hist = quick(model, tok, steps=2, eval_every=1, eval_prompts=["2+5="], eval_samples=2,
                    gold_reward_fn=digit_share)
    assert (~np.isnan(hist["eval_kl"])).sum() == 3 and hist.rows[-1]["step"] == 2
    assert "eval_gold_reward" in hist and "eval_reward" in hist


def test_bad_input():
    model, tok = small()
    with pytest.raises(ValueError, match="group_size"):
        quick(model, tok, group_size=1)
    with pytest.raises(ValueError, match="beta"):
        quick(model, tok, beta=-1.0)
    with pytest.raises(ValueError, match="aggregation"):
        quick(model, tok, aggregation="sum")
    with pytest.raises(ValueError, match="estimator"):
        quick(model, tok, estimator="k4")
    with pytest.raises(ValueError, match="prompts is empty"):
        train_rloo(model, tok, [], digit_share, device="cpu")
    with pytest.raises(ValueError, match="prompts"):
        train_rloo(model, tok, ["x" * 200], digit_share, device="cpu")
    with pytest.raises(ValueError, match="lr"):
        quick(model, tok, lr=0.0)
    no_pad = copy.deepcopy(tok)
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        quick(model, no_pad)


def test_rloo_raises_the_gold_reward_of_the_sentiment_sft_model(sentiment_sft):
    policy, tok, task, _ = sentiment_sft
    test_prompts = task.all_prompts("test")
    before = evaluate_policy(policy, tok, test_prompts, gold_reward_fn=task.reward, num_samples=8)
    trained, hist = train_rloo(copy.deepcopy(policy), tok, task.all_prompts("train"), task.reward, steps=16,
                         gold_reward_fn=task.reward, device="cpu", progress=False)
    after = evaluate_policy(trained, tok, test_prompts, gold_reward_fn=task.reward, ref_model=policy,
                            num_samples=8)
    assert after["gold_reward"] > before["gold_reward"] + 0.12, (before, after)
    assert after["kl"] > 0.1
    assert hist["reward"][-4:].mean() > hist["reward"][:4].mean()
