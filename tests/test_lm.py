"""Tests of rlhf_edu.lm: tokenizer, tiny models, log-probs, sampling, heads, checkpoints, devices."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu.lm import (
    DEFAULT_ALPHABET,
    RewardModel,
    Rollout,
    ValueModel,
    char_tokenizer,
    context_length,
    count_parameters,
    encode_prompts,
    generate,
    last_token_index,
    left_pad,
    llama2_13b_config,
    llama2_13b_parameter_count,
    llama_parameter_count,
    load_model,
    position_ids_from_mask,
    prompt_completion_batch,
    resolve_device,
    save_model,
    sequence_logprobs,
    set_seed,
    tiny_causal_lm,
    token_entropy,
    token_logprobs,
)

torch.set_num_threads(1)

ARCHS = ("gpt2", "llama")
_TOK = char_tokenizer()  # for hypothesis tests, which cannot take function-scoped fixtures


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def models(tok):
    # d_model 32, 2 layers: small enough for a fast file, deep enough that a position bug shows.
    return {arch: tiny_causal_lm(tok, arch=arch, n_layer=2, d_model=32, n_head=4, max_length=48, seed=1) for arch in ARCHS}


def _ids(tok, text, bos=True):
    return ([tok.bos_token_id] if bos else []) + tok(text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_one_token_per_character_and_special_ids(tok):
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert len(tok) == 4 + len(DEFAULT_ALPHABET) == 57
    text = "12+35=47"
    ids = tok(text)["input_ids"]
    assert ids == [4 + DEFAULT_ALPHABET.index(c) for c in text]
    assert tok.padding_side == "left"
    assert tok.model_max_length == 128


def test_default_alphabet_covers_both_tasks():
    for c in "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'+-*=:;()<>/":
        assert c in DEFAULT_ALPHABET


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=DEFAULT_ALPHABET, max_size=60))
def test_decode_encode_round_trip_is_exact(text):
    tok = _TOK
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    # special tokens vanish with skip_special_tokens, and nothing else changes
    assert tok.decode([tok.bos_token_id] + ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text


def test_decode_keeps_spaces_before_punctuation(tok):
    # the default HF clean-up would turn "a ." into "a." and "do n't" into "don't"
    for text in ["a . b", "do n't", "x , y !", "  two  spaces  ", "(1 + 2) = 3 ?"]:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_unknown_characters_become_unk(tok):
    ids = tok("aB\n")["input_ids"]
    assert ids == [4, tok.unk_token_id, tok.unk_token_id]


def test_text_spelling_a_special_token_stays_characters(tok, tmp_path):
    from transformers import AutoTokenizer

    ids = tok("a<eos>")["input_ids"]
    assert len(ids) == 6 and tok.eos_token_id not in ids
    assert tok.decode(ids) == "a<eos>"
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("a<eos>")["input_ids"] == ids


def test_tokenizer_save_load_round_trip(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["review: the film was great fun.", "12+35=47", "what's (a*b)/c? <x>;y:z-w!"]
    for text in texts:
        assert again(text)["input_ids"] == tok(text)["input_ids"]
        assert again.decode(again(text)["input_ids"]) == text
    assert again.pad_token_id == tok.pad_token_id and again.eos_token_id == tok.eos_token_id
    assert again.padding_side == "left" and len(again) == len(tok)


def test_tokenizer_bad_inputs():
    with pytest.raises(ValueError, match="alphabet"):
        char_tokenizer("abca")
    with pytest.raises(TypeError, match="alphabet"):
        char_tokenizer("")
    with pytest.raises(ValueError, match="padding_side"):
        char_tokenizer(padding_side="middle")
    with pytest.raises(ValueError, match="model_max_length"):
        char_tokenizer(model_max_length=0)


# ------------------------------------------------------------------------------------------------ batching


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 3], [0, 1, 2, 3, 4]])
    assert torch.equal(position_ids_from_mask(mask), expected)


def test_left_pad_and_encode_prompts(tok):
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert encode_prompts(tok, ["ab", [7, 8]]) == [[1, 4, 5], [7, 8]]
    assert encode_prompts(tok, ["ab"], add_bos=False) == [[4, 5]]
    assert encode_prompts(tok, [""]) == [[1]]  # BOS alone is a valid prompt
    with pytest.raises(ValueError, match="prompts"):
        encode_prompts(tok, [])
    with pytest.raises(ValueError, match=r"prompts\[0\]"):
        encode_prompts(tok, [""], add_bos=False)
    with pytest.raises(TypeError, match="prompts"):
        encode_prompts(tok, "ab")


def test_prompt_completion_batch_layout(tok):
    b = prompt_completion_batch(tok, ["h", "ok"], ["i", "yes"])
    P = b.prompt_length
    assert P == 3
    assert b.input_ids.tolist() == [[0, 1, 11, 12, 2, 0, 0], [1, 18, 14, 28, 8, 22, 2]]
    assert b.attention_mask.tolist() == [[0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]]
    assert b.completion_mask.tolist() == [[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1]]
    assert tok.decode(b.input_ids[1, P:].tolist(), skip_special_tokens=True) == "yes"
    no_eos = prompt_completion_batch(tok, ["h"], ["i"], add_eos=False)
    assert no_eos.input_ids.tolist() == [[1, 11, 12]] and no_eos.completion_mask.tolist() == [[0, 0, 1]]
    with pytest.raises(ValueError, match="same length"):
        prompt_completion_batch(tok, ["a", "b"], ["c"])


# -------------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("arch", ARCHS)
def test_both_architectures_build_and_run(tok, models, arch):
    model = models[arch]
    assert model.config.vocab_size == len(tok)
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (0, 1, 2)
    assert context_length(model) == 48
    assert not model.training
    ids = torch.randint(0, len(tok), (3, 10), generator=torch.Generator().manual_seed(0))
    logits = model(input_ids=ids).logits
    assert logits.shape == (3, 10, len(tok))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_init_depends_on_seed_only_and_leaves_global_rng(tok, arch):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_causal_lm(tok, arch=arch, n_layer=1, d_model=32, seed=7)
    after = torch.rand(3)
    assert torch.equal(before, after)  # the caller's stream was not advanced
    b = tiny_causal_lm(tok, arch=arch, n_layer=1, d_model=32, seed=7)
    c = tiny_causal_lm(tok, arch=arch, n_layer=1, d_model=32, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_dropout_off_by_default_train_equals_eval(tok, models):
    model = models["gpt2"]
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    eval_logits = model(input_ids=ids).logits
    model.train()
    try:
        train_logits = model(input_ids=ids).logits
    finally:
        model.eval()
    assert torch.equal(eval_logits, train_logits)
    noisy = tiny_causal_lm(tok, n_layer=1, d_model=32, dropout=0.5)
    assert noisy.config.resid_pdrop == 0.5


def test_model_bad_inputs(tok):
    with pytest.raises(ValueError, match="arch"):
        tiny_causal_lm(tok, arch="bert")
    with pytest.raises(ValueError, match="d_model"):
        tiny_causal_lm(tok, d_model=30, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        tiny_causal_lm(tok, dropout=1.0)
    with pytest.raises(TypeError, match="vocab_size_or_tokenizer"):
        tiny_causal_lm("gpt2")
    with pytest.raises(ValueError, match="head dimension"):
        tiny_causal_lm(tok, arch="llama", d_model=12, n_head=4)
    plain = tiny_causal_lm(100, n_layer=1, d_model=16, n_head=2)
    assert plain.config.vocab_size == 100 and plain.config.eos_token_id is None


def test_count_parameters_gpt2_by_hand(tok):
    model = tiny_causal_lm(tok, n_layer=1, d_model=32, max_length=128)
    V, D, T = len(tok), 32, 128
    block = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D)
    assert count_parameters(model) == V * D + T * D + block + 2 * D  # lm_head tied to wte
    for p in model.transformer.wte.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - V * D
    for p in model.parameters():
        p.requires_grad_(True)


def test_llama2_13b_parameter_count_from_the_notes():
    total = llama2_13b_parameter_count()
    assert total == 13_015_864_320
    assert abs(total / 1e9 - 13.0) < 0.05
    parts = llama2_13b_parameter_count(breakdown=True)
    # the notes' numbers, one by one
    assert parts["embedding"] == 32000 * 5120 == 163_840_000
    assert parts["lm_head"] == 163_840_000  # separate output projection in LLaMA-2
    assert parts["attention"] // 40 == 3 * 26_214_400 + 26_214_400  # W_Q, W_K, W_V + W_O
    assert parts["mlp"] // 40 == 3 * 5120 * 13824
    assert parts["norms"] == 40 * 2 * 5120 + 5120  # one gamma of size D per RMSNorm
    assert parts["per_layer"] == 317_204_480
    assert sum(parts[k] for k in ("embedding", "attention", "mlp", "norms", "lm_head")) == total


def test_llama2_13b_formula_matches_the_real_module_on_meta_device():
    from transformers import LlamaForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = LlamaForCausalLM(llama2_13b_config())
    assert count_parameters(model) == llama2_13b_parameter_count()


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(num_key_value_heads=2),  # grouped-query attention
        dict(tie_word_embeddings=True),
        dict(attention_bias=True, mlp_bias=True),
        dict(head_dim=12),
    ],
)
def test_llama_formula_matches_count_parameters_of_tiny_models(kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=61, hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4, **kw
    )
    model = LlamaForCausalLM(config)
    assert llama_parameter_count(config) == count_parameters(model)


def test_tiny_llama_matches_formula(tok):
    model = tiny_causal_lm(tok, arch="llama", n_layer=2, d_model=32, n_head=4)
    assert llama_parameter_count(model.config) == count_parameters(model)
    with pytest.raises(ValueError, match="intermediate_size"):
        llama_parameter_count(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(TypeError, match="unexpected"):
        llama_parameter_count(model.config, n_layers=3)


# ------------------------------------------------------------------------------------------------ logprobs


def _prefix_loop_logprobs(model, ids):
    """The definition, one prefix at a time (no padding, no cache)."""
    out = [0.0]
    with torch.no_grad():
        for t in range(1, len(ids)):
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
            out.append(torch.log_softmax(logits.double(), -1)[ids[t]].item())
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("arch", ARCHS)
def test_token_logprobs_equal_prefix_loop(tok, models, arch):
    model = models[arch]
    ids = _ids(tok, "12+35=47")
    lp = token_logprobs(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    assert lp.shape == (1, len(ids)) and lp.dtype == torch.float32
    assert lp[0, 0].item() == 0.0
    assert torch.allclose(lp[0].double(), _prefix_loop_logprobs(model, ids), atol=1e-5)
    assert (lp[0, 1:] < 0).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_token_logprobs_padding_invariance(tok, models, arch):
    model = models[arch]
    short, long = _ids(tok, "good film."), _ids(tok, "review: the food is bad")
    alone = token_logprobs(model, torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))[0]
    ids, mask = left_pad([short, long], tok.pad_token_id)
    pad = ids.shape[1] - len(short)
    left = token_logprobs(model, ids, mask)
    assert torch.allclose(left[0, pad:], alone, atol=1e-5)
    assert (left[0, :pad] == 0).all()  # padding scores nothing
    # right padding: the same numbers at the start of the row
    right_ids = torch.full_like(ids, tok.pad_token_id)
    right_ids[0, : len(short)] = torch.tensor(short)
    right_ids[1] = ids[1]
    right_mask = (torch.arange(ids.shape[1]) < len(short)).long().unsqueeze(0).repeat(2, 1)
    right_mask[1] = 1
    right = token_logprobs(model, right_ids, right_mask)
    assert torch.allclose(right[0, : len(short)], alone, atol=1e-5)
    assert (right[0, len(short):] == 0).all()


def test_naive_left_padding_is_the_classic_bug(tok, models):
    """Without position ids from the mask, GPT-2's learned positions shift: the test above would fail."""
    model = models["gpt2"]
    short, long = _ids(tok, "good film."), _ids(tok, "review: the food is bad")
    ids, mask = left_pad([short, long], tok.pad_token_id)
    pad = ids.shape[1] - len(short)
    naive = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[0, :-1], -1)
    naive = naive.gather(-1, ids[0, 1:, None]).squeeze(-1)[pad:]
    good = token_logprobs(model, ids, mask)[0, pad + 1 :]
    assert (naive - good).abs().max() > 1e-3


