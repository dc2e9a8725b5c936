r"""What the offline preference trainers share: reading records, one concatenated batch, sequence log-probs.

The reward model (chapter 1) and DPO, IPO, SLiC, GPO, KTO, SimPO and ORPO (chapter 6) all train on given
completions rather than sampled ones. They read their data the same way and score it the same way:

- **records**: pairs ``{"prompt", "chosen", "rejected"}`` (or ``(prompt, chosen, rejected)`` tuples),
  K-wise rankings ``{"prompt", "completions"}`` (best first), or KTO's unpaired
  ``{"prompt", "completion", "label"}``; ``preference_triples``, ``ranking_records`` and
  ``binary_feedback_records`` check them and return plain lists;
- **one concatenated batch** (the TRL trick): the chosen and the rejected completions of N pairs are
  tokenized once into ONE ``TokenBatch`` of 2N rows, chosen in rows ``0..N-1`` and rejected in rows
  ``N..2N-1`` (``encode_pairs``), so a minibatch of pairs is a single forward pass through the model
  (``pair_rows`` gives its rows, ``take_rows`` cuts them out without the columns that are padding in all
  of them);
- **rows by length**: a minibatch of pairs is padded to its longest row (a third of its tokens are padding
  on the sentiment task); ``length_groups`` sorts the rows by length and moves each row's tokens to its
  left edge, so each forward pass is only as wide as the longest row of its group;
- **sequence log-probs**: :math:`\log\pi(y \mid x)` summed (or averaged) over the completion tokens with
  ``rlhf_edu.lm.sequence_logprobs``; ``chosen_rejected_logps`` splits the 2B results of one pass back
  into chosen and rejected, ``frozen_logps`` scores a whole dataset once under a frozen model without
  gradient (the reference log-probs of DPO and KTO, computed up front).
"""

from __future__ import annotations

import numpy as np
import torch

from rlhf_edu.lm import TokenBatch, prompt_completion_batch, sequence_logprobs
from rlhf_edu.train.data import _as_list, _text, check_fits_context
from rlhf_edu.validation import check_integer

__all__ = [
    "preference_triples",
    "ranking_records",
    "binary_feedback_records",
    "encode_pairs",
    "pair_rows",
    "take_rows",
    "length_groups",
    "chosen_rejected_logps",
    "frozen_logps",
    "per_token_nll",
]


def preference_triples(pairs, name="pairs"):
    """``(prompts, chosen, rejected)`` lists from pair records, checked.

    A record is a dict with the keys ``"prompt"``, ``"chosen"``, ``"rejected"`` (other keys, e.g. the
    sentiment task's ``gold_chosen``, are ignored) or a ``(prompt, chosen, rejected)`` tuple. An empty
    list, a missing key or a non-string raises an error naming ``name``.

    >>> preference_triples([{"prompt": "p:", "chosen": " good.", "rejected": " bad."}, ("q:", " yes.", " no.")])
    (['p:', 'q:'], [' good.', ' yes.'], [' bad.', ' no.'])
    """
    records = _as_list(name, pairs)
    prompts, chosen, rejected = [], [], []
    for i, r in enumerate(records):
        if isinstance(r, dict):
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in r]
            if missing:
                raise ValueError(f"{name}[{i}] lacks the key(s) {missing}; a pair is "
                                 "{'prompt', 'chosen', 'rejected'}")
            p, c, j = r["prompt"], r["chosen"], r["rejected"]
        elif isinstance(r, (tuple, list)) and len(r) == 3:
            p, c, j = r
        else:
            raise TypeError(f"{name}[{i}] must be a dict {{'prompt', 'chosen', 'rejected'}} or a 3-tuple, "
                            f"got {r!r:.60}")
        prompts.append(_text(f"{name}[{i}] prompt", p))
        chosen.append(_text(f"{name}[{i}] chosen", c))
        rejected.append(_text(f"{name}[{i}] rejected", j))
    return prompts, chosen, rejected


