"""Reading training examples and cutting them into minibatches, once for every trainer.

Tokenizing and padding is ``rlhf_edu.lm.prompt_completion_batch`` (the layout ``generate`` returns); this
module only reads the record forms users bring and checks them against the model's context.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import torch

from rlhf_edu.lm import context_length
from rlhf_edu.validation import check_integer

__all__ = ["prompt_completion_pairs", "check_fits_context", "minibatches", "epoch_minibatches", "steps_per_run"]


def _as_list(name, records):
    if isinstance(records, (str, dict)):
        raise TypeError(f"{name} must be a list of records, got a single {type(records).__name__}; wrap it in [...]")
    try:
        records = list(records)
    except TypeError:
        raise TypeError(f"{name} must be a list of records, got {type(records).__name__}") from None
    if not records:
        raise ValueError(f"{name} is empty: nothing to train on")
    return records


def _text(name, value):
    # A completion may also be given as token ids (prompt_completion_batch accepts both).
    if isinstance(value, str) or isinstance(value, (list, tuple)):
        return value
    raise TypeError(f"{name} must be a string (or a list of token ids), got {type(value).__name__}")


def prompt_completion_pairs(examples, prompt_key="prompt", completion_key="completion", name="examples"):
    """``(prompts, completions)`` from records ``{"prompt", "completion"}`` or ``(prompt, completion)`` tuples.

    Every record is checked: an empty list, a record without both keys, a tuple that is not a pair, or a
    field that is not a string (or a list of token ids) raises ``ValueError`` / ``TypeError`` naming
    ``name[i]``.

    >>> prompt_completion_pairs([{"prompt": "1+1=", "completion": "2."}])
    (['1+1='], ['2.'])
    >>> prompt_completion_pairs([("1+1=", "2."), {"prompt": "2+2=", "response": "4."}])
    Traceback (most recent call last):
    ...
    ValueError: examples[1] lacks the key(s) ['completion']; a record is {'prompt', 'completion'}
    """
    records = _as_list(name, examples)
    prompts, completions = [], []
    for i, r in enumerate(records):
        if isinstance(r, dict):
            missing = [k for k in (prompt_key, completion_key) if k not in r]
            if missing:
                raise ValueError(f"{name}[{i}] lacks the key(s) {missing}; a record is "
                                 f"{{{prompt_key!r}, {completion_key!r}}}")
            p, c = r[prompt_key], r[completion_key]
        elif isinstance(r, (tuple, list)) and len(r) == 2:
            p, c = r
        else:
            raise TypeError(f"{name}[{i}] must be a dict {{{prompt_key!r}, {completion_key!r}}} or a "
                            f"(prompt, completion) pair, got {r!r:.60}")
        prompts.append(_text(f"{name}[{i}] {prompt_key}", p))
        completions.append(_text(f"{name}[{i}] {completion_key}", c))
    return prompts, completions


def check_fits_context(model, input_ids: torch.Tensor, name: str = "examples", extra: int = 0) -> None:
    """Raise ``ValueError`` when a batch (plus ``extra`` tokens to generate) exceeds the model's context."""
    limit = context_length(model)
    width = input_ids.shape[-1] + extra
    if limit is not None and width > limit:
        parts = f" ({input_ids.shape[-1]} tokens + {extra} to generate)" if extra else ""
        raise ValueError(f"{name} need {width} positions{parts} but the model's context is {limit}: "
                         "shorten them or build the model with a larger max_length")


def minibatches(n: int, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True) -> Iterable[torch.Tensor]:
    """Index tensors covering ``range(n)`` in minibatches, shuffled with ``generator`` when asked.

    >>> [b.tolist() for b in minibatches(5, 2, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def epoch_minibatches(n: int, batch_size: int, epochs: int, seed: int,
                      max_steps: int | None = None) -> Iterable[tuple[int, torch.Tensor]]:
    """``(epoch, indices)`` for ``epochs`` passes over ``range(n)``, reshuffled each pass from ``seed``.

    With ``max_steps``, exactly that many minibatches instead, over as many passes as they need (``epochs``
    is then ignored, as ``max_steps`` overrides ``num_train_epochs`` in transformers' ``TrainingArguments``);
    the passes are the same as without it, so ``max_steps`` of two whole passes is ``epochs=2``.

    >>> batches = list(epoch_minibatches(3, 2, 2, seed=0))
    >>> [(e, len(b)) for e, b in batches]
    [(0, 2), (0, 1), (1, 2), (1, 1)]
    >>> [sorted(torch.cat([b for e, b in batches if e == epoch]).tolist()) for epoch in (0, 1)]   # each pass: all
    [[0, 1, 2], [0, 1, 2]]
    >>> [(e, len(b)) for e, b in epoch_minibatches(3, 2, 1, seed=0, max_steps=3)]  # a pass and a half
    [(0, 2), (0, 1), (1, 2)]
    """
    if max_steps is not None:
        max_steps = check_integer("max_steps", max_steps, minimum=1)
    generator = torch.Generator().manual_seed(seed)
    taken = 0
    for epoch in range(epochs) if max_steps is None else itertools.count():
        for idx in minibatches(n, batch_size, generator):
            if max_steps is not None and taken >= max_steps:
                return
            taken += 1
            yield epoch, idx


def steps_per_run(n: int, batch_size: int, epochs: int, max_steps: int | None = None) -> int:
    """Optimiser steps of ``epochs`` passes over ``n`` examples in minibatches of ``batch_size``, or
    ``max_steps`` when given (see ``epoch_minibatches``)."""
    if max_steps is not None:
        max_steps = check_integer("max_steps", max_steps, minimum=1)
    return max_steps if max_steps is not None else epochs * ((n + batch_size - 1) // batch_size)