def test_token_logprobs_temperature_entropy_and_grad(tok, models):
    model = models["llama"]
    ids = torch.tensor([_ids(tok, "great fun.")])
    mask = torch.ones_like(ids)
    logits = model(input_ids=ids).logits[0, :-1]
    lp_t, ent = token_logprobs(model, ids, mask, temperature=0.5, return_entropy=True)
    expected = torch.log_softmax(logits / 0.5, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    assert torch.allclose(lp_t[0, 1:], expected, atol=1e-5)
    assert torch.allclose(ent[0, 1:], token_entropy(logits / 0.5), atol=1e-5)
    assert ent[0, 0] == 0
    lp = token_logprobs(model, ids, mask)
    lp.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_token_logprobs_float64_model(tok):
    model = tiny_causal_lm(tok, arch="gpt2", n_layer=1, d_model=32).double()
    ids = torch.tensor([_ids(tok, "abc")])
    lp = token_logprobs(model, ids, torch.ones_like(ids))
    assert lp.dtype == torch.float64
    assert torch.allclose(lp[0], _prefix_loop_logprobs(model, ids[0].tolist()), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_give_finite_logprobs_and_gradients(tok, dtype, scale):
    model = tiny_causal_lm(tok, arch="llama", n_layer=1, d_model=32).to(dtype)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)  # logits of order 1e4
    ids = torch.tensor([_ids(tok, "1+1=2")])
    b = prompt_completion_batch(tok, ["1+1="], ["2"])
    lp = token_logprobs(model, ids, torch.ones_like(ids))
    seq = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction="mean")
    assert model(input_ids=ids).logits.abs().max() > 100
    assert torch.isfinite(lp).all() and torch.isfinite(seq).all()
    (lp.sum() + seq.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_entropy_extremes(dtype):
    logits = torch.tensor([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype, requires_grad=True)
    h = token_entropy(logits)
    assert torch.allclose(h, torch.tensor([0.0, math.log(3), math.log(3)], dtype=dtype), atol=1e-6)
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=2, max_size=12))
def test_token_entropy_between_zero_and_log_v(values):
    z = torch.tensor(values, dtype=torch.float64)
    h = token_entropy(z).item()
    p = torch.softmax(z, -1)
    assert -1e-9 <= h <= math.log(len(values)) + 1e-9
    assert abs(h - float(-(p * torch.log(p.clamp_min(1e-300))).sum())) < 1e-9


