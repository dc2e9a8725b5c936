"""The prompt side of the online trainers (GRPO, RLOO, ReST, best-of-N): check a prompt set, draw batches.

Online methods sample their own completions, so what the user brings is only a list of prompts. Before the
first (slow) rollout, ``check_prompts`` makes sure they can be sampled from: a non-empty list, a tokenizer
with a pad token, and every prompt plus ``max_new_tokens`` inside the model's context. ``draw_prompts``
picks a training batch from a seeded generator, so a run is the same twice.
"""

from __future__ import annotations

import torch

from rlhf_edu.lm import encode_prompts, left_pad
from rlhf_edu.train.data import check_fits_context
from rlhf_edu.validation import check_integer

__all__ = ["check_prompts", "draw_prompts"]


def check_prompts(model, tokenizer, prompts, max_new_tokens: int, name: str = "prompts") -> list:
    """``prompts`` as a list, after checking that ``model`` can sample ``max_new_tokens`` after each.

    Raises ``ValueError`` (naming ``name``, ``tokenizer`` or ``max_new_tokens``) for an empty prompt list, a
    tokenizer without a pad token, or a prompt that does not fit the context with ``max_new_tokens`` more
    tokens; ``TypeError`` for a bare string (a classic slip: ``"review:"`` is a list of 7 characters).

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> check_prompts(model, tok, ("1+1=", "2+2="), max_new_tokens=4)
    ['1+1=', '2+2=']
    """
    max_new_tokens = check_integer("max_new_tokens", max_new_tokens, minimum=1)
    if isinstance(prompts, str):
        raise TypeError(f"{name} must be a list of prompts, got a single string; wrap it: [{prompts!r}]")
    try:
        prompts = list(prompts)
    except TypeError:
        raise TypeError(f"{name} must be a list of prompts, got {type(prompts).__name__}") from None
    if not prompts:
        raise ValueError(f"{name} is empty: give at least one prompt to sample from")
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; set one first, e.g. tokenizer.pad_token = tokenizer.eos_token")
    ids, _ = left_pad(encode_prompts(tokenizer, prompts), tokenizer.pad_token_id)
    check_fits_context(model, ids, name=name, extra=max_new_tokens)
    return prompts


def draw_prompts(prompts, n: int, generator: torch.Generator) -> list:
    """``n`` prompts drawn uniformly with replacement from ``prompts`` with ``generator`` (a CPU generator).

    >>> drawn = draw_prompts(["a", "b", "c"], 4, torch.Generator().manual_seed(0))
    >>> len(drawn), set(drawn) <= {"a", "b", "c"}
    (4, True)
    >>> drawn == draw_prompts(["a", "b", "c"], 4, torch.Generator().manual_seed(0))   # same seed, same draws
    True
    """
    n = check_integer("n", n, minimum=1)
    idx = torch.randint(len(prompts), (n,), generator=generator)
    return [prompts[i] for i in idx.tolist()]
