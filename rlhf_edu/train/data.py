"""Turning text into training tensors, once for every trainer.

A training example is a prompt and a completion. Both are tokenized without special tokens; the prompt
gets the tokenizer's BOS token in front (as ``rlhf_edu.lm.generate`` does) and the completion the EOS token
behind, so what the policy is trained on is exactly what it samples. Rows are right-padded;
``rlhf_edu.lm.token_logprobs`` derives position ids from the attention mask, so padding never changes a
log-probability.

>>> batch = encode_examples(tok, ["12+3="], ["15."])            # doctest: +SKIP
>>> batch["completion_mask"][0].tolist()   # ones on "15." and EOS
[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

__all__ = ["encode_examples", "prompt_completion_pairs", "minibatches"]


def prompt_completion_pairs(examples, prompt_key="prompt", completion_key="completion"):
    """``(prompts, completions)`` from records ``{"prompt", "completion"}`` or from ``(prompt, completion)`` tuples."""
    examples = list(examples)
    if not examples:
        raise ValueError("examples is empty: nothing to train on")
    if isinstance(examples[0], dict):
        missing = {prompt_key, completion_key} - set(examples[0])
        if missing:
            raise ValueError(f"examples records lack the keys {sorted(missing)}")
        return [e[prompt_key] for e in examples], [e[completion_key] for e in examples]
    return [e[0] for e in examples], [e[1] for e in examples]


def _check_tokenizer(tokenizer) -> None:
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "tokenizer has no pad token; set one, e.g. `tokenizer.pad_token = tokenizer.eos_token`"
        )


def encode_examples(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_length: int | None = None,
    add_eos: bool = True,
    device=None,
) -> dict[str, torch.Tensor]:
    """Encode prompt/completion pairs as right-padded ``input_ids``, ``attention_mask``, ``completion_mask``.

    ``completion_mask`` is 1 on the completion's tokens (and its EOS), 0 on the prompt and padding. A pair
    longer than ``max_length`` (default: ``tokenizer.model_max_length``) raises ``ValueError``.
    """
    _check_tokenizer(tokenizer)
    if len(prompts) != len(completions):
        raise ValueError(f"prompts ({len(prompts)}) and completions ({len(completions)}) differ in length")
    if len(prompts) == 0:
        raise ValueError("prompts is empty")
    if max_length is None:
        max_length = tokenizer.model_max_length
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if (add_eos and tokenizer.eos_token_id is not None) else []
    rows, masks = [], []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        p_ids = bos + tokenizer(p, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"] + eos
        if len(p_ids) + len(c_ids) > max_length:
            raise ValueError(
                f"example {i} has {len(p_ids) + len(c_ids)} tokens, more than max_length={max_length}: "
                f"prompt {p!r:.40}, completion {c!r:.40}"
            )
        rows.append(p_ids + c_ids)
        masks.append([0] * len(p_ids) + [1] * len(c_ids))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
    attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    completion_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return batch


def minibatches(n: int, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True) -> Iterable[torch.Tensor]:
    """Index tensors covering ``range(n)`` in minibatches (shuffled with ``generator`` when asked)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