def test_token_logprobs_bad_inputs(tok, models):
    model = models["gpt2"]
    ids = torch.tensor([[1, 5, 6]])
    with pytest.raises(ValueError, match="attention_mask"):
        token_logprobs(model, ids, torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        token_logprobs(model, ids, torch.tensor([[1, 2, 1]]))
    with pytest.raises(ValueError, match="input_ids"):
        token_logprobs(model, ids[0], None)
    with pytest.raises(TypeError, match="input_ids"):
        token_logprobs(model, ids.float(), None)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(model, ids, None, temperature=0.0)
    with pytest.raises(TypeError, match="logits"):
        token_entropy([0.0, 1.0])


# --------------------------------------------------------------------------------------- sequence_logprobs


def test_sequence_logprobs_sum_and_mean(tok, models):
    model = models["gpt2"]
    b = prompt_completion_batch(tok, ["1+1=", "review: the film"], ["2", " was great fun."])
    lp = token_logprobs(model, b.input_ids, b.attention_mask)
    s = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask)
    m = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction="mean")
    counts = b.completion_mask.sum(1)
    assert counts.tolist() == [2, 16]  # the completion and its EOS
    assert torch.allclose(s, (lp * b.completion_mask).sum(1), atol=1e-6)
    assert torch.allclose(m, s / counts, atol=1e-6)
    # the sum is the log-probability of the whole completion, as the product rule says
    row = b.input_ids[0][b.attention_mask[0].bool()].tolist()
    loop = _prefix_loop_logprobs(model, row)
    assert abs(s[0].item() - loop[-2:].sum().item()) < 1e-5
    # padding another row does not change a row's score
    alone = prompt_completion_batch(tok, ["1+1="], ["2"])
    s_alone = sequence_logprobs(model, alone.input_ids, alone.attention_mask, alone.completion_mask)
    assert torch.allclose(s_alone[0], s[0], atol=1e-5)