def ranking_records(rankings, name="rankings"):
    """``(prompts, completions)`` from K-wise ranking records; ``completions[i]`` lists K texts BEST FIRST.

    A record is ``{"prompt", "completions"}`` (the sentiment task's ``k_wise_rankings``) or a
    ``(prompt, [best, ..., worst])`` tuple. Every ranking must have the same K >= 2 and distinct
    completions.

    >>> ranking_records([{"prompt": "p:", "completions": [" a.", " b.", " c."]}])
    (['p:'], [[' a.', ' b.', ' c.']])
    """
    records = _as_list(name, rankings)
    prompts, completions = [], []
    for i, r in enumerate(records):
        if isinstance(r, dict):
            if "prompt" not in r or "completions" not in r:
                raise ValueError(f"{name}[{i}] must have the keys 'prompt' and 'completions' (best first)")
            p, cs = r["prompt"], r["completions"]
        elif isinstance(r, (tuple, list)) and len(r) == 2:
            p, cs = r
        else:
            raise TypeError(f"{name}[{i}] must be a dict {{'prompt', 'completions'}} or a (prompt, completions) tuple")
        if isinstance(cs, str) or not isinstance(cs, (list, tuple)):
            raise TypeError(f"{name}[{i}] completions must be a list of K completions, best first")
        cs = [_text(f"{name}[{i}] completions[{k}]", c) for k, c in enumerate(cs)]
        if len(cs) < 2:
            raise ValueError(f"{name}[{i}] ranks {len(cs)} completion(s): a ranking needs K >= 2")
        if len(cs) != len(completions[0] if completions else cs):
            raise ValueError(f"{name}[{i}] ranks {len(cs)} completions but {name}[0] ranks {len(completions[0])}: "
                             "every ranking must have the same K")
        if len({tuple(c) if isinstance(c, list) else c for c in cs}) != len(cs):
            raise ValueError(f"{name}[{i}] repeats a completion: a ranking lists K distinct completions")
        prompts.append(_text(f"{name}[{i}] prompt", p))
        completions.append(cs)
    return prompts, completions


def binary_feedback_records(examples, name="examples"):
    """``(prompts, completions, labels)`` from KTO's unpaired records; ``labels`` a bool array.

    A record is ``{"prompt", "completion", "label"}`` (``label`` True for a desirable completion; the
    sentiment task's ``kto_examples``) or a ``(prompt, completion, label)`` tuple.

    >>> binary_feedback_records([{"prompt": "p:", "completion": " good.", "label": True}, ("p:", " bad.", 0)])
    (['p:', 'p:'], [' good.', ' bad.'], array([ True, False]))
    """
    records = _as_list(name, examples)
    prompts, completions, labels = [], [], []
    for i, r in enumerate(records):
        if isinstance(r, dict):
            missing = [k for k in ("prompt", "completion", "label") if k not in r]
            if missing:
                raise ValueError(f"{name}[{i}] lacks the key(s) {missing}; an example is "
                                 "{'prompt', 'completion', 'label'}")
            p, c, lab = r["prompt"], r["completion"], r["label"]
        elif isinstance(r, (tuple, list)) and len(r) == 3:
            p, c, lab = r
        else:
            raise TypeError(f"{name}[{i}] must be a dict {{'prompt', 'completion', 'label'}} or a 3-tuple")
        if isinstance(lab, (bool, np.bool_)) or lab in (0, 1):
            labels.append(bool(lab))
        else:
            raise ValueError(f"{name}[{i}] label must be True/False (or 1/0), got {lab!r}")
        prompts.append(_text(f"{name}[{i}] prompt", p))
        completions.append(_text(f"{name}[{i}] completion", c))
    return prompts, completions, np.array(labels, dtype=bool)


