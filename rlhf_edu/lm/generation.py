r"""Sampling completions from a causal LM with a KV cache: the "rollout" of every online RLHF method.

A policy-gradient step (PPO, GRPO, RLOO; chapters 4 and 5) first samples completions
:math:`y \sim \pi_\theta(\cdot \mid x)` token by token,

.. math:: y_t \sim \mathrm{softmax}(z_t / \tau) \text{ restricted to the top } k, \qquad z_t = \text{logits}(x, y_{<t}),

then scores and reinforces them. ``generate`` is that loop written out (no ``model.generate``), with the
key/value cache so each step costs one token of compute instead of the whole prefix, and the
``use_cache=False`` path kept for comparison (``benchmarks/sampling_speed.py``). Best-of-N and ReST
(chapter 8) use it to draw N samples per prompt.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicLayer

from rlhf_edu.lm.batching import _require_pad, encode_prompts, left_pad, position_ids_from_mask
from rlhf_edu.lm.models import context_length
from rlhf_edu.validation import check_integer, check_nonnegative

__all__ = ["Rollout", "cache_keyword", "decode_completions", "generate", "last_logits_kwargs", "rows_can_be_repeated"]


@dataclass
class Rollout:
    """What ``generate`` returns: sampled completions in the batch layout of ``rlhf_edu.lm.batching``.

    Attributes:
        input_ids: ``(B, T)`` left-padded prompt, then the completion, right-padded after its EOS.
        attention_mask: ``(B, T)`` 1 on real tokens (prompt and completion, EOS included).
        completion_mask: ``(B, T)`` 1 on generated tokens (EOS included), 0 on prompt and padding.
        prompt_length: the padded prompt width ``P``: completions start at column ``P``.
        prompts: ``B`` prompt strings, prompt ``i``'s samples in rows ``i*num_samples ... (i+1)*num_samples-1``.
        completions: ``B`` decoded completions (special tokens removed).
        token_logprobs: ``(B, T)`` log-probability of each generated token under the distribution it was
            sampled from (temperature and top-k applied), 0 elsewhere.
        num_samples: samples per prompt (rows per group, for GRPO / RLOO baselines).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    prompt_length: int
    prompts: list = field(default_factory=list)
    completions: list = field(default_factory=list)
    token_logprobs: torch.Tensor = None
    num_samples: int = 1

    def __len__(self):
        return self.input_ids.shape[0]

    def to(self, device):
        """The same rollout with its tensors on ``device``."""
        return Rollout(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.completion_mask.to(device),
            self.prompt_length,
            list(self.prompts),
            list(self.completions),
            None if self.token_logprobs is None else self.token_logprobs.to(device),
            self.num_samples,
        )

    @property
    def completion_lengths(self):
        """``(B,)`` number of generated tokens per row (EOS included)."""
        return self.completion_mask.sum(dim=1)


def _forward_parameters(model):
    """The parameters of ``model.forward``, read on ``model.module`` when there is one (a
    ``DistributedDataParallel`` wrapper's ``forward(*inputs, **kwargs)`` passes every keyword on); None for
    a forward without a signature."""
    model = getattr(model, "module", model)
    try:
        return inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None


def cache_keyword(model):
    """The name under which ``model.forward`` takes (and its output returns) the KV cache (read on
    ``model.module`` for a ``DistributedDataParallel`` wrapper).

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns and goes in 5.40); older
    releases, and models written against them, only know ``past_key_values``. A state-space model such as
    Mamba also takes ``cache`` and silently drops an unknown name, so the name must be the right one.

    >>> from rlhf_edu.lm import tiny_causal_lm
    >>> cache_keyword(tiny_causal_lm(20))
    'cache'
    """
    params = _forward_parameters(model)
    if params is None:  # a forward without a signature: assume the current API
        return "cache"
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise TypeError(f"{type(model).__name__}.forward takes neither `cache` nor `past_key_values`: it has no KV cache")