def test_sequence_logprobs_validation(tok, models):
    model = models["gpt2"]
    b = prompt_completion_batch(tok, ["ab", "c"], ["x", ""], add_eos=False)
    assert b.completion_mask[1].sum() == 0
    s = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction="sum")
    assert s[1].item() == 0.0  # an empty completion scores 0 under "sum"
    with pytest.raises(ValueError, match="completion_mask.*row 1"):
        sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction="mean")
    with pytest.raises(ValueError, match="reduction"):
        sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction="max")
    with pytest.raises(ValueError, match="completion_mask"):
        sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask[:, :-1])
    bad = b.completion_mask.clone()
    bad[1, 0] = 1  # a padding column
    with pytest.raises(ValueError, match="completion_mask marks a token with no prediction"):
        sequence_logprobs(model, b.input_ids, b.attention_mask, bad)
    bad = b.completion_mask.clone()
    bad[0, 0] = 1  # column 0 has no prediction
    with pytest.raises(ValueError, match="no prediction"):
        sequence_logprobs(model, b.input_ids, b.attention_mask, bad)


# ------------------------------------------------------------------------------------------------ generate


def _uniform_llama(tok):
    """A Llama whose output layer is zero: every token has probability 1/V, so EOS comes at random."""
    model = tiny_causal_lm(tok, arch="llama", n_layer=1, d_model=32, max_length=64)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return model


def test_generate_shapes_masks_and_eos(tok):
    model = _uniform_llama(tok)
    prompts = ["1+1=", "review: the film was"]
    r = generate(model, tok, prompts, max_new_tokens=30, num_samples=16, generator=0)
    assert isinstance(r, Rollout)
    B, T = r.input_ids.shape
    P = r.prompt_length
    assert B == 32 and len(r) == 32 and r.num_samples == 16
    assert P == 1 + len(prompts[1])
    assert r.prompts == [prompts[0]] * 16 + [prompts[1]] * 16
    assert r.attention_mask.shape == r.completion_mask.shape == r.token_logprobs.shape == (B, T)
    assert T <= P + 30
    assert not r.input_ids.requires_grad and not r.token_logprobs.requires_grad
    # prompt part: left padded, BOS first, no completion tokens
    assert (r.completion_mask[:, :P] == 0).all()
    short = _ids(tok, prompts[0])
    assert r.input_ids[0, P - len(short) : P].tolist() == short
    assert r.attention_mask[0, :P].tolist() == [0] * (P - len(short)) + [1] * len(short)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    stopped = 0
    for i in range(B):
        comp = r.completion_mask[i, P:]
        n = int(comp.sum())
        assert n >= 1 and (comp[:n] == 1).all() and (comp[n:] == 0).all()  # contiguous, right padded
        assert torch.equal(r.attention_mask[i, P:], comp)
        tokens = r.input_ids[i, P : P + n].tolist()
        assert eos not in tokens[:-1]  # stops at the first EOS
        if tokens[-1] == eos:
            stopped += 1
        else:
            assert n == T - P == 30  # only rows that never emitted EOS run to the end
        assert (r.input_ids[i, P + n :] == pad).all()
        assert (r.token_logprobs[i, P + n :] == 0).all() and (r.token_logprobs[i, :P] == 0).all()
        # uniform model: every sampled token has log-prob -log V
        assert torch.allclose(r.token_logprobs[i, P : P + n], torch.full((n,), -math.log(len(tok))), atol=1e-5)
        assert r.completions[i] == tok.decode(tokens, skip_special_tokens=True)
    assert 0 < stopped < B  # some rows stopped early, some did not: both paths were exercised


def test_generate_stop_at_eos_false_samples_every_token(tok):
    model = _uniform_llama(tok)
    r = generate(model, tok, ["ab"], max_new_tokens=20, num_samples=8, generator=0, stop_at_eos=False)
    assert r.input_ids.shape == (8, 3 + 20)
    assert (r.completion_mask[:, 3:] == 1).all() and (r.attention_mask == 1).all()
    assert (r.input_ids[:, 3:] == tok.eos_token_id).any()  # EOS drawn but not stopping


@pytest.mark.parametrize("arch", ARCHS + ("near-uniform",))
def test_generate_cache_equals_no_cache_and_logprobs_match(tok, models, arch):
    if arch == "near-uniform":
        # EOS has probability about 1/57 per step: rows stop at different steps, the others go on
        model = tiny_causal_lm(tok, arch="llama", n_layer=2, d_model=32, max_length=48, seed=3)
        with torch.no_grad():
            model.lm_head.weight.mul_(0.1)
    else:
        model = models[arch]
    prompts = ["1+1=", "review: the food is", "7*8="]
    kw = dict(max_new_tokens=20, num_samples=8, generator=11)
    cached = generate(model, tok, prompts, use_cache=True, **kw)
    fresh = generate(model, tok, prompts, use_cache=False, **kw)
    assert torch.equal(cached.input_ids, fresh.input_ids)
    assert torch.equal(cached.completion_mask, fresh.completion_mask)
    assert cached.completions == fresh.completions
    assert torch.allclose(cached.token_logprobs, fresh.token_logprobs, atol=1e-5)
    # the sampling policy's log-probs are the model's log-probs of the returned batch
    recomputed = token_logprobs(model, cached.input_ids, cached.attention_mask)
    mask = cached.completion_mask.bool()
    assert torch.allclose(recomputed[mask], cached.token_logprobs[mask], atol=1e-5)
    if arch == "near-uniform":
        lengths = cached.completion_lengths
        assert lengths.min() < 20 and lengths.max() == 20


