"""ReST trainer (rlhf_edu.train.rest): Grow/Improve bookkeeping, the filter, direction of the effect, bad input."""

import copy
import doctest

import numpy as np
import pytest
import torch

from rlhf_edu.lm import char_tokenizer, generate, tiny_causal_lm
from rlhf_edu.train import evaluate_policy
import rlhf_edu.train.rest as rest_module
from rlhf_edu.train.rest import train_rest

PROMPTS = ["1+2=", "3+4=", "5+6="]


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
    options = dict(grow_steps=2, improve_steps=2, samples_per_prompt=8, thresholds=(0.2, 0.4), max_new_tokens=4,
                   batch_size=8, lr=1e-2, device="cpu", progress=False)
    options.update(kwargs)
    return train_rest(model, tok, PROMPTS, reward, **options)


def test_doctests():
    assert doctest.testmod(rest_module).failed == 0


def test_grow_and_improve_bookkeeping():
    model, tok = small()
    _, hist = quick(model, tok, gold_reward_fn=digit_share)
    assert len(hist) == 4
    assert hist["grow"].tolist() == [0, 0, 1, 1] and hist["improve"].tolist() == [0, 1, 0, 1]
    assert hist["threshold"].tolist() == [0.2, 0.4, 0.2, 0.4]
    n = len(PROMPTS) * 8
    np.testing.assert_allclose(hist["kept_fraction"], hist["kept"] / n)
    # Same grown data, higher threshold: the second Improve step keeps a subset of the first.
    assert hist["kept"][1] <= hist["kept"][0] and hist["kept"][3] <= hist["kept"][2]
    kept = hist["kept"] > 0
    assert np.all(hist["kept_reward"][kept] >= hist["threshold"][kept])
    # What the policy sampled is the same in both rows of a Grow; the first Grow is the reference itself.
    assert hist["reward"][0] == hist["reward"][1] and hist["kl"][0] == hist["kl"][1]
    assert hist["kl"][0] == pytest.approx(0.0, abs=1e-6) and hist["kl"][2] > 1e-4
    np.testing.assert_allclose(hist["gold_reward"], hist["reward"])


def test_same_seed_same_history():
    runs = [quick(*small(), seed=2)[1] for _ in range(2)]
    assert without_time(runs[0]) == without_time(runs[1])


def test_nothing_kept_trains_nothing():
    model, tok = small()
    before = copy.deepcopy(model.state_dict())
    _, hist = quick(model, tok, grow_steps=1, improve_steps=1, thresholds=(2.0,))  # digit share <= 1
    assert hist.first("kept") == 0 and np.isnan(hist["loss"][0]) and np.isnan(hist["kept_reward"][0])
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_original_data_joins_the_grown_set_and_is_learned():
    # D_g U D: the given examples are scored and filtered like the samples; with a reward only they earn,
    # the Improve step imitates exactly them.
    model, tok = small()
    yes = lambda c, p: np.array([float(s == " yes.") for s in c])  # noqa: E731
    examples = [(p, " yes.") for p in PROMPTS]
    trained, hist = quick(model, tok, reward=yes, examples=examples, grow_steps=1, improve_steps=1,
                          thresholds=(0.5,), epochs=30, batch_size=3, lr=1e-2)
    assert hist.first("kept") == len(PROMPTS)
    assert hist.first("kept_fraction") == pytest.approx(len(PROMPTS) / (len(PROMPTS) * 8 + len(PROMPTS)))
    assert generate(trained, tok, PROMPTS, 6, temperature=0).completions == [" yes."] * len(PROMPTS)


def test_llama_and_evaluation_rows():
    model, tok = small("llama")
    _, hist = quick(model, tok, grow_steps=1, eval_prompts=["2+5="], eval_samples=2, eval_every=1)
    has_eval = ~np.isnan(hist["eval_kl"])
    assert hist["step"][has_eval].tolist() == [0, 1, 2]
    assert hist.first("eval_kl") == pytest.approx(0.0, abs=1e-6)


def test_bad_input():
    model, tok = small()
    with pytest.raises(ValueError, match="thresholds must rise"):
        quick(model, tok, thresholds=(0.4, 0.4))
    with pytest.raises(ValueError, match="one threshold per improve step"):
        quick(model, tok, improve_steps=3, thresholds=(0.1, 0.2))
    with pytest.raises(ValueError, match="thresholds must be finite"):
        quick(model, tok, thresholds=(0.1, float("inf")))
    with pytest.raises(TypeError, match="thresholds"):
        quick(model, tok, thresholds=0.5)
    with pytest.raises(ValueError, match="grow_steps"):
        quick(model, tok, grow_steps=0)
    with pytest.raises(ValueError, match="prompts is empty"):
        train_rest(model, tok, [], digit_share, device="cpu")
    with pytest.raises(ValueError, match="prompts"):
        train_rest(model, tok, ["x" * 200], digit_share, device="cpu")
    with pytest.raises(ValueError, match="examples is empty"):
        quick(model, tok, examples=[])
    no_pad = copy.deepcopy(tok)
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        quick(model, no_pad)


def test_rest_raises_the_gold_reward_of_the_sentiment_sft_model(sentiment_sft):
    policy, tok, task, _ = sentiment_sft
    test_prompts = task.all_prompts("test")
    before = evaluate_policy(policy, tok, test_prompts, gold_reward_fn=task.reward, num_samples=8)
    trained, hist = train_rest(copy.deepcopy(policy), tok, task.all_prompts("train"), task.reward,
                         gold_reward_fn=task.reward, device="cpu", progress=False)
    after = evaluate_policy(trained, tok, test_prompts, gold_reward_fn=task.reward, ref_model=policy,
                            num_samples=8)
    assert after["gold_reward"] > before["gold_reward"] + 0.15, (before, after)
    assert after["kl"] > 0.1
    # The second Grow samples from the improved policy: its samples score higher than the SFT model's.
    assert hist["reward"][-1] > hist["reward"][0]


def test_samples_that_would_not_fit_with_their_eos_are_refused_before_sampling():
    """Improve trains on each sample with an <eos> after it: a prompt of 5 tokens and 11 new tokens fit a policy
    of 16 positions for sampling but not for that SFT step (17 positions). Refused up front, with the largest
    max_new_tokens that fits (it failed after the first Grow step, naming no option)."""
    tok = char_tokenizer()
    policy = tiny_causal_lm(tok, d_model=16, n_layer=1, max_length=16, seed=0)
    with pytest.raises(ValueError, match=r"\+ <eos> need 17 positions, but the policy's context is 16; use "
                                         r"max_new_tokens <= 10"):
        train_rest(policy, tok, ["1+1="], lambda completions, prompts: [1.0] * len(completions),
                   max_new_tokens=11, device="cpu", progress=False)
    _, history = train_rest(policy, tok, ["1+1="], lambda completions, prompts: [1.0] * len(completions),
                            grow_steps=1, improve_steps=1, thresholds=[0.5], samples_per_prompt=2, max_new_tokens=10,
                            device="cpu", progress=False)
    assert len(history) >= 1