def last_logits_kwargs(model, n):
    """``{"logits_to_keep": n}`` when ``model.forward`` takes it, else ``{}``: the keyword that asks a Hugging
    Face causal LM for the logits of its last ``n`` positions only, ``(B, n, V)`` instead of ``(B, T, V)``.

    The LM head is then applied to those positions alone: for a vocabulary of 150k tokens and a 500-token
    prompt that is the difference between 300 MB of float32 logits per row and 0.6 MB. ``generate``'s first
    pass keeps the last position (the next token's distribution) and ``token_logprobs(prompt_length=P)`` the
    positions that predict the completion, as TRL and ``model.generate`` do. The signature read is that of
    ``model.module`` when there is one (a ``DistributedDataParallel`` wrapper's ``forward(*inputs, **kwargs)``
    passes the keyword on). A forward without the keyword (older models, older transformers'
    ``num_logits_to_keep``, custom ones, one with only ``**kwargs``, which may not accept it) gets ``{}`` and
    returns every position; callers slice ``logits[:, -n:]`` either way, so both give the same numbers (up
    to the rounding of a matrix product of another shape). ``n`` is a positive ``int`` (``logits_to_keep=0``
    would mean "all"): ``TypeError`` for a non-integer, ``ValueError`` below 1, naming ``n``.

    >>> from rlhf_edu.lm import tiny_causal_lm
    >>> last_logits_kwargs(tiny_causal_lm(20), 1)
    {'logits_to_keep': 1}
    """
    n = check_integer("n", n, minimum=1)
    params = _forward_parameters(model) or {}  # no signature: keep every position
    return {"logits_to_keep": n} if "logits_to_keep" in params else {}


def _recurrent_only(cache):
    """True for the cache of a pure state-space model (Mamba, Mamba2, FalconMamba): every layer keeps a
    recurrent state and no keys or values, so the model attends to nothing."""
    layers = getattr(cache, "is_linear", None)  # one flag per layer (transformers >= 5)
    return isinstance(layers, (list, tuple)) and len(layers) > 0 and all(layers)


def rows_can_be_repeated(cache) -> bool:
    """True when every layer of a Hugging Face cache can repeat or pick its batch rows
    (``batch_repeat_interleave``, ``batch_select_indices``): the keys and values of an attention layer. False for
    a cache without ``layers`` (older transformers) and for one holding the recurrent states of a Mamba-like
    layer (Mamba, Qwen3-Next's linear attention, FalconH1's attention + Mamba layers): transformers 5.24
    repeats a hybrid layer's keys and values only, so the next pass would meet states of the old batch size.
    ``generate`` (the samples of a prompt share one prefill) and ``token_logprobs(prompt_length=...)`` (the
    rows of a prompt share one pass over it) share rows only when this holds."""
    layers = getattr(cache, "layers", None)
    return isinstance(layers, (list, tuple)) and all(
        callable(getattr(layer, "batch_repeat_interleave", None))
        and callable(getattr(layer, "batch_select_indices", None))
        and not hasattr(layer, "conv_states") and not hasattr(layer, "recurrent_states")
        for layer in layers
    )


