"""What every synthetic task of the book shares: the alphabet, the length budget, seeded random streams.

Every text a task writes (prompts and completions) uses only :data:`ALPHABET`, the characters of the
character-level tokenizer of ``rlhf_edu.lm``, and fits the budget :data:`MAX_PROMPT_CHARS` +
:data:`MAX_COMPLETION_CHARS`, so a tiny model with a context of 128 characters sees prompt and completion
whole.

Randomness. A task built with ``seed=s`` owns one random stream per (method, split): ``task.prompts(8)``
called twice gives two different batches (what a training loop wants), and the sequence of batches is the
same for every task built with the same seed. Calling one method never moves the stream of another, and
the ``"test"`` streams are seeded apart from the ``"train"`` ones. Passing ``seed=k`` to a method instead
gives a one-off draw that depends only on (task seed, method, split, k): the way to get a fixed evaluation
set.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.validation import check_choice, check_integer

__all__ = ["ALPHABET", "MAX_PROMPT_CHARS", "MAX_COMPLETION_CHARS", "SPLITS", "in_alphabet"]

#: The characters every task text is made of (the character-level tokenizer's alphabet).
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'+-*=:;()<>/"
#: Longest prompt a task writes, in characters.
MAX_PROMPT_CHARS = 24
#: Longest completion a task writes (SFT data, preference data), in characters.
MAX_COMPLETION_CHARS = 40
#: The two disjoint splits of every task.
SPLITS = ("train", "test")

_ALPHABET_SET = frozenset(ALPHABET)


def in_alphabet(text: str) -> bool:
    """True when every character of ``text`` is in :data:`ALPHABET`.

    >>> in_alphabet("review: the film was great."), in_alphabet("Great!")
    (True, False)
    """
    return set(text) <= _ALPHABET_SET


def check_n(n, name: str = "n") -> int:
    """``n`` as an int >= 1 (how many examples to draw), else a clear error naming it."""
    return check_integer(name, n, minimum=1)


def check_split(split) -> str:
    check_choice("split", split, SPLITS)
    return split


def check_texts(name: str, texts) -> list:
    """``texts`` as a list of str; a bare string (a classic slip) or non-strings raise ``TypeError``."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, got a single string; wrap it: [{texts!r}]")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(t).__name__}")
    return texts


def check_prompts_match(completions: list, prompts, *, required: bool) -> list | None:
    """Validate ``prompts`` (a list of str as long as ``completions``; may be None unless ``required``)."""
    if prompts is None:
        if required:
            raise ValueError("prompts is required: the reward of a completion depends on its prompt")
        return None
    prompts = check_texts("prompts", prompts)
    if len(prompts) != len(completions):
        raise ValueError(f"prompts ({len(prompts)}) and completions ({len(completions)}) differ in length")
    return prompts


class Streams:
    """Independent, reproducible ``np.random.Generator`` per (stream name, split) of one task seed."""

    def __init__(self, seed: int, names: tuple):
        self.seed = check_integer("seed", seed, minimum=0)
        self._codes = {name: i for i, name in enumerate(names)}
        self._live = {}

    def _key(self, name: str, split: str) -> tuple:
        return (self._codes[name], SPLITS.index(split))

    def get(self, name: str, split: str, seed=None) -> np.random.Generator:
        """The live stream of (name, split), or with ``seed`` a fresh one-off generator."""
        key = self._key(name, split)
        if seed is not None:
            seed = check_integer("seed", seed, minimum=0)
            return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key + (1, seed)))
        if key not in self._live:
            self._live[key] = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))
        return self._live[key]
