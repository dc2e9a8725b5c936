"""``token_logprobs(prompt_length=P)``: the rows of a prompt share one pass over it, with the same numbers.

GRPO and RLOO score ``G`` samples of each prompt; their rows repeat the prompt's ``P`` columns. With
``prompt_length`` the distinct prompts run once with the KV cache, the cache's rows are picked for every
sample, and the completion columns run against it. Checked here on attention models of several families
(GPT-2, Llama, Qwen2, Mistral with a sliding window shorter than the rows, Gemma 2's alternating sliding
layers, OPT, GPT-NeoX): log-probs, entropies and gradients equal one pass over the whole rows to float
tolerance; and on models whose cache cannot pick rows (Mamba, FalconH1): the same numbers through one pass.
With ``prompt_length`` only the completion columns are scored: the LM head skips the prompt's positions
(``logits_to_keep``), in ``token_logprobs`` and in ``generate``'s first pass.
"""

import pytest
import torch

from rlhf_edu.lm import char_tokenizer, generate, tiny_causal_lm, token_logprobs
from rlhf_edu.train.rollouts import select_rows

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TOK = char_tokenizer()
PROMPTS = ["1+2=", "review: the film was", "7*8="]  # different lengths: left padding
G = 3
SPECIAL = dict(vocab_size=len(TOK), pad_token_id=0, bos_token_id=1, eos_token_id=2)


# The LM head on another number of positions (logits_to_keep) is another matrix product, which may round
# differently: under ATEN_CPU_CAPABILITY=default (the suite's second CI run) a log-prob moved by 1 ulp.
ROUNDING = dict(atol=2e-6, rtol=0)