class _ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` (one attention layer's keys and values, ``(B, heads, T, head_dim)``) with room to
    spare for the tokens to come. transformers' ``DynamicLayer.update`` appends a step's key and value with
    ``torch.cat``, which copies the whole past: decoding ``n`` tokens copies the cache ``n`` times. Here the
    past lives in a wider buffer, each step writes its column in place, and ``keys``/``values`` are views of
    the filled part: the same numbers in the same order (only the strides differ), so on the CPU attention
    returns the same bits (``tests/test_lm.py``). The room starts at twice the first width plus 16 columns and
    doubles when full, never past ``limit`` columns (the most ``generate`` can feed): a few copies per
    generation instead of one per token, and room for at most twice the columns in use (plus the first 16;
    during a doubling both rooms exist, as both tensors do in a ``torch.cat``). Reserving ``limit`` at once
    would hold, on a GPU, the memory of ``max_new_tokens`` for answers that stop after ten. Past ``limit``, or
    once its tensors were replaced (``reorder_cache``, ``batch_select_indices``, ``reset``), the layer falls
    back to ``torch.cat``: slower, never wrong. Each write changes the room that earlier views share, so the
    layer is for ``torch.no_grad()`` use, as in ``generate`` (under autograd a backward through an earlier view
    would fail: "modified by an inplace operation")."""

    def __init__(self, layer, limit):
        super().__init__()
        self.device = getattr(layer, "device", layer.keys.device)  # where it lives (an offloaded cache: not the keys)
        self.is_initialized = True
        self._limit = max(limit, layer.keys.shape[-2])
        self._move_to_room(layer.keys, layer.values, min(self._limit, 2 * layer.keys.shape[-2] + 16))

    def _move_to_room(self, keys, values, width):
        n = keys.shape[-2]
        self._key_room = keys.new_empty(*keys.shape[:-2], width, keys.shape[-1])
        self._value_room = values.new_empty(*values.shape[:-2], width, values.shape[-1])
        self._key_room[..., :n, :] = keys
        self._value_room[..., :n, :] = values
        self.keys, self.values = self._key_room[..., :n, :], self._value_room[..., :n, :]

    def _views_of_room(self):
        return (self._key_room is not None and self.keys is not None and self.values is not None
                and self.keys.data_ptr() == self._key_room.data_ptr()
                and self.values.data_ptr() == self._value_room.data_ptr()
                and self.keys.shape[:-2] == self._key_room.shape[:-2])

    def update(self, key_states, value_states, *args, **kwargs):
        n, new = self.get_seq_length(), key_states.shape[-2]
        if not self._views_of_room() or n + new > self._limit:
            self._key_room = self._value_room = None  # transformers' way from here on; the room is freed
            return super().update(key_states, value_states, *args, **kwargs)
        if n + new > self._key_room.shape[-2]:  # full: double the room (one copy of the past)
            self._move_to_room(self.keys, self.values, min(self._limit, max(2 * self._key_room.shape[-2], n + new)))
        self._key_room[..., n:n + new, :] = key_states
        self._value_room[..., n:n + new, :] = value_states
        self.keys, self.values = self._key_room[..., :n + new, :], self._value_room[..., :n + new, :]
        return self.keys, self.values


def _reserve(cache, extra):
    """Let every plain attention layer of a Hugging Face cache grow by up to ``extra`` tokens in reserved room
    (``_ReservedLayer``), in place. Other layers (sliding windows, recurrent states, quantized keys) and caches
    without ``layers`` (older transformers) are left as they are."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        return
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.dim() == 4:
            layers[i] = _ReservedLayer(layer, layer.keys.shape[-2] + extra)


def decode_completions(tokenizer, prompt_ids, completion_ids):
    r"""The text each completion adds to its prompt: ``decode(prompt + completion)[len(decode(prompt)):]``.

    Decoding the completion's tokens on their own is wrong for SentencePiece-style tokenizers (Llama,
    Mistral, Gemma; the ``tokenizers`` library's ``Metaspace``), whose decoder drops the word-start marker
    ``"▁"`` of a text's FIRST token: ``" film"`` after ``"review: the"`` would decode as ``"film"``, and
    ``prompt + completion`` would no longer be the decoded row. Decoded in context, ``decode(prompt) +
    completion == decode(prompt + completion)`` for every tokenizer (special tokens skipped). In the rare
    case where the decoded prompt is not a prefix of the decoded row (a byte-level tokenizer whose prompt
    ends inside a multi-byte character), the completion starts where the two texts part.

    Args:
        tokenizer: a Hugging Face tokenizer.
        prompt_ids, completion_ids: lists (one entry per row) of token-id lists, without padding.

    Returns: a list of strings. Used by ``generate`` for ``Rollout.completions``, which every online
    trainer, best-of-N and the evaluation score.

    >>> from rlhf_edu.lm import char_tokenizer
    >>> tok = char_tokenizer()
    >>> decode_completions(tok, [tok("review: the")["input_ids"]], [tok(" film.")["input_ids"] + [2]])
    [' film.']
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"prompt_ids and completion_ids must have one entry per row, got {len(prompt_ids)} "
                         f"and {len(completion_ids)}")
    prompt_ids = [list(p) for p in prompt_ids]
    prefixes = tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
    rows = tokenizer.batch_decode([p + list(c) for p, c in zip(prompt_ids, completion_ids)], skip_special_tokens=True)
    # os.path.commonprefix is the prefix itself whenever the decoded prompt starts the decoded row.
    return [row[len(os.path.commonprefix([prefix, row])):] for prefix, row in zip(prefixes, rows)]


def _model_device(model):
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _make_generator(generator, device):
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        if torch.device(generator.device).type != device.type:
            raise ValueError(
                f"generator lives on {generator.device} but the model on {device}: "
                f"create it with torch.Generator(device={str(device)!r}) or pass an int seed"
            )
        return generator
    seed = check_integer("generator", generator, minimum=0)
    return torch.Generator(device=device).manual_seed(seed)


def _sample_next(logits, temperature, top_k, generator):
    """One token per row and its log-probability under the distribution it was drawn from."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if temperature == 0:
        # Greedy: a point mass; record the model's own log-prob of the chosen token.
        logp = torch.log_softmax(logits, dim=-1)
        token = logits.argmax(dim=-1, keepdim=True)
        return token.squeeze(-1), logp.gather(-1, token).squeeze(-1)
    z = logits / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    logp = torch.log_softmax(z, dim=-1)
    # Inverse-CDF sampling: one uniform per row, the first token whose cumulative probability exceeds it.
    # Scaling u by the last cdf value keeps it inside the cdf despite rounding, so a token with
    # probability 0 (outside the top k) can never be drawn.
    cdf = logp.exp().cumsum(dim=-1)
    u = torch.rand((z.shape[0], 1), generator=generator, device=z.device, dtype=cdf.dtype)
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp(max=z.shape[-1] - 1)
    return token.squeeze(-1), logp.gather(-1, token).squeeze(-1)


def _prefill(model, ids, mask, positions, use_cache, num_samples, cache_name):
    """The first forward pass of ``generate``. With the cache, the ``num_samples`` rows of a prompt (identical
    up to here) share one pass: each prompt runs once and its cache and last logits are repeated for its
    samples, so the prompts cost ``1 / num_samples`` of the arithmetic. The same numbers as the full batch's
    pass (each row is computed on its own) up to float rounding, which may depend on the batch size (a
    GPU's matrix-product kernels); checked in ``tests/test_lm.py``. A cache that cannot repeat all
    of its rows (``rows_can_be_repeated``: no ``layers``, or a Mamba-like layer's recurrent states) gets the
    full batch's pass after the shared one, so such a model pays ``1 / num_samples`` more for its prompts."""
    last = last_logits_kwargs(model, 1)  # only the next token's logits: the LM head skips the prompt
    if use_cache and num_samples > 1:
        # contiguous copies: some models flatten their inputs with .view
        out = model(input_ids=ids[::num_samples].contiguous(), attention_mask=mask[::num_samples].contiguous(),
                    position_ids=positions[::num_samples].contiguous(), use_cache=True, **last)
        cache = out[cache_name]
        if rows_can_be_repeated(cache):
            cache.batch_repeat_interleave(num_samples)  # in place: row i*num_samples + j gets prompt i's cache
            out.logits = out.logits[:, -1:].repeat_interleave(num_samples, dim=0)
            return out
    return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=use_cache, **last)


def generate(
    model,
    tokenizer,
    prompts,
    max_new_tokens,
    temperature=1.0,
    top_k=None,
    num_samples=1,
    use_cache=True,
    generator=None,
    stop_at_eos=True,
):
    r"""Sample completions for a batch of prompts with the model's KV cache; return a ``Rollout``.

    Each prompt (a string, tokenized without special tokens and prefixed with ``<bos>`` when the
    tokenizer has one, or a list of token ids taken as is) is repeated ``num_samples`` times, the batch is
    left-padded, and ``max_new_tokens`` steps follow: the logits of the last position are divided by
    ``temperature``, cut to the ``top_k`` largest (ties kept), and one token is drawn by inverse-CDF
    sampling from one uniform number per row. A row that emits EOS stops (``stop_at_eos``): its later
    columns are padding with ``attention_mask`` 0. The loop ends early when every row has stopped.

    ``use_cache=True`` feeds only the newest token each step, with the model's cache (the ``cache``
    argument of transformers >= 5.24, ``past_key_values`` before; see ``cache_keyword``); ``use_cache=False``
    recomputes the whole prefix each step (slower, same tokens for the same seed). With the cache the
    ``num_samples`` rows of a prompt share its first pass (the prompt runs once, its cache is copied to
    its samples): the same tokens as separate passes (up to float rounding), at ``1 / num_samples`` of the
    prompt's cost. After that pass each full-attention layer's cache gets room to grow into
    (``_ReservedLayer``), so a step writes one column instead of copying the past (sliding-window layers keep
    transformers' own cache). A state-space model
    (Mamba: its cache is recurrent states only) gets no attention mask in those one-token steps, as in
    transformers' own ``generate``: Mamba multiplies its input by the mask, and the whole row's mask would
    broadcast the one new token to the full width. ``completions`` are decoded in context
    (``decode_completions``), so ``prompt + completion`` is the decoded row with any tokenizer. Runs under
    ``torch.no_grad()`` and in eval mode (the model's train/eval mode is restored afterwards), on the
    model's device.

    Args:
        model: any Hugging Face causal LM.
        tokenizer: its tokenizer; must have a pad token (``tokenizer.pad_token = tokenizer.eos_token``
            for GPT-2 / Llama tokenizers that lack one).
        prompts: a non-empty list of strings or of token-id lists.
        max_new_tokens: the most tokens to generate per row (>= 1).
        temperature: > 0 samples from ``softmax(logits / temperature)``; 0 is greedy decoding.
        top_k: ``None`` (the whole vocabulary) or keep only the ``top_k`` most likely tokens.
        num_samples: samples per prompt; prompt ``i``'s samples are rows ``i*num_samples`` to
            ``(i+1)*num_samples - 1`` (the groups of GRPO).
        use_cache: use the KV cache (default) or recompute the prefix each step.
        generator: ``None`` (torch's global random stream), an int seed, or a ``torch.Generator`` on the
            model's device. The same seed gives the same tokens, with or without the cache.
        stop_at_eos: stop a row at its first EOS (default); ``False`` samples all ``max_new_tokens``.

    Returns:
        A ``Rollout``; its ``token_logprobs`` are the log-probabilities of the drawn tokens under the
        sampling distribution (temperature and top-k applied; at temperature 1 without top-k they equal
        ``token_logprobs(model, ...)`` of the returned batch). Greedy decoding records the model's own
        (temperature 1) log-probabilities.

    Raises ``ValueError`` for an empty prompt list, a tokenizer without pad token, or a prompt that does
    not fit the model's context together with ``max_new_tokens``.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> r = generate(model, tok, ["1+1=", "review:"], max_new_tokens=5, num_samples=2, generator=0)
    >>> r.input_ids.shape[0], r.prompt_length, r.prompts[:3]
    (4, 8, ['1+1=', '1+1=', 'review:'])
    >>> bool((r.completion_mask.sum(1) >= 1).all()) and bool((r.completion_mask.sum(1) <= 5).all())
    True
    """
    pad = _require_pad(tokenizer)
    max_new_tokens = check_integer("max_new_tokens", max_new_tokens, minimum=1)
    temperature = check_nonnegative("temperature", temperature)
    if top_k is not None:
        top_k = check_integer("top_k", top_k, minimum=1)
    num_samples = check_integer("num_samples", num_samples, minimum=1)
    device = _model_device(model)
    generator = _make_generator(generator, device)

    if not isinstance(prompts, str):
        prompts = list(prompts)  # a generator would be consumed twice below
    prompt_ids = encode_prompts(tokenizer, prompts)
    prompt_texts = [p if isinstance(p, str) else tokenizer.decode(ids, skip_special_tokens=True) for p, ids in zip(prompts, prompt_ids)]
    ctx = context_length(model)
    longest = max(len(ids) for ids in prompt_ids)
    if ctx is not None:
        if longest > ctx:
            i = max(range(len(prompt_ids)), key=lambda j: len(prompt_ids[j]))
            raise ValueError(f"prompts[{i}] has {longest} tokens, longer than the model's context of {ctx} positions")
        if longest + max_new_tokens > ctx:
            raise ValueError(
                f"the longest prompt ({longest} tokens) plus max_new_tokens={max_new_tokens} exceeds the model's "
                f"context of {ctx} positions; use max_new_tokens <= {ctx - longest} or shorter prompts"
            )

    rows = [ids for ids in prompt_ids for _ in range(num_samples)]
    texts = [t for t in prompt_texts for _ in range(num_samples)]
    ids, mask = left_pad(rows, pad, device)
    B, P = ids.shape
    eos = tokenizer.eos_token_id if stop_at_eos else None

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            finished = torch.zeros(B, dtype=torch.bool, device=device)
            new_logprobs, past, attends = [], None, True
            cache_name = cache_keyword(model) if use_cache else None
            for _ in range(max_new_tokens):
                positions = position_ids_from_mask(mask)
                if use_cache and past is not None:
                    # Attention needs the mask of the whole row; a state-space model none (see above).
                    step_mask = {"attention_mask": mask} if attends else {}
                    out = model(
                        input_ids=ids[:, -1:],
                        position_ids=positions[:, -1:],
                        use_cache=True,
                        **step_mask,
                        **{cache_name: past},
                    )
                else:
                    out = _prefill(model, ids, mask, positions, use_cache, num_samples, cache_name)
                if use_cache:
                    if past is None and max_new_tokens > 1:  # room for the rest: no step copies the past
                        _reserve(out[cache_name], max_new_tokens - 1)
                    past = out[cache_name]
                    attends = not _recurrent_only(past)
                token, logprob = _sample_next(out.logits[:, -1, :], temperature, top_k, generator)
                # Rows that already stopped get padding, invisible to attention.
                token = torch.where(finished, torch.full_like(token, pad), token)
                logprob = torch.where(finished, torch.zeros_like(logprob), logprob)
                ids = torch.cat([ids, token[:, None]], dim=1)
                mask = torch.cat([mask, (~finished).long()[:, None]], dim=1)
                new_logprobs.append(logprob)
                if eos is not None:
                    finished = finished | (token == eos)
                    if bool(finished.all()):
                        break
    finally:
        model.train(was_training)

    completion_mask = mask.clone()
    completion_mask[:, :P] = 0
    logprobs = torch.zeros(ids.shape, dtype=new_logprobs[0].dtype, device=device)
    logprobs[:, P:] = torch.stack(new_logprobs, dim=1)
    completions = decode_completions(
        tokenizer, rows, [row[m.bool()].tolist() for row, m in zip(ids[:, P:].cpu(), completion_mask[:, P:].cpu())]
    )
    return Rollout(
        input_ids=ids,
        attention_mask=mask,
        completion_mask=completion_mask,
        prompt_length=P,
        prompts=texts,
        completions=completions,
        token_logprobs=logprobs,
        num_samples=num_samples,
    )
