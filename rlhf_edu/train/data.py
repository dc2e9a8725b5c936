"""Reading training examples and cutting them into minibatches, once for every trainer.

Tokenizing and padding is ``rlhf_edu.lm.prompt_completion_batch`` (the layout ``generate`` returns); this
module only reads the record forms users bring and checks them against the model's context.
"""

from __future__ import annotations

from typing import Iterable

import torch

from rlhf_edu.lm import context_length

__all__ = ["prompt_completion_pairs", "check_fits_context", "minibatches", "epoch_minibatches", "steps_per_run"]


def prompt_completion_pairs(examples, prompt_key="prompt", completion_key="completion"):
    """``(prompts, completions)`` from records ``{"prompt", "completion"}`` or ``(prompt, completion)`` tuples.

    >>> prompt_completion_pairs([{"prompt": "1+1=", "completion": "2."}])
    (['1+1='], ['2.'])
    """
    examples = list(examples)
    if not examples:
        raise ValueError("examples is empty: nothing to train on")
    if isinstance(examples[0], dict):
        missing = {prompt_key, completion_key} - set(examples[0])
        if missing:
            raise ValueError(f"examples records lack the keys {sorted(missing)}")
        return [e[prompt_key] for e in examples], [e[completion_key] for e in examples]
    return [e[0] for e in examples], [e[1] for e in examples]


def check_fits_context(model, input_ids: torch.Tensor, name: str = "examples", extra: int = 0) -> None:
    """Raise ``ValueError`` when a batch (plus ``extra`` tokens to generate) exceeds the model's context."""
    limit = context_length(model)
    width = input_ids.shape[-1] + extra
    if limit is not None and width > limit:
        raise ValueError(
            f"{name} need {width} positions ({input_ids.shape[-1]} tokens + {extra} to generate) but the "
            f"model's context is {limit}: shorten them or build the model with a larger max_length"
        )


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


def epoch_minibatches(n: int, batch_size: int, epochs: int, seed: int) -> Iterable[tuple[int, torch.Tensor]]:
    """``(epoch, indices)`` for ``epochs`` passes over ``range(n)``, reshuffled each pass from ``seed``.

    >>> batches = list(epoch_minibatches(3, 2, 2, seed=0))
    >>> [(e, len(b)) for e, b in batches]
    [(0, 2), (0, 1), (1, 2), (1, 1)]
    >>> [sorted(torch.cat([b for e, b in batches if e == epoch]).tolist()) for epoch in (0, 1)]   # each pass: all
    [[0, 1, 2], [0, 1, 2]]
    """
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        for idx in minibatches(n, batch_size, generator):
            yield epoch, idx


def steps_per_run(n: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of ``epochs`` passes over ``n`` examples in minibatches of ``batch_size``."""
    return epochs * ((n + batch_size - 1) // batch_size)
