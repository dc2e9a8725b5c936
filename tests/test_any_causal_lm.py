"""Issue 15, the four failures of "any Hugging Face causal LM", each on a tiny model of the family that failed.

1. Dropout (GPT-2 and OPT configs default to 0.1): every trainer switches it off in the policy and the
   reference by default (``disable_dropout``), so step 0 is exact: DPO's loss log 2, KTO's lambda / 2, PPO's
   and GRPO's ratio 1, the logged values of SFT, reward model, SimPO, ORPO, RLOO and ReST those of the
   model in eval mode. Each test also runs with ``disable_dropout=False`` and sees the noise, so it can fail.
2. Heads sized from what the backbone returns: OPT shaped like opt-350m (``word_embed_proj_dim`` !=
   ``hidden_size``).
3. Cached sampling on a state-space model (Mamba): with and without the cache, the same samples, and
   rollout log-probs equal to recomputed ones.
4. Completions decoded in context, with SentencePiece-style tokenizers (the word-start marker "▁").

Every model is built from a config with 2 layers and random weights; every tokenizer is built here.
"""

import copy
import math

import numpy as np
import pytest
import torch

from rlhf_edu.lm import (
    RewardModel,
    ValueModel,
    char_tokenizer,
    decode_completions,
    disable_dropout_in_model,
    dropout_rates,
    generate,
    prompt_completion_batch,
    sequence_logprobs,
    tiny_causal_lm,
    token_logprobs,
)
from rlhf_edu.train import (
    masked_nll,
    reward_margins,
    sample_best_of_n,
    train_dpo,
    train_grpo,
    train_kto,
    train_orpo,
    train_ppo,
    train_reward_model,
    train_rest,
    train_rloo,
    train_sft,
    train_simpo,
)
import rlhf_edu.train.grpo as grpo_module
import rlhf_edu.train.rest as rest_module
import rlhf_edu.train.rloo as rloo_module
import rlhf_edu.train.rollouts as rollouts_module

TOK = char_tokenizer()
QUIET = dict(device="cpu", progress=False)
PAIRS = [
    ("review: the film was", " great fun.", " dull."),
    ("review: the cafe is", " lovely.", " bad and slow."),
    ("review: the song was", " fresh.", " weak."),
    ("review: the park is", " nice.", " boring."),
]
EXAMPLES = [(p, c, True) for p, c, _ in PAIRS[:2]] + [(p, r, False) for p, _, r in PAIRS[:2]]
PROMPTS = ["1+2=", "3+4=", "review: the"]
#: Below this, two float32 computations of the same log-probs agree; dropout 0.1 moves them by far more.
TOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ----- tiny models of the families that failed ----------------------------------------------------------


def gpt2_dropout(seed=0):
    """A GPT-2 config with dropout 0.1 everywhere (embeddings, attention, residuals), as GPT-2's default."""
    return tiny_causal_lm(TOK, d_model=32, n_layer=2, n_head=2, max_length=64, dropout=0.1, seed=seed)