def _cat_and_reserved_layers(batch=3, width=5, limit=8, seed=0):
    from transformers.cache_utils import DynamicLayer

    from rlhf_edu.lm.generation import _ReservedLayer

    g = torch.Generator().manual_seed(seed)
    plain = DynamicLayer()
    plain.update(torch.randn(batch, 2, width, 4, generator=g), torch.randn(batch, 2, width, 4, generator=g))
    return plain, _ReservedLayer(plain, limit=limit), g


def _step_both(plain, reserved, g, batch=3):
    k, v = torch.randn(batch, 2, 1, 4, generator=g), torch.randn(batch, 2, 1, 4, generator=g)
    expected, got = plain.update(k, v), reserved.update(k, v)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    assert reserved.get_seq_length() == plain.get_seq_length()
    return got


def test_a_reserved_cache_layer_returns_what_torch_cat_returns_and_writes_in_place():
    """generate's cache layers grow into reserved room (``_ReservedLayer``): each update returns the same keys
    and values as transformers' concatenating ``DynamicLayer``, bit for bit, without copying the past; past
    its limit it concatenates."""
    plain, reserved, g = _cat_and_reserved_layers(limit=5 + 3)
    start = plain.keys
    for step in range(5):  # three steps fit the limit, two go past it
        got = _step_both(plain, reserved, g)
        if step < 3:  # written into the room: a view of the same memory
            assert got[0].data_ptr() == reserved._key_room.data_ptr()
        else:
            assert reserved._key_room is None  # concatenating from here on, the room freed
    assert torch.equal(start, reserved.keys[..., :5, :])


def test_a_reserved_cache_layer_doubles_its_room_and_never_holds_more_than_twice_what_it_uses():
    plain, reserved, g = _cat_and_reserved_layers(width=5, limit=200)
    rooms = {reserved._key_room.data_ptr(): reserved._key_room.shape[-2]}
    for _ in range(150):
        _step_both(plain, reserved, g)
        rooms[reserved._key_room.data_ptr()] = reserved._key_room.shape[-2]
        assert reserved._key_room.shape[-2] <= max(2 * reserved.get_seq_length(), 26)
    assert sorted(rooms.values()) == [26, 52, 104, 200]  # 2 * 5 + 16, doubled, then capped at the limit


@pytest.mark.parametrize("change", ["same-size permutation", "reorder_cache", "fewer rows", "reset", "crop"])
def test_a_reserved_cache_layer_whose_tensors_were_replaced_still_returns_what_torch_cat_returns(change):
    """Rows permuted (same batch size), reordered for beam search, picked, the cache reset or cropped: the
    next steps return what transformers' layer returns (a replaced tensor makes the layer concatenate; a
    crop keeps writing into its room)."""
    plain, reserved, g = _cat_and_reserved_layers(limit=40)
    _step_both(plain, reserved, g)
    batch = 3
    if change == "same-size permutation":
        for layer in (plain, reserved):
            layer.batch_select_indices(torch.tensor([2, 0, 1]))
    elif change == "reorder_cache":
        for layer in (plain, reserved):
            layer.reorder_cache(torch.tensor([1, 1, 0]))
    elif change == "fewer rows":
        batch = 2
        for layer in (plain, reserved):
            layer.batch_select_indices(torch.tensor([2, 0]))
    elif change == "reset":
        for layer in (plain, reserved):
            layer.reset()
    else:
        for layer in (plain, reserved):
            layer.crop(-2)
    for _ in range(3):
        _step_both(plain, reserved, g, batch=batch)
    assert (reserved._key_room is not None) == (change == "crop")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