def encode_pairs(tokenizer, prompts, chosen, rejected, model=None, name="pairs"):
    """ONE ``TokenBatch`` of ``2N`` rows: the N chosen completions, then the N rejected ones.

    Row ``i`` is ``prompts[i] + chosen[i]`` and row ``N + i`` is ``prompts[i] + rejected[i]`` (``<bos>``
    before the prompt, ``<eos>`` after each completion; the layout of ``prompt_completion_batch``). With
    ``model`` given, a batch longer than its context raises ``ValueError`` naming ``name``.

    >>> from rlhf_edu.lm import char_tokenizer
    >>> b = encode_pairs(char_tokenizer(), ["p"], [" ok."], [" no"])
    >>> b.input_ids.shape, b.completion_mask.sum(1).tolist()
    (torch.Size([2, 7]), [5, 4])
    """
    if not (len(prompts) == len(chosen) == len(rejected)):
        raise ValueError(f"prompts ({len(prompts)}), chosen ({len(chosen)}) and rejected ({len(rejected)}) "
                         "must have one length")
    batch = prompt_completion_batch(tokenizer, list(prompts) * 2, list(chosen) + list(rejected))
    if model is not None:
        check_fits_context(model, batch.input_ids, name=name)
    return batch


def pair_rows(idx, n_pairs):
    """Rows of the concatenated batch that hold the pairs ``idx``: ``[idx, idx + n_pairs]`` (chosen first).

    >>> pair_rows(torch.tensor([3, 0]), 5)
    tensor([3, 0, 8, 5])
    """
    idx = torch.as_tensor(idx, dtype=torch.long)
    return torch.cat([idx, idx + n_pairs])


def take_rows(batch, rows, device=None):
    """The rows ``rows`` of ``batch`` (a ``TokenBatch``), without the columns that are padding in all of them.

    A dataset padded to its longest example wastes compute on a minibatch of short ones; dropping the
    all-padding columns on the left (prompt side) and right (completion side) changes no log-prob, since
    position ids are computed from the attention mask. Returned on ``device``.

    >>> from rlhf_edu.lm import char_tokenizer, prompt_completion_batch
    >>> b = prompt_completion_batch(char_tokenizer(), ["p", "long prompt"], [" a.", " a much longer answer."])
    >>> b.input_ids.shape, take_rows(b, torch.tensor([0])).input_ids.shape
    (torch.Size([2, 35]), torch.Size([1, 6]))
    """
    rows = torch.as_tensor(rows, dtype=torch.long)
    mask = batch.attention_mask[rows]
    real = mask.any(dim=0).nonzero().flatten()
    first, last = int(real[0]), int(real[-1]) + 1
    out = TokenBatch(
        input_ids=batch.input_ids[rows, first:last],
        attention_mask=mask[:, first:last],
        completion_mask=batch.completion_mask[rows, first:last],
        prompt_length=max(batch.prompt_length - first, 0),
    )
    return out if device is None else out.to(device)


def length_groups(batch, groups=None, rows_per_group=None):
    """The rows of ``batch`` (a ``TokenBatch``) in groups of similar length, each as narrow as it can be.

    Returns ``(order, parts)``: ``order`` holds every row index, longest row first, and ``parts`` lists
    ``(input_ids, attention_mask, completion_mask)`` for consecutive slices of ``order`` (``groups`` slices
    of near-equal size, or slices of ``rows_per_group`` rows). In a part each row's tokens start at
    column 0 (the left padding of its prompt moves to the right end) and the part is as wide as its
    longest row. Position ids count real tokens (``rlhf_edu.lm.position_ids_from_mask``) and a causal LM
    reads no padding, so a row's log-probs are those of the batch layout, up to float rounding, at a
    fraction of the padding. Rows whose real tokens are not contiguous are kept in place (cut only to
    the columns that are real in some row of the part).

    >>> from rlhf_edu.lm import char_tokenizer, prompt_completion_batch
    >>> b = prompt_completion_batch(char_tokenizer(), ["p", "a long prompt"], [" a.", " b"])
    >>> order, parts = length_groups(b, groups=2)
    >>> b.input_ids.shape, order.tolist(), [tuple(ids.shape) for ids, _, _ in parts]
    (torch.Size([2, 18]), [1, 0], [(1, 17), (1, 6)])
    """
    mask = batch.attention_mask
    rows, width = mask.shape
    lengths = mask.sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    slices = order.split(rows_per_group) if rows_per_group else order.tensor_split(min(groups or 1, rows))
    columns = torch.arange(width, device=mask.device)
    lead = (mask.cumsum(dim=1) == 0).sum(dim=1)  # left padding of each row
    contiguous = bool(((mask != 0) == ((columns >= lead[:, None]) & (columns < (lead + lengths)[:, None]))).all())
    parts = []
    for part in slices:
        if not contiguous:
            cut = take_rows(batch, part.cpu(), mask.device)
            parts.append((cut.input_ids, cut.attention_mask, cut.completion_mask))
            continue
        n = max(int(lengths[part].max()), 1)
        cols = (lead[part, None] + columns[:n]).clamp(max=width - 1)
        real = (columns[:n] < lengths[part, None]).to(mask.dtype)
        parts.append((batch.input_ids[part].gather(1, cols), mask[part].gather(1, cols) * real,
                      batch.completion_mask[part].gather(1, cols) * real.to(batch.completion_mask.dtype)))
    return order, parts