def _seeded(build, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def _hf(config_name, model_name, **kwargs):
    import transformers

    config = getattr(transformers, config_name)(**SPECIAL, **kwargs)
    return _seeded(lambda: getattr(transformers, model_name)(config))


ATTENTION = {
    "gpt2": lambda: tiny_causal_lm(TOK, d_model=32, n_layer=2, n_head=2, max_length=64, seed=0),
    "llama": lambda: tiny_causal_lm(TOK, arch="llama", d_model=32, n_layer=2, n_head=2, max_length=64, seed=0),
    "qwen2": lambda: _hf("Qwen2Config", "Qwen2ForCausalLM", hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64),
    # a window of 8 positions, shorter than every row: the cache keeps only the prompt's last 7 columns
    "mistral_window_8": lambda: _hf("MistralConfig", "MistralForCausalLM", hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=64, sliding_window=8),
    "gemma2": lambda: _hf("Gemma2Config", "Gemma2ForCausalLM", hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                          max_position_embeddings=64, sliding_window=8),
    "opt": lambda: _hf("OPTConfig", "OPTForCausalLM", hidden_size=32, word_embed_proj_dim=16, ffn_dim=64,
                       num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                       do_layer_norm_before=False, dropout=0.0, attention_dropout=0.0, init_std=0.2),
    "gpt_neox": lambda: _hf("GPTNeoXConfig", "GPTNeoXForCausalLM", hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64),
}
RECURRENT = {
    "mamba": lambda: _hf("MambaConfig", "MambaForCausalLM", hidden_size=32, state_size=8, num_hidden_layers=2,
                         expand=2, conv_kernel=4),
    "falcon_h1": lambda: _hf("FalconH1Config", "FalconH1ForCausalLM", hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, mamba_d_ssm=32,
                             mamba_n_heads=4, mamba_d_head=8, mamba_d_state=8, mamba_n_groups=1,
                             mamba_d_conv=4, mamba_expand=2, max_position_embeddings=128),
}


def _rollout(model):
    return generate(model, TOK, PROMPTS, max_new_tokens=12, num_samples=G, generator=0)


def _scored(model, rollout, prompt_length):
    """Log-probs and entropies of the completion tokens, the forward calls' input widths, and the gradients."""
    widths = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
    model.zero_grad()
    try:
        lp, ent = token_logprobs(model, rollout.input_ids, rollout.attention_mask, temperature=0.7,
                                 return_entropy=True, prompt_length=prompt_length)
    finally:
        hook.remove()
    mask = rollout.completion_mask
    ((lp * mask).sum() + (ent * mask).sum()).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return lp * mask, ent * mask, widths, grads


@pytest.mark.parametrize("family", sorted(ATTENTION))
def test_shared_prompt_pass_gives_the_one_pass_logprobs_entropies_and_gradients(family):
    model = ATTENTION[family]()
    rollout = _rollout(model)
    P, (B, T) = rollout.prompt_length, rollout.input_ids.shape
    lp, ent, widths, grads = _scored(model, rollout, None)
    lp_s, ent_s, widths_s, grads_s = _scored(model, rollout, P)
    assert widths == [(B, T)]
    assert widths_s == [(len(PROMPTS), P), (B, T - P)]  # each prompt once, then every row's completion
    torch.testing.assert_close(lp_s, lp, atol=2e-5, rtol=0)
    torch.testing.assert_close(ent_s, ent, atol=2e-5, rtol=0)
    torch.testing.assert_close(grads_s, grads, atol=1e-4, rtol=1e-4)
    assert float(grads.norm()) > 0


@pytest.mark.parametrize("family", sorted(RECURRENT))
def test_a_cache_that_cannot_pick_rows_gets_one_pass_over_every_row(family):
    """Mamba's and FalconH1's caches hold recurrent states that ``batch_select_indices`` would not pick:
    after the shared pass, one pass over the whole rows, and the numbers of that pass."""
    model = RECURRENT[family]()
    rollout = _rollout(model)
    P, (B, T) = rollout.prompt_length, rollout.input_ids.shape
    lp, ent, _, grads = _scored(model, rollout, None)
    lp_s, ent_s, widths_s, grads_s = _scored(model, rollout, P)
    assert widths_s == [(len(PROMPTS), P), (B, T)]
    torch.testing.assert_close(lp_s, lp, **ROUNDING)
    torch.testing.assert_close(ent_s, ent, **ROUNDING)
    # the LM head's weight gradient sums over fewer positions (the prompt's are not scored): rounding only
    torch.testing.assert_close(grads_s, grads, atol=1e-5, rtol=1e-5)


def test_groups_of_any_size_and_rows_without_a_partner():
    """Rows picked out of a rollout (GRPO's mask_truncated) leave groups of 1, 2 or 3 rows: each distinct
    prompt still runs once, and a row whose prompt no other row shares gets its own."""
    model = ATTENTION["llama"]()
    rollout = _rollout(model)
    keep = torch.tensor([True, False, True, False, False, True, True, True, True])
    picked = select_rows(_as_scored(rollout), keep).rollout
    lp, ent, _, grads = _scored(model, picked, None)
    lp_s, ent_s, widths_s, grads_s = _scored(model, picked, picked.prompt_length)
    assert widths_s[0][0] == 3 and widths_s[1][0] == int(keep.sum())
    torch.testing.assert_close(lp_s, lp, atol=2e-5, rtol=0)
    torch.testing.assert_close(grads_s, grads, atol=1e-4, rtol=1e-4)


def test_rows_that_share_no_prompt_take_one_pass():
    model = ATTENTION["gpt2"]()
    rollout = generate(model, TOK, PROMPTS, max_new_tokens=6, generator=0)  # one sample per prompt
    lp, _, widths, _ = _scored(model, rollout, rollout.prompt_length)
    assert widths == [tuple(rollout.input_ids.shape)]
    torch.testing.assert_close(lp, _scored(model, rollout, None)[0], **ROUNDING)


def test_prompts_with_the_same_ids_but_another_mask_are_not_shared():
    """A tokenizer whose pad token is its BOS (GPT-2's) left-pads one prompt with the ids another starts
    with: the same ids, another mask, another prompt."""
    model = ATTENTION["gpt2"]()
    ids = torch.tensor([[1, 10, 11, 12, 20, 21], [1, 10, 11, 12, 22, 23]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    rollout = generate(model, TOK, ["1"], max_new_tokens=1, generator=0)
    rollout.input_ids, rollout.attention_mask, rollout.completion_mask = ids, mask, (ids > 12).long()
    lp, _, widths, _ = _scored(model, rollout, 4)
    assert widths == [(2, 6)]
    torch.testing.assert_close(lp, _scored(model, rollout, None)[0], **ROUNDING)


class _NoCache(torch.nn.Module):
    """A model whose forward takes no cache (a wrapper written for one pass)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


@pytest.mark.parametrize("case", ["no_cache_argument", "gradient_checkpointing"])
def test_a_model_without_a_cache_gets_one_pass(case):
    """A forward without a cache argument: one pass. Hugging Face's gradient checkpointing in train mode
    returns no cache: one pass after the shared one. The numbers of one pass (to the rounding of the LM head
    on fewer positions)."""
    model = ATTENTION["llama"]()
    rollout = _rollout(model)
    P, (B, T) = rollout.prompt_length, rollout.input_ids.shape
    if case == "no_cache_argument":
        model, expected = _NoCache(model), [(B, T)]
    else:
        model.activation_checkpointing_enable()
        model.train()
        expected = [(len(PROMPTS), P), (B, T)]
    lp, ent, _, grads = _scored(model, rollout, None)
    lp_s, ent_s, widths_s, grads_s = _scored(model, rollout, P)
    assert widths_s == expected
    torch.testing.assert_close(lp_s, lp, **ROUNDING)
    torch.testing.assert_close(ent_s, ent, **ROUNDING)
    # the LM head's weight gradient sums over fewer positions (the prompt's are not scored): rounding only
    torch.testing.assert_close(grads_s, grads, atol=1e-5, rtol=1e-5)


def _head_widths(model, fn):
    """The number of positions the LM head ran on, call by call, while ``fn()`` runs."""
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: widths.append(out.shape[1]))
    try:
        out = fn()
    finally:
        hook.remove()
    return widths, out


class _AllLogits(torch.nn.Module):
    """A model whose forward takes a cache but not ``logits_to_keep`` (an older or custom model): it returns
    the logits of every position."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache, cache=cache)


def test_prompt_length_scores_the_completions_with_the_lm_head_on_their_positions_only():
    """With ``prompt_length`` the LM head runs on the last prompt position (shared pass) and the completion
    columns, or on the positions from ``P - 1`` on (one pass, no rows to share): the prompt's columns get
    0, the completion columns the numbers of the whole-row pass. A forward without ``logits_to_keep``
    returns every position and gives the same numbers."""
    model = ATTENTION["qwen2"]()
    rollout = _rollout(model)
    ids, mask, P, (B, T) = rollout.input_ids, rollout.attention_mask, rollout.prompt_length, rollout.input_ids.shape
    whole_widths, whole = _head_widths(model, lambda: token_logprobs(model, ids, mask))
    assert whole_widths == [T]
    widths, shared = _head_widths(model, lambda: token_logprobs(model, ids, mask, prompt_length=P))
    assert widths == [1, T - P]
    one = generate(model, TOK, PROMPTS, max_new_tokens=6, generator=0)  # one sample per prompt: no sharing
    one_widths, one_lp = _head_widths(model, lambda: token_logprobs(model, one.input_ids, one.attention_mask,
                                                                   prompt_length=one.prompt_length))
    assert one_widths == [one.input_ids.shape[1] - one.prompt_length + 1]
    assert torch.equal(shared[:, :P], torch.zeros(B, P)) and bool((shared[:, P:] != 0).any())
    torch.testing.assert_close(shared[:, P:], whole[:, P:], atol=2e-5, rtol=0)
    torch.testing.assert_close(one_lp[:, one.prompt_length:],
                               token_logprobs(model, one.input_ids, one.attention_mask)[:, one.prompt_length:],
                               **ROUNDING)
    all_widths, all_lp = _head_widths(model, lambda: token_logprobs(_AllLogits(model), ids, mask, prompt_length=P))
    assert all_widths == [P, T - P]  # no logits_to_keep: the shared pass's head runs on the whole prompt
    torch.testing.assert_close(all_lp, shared, **ROUNDING)


def test_generate_runs_the_lm_head_on_the_last_prompt_position():
    """``generate``'s first pass asks for the last position's logits only; a model without
    ``logits_to_keep`` samples the same tokens from its full logits."""
    model = ATTENTION["llama"]()
    widths, rollout = _head_widths(model, lambda: generate(model, TOK, PROMPTS, max_new_tokens=5, num_samples=G,
                                                           stop_at_eos=False, generator=3))
    assert widths == [1] * 5
    all_widths, again = _head_widths(model, lambda: generate(_AllLogits(model), TOK, PROMPTS, max_new_tokens=5,
                                                             num_samples=G, stop_at_eos=False, generator=3))
    assert all_widths[0] == rollout.prompt_length and all_widths[1:] == [1] * 4
    assert torch.equal(again.input_ids, rollout.input_ids)
    torch.testing.assert_close(again.token_logprobs, rollout.token_logprobs, **ROUNDING)


def test_generate_without_shared_rows_runs_the_lm_head_on_the_last_position():
    """One sample per prompt, or no cache (the prefix recomputed every step): the first pass, and every pass
    without the cache, asks for the last position's logits only."""
    model = ATTENTION["gpt2"]()
    widths, _ = _head_widths(model, lambda: generate(model, TOK, PROMPTS, max_new_tokens=4, stop_at_eos=False,
                                                     generator=0))
    assert widths == [1] * 4
    widths, _ = _head_widths(model, lambda: generate(model, TOK, PROMPTS, max_new_tokens=4, num_samples=2,
                                                     use_cache=False, stop_at_eos=False, generator=0))
    assert widths == [1] * 4


class _Wrapped(torch.nn.Module):
    """A data-parallel wrapper (``DistributedDataParallel``, FSDP): ``forward(*inputs, **kwargs)`` calls
    ``self.module``."""

    def __init__(self, model):
        super().__init__()
        self.module = model

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)


def test_a_wrapped_model_gets_logits_to_keep_and_a_kwargs_only_forward_does_not():
    """``last_logits_kwargs`` reads the signature of the wrapped ``module`` (the trainers' passes under torchrun
    go through the wrapper); a forward that only has ``**kwargs`` and no ``module`` may not take the keyword:
    every position, the same numbers."""
    from rlhf_edu.lm import last_logits_kwargs

    model = ATTENTION["llama"]()
    rollout = _rollout(model)
    ids, mask, P, (B, T) = rollout.input_ids, rollout.attention_mask, rollout.prompt_length, rollout.input_ids.shape
    wrapped = _Wrapped(model)
    assert last_logits_kwargs(wrapped, 3) == {"logits_to_keep": 3}
    widths, lp = _head_widths(model, lambda: token_logprobs(wrapped, ids, mask, prompt_length=P))
    assert widths == [1, T - P]
    torch.testing.assert_close(lp, token_logprobs(model, ids, mask, prompt_length=P), atol=0, rtol=0)

    class KwargsOnly(torch.nn.Module):  # no `module` to unwrap
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            return self.inner(**kwargs)

    kwargs_only = KwargsOnly(model)
    assert last_logits_kwargs(kwargs_only, 3) == {}
    widths, lp_all = _head_widths(model, lambda: token_logprobs(kwargs_only, ids, mask, prompt_length=P))
    assert widths == [T]  # no cache keyword either: one pass, every position
    torch.testing.assert_close(lp_all[:, P:], lp[:, P:], atol=2e-5, rtol=0)
    assert torch.equal(lp_all[:, :P], torch.zeros(B, P))


@pytest.mark.parametrize("case", ["shared", "no_cache_argument"])
def test_an_empty_prompt_gives_its_first_completion_token_no_prediction(case):
    """A row whose prompt block is all padding: its first completion token has nothing to be predicted from
    (0, as in the whole-row pass), the next ones are scored; gradients stay finite."""
    model = ATTENTION["llama"]()
    ids = torch.tensor([[0, 0, 0, 5, 6, 2], [0, 0, 0, 7, 2, 0], [1, 10, 11, 5, 6, 2], [1, 10, 11, 8, 2, 0]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    scored = model if case == "shared" else _NoCache(model)
    widths = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
    try:
        lp, ent = token_logprobs(scored, ids, mask, return_entropy=True, prompt_length=3)
    finally:
        hook.remove()
    assert widths == ([(2, 3), (4, 3)] if case == "shared" else [(4, 6)])
    whole, whole_ent = token_logprobs(model, ids, mask, return_entropy=True)
    assert lp[0, 3] == 0 and lp[1, 3] == 0 and ent[0, 3] == 0 and bool((lp[2:, 3] < 0).all())
    torch.testing.assert_close(lp[:, 3:], whole[:, 3:], atol=2e-5, rtol=0)
    torch.testing.assert_close(ent[:, 3:], whole_ent[:, 3:], atol=2e-5, rtol=0)
    (lp.sum() + ent.sum()).backward()
    assert all(bool(p.grad.isfinite().all()) for p in model.parameters() if p.grad is not None)


def test_without_prompt_length_the_forward_gets_no_logits_to_keep():
    """The default path (SFT, DPO, PPO-ptx, every chapter's scoring) calls the forward as before: every
    position, no ``logits_to_keep``; with ``prompt_length`` each call keeps the positions it scores."""
    model = ATTENTION["gpt2"]()
    rollout = _rollout(model)
    ids, mask, P, T = rollout.input_ids, rollout.attention_mask, rollout.prompt_length, rollout.input_ids.shape[1]
    kept = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: kept.append(kwargs.get("logits_to_keep")),
                                           with_kwargs=True)
    try:
        token_logprobs(model, ids, mask)
        token_logprobs(model, ids[::G], mask[::G], prompt_length=P)  # no two rows share a prompt: one pass
        token_logprobs(model, ids, mask, prompt_length=P)
    finally:
        hook.remove()
    assert kept == [None, T - P + 1, 1, None]


def test_ppo_and_the_rollouts_score_the_completions_only(monkeypatch):
    """PPO's train pass and the rollouts' old and reference passes (one sample per prompt: nothing to share)
    pass ``prompt_length``, so their LM head skips the prompt; the numbers are those of the whole-row pass on
    the completion columns, which is all they read."""
    import numpy as np

    from rlhf_edu.train import ppo as ppo_module
    from rlhf_edu.train import rollouts as rollouts_module

    calls = []

    def spy(where):
        def token_logprobs_spy(model, input_ids, *args, **kwargs):
            calls.append((where, kwargs.get("prompt_length")))
            return token_logprobs(model, input_ids, *args, **kwargs)
        return token_logprobs_spy

    monkeypatch.setattr(ppo_module, "token_logprobs", spy("train"))
    monkeypatch.setattr(rollouts_module, "token_logprobs", spy("rollout"))
    model = ATTENTION["gpt2"]()
    ppo_module.train_ppo(model, TOK, PROMPTS, lambda c, p: np.zeros(len(c)), steps=1, batch_size=4, minibatch_size=4,
                         ppo_epochs=1, max_new_tokens=4, device="cpu", progress=False, seed=0)
    assert [w for w, _ in calls] == ["rollout", "rollout", "train"]  # old, reference, one minibatch
    assert all(isinstance(p, int) and p > 0 for _, p in calls), calls


def test_bad_prompt_length_is_named():
    model = ATTENTION["gpt2"]()
    rollout = _rollout(model)
    ids, mask = rollout.input_ids, rollout.attention_mask
    with pytest.raises(TypeError, match="prompt_length"):
        token_logprobs(model, ids, mask, prompt_length=2.5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="prompt_length"):
            token_logprobs(model, ids, mask, prompt_length=bad)
    with pytest.raises(ValueError, match="prompt_length"):
        token_logprobs(model, ids, mask, prompt_length=ids.shape[1])


def _as_scored(rollout):
    from rlhf_edu.train.rollouts import ScoredRollout

    return ScoredRollout(rollout, torch.zeros(len(rollout)), None, None, None)