def tiny_opt(seed=0):
    """OPT shaped like opt-350m: the last hidden state is projected from hidden_size 32 to
    word_embed_proj_dim 16; post-layer norm; OPT's default dropout 0.1, applied functionally. Weights drawn
    with std 0.2: with OPT's 0.02 the tiny model's outputs hardly depend on anything, dropout included
    (DPO's step-0 loss moved by 5e-6 only; by 0.12 with 0.2)."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=len(TOK), hidden_size=32, word_embed_proj_dim=16, ffn_dim=64, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=64, do_layer_norm_before=False, dropout=0.1,
                       attention_dropout=0.1, pad_token_id=0, bos_token_id=1, eos_token_id=2, init_std=0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return OPTForCausalLM(config).eval()


def tiny_llama_dropout(seed=0):
    """Llama's only dropout is a float on each attention module (no nn.Dropout): TRL's search misses it."""
    return tiny_causal_lm(TOK, arch="llama", d_model=32, n_layer=2, n_head=2, max_length=64, dropout=0.1, seed=seed)


def tiny_mamba(seed=0):
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(vocab_size=len(TOK), hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
                         conv_kernel=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MambaForCausalLM(config).eval()


def tiny_falcon_h1(seed=0):
    """A hybrid: each FalconH1 layer runs attention and a Mamba-2 mixer side by side, so its cache layer holds
    keys and values and recurrent states (transformers 5.24's "hybrid" cache layer)."""
    from transformers import FalconH1Config, FalconH1ForCausalLM

    config = FalconH1Config(vocab_size=len(TOK), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=2, mamba_d_ssm=32, mamba_n_heads=4,
                            mamba_d_head=8, mamba_d_state=8, mamba_n_groups=1, mamba_d_conv=4, mamba_expand=2,
                            max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FalconH1ForCausalLM(config).eval()


FAMILIES = {"gpt2": gpt2_dropout, "opt": tiny_opt, "llama": tiny_llama_dropout}


def eval_logps(model, prompts, completions, reduction="sum"):
    """Sequence log-probs under ``model`` in eval mode (no dropout, whatever its rates), no gradient."""
    b = prompt_completion_batch(TOK, prompts, completions)
    was = model.training
    model.eval()
    with torch.no_grad():
        out = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction)
    model.train(was)
    return out


def agree(a, b, tol=TOL):
    return abs(float(a) - float(b)) <= tol


# ----- 1. dropout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_disable_dropout_in_model_covers_modules_functional_rates_and_the_config(family):
    model = FAMILIES[family]().train()
    assert dropout_rates(model), "the test model must have dropout to remove"
    ids = torch.tensor([[1, 31, 32, 46, 33, 49]])
    assert not torch.equal(token_logprobs(model, ids), token_logprobs(model, ids))
    assert disable_dropout_in_model(model) is model and dropout_rates(model) == {}
    assert model.training and torch.equal(token_logprobs(model, ids), token_logprobs(copy.deepcopy(model).eval(), ids))
    config = model.config.to_dict()
    assert all(v == 0 for k, v in config.items() if ("drop" in k or "jitter" in k) and isinstance(v, float))


def test_disable_dropout_in_model_rejects_a_non_module():
    with pytest.raises(TypeError, match="model"):
        disable_dropout_in_model("gpt2")


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("disable", [True, False])
def test_dpo_step0_loss_is_log2_with_dropout_in_the_config(family, disable):
    """pi = pi_ref at step 0: h = 0, loss log 2, margin 0 (GPT-2 gave 0.6757 before the fix), and the
    policy's log-probs are the model's."""
    policy = FAMILIES[family]()
    want = eval_logps(policy, [p for p, _, _ in PAIRS], [c for _, c, _ in PAIRS]).mean()
    _, hist = train_dpo(policy, TOK, PAIRS, sft_weight=0.0, batch_size=len(PAIRS), disable_dropout=disable, **QUIET)
    loss, margin, chosen = hist.first("loss"), hist.first("margin"), hist.first("chosen_logp")
    assert agree(loss, math.log(2)) is disable, loss
    assert (agree(margin, 0.0) and agree(chosen, want, 1e-4)) is disable, (margin, chosen, float(want))
    assert (dropout_rates(policy) == {}) is disable and hist.config["disable_dropout"] is disable


@pytest.mark.parametrize("disable", [True, False])
def test_kto_step0_loss_is_half_lambda(disable):
    _, hist = train_kto(gpt2_dropout(), TOK, EXAMPLES, sft_weight=0.0, lambda_d=1.0, lambda_u=1.0,
                        batch_size=len(EXAMPLES), disable_dropout=disable, **QUIET)
    loss, kl = hist.first("loss"), hist.first("kl_reference")
    assert agree(kl, 0.0)  # measured in eval mode either way
    assert agree(loss, 0.5) is disable, loss


@pytest.mark.parametrize("disable", [True, False])
def test_sft_step0_loss_is_the_models_loss(disable):
    model = gpt2_dropout()
    prompts, completions = [p for p, _, _ in PAIRS], [c for _, c, _ in PAIRS]
    b = prompt_completion_batch(TOK, prompts, completions)
    with torch.no_grad():
        want = masked_nll(token_logprobs(model.eval(), b.input_ids, b.attention_mask), b.completion_mask)
    _, hist = train_sft(model, TOK, list(zip(prompts, completions)), batch_size=len(prompts), disable_dropout=disable,
                        **QUIET)
    assert agree(hist.first("loss"), want) is disable, (hist.first("loss"), float(want))


@pytest.mark.parametrize("disable", [True, False])
def test_reward_model_step0_rewards_are_the_eval_rewards(disable):
    rm = RewardModel(gpt2_dropout(), seed=0)
    want = reward_margins(rm, TOK, PAIRS).mean()
    _, hist = train_reward_model(rm, TOK, PAIRS, epochs=1, batch_size=len(PAIRS), disable_dropout=disable, **QUIET)
    assert agree(hist.first("margin"), want) is disable, (hist.first("margin"), want)
    assert (dropout_rates(rm) == {}) is disable


@pytest.mark.parametrize("disable", [True, False])
def test_simpo_step0_rewards_are_the_eval_rewards(disable):
    policy, beta = gpt2_dropout(), 2.0
    prompts, chosen = [p for p, _, _ in PAIRS], [c for _, c, _ in PAIRS]
    want = (beta * eval_logps(policy, prompts, chosen, "mean")).mean()
    _, hist = train_simpo(policy, TOK, PAIRS, beta=beta, sft_weight=0.0, batch_size=len(PAIRS),
                          disable_dropout=disable, **QUIET)
    assert agree(hist.first("chosen_reward"), want) is disable


@pytest.mark.parametrize("disable", [True, False])
def test_orpo_step0_logps_are_the_eval_logps(disable):
    policy = gpt2_dropout()
    prompts, rejected = [p for p, _, _ in PAIRS], [r for _, _, r in PAIRS]
    want = eval_logps(policy, prompts, rejected, "mean").mean()
    _, hist = train_orpo(policy, TOK, PAIRS, batch_size=len(PAIRS), disable_dropout=disable, **QUIET)
    assert agree(hist.first("rejected_logp"), want) is disable


def digit_share(completions, prompts):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


@pytest.mark.parametrize("disable", [True, False])
def test_ppo_ratio_is_one_at_the_first_minibatch(disable):
    """One minibatch of the whole batch, before its update: approx_kl(pi_old, pi) is 0, nothing is clipped."""
    policy = gpt2_dropout()
    _, hist = train_ppo(policy, TOK, PROMPTS, digit_share, steps=1, batch_size=6, minibatch_size=6, ppo_epochs=1,
                        max_new_tokens=5, disable_dropout=disable, **QUIET)
    approx_kl, clipped = hist.first("approx_kl"), hist.first("clip_fraction")
    assert agree(approx_kl, 0.0, 1e-7) is disable, approx_kl
    if disable:
        assert clipped == 0.0
    assert (dropout_rates(hist.value_model) == {}) is disable


def spy_on_first_ratio(monkeypatch, module):
    """Record the rollout's logp_old (``OnlineRun.collect``) and the loss's first logp in ``module`` (GRPO, RLOO)."""
    seen = {}
    collect, logprobs = rollouts_module.collect_rollouts, module.token_logprobs

    def collect_spy(*args, **kwargs):
        batch = collect(*args, **kwargs)
        if batch.logp_old is None:  # GRPO's one update per batch: pi_old's log-probs are the loss's own pass
            seen["old_from_loss"] = True
        else:
            seen.setdefault("old", batch.logp_old.detach().clone())
        seen.setdefault("mask", batch.rollout.completion_mask.clone())
        return batch

    def logprobs_spy(*args, **kwargs):
        out = logprobs(*args, **kwargs)
        new = (out[0] if isinstance(out, tuple) else out).detach().clone()
        seen.setdefault("new", new)
        if seen.get("old_from_loss"):  # then a separate pass of the same policy is what the shortcut replaces
            seen.setdefault("old", logprobs(*args, **kwargs)[0].detach().clone() if isinstance(out, tuple)
                            else logprobs(*args, **kwargs).detach().clone())
        return out

    monkeypatch.setattr(rollouts_module, "collect_rollouts", collect_spy)
    monkeypatch.setattr(module, "token_logprobs", logprobs_spy)
    return seen


@pytest.mark.parametrize("train, module", [(train_grpo, grpo_module), (train_rloo, rloo_module)],
                         ids=["grpo", "rloo"])
@pytest.mark.parametrize("disable", [True, False])
def test_grpo_and_rloo_ratio_is_one_at_the_first_update(monkeypatch, train, module, disable):
    seen = spy_on_first_ratio(monkeypatch, module)
    train(gpt2_dropout(), TOK, PROMPTS, digit_share, group_size=2, prompts_per_step=3, steps=1, max_new_tokens=5,
          disable_dropout=disable, **QUIET)
    gap = ((seen["new"] - seen["old"]) * seen["mask"]).abs().max()
    assert (float(gap) <= TOL) is disable, float(gap)
    # GRPO skips the rollout's old log-probs exactly when a second pass would give the same numbers
    assert seen.get("old_from_loss", False) is (disable and train is train_grpo)


@pytest.mark.parametrize("disable", [True, False])
def test_rest_improve_step_loss_is_the_models_loss(monkeypatch, disable):
    """The SFT of the first Improve step starts from the Grow policy: its first loss is that policy's NLL."""
    checks = []
    sft = rest_module.train_sft

    def sft_spy(policy, tokenizer, kept, **kwargs):
        prompts, completions = [p for p, _ in kept], [c for _, c in kept]
        b = prompt_completion_batch(tokenizer, prompts, completions)
        was = policy.training
        with torch.no_grad():
            want = masked_nll(token_logprobs(policy.eval(), b.input_ids, b.attention_mask), b.completion_mask)
        policy.train(was)
        out = sft(policy, tokenizer, kept, **kwargs)
        checks.append((out[1].first("loss"), float(want)))
        return out

    monkeypatch.setattr(rest_module, "train_sft", sft_spy)
    _, hist = train_rest(gpt2_dropout(), TOK, PROMPTS, digit_share, grow_steps=1, improve_steps=1, thresholds=(-1.0,),
                         samples_per_prompt=2, max_new_tokens=5, batch_size=64, epochs=1, disable_dropout=disable,
                         **QUIET)
    got, want = checks[0]
    assert agree(got, want) is disable, (got, want)
    assert agree(hist.first("kl"), 0.0)  # the Grow policy is the reference, measured in eval mode


def test_best_of_n_samples_in_eval_mode_whatever_the_dropout():
    """Sampling never uses dropout (generate runs in eval mode): best-of-N needs no option."""
    model = gpt2_dropout().train()
    a = sample_best_of_n(model, TOK, PROMPTS, digit_share, n=2, max_new_tokens=5, **QUIET)
    b = sample_best_of_n(disable_dropout_in_model(copy.deepcopy(model)), TOK, PROMPTS, digit_share, n=2,
                         max_new_tokens=5, **QUIET)
    assert a.all_completions == b.all_completions and model.training


# ----- 2. heads on OPT shaped like opt-350m -------------------------------------------------------------


def test_heads_read_the_width_the_backbone_returns():
    opt = tiny_opt()
    assert opt.config.hidden_size == 32 and opt.config.word_embed_proj_dim == 16
    b = prompt_completion_batch(TOK, ["review:", "1+1="], [" good.", "2"])
    rm, vm = RewardModel(opt, seed=0), ValueModel(copy.deepcopy(opt), seed=0)
    assert rm.head.in_features == vm.head.in_features == 16
    assert rm(b.input_ids, b.attention_mask).shape == (2,)
    assert vm(b.input_ids, b.attention_mask).shape == b.input_ids.shape
    base = RewardModel(copy.deepcopy(opt).model, seed=0)  # the base model (no output projection)
    assert base.head.in_features == 16 and base(b.input_ids, b.attention_mask).shape == (2,)


def test_head_on_the_wrong_backbone_names_the_widths():
    rm = RewardModel(tiny_opt(), seed=0)
    rm.backbone = gpt2_dropout()  # width 32, head built for 16
    with pytest.raises(ValueError, match="width 32 .* reads 16"):
        rm(torch.tensor([[1, 31, 32]]))


def test_reward_model_and_ppo_train_on_opt():
    rm = RewardModel(tiny_opt(seed=1), seed=0)
    rm, hist = train_reward_model(rm, TOK, PAIRS, epochs=1, batch_size=2, **QUIET)
    assert len(hist) == 2 and np.isfinite(hist["loss"]).all()
    for reward, critic_init in ((rm, "reward_model"), (digit_share, "policy")):
        _, hist = train_ppo(tiny_opt(), TOK, PROMPTS, reward, critic_init=critic_init, steps=1, batch_size=4,
                            minibatch_size=4, ppo_epochs=1, max_new_tokens=4, **QUIET)
        assert hist.value_model.head.in_features == 16 and np.isfinite(hist["loss"]).all()
        assert agree(hist.first("approx_kl"), 0.0, 1e-7)  # one update, before it: OPT's dropout is off too


# ----- 3. cached sampling on a state-space model ---------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "mamba", "falcon_h1"])
def test_cache_and_no_cache_give_the_same_samples_and_logprobs(family):
    """Also the prefill shared by a prompt's samples (``num_samples=3``): on FalconH1 the cache's own
    ``batch_repeat_interleave`` repeats the keys and values but not the Mamba states (the next step failed)."""
    model = {"mamba": tiny_mamba, "falcon_h1": tiny_falcon_h1}.get(
        family, lambda: tiny_causal_lm(TOK, arch="llama", d_model=32, n_layer=2, n_head=2))()
    # Prompts of different lengths: left padding, and rows that stop at EOS while others go on.
    kw = dict(max_new_tokens=8, num_samples=3, generator=0)
    cached = generate(model, TOK, PROMPTS, use_cache=True, **kw)
    plain = generate(model, TOK, PROMPTS, use_cache=False, **kw)
    assert torch.equal(cached.input_ids, plain.input_ids) and cached.completions == plain.completions
    with torch.no_grad():
        recomputed = token_logprobs(model, cached.input_ids, cached.attention_mask)
    gap = ((recomputed - cached.token_logprobs) * cached.completion_mask).abs().max()
    assert float(gap) < 1e-4, float(gap)  # before the fix: up to 1.4 nats on Mamba


# ----- 4. completions decoded in context ----------------------------------------------------------------


def sentencepiece_tokenizer(cls_name="PreTrainedTokenizerFast"):
    """A BPE trained here with the Metaspace pre-tokenizer and decoder: tokens carry the marker "▁"."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    corpus = [f"review: the {w} was {a}." for w in ("film", "song", "cafe") for a in ("great fun", "dull")]
    corpus += [f"{a}+{b}={a + b}" for a in range(10) for b in range(10)]
    trainer = trainers.BpeTrainer(vocab_size=90, special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"],
                                  show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    return getattr(transformers, cls_name)(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                           eos_token="<eos>", unk_token="<unk>")


@pytest.mark.parametrize("cls_name", ["PreTrainedTokenizerFast", "LlamaTokenizerFast"])
def test_decoded_completion_keeps_its_leading_space(cls_name):
    tok = sentencepiece_tokenizer(cls_name)
    prompt = tok("review: the", add_special_tokens=False)["input_ids"]
    completion = tok(" film was", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.convert_ids_to_tokens(completion)[0].startswith("▁")
    assert tok.decode(completion, skip_special_tokens=True) == "film was"  # the bug: decoded alone
    assert decode_completions(tok, [[tok.bos_token_id] + prompt], [completion]) == [" film was"]


@pytest.mark.parametrize("cls_name", ["PreTrainedTokenizerFast", "LlamaTokenizerFast"])
def test_prompt_plus_completion_is_the_decoded_row(cls_name):
    tok = sentencepiece_tokenizer(cls_name)
    model = tiny_causal_lm(tok, d_model=32, n_layer=2, n_head=2)
    r = generate(model, tok, ["review: the", "3+4="], max_new_tokens=8, num_samples=4, generator=0)
    rows = [tok.decode(ids[m.bool()].tolist(), skip_special_tokens=True)
            for ids, m in zip(r.input_ids, r.attention_mask)]
    assert [p + c for p, c in zip(r.prompts, r.completions)] == rows
    assert any(c.startswith(" ") for c in r.completions), "no sample starts a word: the test shows nothing"


def test_decoded_prompt_that_ends_inside_a_character():
    """Byte-level BPE: a prompt ending on the first byte of "é" decodes to "a\ufffd"; the completion is "é"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    ids = tok("aé", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and tok.decode(ids[:2]) == "a\ufffd"
    assert decode_completions(tok, [ids[:2]], [ids[2:]]) == ["é"]
    with pytest.raises(ValueError, match="one entry per row"):
        decode_completions(tok, [ids[:2]], [])


@pytest.mark.parametrize("cls_name", ["PreTrainedTokenizerFast", "LlamaTokenizerFast"])
def test_a_completion_is_encoded_as_it_follows_its_prompt(cls_name):
    from rlhf_edu.lm import encode_completion, prompt_completion_batch

    tok = sentencepiece_tokenizer(cls_name)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    # On its own a completion is read as the start of a text (a leading "▁"); after its prompt it is not
    assert tok.convert_ids_to_tokens(ids("=7")) == ["▁", "=7"]
    for prompt, completion in (("review: the", "film was"), ("review: the", " film was"), ("3+4", "=7")):
        want = ids(prompt + completion)[len(ids(prompt)):]
        assert ids(prompt + completion)[: len(ids(prompt))] == ids(prompt)
        assert encode_completion(tok, prompt, completion) == want
        if not completion.startswith(" "):
            assert want != ids(completion), "no difference on its own: the case shows nothing"
        batch = prompt_completion_batch(tok, [prompt], [completion])
        row = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
        assert row == [tok.bos_token_id] + ids(prompt + completion) + [tok.eos_token_id]
    # prompts given as ids: nothing to read the completion against, so it is tokenized on its own; the same
    # when the prompt's last piece merges with the completion ("=" and "7" into "=7")
    assert encode_completion(tok, ids("review: the"), "film") == ids("film")
    assert ids("3+4=7")[: len(ids("3+4="))] != ids("3+4=")
    assert encode_completion(tok, "3+4=", "7") == ids("7")


def test_encode_completion_falls_back_when_the_prompt_merges_into_the_completion():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlhf_edu.lm import encode_completion

    vocab = {c: i for i, c in enumerate("ehrt")} | {"th": 4, "the": 5, "there": 6, "re": 7}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("t", "h"), ("th", "e"), ("r", "e"), ("the", "re")]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert tok("there", add_special_tokens=False)["input_ids"] == [6]  # one token across the boundary
    assert encode_completion(tok, "the", "re") == [7]  # "re" on its own
