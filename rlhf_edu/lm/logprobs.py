r"""Log-probabilities of tokens and of whole completions under a causal LM.

Every RLHF loss of the book starts here: PPO and GRPO need :math:`\log \pi_\theta(y_t \mid x, y_{<t})` per
token (chapters 4 and 5), DPO and its family need :math:`\log \pi_\theta(y \mid x) = \sum_t \log
\pi_\theta(y_t \mid x, y_{<t})` per sequence (chapter 6), the KL penalty needs both policies' token
log-probs (chapter 2).

Works with any Hugging Face causal LM; padding (left or right) is handled through the attention mask and
position ids, so a padded row gives the same numbers as the row alone.
"""

from __future__ import annotations

import torch

from rlhf_edu.lm.batching import position_ids_from_mask
from rlhf_edu.lm.generation import cache_keyword, last_logits_kwargs, rows_can_be_repeated
from rlhf_edu.validation import check_choice, check_finite, check_integer, check_positive

__all__ = ["REDUCTIONS", "token_logprobs", "sequence_logprobs", "token_entropy"]

REDUCTIONS = ("sum", "mean")


def _check_ids_and_mask(input_ids, attention_mask):
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty, shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        return torch.ones_like(input_ids)
    _check_01("attention_mask", attention_mask, input_ids)
    return attention_mask


