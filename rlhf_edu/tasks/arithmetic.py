r"""The arithmetic task: a verifiable reward, no reward model (the GRPO / RL-from-verifiable-rewards chapter).

A prompt is a problem, ``"23+48="``; the expected completion is the answer followed by a period, ``"71."``.
Following DeepSeek-R1-Zero's rule-based rewards (the lecture notes: "accuracy rewards" and "format
rewards", DeepSeek-AI 2025), the reward has two checks that need no learned model:

- :func:`format_reward`: 1 when the completion is an integer and a period, nothing else (``"71."``);
- :func:`accuracy_reward`: 1 when the completion is well formatted AND its integer is the right answer;
- :func:`reward` = accuracy + ``format_weight`` * format (R1-Zero adds the two).

The answer is computed from the prompt text itself (:func:`solve`), so any string ``"a+b="`` can be
rewarded. Two-digit addition (the default) needs carries in about half the problems, which a tiny model
fine-tuned briefly gets right well under half the time: room for RL to improve.

>>> reward(["71.", "17.", "seventy"], ["23+48="] * 3)
array([1.1, 0.1, 0. ])
"""

from __future__ import annotations

import re

import numpy as np

from rlhf_edu.tasks.base import Streams, check_n, check_prompts_match, check_split, check_texts
from rlhf_edu.validation import check_in_range, check_integer, check_nonnegative

__all__ = ["solve", "format_reward", "accuracy_reward", "reward", "exact_match", "ArithmeticTask"]

OPS = ("+", "-", "*")
MAX_DIGITS = 3
#: A well-formatted answer: an integer (optionally negative) and a period, nothing else.
ANSWER_PATTERN = re.compile(r"-?[0-9]+\.")
PROMPT_PATTERN = re.compile(r"([0-9]+)([+\-*])([0-9]+)=")
# Fixed salt of the train/test hash: the split of a problem never depends on the seed or the settings.
_SPLIT_SALT = np.uint64(0x5EED0FA110CE)