@pytest.mark.parametrize("arch", ARCHS)
def test_generate_reserves_room_in_the_cache_and_samples_the_same_bits(tok, models, monkeypatch, arch, device):
    """The reservation changes where the cache lives, not a number: on the CPU the same tokens and log-probs,
    bit for bit, as the concatenating cache; on a GPU (whose attention kernels may round strided keys
    otherwise) the same tokens and log-probs to float rounding."""
    import copy

    import rlhf_edu.lm.generation as generation

    model = copy.deepcopy(models[arch]).to(device)
    kw = dict(max_new_tokens=12, num_samples=4, generator=3)
    real, kinds = generation._reserve, []

    def spy(cache, extra):
        real(cache, extra)
        kinds.extend((type(layer).__name__, layer._key_room.shape[-2] - layer.get_seq_length())
                     for layer in cache.layers)

    monkeypatch.setattr(generation, "_reserve", spy)
    reserved = generate(model, tok, ["1+1=", "review: the food is"], **kw)
    assert kinds == [("_ReservedLayer", 11)] * 2  # both layers, room for the 11 tokens fed after the prompt
    monkeypatch.setattr(generation, "_reserve", lambda cache, extra: None)
    plain = generate(model, tok, ["1+1=", "review: the food is"], **kw)
    assert torch.equal(reserved.input_ids, plain.input_ids)
    if device == "cpu":
        assert torch.equal(reserved.token_logprobs, plain.token_logprobs)
    else:
        torch.testing.assert_close(reserved.token_logprobs, plain.token_logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_whose_cache_room_doubles_samples_the_same_bits(tok, monkeypatch, arch):
    """A 3-token prompt and 60 new tokens: the room starts at 2 * 3 + 16 = 22 columns and doubles twice (44,
    then the cap 62) while sampling; the same tokens and log-probs as the concatenating cache."""
    import rlhf_edu.lm.generation as generation

    model = tiny_causal_lm(tok, arch=arch, n_layer=2, d_model=32, n_head=4, max_length=80, seed=1)
    widths = []
    move = generation._ReservedLayer._move_to_room

    def spy(self, keys, values, width):
        widths.append(width)
        return move(self, keys, values, width)

    monkeypatch.setattr(generation._ReservedLayer, "_move_to_room", spy)
    kw = dict(max_new_tokens=60, num_samples=2, generator=4, stop_at_eos=False)
    reserved = generate(model, tok, ["ab"], **kw)
    assert widths == [22, 22, 44, 44, 62, 62]  # two layers, each: first room, doubled, capped at 3 + 59
    monkeypatch.setattr(generation, "_reserve", lambda cache, extra: None)
    plain = generate(model, tok, ["ab"], **kw)
    assert torch.equal(reserved.input_ids, plain.input_ids)
    assert torch.equal(reserved.token_logprobs, plain.token_logprobs)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_samples_of_a_prompt_share_one_prefill(tok, models, arch):
    """num_samples=G runs each prompt's prefill once (G x fewer prompt tokens) and samples what G copies of
    the prompt, each with its own prefill, sample."""
    model = models[arch]
    prompts = ["1+1=", "review: the food is", "7*8="]
    widths = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        shared = generate(model, tok, prompts, max_new_tokens=6, num_samples=4, generator=5)
    finally:
        hook.remove()
    assert widths[0][0] == 3 and all(shape == (12, 1) for shape in widths[1:])  # 3 prompts once, then 12 rows
    copies = generate(model, tok, [p for p in prompts for _ in range(4)], max_new_tokens=6, generator=5)
    assert torch.equal(shared.input_ids, copies.input_ids) and shared.completions == copies.completions
    torch.testing.assert_close(shared.token_logprobs, copies.token_logprobs, atol=1e-6, rtol=0)


def test_generate_is_deterministic_given_seed_or_generator(tok, models):
    model = models["gpt2"]
    a = generate(model, tok, ["abc"], max_new_tokens=10, num_samples=4, generator=5)
    b = generate(model, tok, ["abc"], max_new_tokens=10, num_samples=4, generator=torch.Generator().manual_seed(5))
    c = generate(model, tok, ["abc"], max_new_tokens=10, num_samples=4, generator=6)
    assert torch.equal(a.input_ids, b.input_ids) and a.completions == b.completions
    assert not torch.equal(a.input_ids, c.input_ids)
    torch.manual_seed(3)
    d = generate(model, tok, ["abc"], max_new_tokens=10, num_samples=4)
    torch.manual_seed(3)
    e = generate(model, tok, ["abc"], max_new_tokens=10, num_samples=4)
    assert torch.equal(d.input_ids, e.input_ids)
    # the samples of one prompt differ from each other
    assert len(set(a.completions)) > 1


def test_generate_samples_from_the_model_distribution(tok, models):
    """First tokens of 3000 samples against the model's next-token distribution (chi-square)."""
    from scipy.stats import chisquare

    model = models["gpt2"]
    n = 3000
    r = generate(model, tok, ["ab"], max_new_tokens=1, num_samples=n, generator=0)
    counts = torch.bincount(r.input_ids[:, -1], minlength=len(tok)).double()
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([_ids(tok, "ab")])).logits[0, -1].double(), -1)
    assert chisquare(counts.numpy(), (probs * n).numpy()).pvalue > 1e-3
    # a wrong distribution (uniform) is rejected by the same test: the check has power
    assert chisquare(counts.numpy(), np.full(len(tok), n / len(tok))).pvalue < 1e-3


def test_generate_temperature_and_top_k(tok, models):
    model = models["llama"]
    greedy = generate(model, tok, ["1+2="], max_new_tokens=8, temperature=0.0, stop_at_eos=False)
    top1 = generate(model, tok, ["1+2="], max_new_tokens=8, top_k=1, generator=0, stop_at_eos=False)
    assert torch.equal(greedy.input_ids, top1.input_ids)
    assert (top1.token_logprobs[:, greedy.prompt_length :] == 0).all()  # a point mass: log 1
    # greedy picks the argmax: check against the model step by step
    ids = greedy.input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    P = greedy.prompt_length
    assert torch.equal(logits[0, P - 1 : -1].argmax(-1), ids[0, P:])
    # top-k: every sampled token is among the k most likely
    k = 3
    r = generate(model, tok, ["1+2=", "abc"], max_new_tokens=8, top_k=k, num_samples=8, generator=1, stop_at_eos=False)
    with torch.no_grad():
        logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask,
                       position_ids=position_ids_from_mask(r.attention_mask)).logits
    P = r.prompt_length
    topk = logits[:, P - 1 : -1].topk(k, dim=-1).indices
    assert (topk == r.input_ids[:, P:, None]).any(-1).all()
    # temperature: the recorded log-probs are those of softmax(logits / T)
    r = generate(model, tok, ["1+2="], max_new_tokens=6, temperature=2.0, num_samples=4, generator=2)
    lp = token_logprobs(model, r.input_ids, r.attention_mask, temperature=2.0)
    m = r.completion_mask.bool()
    assert torch.allclose(lp[m], r.token_logprobs[m], atol=1e-5)