def _check_01(name, mask, input_ids):
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(mask.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must contain only 0 and 1 (or booleans)")


def _logits_for_logprobs(logits, temperature):
    # bf16/fp16 logits lose the small differences that log-probs are made of: compute in float32.
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits


def token_entropy(logits):
    r"""Entropy of the softmax distribution in the last axis: :math:`H = \log\sum_v e^{z_v} - \sum_v p_v z_v`.

    With :math:`p = \mathrm{softmax}(z)`, :math:`H = -\sum_v p_v \log p_v`; written with ``logsumexp`` on
    the logits shifted by their max, so it stays finite and accurate for logits of any size (a token with
    probability 0 contributes 0). Shape ``(..., V)`` to
    ``(...)``. Used by the trainers' entropy bonus and diagnostics (chapters 4 and 5: a collapsing entropy
    is the first sign of mode collapse).

    >>> round(token_entropy(torch.zeros(4)).item(), 4)   # uniform over 4 tokens: log 4
    1.3863
    >>> round(token_entropy(torch.tensor([1e4, 0.0, -1e4])).item(), 6)
    0.0

    Logits of ``-inf`` (a masked vocabulary: top-k or top-p filtering, a disallowed token) are
    probability 0 and contribute 0; NaN or ``+inf`` logits raise ``ValueError``; a row of only ``-inf``
    has no distribution and raises too.

    >>> round(token_entropy(torch.tensor([0.0, 0.0, float("-inf")])).item(), 4)   # log 2
    0.6931
    >>> round(token_entropy(torch.tensor([5.0, float("-inf"), float("-inf")])).item(), 4)
    0.0
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a float tensor, got dtype {logits.dtype}")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have a non-empty last axis (the vocabulary), got shape {tuple(logits.shape)}")
    logits = _logits_for_logprobs(logits, 1.0)
    check_finite("logits", logits, allow_neg_inf=True)
    if bool(torch.isneginf(logits).all(dim=-1).any()):
        raise ValueError("logits has a row where every logit is -inf: no distribution")
    # H is unchanged by a shift; shifting by the max keeps both terms near 0, so they do not cancel
    # (logits all equal to -1e4 in float32 would otherwise lose three digits).
    z = logits - logits.max(dim=-1, keepdim=True).values.detach()
    # a -inf logit (top-k/top-p filtering, a disallowed token) has p = 0 and contributes 0 * z := 0,
    # not 0 * -inf = NaN; torch.where also keeps its gradient 0
    z_finite = torch.where(torch.isneginf(z), torch.zeros_like(z), z)
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z_finite).sum(-1)


def _shared_prompt_logits(model, input_ids, attention_mask, position_ids, prompt_length):
    """The ``(B, T - P + 1, V)`` logits of ``model`` at positions ``P - 1 .. T - 1`` (those that predict the
    columns after the prompt), each run of consecutive rows with the same first ``P = prompt_length``
    columns (ids and mask: the samples of one prompt) running those columns once; None when no two rows share
    them, the model's forward takes no cache (``cache_keyword``), no cache comes back (Hugging Face's
    gradient checkpointing turns ``use_cache`` off in train mode) or it cannot pick rows (``rows_can_be_repeated``).

    Pass 1 runs the distinct prompts with the cache on, the LM head on their last position only; the cache's
    rows are then picked for every row (``batch_select_indices``, differentiable: a prompt's gradient is the
    sum over its rows), and pass 2 runs the remaining columns of every row against it. Each position attends
    to the same keys as in one pass over the whole row, so the logits are the same up to float rounding."""
    P = prompt_length
    head_ids, head_mask = input_ids[:, :P], attention_mask[:, :P]
    same = (head_ids[1:] == head_ids[:-1]).all(dim=1) & (head_mask[1:] == head_mask[:-1]).all(dim=1)
    starts = torch.cat([same.new_ones(1), ~same])
    if bool(starts.all()):
        return None
    group = starts.cumsum(0) - 1  # row -> index of its prompt among the distinct ones
    first = starts.nonzero().squeeze(1)
    try:
        cache_name = cache_keyword(model)
    except TypeError:  # a forward without a KV cache
        return None
    head = model(input_ids=head_ids[first], attention_mask=head_mask[first], position_ids=position_ids[first, :P],
                 use_cache=True, **last_logits_kwargs(model, 1))
    cache = getattr(head, cache_name, None)  # None when the model ran without one (gradient checkpointing)
    if not rows_can_be_repeated(cache):
        return None
    cache.batch_select_indices(group)
    tail = model(input_ids=input_ids[:, P:].contiguous(), attention_mask=attention_mask,
                 position_ids=position_ids[:, P:].contiguous(), use_cache=True, **{cache_name: cache})
    return torch.cat([head.logits[:, -1:][group], tail.logits], dim=1)


def token_logprobs(model, input_ids, attention_mask=None, *, temperature=1.0, return_entropy=False,
                   prompt_length=None):
    r"""Per-token log-probabilities :math:`\log p(x_t \mid x_{<t})` of a batch under a causal LM.

    Returns a ``(B, T)`` float tensor whose entry ``[b, t]`` is :math:`\log p_\theta(x_{b,t} \mid
    x_{b,<t})` computed from the logits at position ``t - 1``:

    .. math:: \log p(x_t \mid x_{<t}) = z_{t-1}[x_t] - \log\sum_v e^{z_{t-1}[v]}

    (a ``gather`` and a ``logsumexp``: the full ``(B, T, V)`` log-softmax is never built). Entries with no
    prediction are 0: column 0, the first real token of each row (after left padding), and padding; with
    ``prompt_length=P`` the ``P`` prompt columns are 0 too (only the completion columns are scored).
    Position ids are ``cumsum(attention_mask) - 1`` clamped at 0, so left padding does not shift the
    positions (the classic padding bug). Gradients flow to the model (wrap in ``torch.no_grad()`` for a
    reference model). Half-precision logits are upcast to float32 first.

    Args:
        model: any Hugging Face causal LM (``model(...).logits`` of shape ``(B, T, V)``, or ``(B, n, V)``
            for the last ``n`` positions when its forward takes ``logits_to_keep``), or a wrapper of one
            with a ``module`` attribute (``DistributedDataParallel``).
        input_ids: ``(B, T)`` token ids.
        attention_mask: ``(B, T)`` 0/1 (default all ones).
        temperature: divide the logits by this first (match the sampling temperature of ``generate``).
        return_entropy: also return the ``(B, T)`` entropy of the distribution each token was predicted
            from (0 where the log-prob is 0).
        prompt_length: None (default: every column is scored), or the width ``P`` of a left-padded
            prompt block (``Rollout.prompt_length``), ``1 <= P < T``: only the columns from ``P`` on (the
            completions) are scored, the prompt's columns are 0, and the LM head runs on the positions that
            predict them (``logits_to_keep``, as in TRL; see ``last_logits_kwargs``). Consecutive rows whose
            first ``P`` columns are identical, ids and mask (the ``num_samples`` rows of a prompt in a
            ``Rollout``), run those columns once, with the cache, and then each row's remaining columns
            against it. The same numbers on the completion columns as one pass, up to float rounding
            (tested, values and gradients), with ``1 / G`` of the prompt's arithmetic for ``G`` samples per
            prompt: GRPO, RLOO and the rollouts' old and reference log-probs use it. A model whose forward
            takes no cache gets one pass over every row; so does one whose cache cannot pick rows (a
            Mamba-like layer; ``rows_can_be_repeated``) or that returns no cache (gradient checkpointing in
            train mode), after the shared pass. In train mode with dropout the rows of a prompt share one
            dropout draw over its columns (one pass draws one per row): each row's log-probs keep their
            distribution, but those rows are no longer independent. ``TypeError`` for a non-integer ``P``, ``ValueError`` outside ``1 <= P < T``.

    Used by PPO, GRPO and RLOO (chapters 4, 5), the KL penalty (chapter 2) and, summed, by DPO (chapter 6).

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> lp = token_logprobs(model, torch.tensor([[1, 31, 32]]), torch.tensor([[1, 1, 1]]))
    >>> lp.shape, lp[0, 0].item(), bool((lp[0, 1:] < 0).all())
    (torch.Size([1, 3]), 0.0, True)

    Two samples of one prompt (its 3 columns run once): the completions' log-probs of one pass, the prompt's 0:

    >>> ids = torch.tensor([[1, 31, 32, 33, 34], [1, 31, 32, 35, 36]])
    >>> shared, whole = token_logprobs(model, ids, prompt_length=3), token_logprobs(model, ids)
    >>> bool(torch.allclose(shared[:, 3:], whole[:, 3:], atol=1e-5)), bool((shared[:, :3] == 0).all())
    (True, True)
    """
    attention_mask = _check_ids_and_mask(input_ids, attention_mask)
    temperature = check_positive("temperature", temperature)
    position_ids = position_ids_from_mask(attention_mask)
    T = input_ids.shape[1]
    logits, start = None, 0  # logits[:, j] are those of position start + j and predict column start + j + 1
    if prompt_length is not None:
        prompt_length = check_integer("prompt_length", prompt_length, minimum=1)
        if prompt_length >= T:
            raise ValueError(f"prompt_length={prompt_length} must be below the row width {T}: "
                             "the completion columns follow the prompt's")
        start = prompt_length - 1  # the last prompt position predicts the first completion column
        logits = _shared_prompt_logits(model, input_ids, attention_mask, position_ids, prompt_length)
    if logits is None:  # one pass; with prompt_length the LM head runs on positions start .. T - 1 only
        keep = last_logits_kwargs(model, T - start) if start else {}
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False, **keep).logits[:, start - T:]
    logits = _logits_for_logprobs(logits[:, :-1, :], temperature)
    targets = input_ids[:, start + 1:].unsqueeze(-1)
    log_norm = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, targets).squeeze(-1) - log_norm
    # A prediction needs a real token to predict from and a real token to predict.
    valid = (attention_mask[:, start + 1:] != 0) & (attention_mask[:, start:-1] != 0)
    zeros = lp.new_zeros(lp.shape[0], start + 1)  # column 0 and the prompt's columns: not scored
    lp = torch.cat([zeros, torch.where(valid, lp, torch.zeros_like(lp))], dim=1)
    if not return_entropy:
        return lp
    entropy = token_entropy(logits)
    entropy = torch.cat([zeros, torch.where(valid, entropy, torch.zeros_like(entropy))], dim=1)
    return lp, entropy


def sequence_logprobs(model, input_ids, attention_mask, completion_mask, reduction="sum", *, temperature=1.0):
    r"""Log-probability of each completion: the sum (or mean) of ``token_logprobs`` over ``completion_mask``.

    .. math::

        \text{sum: } \log \pi(y \mid x) = \sum_t m_t \log \pi(x_t \mid x_{<t}), \qquad
        \text{mean: } \frac{1}{\sum_t m_t} \sum_t m_t \log \pi(x_t \mid x_{<t})

    ``reduction="sum"`` (default) is the log-probability of the sequence that DPO's derivation uses;
    ``"mean"`` is the length-normalised version (SimPO, and the RLHF Book's flag for it), which stops long
    completions from being penalised for their length. Which one a loss uses changes its optimum: the
    "sum vs mean" bug of chapter 6.

    Args:
        model, input_ids, attention_mask: as in ``token_logprobs``.
        completion_mask: ``(B, T)`` 0/1, 1 on the tokens to score (``generate`` and
            ``prompt_completion_batch`` return it). It may only mark real tokens that have a prediction
            (not column 0, padding, or a row's first real token).
        reduction: ``"sum"`` or ``"mean"``. ``"mean"`` needs at least one marked token per row (ValueError
            otherwise); with ``"sum"`` an empty row scores 0.

    Returns: ``(B,)`` float tensor. Used by DPO, IPO, SLiC, SimPO, ORPO and KTO (chapter 6) and ReST /
    best-of-N scoring (chapter 8).

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm, prompt_completion_batch
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> b = prompt_completion_batch(tok, ["1+1="], ["2"])
    >>> s = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask)
    >>> m = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction="mean")
    >>> torch.allclose(s, 2 * m)   # two completion tokens: "2" and <eos>
    True
    """
    check_choice("reduction", reduction, REDUCTIONS)
    attention_mask = _check_ids_and_mask(input_ids, attention_mask)
    _check_01("completion_mask", completion_mask, input_ids)
    cm = completion_mask != 0
    has_prediction = torch.zeros_like(cm)
    has_prediction[:, 1:] = (attention_mask[:, 1:] != 0) & (attention_mask[:, :-1] != 0)
    if bool((cm & ~has_prediction).any()):
        row = int((cm & ~has_prediction).any(dim=1).nonzero()[0, 0])
        raise ValueError(
            f"completion_mask marks a token with no prediction in row {row} (column 0, padding, or the first "
            "real token); only tokens after a real token can be scored"
        )
    counts = cm.sum(dim=1)
    if reduction == "mean" and bool((counts == 0).any()):
        row = int((counts == 0).nonzero()[0, 0])
        raise ValueError(f"completion_mask has a row with no ones (row {row}): reduction='mean' would divide by zero")
    lp = token_logprobs(model, input_ids, attention_mask, temperature=temperature)
    total = torch.where(cm, lp, torch.zeros_like(lp)).sum(dim=1)
    if reduction == "sum":
        return total
    return total / counts.to(total.dtype)