def solve(prompt: str) -> int:
    """The exact answer of a prompt ``"<a><op><b>="`` with op in ``+ - *``.

    >>> solve("23+48="), solve("50-7="), solve("12*12=")
    (71, 43, 144)
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string like '23+48=', got {type(prompt).__name__}")
    m = PROMPT_PATTERN.fullmatch(prompt.strip())
    if m is None:
        raise ValueError(f"prompt must look like '23+48=' (digits, one of + - *, digits, '='), "
                         f"got {prompt!r}")
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return a + b if op == "+" else a - b if op == "-" else a * b


def _parse_answer(completion: str):
    """The integer of a well-formatted completion, else None."""
    text = completion.strip()
    return int(text[:-1]) if ANSWER_PATTERN.fullmatch(text) else None


def format_reward(completions) -> np.ndarray:
    r"""1.0 where the completion (surrounding spaces ignored) is an integer and a period, else 0.0.

    R1-Zero's format reward asks for ``<think>...</think>`` tags; our completions are too short for a
    thought, so the format is the answer's own shape: regex ``-?[0-9]+\.``.

    >>> format_reward(["71.", "17.", "seventy", "71", "71.5", " -3."])
    array([1., 1., 0., 0., 0., 1.])
    """
    completions = check_texts("completions", completions)
    return np.array([float(_parse_answer(c) is not None) for c in completions], dtype=np.float64)


def accuracy_reward(completions, prompts) -> np.ndarray:
    """1.0 where the completion is well formatted and its integer equals :func:`solve` (prompt), else 0.0.

    As in R1-Zero the answer must come in the required format to be checked: ``"71"`` without its
    period scores 0 (leading zeros are fine: ``"071."`` is 71).

    >>> accuracy_reward(["71.", "17.", "seventy", "071."], ["23+48="] * 4)
    array([1., 0., 0., 1.])
    """
    completions = check_texts("completions", completions)
    prompts = check_prompts_match(completions, prompts, required=True)
    answers = [_parse_answer(c) for c in completions]
    return np.array([float(x is not None and x == solve(p)) for x, p in zip(answers, prompts)],
                    dtype=np.float64)


def reward(completions, prompts, format_weight: float = 0.1) -> np.ndarray:
    r"""The verifiable reward :math:`r = r_{acc} + w\, r_{format}`, in [0, 1 + w].

    Right and well formatted: 1 + w; wrong but well formatted: w; anything else: 0. Used by the GRPO
    chapter as the reward function of the arithmetic task.

    >>> reward(["71.", "17.", "seventy"], ["23+48="] * 3, format_weight=0.5)
    array([1.5, 0.5, 0. ])
    """
    format_weight = check_nonnegative("format_weight", format_weight)
    return accuracy_reward(completions, prompts) + format_weight * format_reward(completions)


def exact_match(completions, prompts) -> np.ndarray:
    """Bool array: the completion (surrounding spaces ignored) is exactly the canonical answer ``f"{x}."``.

    The metric the book reports as "accuracy" (stricter than :func:`accuracy_reward` only on oddities
    such as leading zeros).

    >>> exact_match(["71.", "071.", "71"], ["23+48="] * 3)
    array([ True, False, False])
    """
    completions = check_texts("completions", completions)
    prompts = check_prompts_match(completions, prompts, required=True)
    return np.array([c.strip() == f"{solve(p)}." for c, p in zip(completions, prompts)], dtype=bool)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 hash (Steele et al. 2014) of uint64 values: a fixed, seed-free way to split problems."""
    z = x + np.uint64(0x9E3779B97F4A7C15)  # uint64 array arithmetic wraps around, as the hash wants
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class ArithmeticTask:
    """Problems ``"a<op>b="`` with their verifiable reward.

    Args:
        digits: operands have this many digits (1: 0..9, 2: 10..99, 3: 100..999). Default 2: two-digit
            addition, 8100 problems, carries in 45% of the units columns.
        ops: which operations, a string of ``"+"``, ``"-"``, ``"*"`` (e.g. ``"+-"``). Subtraction always
            puts the larger operand first (answers are never negative); ``"*"`` is much harder.
        test_fraction: share of problems held out. Whether a problem is a test problem is a fixed hash
            of (op, a, b), the same for every seed and every setting, so train and test never share a
            problem and "23+48=" is held out in every task or in none.
        seed: seeds every random stream (see ``rlhf_edu.tasks.base``).

    >>> task = ArithmeticTask(seed=0)
    >>> p, c = task.sft_corpus(1)[0]
    >>> solve(p) == int(c[:-1])
    True
    >>> set(task.all_prompts("train")) & set(task.all_prompts("test"))
    set()
    """

    name = "arithmetic"
    _STREAMS = ("prompts", "sft")

    def __init__(self, seed: int = 0, digits: int = 2, ops: str = "+", test_fraction: float = 0.2,
                 format_weight: float = 0.1):
        self.seed = check_integer("seed", seed, minimum=0)
        self.digits = check_integer("digits", digits, minimum=1)
        if self.digits > MAX_DIGITS:
            raise ValueError(f"digits must be <= {MAX_DIGITS}, got {digits}")
        if not isinstance(ops, str) or not ops or any(o not in OPS for o in ops) or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be a non-empty string of distinct characters from '+-*', got {ops!r}")
        self.ops = ops
        self.test_fraction = check_in_range("test_fraction", test_fraction, 0.0, 1.0,
                                            low_open=True, high_open=True)
        self.format_weight = check_nonnegative("format_weight", format_weight)
        self.low = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        self.high = 10**self.digits - 1
        self._streams = Streams(self.seed, self._STREAMS)

    def __repr__(self):
        return (f"ArithmeticTask(seed={self.seed}, digits={self.digits}, ops={self.ops!r}, "
                f"test_fraction={self.test_fraction})")

    # ----- the split ---------------------------------------------------------------------------------
    def _is_test(self, op_idx: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        key = (op_idx.astype(np.uint64) * np.uint64(10**6) + a.astype(np.uint64) * np.uint64(1000)
               + b.astype(np.uint64))
        u = (_splitmix64(key ^ _SPLIT_SALT) >> np.uint64(11)).astype(np.float64) / 2.0**53
        return u < self.test_fraction

    def _problems(self, split: str):
        """(op_idx, a, b) arrays of every problem of the split, in a fixed order."""
        vals = np.arange(self.low, self.high + 1)
        a_grid, b_grid = np.meshgrid(vals, vals, indexing="ij")
        ops, aa, bb = [], [], []
        for op in self.ops:
            keep = a_grid >= b_grid if op == "-" else np.ones_like(a_grid, dtype=bool)
            ops.append(np.full(int(keep.sum()), OPS.index(op)))
            aa.append(a_grid[keep])
            bb.append(b_grid[keep])
        op_idx, a, b = np.concatenate(ops), np.concatenate(aa), np.concatenate(bb)
        sel = self._is_test(op_idx, a, b) == (split == "test")
        return op_idx[sel], a[sel], b[sel]

    def num_problems(self, split: str = "train") -> int:
        """How many distinct problems the split holds."""
        return len(self._problems(check_split(split))[0])

    def all_prompts(self, split: str = "train") -> list:
        """Every problem of the split as a prompt, in a fixed order (a full evaluation set)."""
        op_idx, a, b = self._problems(check_split(split))
        return [f"{x}{OPS[o]}{y}=" for o, x, y in zip(op_idx.tolist(), a.tolist(), b.tolist())]

    # ----- sampling ----------------------------------------------------------------------------------
    def _draw(self, rng, n: int, split: str) -> list:
        op_codes = np.array([OPS.index(o) for o in self.ops])
        out = []
        for _ in range(1000):  # rejection on the split: ~1/(1 - test_fraction) draws per problem
            m = 2 * (n - len(out)) + 16
            op_idx = op_codes[rng.integers(len(op_codes), size=m)]
            a = rng.integers(self.low, self.high + 1, size=m)
            b = rng.integers(self.low, self.high + 1, size=m)
            swap = (op_idx == OPS.index("-")) & (a < b)
            a, b = np.where(swap, b, a), np.where(swap, a, b)
            keep = self._is_test(op_idx, a, b) == (split == "test")
            out.extend(f"{x}{OPS[o]}{y}=" for o, x, y in zip(op_idx[keep].tolist(), a[keep].tolist(),
                                                              b[keep].tolist()))
            if len(out) >= n:
                return out[:n]
        raise RuntimeError(f"the {split} split of {self!r} looks empty; raise digits or change test_fraction")

    def prompts(self, n: int, split: str = "train", seed=None) -> list:
        """``n`` problems of the split, drawn uniformly with replacement (op first, then operands)."""
        n, split = check_n(n), check_split(split)
        return self._draw(self._streams.get("prompts", split, seed), n, split)

    def sft_corpus(self, n: int, split: str = "train", seed=None) -> list:
        """``n`` (prompt, completion) pairs with the correct, well-formatted answer: ``("23+48=", "71.")``."""
        n, split = check_n(n), check_split(split)
        prompts = self._draw(self._streams.get("sft", split, seed), n, split)
        return [(p, f"{solve(p)}.") for p in prompts]

    # ----- rewards -----------------------------------------------------------------------------------
    def reward(self, completions, prompts) -> np.ndarray:
        """:func:`reward` with this task's ``format_weight``."""
        return reward(completions, prompts, format_weight=self.format_weight)

    def metrics(self, completions, prompts) -> dict:
        """Means over a batch, for training logs: ``accuracy``, ``exact_match``, ``format``, ``reward``."""
        completions = check_texts("completions", completions)
        if not completions:
            raise ValueError("completions is empty: no metric to average")
        acc = accuracy_reward(completions, prompts)
        fmt = format_reward(completions)
        return {"accuracy": float(acc.mean()), "exact_match": float(exact_match(completions, prompts).mean()),
                "format": float(fmt.mean()), "reward": float((acc + self.format_weight * fmt).mean())}