def test_generate_accepts_token_id_prompts_and_restores_train_mode(tok, models):
    model = models["gpt2"]
    ids = _ids(tok, "12+")
    a = generate(model, tok, [ids], max_new_tokens=5, generator=4)
    b = generate(model, tok, ["12+"], max_new_tokens=5, generator=4)
    assert torch.equal(a.input_ids, b.input_ids) and a.prompts == ["12+"]
    model.train()
    try:
        generate(model, tok, ["1"], max_new_tokens=2, generator=0)
        assert model.training
    finally:
        model.eval()


def test_generate_errors(tok, models):
    model = models["gpt2"]  # context 48
    with pytest.raises(ValueError, match="prompts is empty"):
        generate(model, tok, [], max_new_tokens=4)
    with pytest.raises(ValueError, match="longer than the model's context of 48"):
        generate(model, tok, ["a" * 60], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens <= 7"):
        generate(model, tok, ["a" * 40], max_new_tokens=10)
    no_pad = char_tokenizer()
    no_pad.pad_token = None
    with pytest.raises(ValueError, match=r"pad_token = tokenizer.eos_token"):
        generate(model, no_pad, ["ab"], max_new_tokens=4)
    with pytest.raises(ValueError, match="pad"):
        prompt_completion_batch(no_pad, ["a"], ["b"])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tok, ["ab"], max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tok, ["ab"], max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, tok, ["ab"], max_new_tokens=2, top_k=0)
    with pytest.raises(TypeError, match="prompts"):
        generate(model, tok, "ab", max_new_tokens=2)


# --------------------------------------------------------------------------------------------------- heads


def test_last_token_index():
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [3, 1, 0]
    with pytest.raises(ValueError, match="row 1"):
        last_token_index(torch.tensor([[1, 1], [0, 0]]))


@pytest.mark.parametrize("arch", ARCHS)
def test_reward_reads_last_real_token_and_ignores_padding_side(tok, models, arch):
    rm = RewardModel(models[arch], seed=0)
    short, long = _ids(tok, "great fun."), _ids(tok, "review: the film was dull")
    left_ids, left_mask = left_pad([short, long], tok.pad_token_id)
    right_ids = torch.full_like(left_ids, tok.pad_token_id)
    right_mask = torch.zeros_like(left_mask)
    for i, row in enumerate([short, long]):
        right_ids[i, : len(row)] = torch.tensor(row)
        right_mask[i, : len(row)] = 1
    with torch.no_grad():
        r_left = rm(left_ids, left_mask)
        r_right = rm(right_ids, right_mask)
        r_alone = rm(torch.tensor([short]))
        # by hand: the head on the last layer's hidden state of the last real token
        h = models[arch](input_ids=torch.tensor([short]), output_hidden_states=True).hidden_states[-1][0, -1]
        by_hand = rm.head(h).squeeze()
    assert r_left.shape == (2,)
    assert torch.allclose(r_left, r_right, atol=1e-5)
    assert torch.allclose(r_left[0], r_alone[0], atol=1e-5)
    assert torch.allclose(r_alone[0], by_hand, atol=1e-6)
    # the reward depends on the last token, and not on what sits in padding
    changed = right_ids.clone()
    changed[0, len(short)] = 7  # a padding column (mask 0)
    changed_last = right_ids.clone()
    changed_last[0, len(short) - 1] = 7
    with torch.no_grad():
        assert torch.allclose(rm(changed, right_mask)[0], r_right[0], atol=1e-6)
        assert not torch.allclose(rm(changed_last, right_mask)[0], r_right[0], atol=1e-4)


def test_reward_model_init_grad_and_copies(tok, models):
    lm = models["gpt2"]
    rm = RewardModel.from_pretrained_lm(lm, seed=0)
    assert rm.backbone is not lm
    assert rm.init_std == pytest.approx(1 / math.sqrt(32 + 1))
    assert torch.equal(rm.head.bias, torch.zeros(1))
    again = RewardModel.from_pretrained_lm(lm, seed=0)
    assert torch.equal(rm.head.weight, again.head.weight)
    b = prompt_completion_batch(tok, ["ab", "c"], ["x", "yz"])
    rm.train()
    r = rm(b.input_ids, b.attention_mask)
    r.sum().backward()
    assert rm.head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in rm.backbone.parameters())
    assert all(p.grad is None for p in lm.parameters())  # the original LM is untouched
    with pytest.raises(ValueError, match="no real token"):
        rm(b.input_ids, torch.zeros_like(b.attention_mask))


