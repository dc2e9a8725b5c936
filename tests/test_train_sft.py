"""SFT, the training data helpers, rollouts and evaluation: the pieces every trainer stands on."""

import copy

import numpy as np
import pytest
import torch

from rlhf_edu.lm import char_tokenizer, generate, tiny_causal_lm
from rlhf_edu.tasks import gold_reward
from rlhf_edu.train import (
    as_reward_fn,
    check_fits_context,
    collect_rollouts,
    evaluate_policy,
    frozen_copy,
    masked_nll,
    minibatches,
    prompt_completion_pairs,
    sequence_kl,
    train_sft,
)


def _small(tok, seed=0):
    return tiny_causal_lm(tok, d_model=32, n_layer=1, seed=seed)


def test_sft_lowers_loss_and_is_deterministic(tokenizer):
    data = [("1+1=", " 2."), ("2+2=", " 4."), ("3+3=", " 6.")] * 32
    runs = []
    for _ in range(2):
        model, hist = train_sft(_small(tokenizer), tokenizer, data, epochs=3, batch_size=16, lr=1e-2, device="cpu",
                          progress=False)
        runs.append(hist["loss"])
    assert runs[0][-1] < 0.5 * runs[0][0]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_sft_learns_the_demonstrations(tokenizer):
    data = [{"prompt": "a:", "completion": " yes."}] * 64
    model, _ = train_sft(_small(tokenizer), tokenizer, data, epochs=4, batch_size=16, lr=1e-2, device="cpu",
                   progress=False)
    r = generate(model, tokenizer, ["a:"], max_new_tokens=8, temperature=0)
    assert r.completions == [" yes."]


def test_sft_loss_on_all_tokens_differs_from_completion_only(tokenizer):
    data = [("hello there", " ok.")] * 16
    _, h_c = train_sft(_small(tokenizer), tokenizer, data, epochs=1, batch_size=16, device="cpu", progress=False)
    _, h_a = train_sft(_small(tokenizer), tokenizer, data, epochs=1, batch_size=16, loss_on="all", device="cpu",
                 progress=False)
    # completion: " ok." + EOS = 5 tokens; all: BOS predicts nothing, then 11 prompt + 5 completion tokens
    assert h_c.first("tokens") == 16 * 5 and h_a.first("tokens") == 16 * (11 + 5)


def test_masked_nll_reductions():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_nll(logp, mask, "sum").item() == pytest.approx(6.0)
    assert masked_nll(logp, mask, "token_mean").item() == pytest.approx(2.0)
    assert masked_nll(logp, mask, "sequence_mean").item() == pytest.approx((1.5 + 3.0) / 2)
    with pytest.raises(ValueError, match="reduction"):
        masked_nll(logp, mask, "mean")


def test_sft_bad_input(tokenizer):
    model = _small(tokenizer)
    with pytest.raises(ValueError, match="examples is empty"):
        train_sft(model, tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_sft(model, tokenizer, [("a", "b")], lr=0.0, progress=False)
    with pytest.raises(ValueError, match="context"):
        train_sft(model, tokenizer, [("a" * 200, "b")], progress=False)
    no_pad = char_tokenizer()
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="pad"):
        train_sft(model, no_pad, [("a", "b")], progress=False)
    with pytest.raises(ValueError, match="lacks the key"):
        prompt_completion_pairs([{"question": "a"}])
    # every record is checked, not only the first (a later one once gave a bare KeyError, a 3-tuple passed)
    with pytest.raises(ValueError, match=r"examples\[1\] lacks the key\(s\) \['completion'\]"):
        train_sft(model, tokenizer, [{"prompt": "a", "completion": " b"}, {"prompt": "a", "response": " b"}],
                  progress=False)
    with pytest.raises(TypeError, match=r"examples\[0\] must be a dict"):
        train_sft(model, tokenizer, [("a", " b", "c")] * 4, progress=False)
    with pytest.raises(TypeError, match=r"examples\[1\] completion must be a string"):
        prompt_completion_pairs([("a", " b"), ("a", None)])