def chosen_rejected_logps(model, batch, reduction="sum", groups=None):
    r"""The forward pass over a concatenated batch (chosen rows first); returns ``(chosen, rejected)`` ``(B,)``.

    Each is :math:`\log\pi(y \mid x)` summed (``reduction="sum"``) or averaged (``"mean"``) over the
    completion tokens (``rlhf_edu.lm.sequence_logprobs``). Gradients flow to the model.

    ``groups``: how many passes of rows of similar length (``length_groups``): the same log-probs, up to
    float rounding, with less padding to compute. Default: on the CPU, where the arithmetic is the cost,
    up to 4 for a batch of 32 rows or more (about 30% fewer tokens); on a GPU one pass of the padded batch,
    since there a small model's pass costs its kernel launches, not its tokens (on an H200, with grouped
    passes, a DPO step's forward and backward passes took 2-4x as long as TRL's one padded pass,
    ``benchmarks/trl_comparison.py --device cuda``; the one-pass default has not been timed there yet).
    """
    if groups is None:
        groups = min(4, max(1, len(batch) // 16)) if batch.input_ids.device.type == "cpu" else 1
    check_integer("groups", groups, minimum=1)
    if groups == 1:
        logps = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask, reduction)
    else:
        order, parts = length_groups(batch, groups=groups)
        logps = torch.cat([sequence_logprobs(model, ids, mask, completion, reduction) for ids, mask, completion in parts])
        logps = logps[torch.argsort(order)]
    half = logps.shape[0] // 2
    return logps[:half], logps[half:]


def per_token_nll(logps, completion_mask, reduction="sum"):
    r"""``(B,)`` negative log-likelihood per completion token, :math:`-\frac{1}{|y|}\log\pi(y\mid x)`, from
    sequence log-probs ``logps`` of the given ``reduction`` and the rows' ``completion_mask``.

    The SFT anchor that DPO, KTO and SimPO add to their loss (``sft_weight``; RPO, Pang et al. 2024).

    >>> per_token_nll(torch.tensor([-6.0]), torch.tensor([[0, 1, 1, 1]]))
    tensor([2.])
    """
    if reduction == "mean":
        return -logps
    return -(logps / completion_mask.sum(dim=1).to(logps.dtype))


@torch.no_grad()
def frozen_logps(model, batch, reduction="sum", batch_size=64, device=None):
    """``(rows,)`` sequence log-probs of every row of ``batch`` under ``model``, without gradient, in chunks.

    Used once before training for the reference model's log-probs (DPO, KTO): the reference never
    changes, so scoring the dataset again at every step would double the cost for nothing. The rows go
    through the model sorted by length, ``batch_size`` at a time (``length_groups``), so a chunk holds
    little padding. The model's train/eval mode is restored afterwards.
    """
    check_integer("batch_size", batch_size, minimum=1)
    was_training = model.training
    model.eval()
    order, parts = length_groups(batch, rows_per_group=batch_size)
    out = [sequence_logprobs(model, ids.to(device), mask.to(device), completion.to(device), reduction)
           for ids, mask, completion in parts]
    model.train(was_training)
    return torch.cat(out)[torch.argsort(order).to(out[0].device)]