def test_reward_model_on_a_base_model(tok):
    from transformers import GPT2Model

    lm = tiny_causal_lm(tok, n_layer=1, d_model=32)
    base = lm.transformer
    assert isinstance(base, GPT2Model)
    ids = torch.tensor([_ids(tok, "abc")])
    with torch.no_grad():
        r_base = RewardModel(base, seed=3)(ids)
        r_lm = RewardModel(lm, seed=3)(ids)
    assert torch.allclose(r_base, r_lm, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_value_model_shapes_padding_and_init_from_reward_model(tok, models, arch):
    rm = RewardModel.from_pretrained_lm(models[arch], seed=1)
    vm = ValueModel.from_reward_model(rm)
    assert vm.backbone is not rm.backbone
    b = prompt_completion_batch(tok, ["1+1=", "review:"], ["2", " good"])
    with torch.no_grad():
        values = vm(b.input_ids, b.attention_mask)
        rewards = rm(b.input_ids, b.attention_mask)
        alone = prompt_completion_batch(tok, ["1+1="], ["2"])
        v_alone = vm(alone.input_ids, alone.attention_mask)
    assert values.shape == b.input_ids.shape
    assert (values[b.attention_mask == 0] == 0).all()
    # the critic starts as the reward model: its value at the last token is the reward
    last = last_token_index(b.attention_mask)
    assert last.tolist() == [9, 13]  # row 0 is right padded after its EOS
    assert torch.allclose(values[torch.arange(2), last], rewards, atol=1e-6)
    # padding invariance: the real positions of row 0 score as the row alone
    assert torch.allclose(values[0][b.attention_mask[0] == 1], v_alone[0], atol=1e-5)
    # deep copy: changing the reward model leaves the critic alone
    with torch.no_grad():
        rm.head.weight.add_(1.0)
        next(rm.backbone.parameters()).add_(1.0)
        assert torch.allclose(vm(b.input_ids, b.attention_mask), values)
    with pytest.raises(TypeError, match="reward_model"):
        ValueModel.from_reward_model(models[arch])


# ---------------------------------------------------------------------------------------------- checkpoint


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_lm_is_bitwise(tok, arch, tmp_path):
    model = tiny_causal_lm(tok, arch=arch, n_layer=2, d_model=32, seed=5)
    save_model(model, tmp_path / "m", tokenizer=tok)
    again, tok2 = load_model(tmp_path / "m", return_tokenizer=True)
    assert type(again) is type(model) and not again.training
    b = prompt_completion_batch(tok, ["1+1=", "review: the"], ["2", " film"])
    kw = dict(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=position_ids_from_mask(b.attention_mask))
    with torch.no_grad():
        assert torch.equal(model(**kw).logits, again(**kw).logits)
    assert tok2("12+35=47")["input_ids"] == tok("12+35=47")["input_ids"]
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m")  # the folder is a standard HF folder
    assert count_parameters(plain) == count_parameters(model)


def test_checkpoint_keeps_dtype_and_attention_implementation(tok, tmp_path):
    model = tiny_causal_lm(tok, n_layer=1, d_model=32, attn_implementation="eager").double()
    save_model(model, tmp_path)
    again = load_model(tmp_path)
    assert again.dtype == torch.float64 and again.config._attn_implementation == "eager"
    ids = torch.tensor([_ids(tok, "abc")])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
    assert load_model(tmp_path, return_tokenizer=True)[1] is None


@pytest.mark.parametrize("cls", [RewardModel, ValueModel])
def test_checkpoint_round_trip_heads_is_bitwise(tok, cls, tmp_path):
    lm = tiny_causal_lm(tok, arch="llama", n_layer=1, d_model=32, seed=2)
    model = cls(lm, init_std=0.3, seed=4)
    with torch.no_grad():
        model.head.bias.fill_(0.25)  # a trained-looking bias must survive too
    save_model(model, tmp_path / "rm", tokenizer=tok)
    again = load_model(tmp_path / "rm")
    assert type(again) is cls and again.init_std == 0.3
    b = prompt_completion_batch(tok, ["ab", "cde"], ["x", "yz"])
    with torch.no_grad():
        assert torch.equal(model(b.input_ids, b.attention_mask), again(b.input_ids, b.attention_mask))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        load_model(tmp_path / "missing")
    with pytest.raises(TypeError, match="model"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x")


# -------------------------------------------------------------------------------------------------- device


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu-please")
    with pytest.raises(TypeError, match="device"):
        resolve_device(3.5)


def test_set_seed_seeds_python_numpy_and_torch():
    set_seed(42)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_seed(42)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    set_seed(43)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != a
    with pytest.raises(ValueError, match="seed"):
        set_seed(-1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tok):
    cpu_model = tiny_causal_lm(tok, n_layer=1, d_model=32)
    gpu_model = tiny_causal_lm(tok, n_layer=1, d_model=32).to("cuda")
    b = prompt_completion_batch(tok, ["1+1=", "ab"], ["2", "cd"])
    lp_cpu = token_logprobs(cpu_model, b.input_ids, b.attention_mask)
    lp_gpu = token_logprobs(gpu_model, b.input_ids.cuda(), b.attention_mask.cuda())
    assert lp_gpu.device.type == "cuda"
    assert torch.allclose(lp_cpu, lp_gpu.cpu(), atol=1e-4)
    r = generate(gpu_model, tok, ["1+1="], max_new_tokens=5, num_samples=4, generator=0)
    assert r.input_ids.device.type == "cuda"
    a = generate(gpu_model, tok, ["1+1="], max_new_tokens=5, num_samples=4, generator=0, use_cache=False)
    assert torch.equal(r.input_ids, a.input_ids)
    rm = RewardModel(gpu_model, seed=0)
    assert rm(r.input_ids, r.attention_mask).device.type == "cuda"


# ------------------------------------------------------------------------------------------------ doctests


@pytest.mark.parametrize(
    "module", ["tokenizer", "models", "device", "batching", "logprobs", "generation", "heads", "checkpoint"]
)
def test_docstring_examples_hold(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"rlhf_edu.lm.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"rlhf_edu.lm.{module} has no worked example"
    assert result.failed == 0