def test_minibatches_cover_everything_once():
    seen = torch.cat(list(minibatches(10, 3, torch.Generator().manual_seed(0))))
    assert sorted(seen.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        list(minibatches(3, 0))


def test_check_fits_context(tokenizer):
    model = tiny_causal_lm(tokenizer, d_model=32, n_layer=1, max_length=16)
    check_fits_context(model, torch.zeros(2, 10, dtype=torch.long), extra=6)
    with pytest.raises(ValueError, match="context is 16"):
        check_fits_context(model, torch.zeros(2, 10, dtype=torch.long), extra=7)


def test_collect_rollouts_ratio_is_one_before_update(tokenizer):
    policy = _small(tokenizer)
    ref = frozen_copy(policy)
    sr = collect_rollouts(policy, tokenizer, ["ab", "c"], lambda c, p: [len(x) for x in c], ref_model=ref,
                          num_samples=3, max_new_tokens=6, generator=0)
    assert sr.rewards.shape == (6,) and sr.logp_old.shape == sr.rollout.input_ids.shape
    torch.testing.assert_close(sr.logp_old, sr.logp_ref)  # ref is a copy of the policy
    # the sampler's own log-probs agree with the recomputed ones
    torch.testing.assert_close(sr.rollout.token_logprobs * sr.rollout.completion_mask, sr.logp_old,
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(sr.rewards, torch.tensor([float(len(c)) for c in sr.rollout.completions]))


def test_as_reward_fn_checks_shape_and_wraps_reward_models(tokenizer):
    from rlhf_edu.lm import RewardModel

    with pytest.raises(ValueError, match="shape"):
        as_reward_fn(lambda c, p: [1.0])(["a", "b"], ["x", "y"])
    with pytest.raises(TypeError, match="reward_fn"):
        as_reward_fn(3)
    rm = RewardModel(_small(tokenizer), seed=0)
    scores = as_reward_fn(rm, tokenizer)(["a", "bb"], ["x", "y"])
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


def test_sequence_kl_is_zero_for_a_copy_and_positive_otherwise(tokenizer):
    policy = _small(tokenizer, seed=0)
    other = _small(tokenizer, seed=1)
    r = generate(policy, tokenizer, ["ab", "cd"], max_new_tokens=5, generator=0)
    kl_same, ent = sequence_kl(policy, copy.deepcopy(policy), r.input_ids, r.attention_mask, r.completion_mask)
    kl_diff, _ = sequence_kl(policy, other, r.input_ids, r.attention_mask, r.completion_mask)
    assert torch.allclose(kl_same, torch.zeros(2), atol=1e-6)
    assert bool((kl_diff > 0).all()) and bool((ent > 0).all())


def test_evaluate_policy_reports_and_is_repeatable(tokenizer):
    policy = _small(tokenizer)
    kwargs = dict(ref_model=_small(tokenizer, seed=1), gold_reward_fn=gold_reward, max_new_tokens=8)
    a = evaluate_policy(policy, tokenizer, ["review: the film was"] * 4, **kwargs)
    b = evaluate_policy(policy, tokenizer, ["review: the film was"] * 4, **kwargs)
    assert a == b
    assert {"gold_reward", "kl", "entropy", "length", "examples"} <= set(a) and a["kl"] > 0
    assert 0.0 <= a["gold_reward"] <= 1.0
    with pytest.raises(ValueError, match="prompts is empty"):
        evaluate_policy(policy, tokenizer, [])


@pytest.mark.slow
def test_sentiment_sft_recipe_reaches_the_middle_of_the_scale(sentiment_sft):
    policy, tok, task, hist = sentiment_sft
    ev = evaluate_policy(policy, tok, task.prompts(128, split="test", seed=0), gold_reward_fn=gold_reward,
                         max_new_tokens=40)
    assert hist.last("loss") < 0.7
    assert 0.3 < ev["gold_reward"] < 0.6, ev


def test_log_every_logs_every_kth_step_and_the_last(tokenizer):
    from rlhf_edu.lm import tiny_causal_lm as build

    model = build(tokenizer, d_model=32, n_layer=1)
    _, history = train_sft(model, tokenizer, [("1+1=", "2.")] * 6, batch_size=1, log_every=2, device="cpu",
                           progress=False)
    assert history["step"].tolist() == [0, 2, 4, 5]
