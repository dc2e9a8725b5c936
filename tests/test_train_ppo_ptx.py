"""PPO-ptx (``train_ppo(ptx_coef=..., ptx_examples=...)``): InstructGPT's pre-training mix, eq. 2 of Ouyang et
al. (2022). The term is logged, it pulls the policy's likelihood of the pre-training texts up, ``ptx_coef=0``
leaves plain PPO exactly as it was, and bad input is refused with the argument's name."""

import copy

import numpy as np
import pytest
import torch

from rlhf_edu.lm import char_tokenizer, prompt_completion_batch, tiny_causal_lm, token_logprobs
from rlhf_edu.train.ppo import train_ppo
from rlhf_edu.train.sft import masked_nll

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["review:", "the film:", "x:"]
PRETRAINING = ["the cat sat on the mat.", "a dog ran to the park.", "the sun is hot."]
FAST = dict(steps=3, batch_size=8, minibatch_size=4, max_new_tokens=8, device="cpu", progress=False)


def _a_share(completions, prompts):
    """A toy reward: the share of the letter 'a' in the completion."""
    return np.array([c.count("a") / max(len(c), 1) for c in completions])


def _nll(model, tok, texts):
    batch = prompt_completion_batch(tok, [""] * len(texts), texts)
    with torch.no_grad():
        return float(masked_nll(token_logprobs(model, batch.input_ids, batch.attention_mask), batch.completion_mask))


def _run(ptx_coef, **kw):
    tok = char_tokenizer()
    policy = tiny_causal_lm(tok, d_model=32, n_layer=1, seed=0)
    start = copy.deepcopy(policy)
    trained, hist = train_ppo(policy, tok, PROMPTS, _a_share, ptx_coef=ptx_coef, lr=3e-3, seed=0, **FAST, **kw)
    return tok, start, trained, hist


def test_ptx_term_is_logged_and_pulls_the_pretraining_likelihood_up():
    tok, start, plain, plain_hist = _run(0.0)
    _, _, mixed, hist = _run(5.0, ptx_examples=PRETRAINING)
    assert hist.config["ptx_coef"] == 5.0 and plain_hist.config["ptx_coef"] == 0.0
    assert "ptx_loss" in hist and "ptx_loss" not in plain_hist
    ptx = hist["ptx_loss"][:3]
    assert np.isfinite(ptx).all() and ptx[-1] < ptx[0]  # the logged NLL (nats per token) falls
    # the pre-training texts are more likely after PPO-ptx than at the start and than after plain PPO
    before, after_plain, after_mixed = (_nll(m, tok, PRETRAINING) for m in (start, plain, mixed))
    assert after_mixed < before - 0.1 and after_mixed < after_plain - 0.1, (before, after_plain, after_mixed)


def test_ptx_coef_zero_is_plain_ppo_exactly():
    # texts given but gamma = 0: nothing drawn, nothing added, the same run as without them
    _, _, a, hist_a = _run(0.0)
    _, _, b, hist_b = _run(0.0, ptx_examples=PRETRAINING)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    assert np.array_equal(hist_a["loss"], hist_b["loss"], equal_nan=True)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(ptx_coef=-1.0, ptx_examples=PRETRAINING), ValueError, "ptx_coef"),
        (dict(ptx_coef=1.0), ValueError, "ptx_examples"),
        (dict(ptx_coef=1.0, ptx_examples="the cat sat."), TypeError, "ptx_examples"),
        (dict(ptx_coef=1.0, ptx_examples=[]), ValueError, "ptx_examples"),
        (dict(ptx_coef=1.0, ptx_examples=["ok", ""]), ValueError, "ptx_examples"),
        (dict(ptx_coef=1.0, ptx_examples=["x" * 200]), ValueError, "ptx_examples"),
    ],
)
def test_bad_ptx_input_is_refused_with_the_argument_named(kwargs, error, match):
    tok = char_tokenizer()
    policy = tiny_causal_lm(tok, d_model=32, n_layer=1, seed=0)
    with pytest.raises(error, match=match):
        train_ppo(policy, tok, PROMPTS, _a_share, **FAST, **kwargs)
