r"""AI feedback in the spirit of Constitutional AI: preference labels from a judge that applies written principles.

Constitutional AI (Bai et al., 2022, "Constitutional AI: harmlessness from AI feedback") replaces the human
labels of the harmlessness comparisons by a model's: a feedback model (an LLM) is shown a prompt, two
responses and one principle of a written *constitution* ("Which of these responses is less harmful? ..."),
and the normalised probabilities it gives to "(A)" and "(B)" become the preference labels a preference model
(a reward model) is trained on, followed by RL as in RLHF: RL from AI feedback (RLAIF).

The book's judge, :class:`PrincipleJudge`, is the smallest model that reads principles: it parses each
principle text into one scoring rule (the forms are listed on the class), scores a completion with the sum of
the rules, and turns two scores into a preference probability :math:`\sigma((s_a - s_b)/T)`, as CAI turns the
feedback model's (A)/(B) probabilities into a soft label. It never sees the task's gold reward: it knows only
what its principles say. :func:`review_constitution` writes the first constitution of chapter 0 (praise words
and complaint words), which is silent about spelling, repetition and length, where the gold reward is not.

>>> judge = PrincipleJudge(review_constitution())
>>> judge.score([" great fun.", " dull.", " great great great.", " grreat."]).tolist()
[2.0, -1.0, 3.0, 0.0]
>>> round(float(judge.preference_prob([" great fun."], [" dull."])[0]), 4)
0.9526
"""

from __future__ import annotations

import re

import numpy as np

from rlhf_edu.tasks.base import check_texts
from rlhf_edu.tasks.sentiment import NEGATIVE_WORDS, POSITIVE_WORDS
from rlhf_edu.validation import check_integer, check_positive

__all__ = ["PrincipleJudge", "review_constitution", "JUDGE_RECORD_KEYS"]

#: The keys of a record from :meth:`PrincipleJudge.label_pairs`.
JUDGE_RECORD_KEYS = ("prompt", "chosen", "rejected", "chosen_first", "judge_prob", "tie")

_STRIP = ".,!?;:'()<>/"
_WORD_LIST = re.compile(r"(praise words|complaint words|only these words)\s*:\s*(.+)$")
_AT_MOST = re.compile(r"at most (\d+) words")
_WEIGHT = re.compile(r"weight (\d+(?:\.\d+)?)")


def review_constitution(n_words: int = 10) -> tuple:
    """The first constitution of chapter 0: two principles naming ``n_words`` praise and complaint words each.

    The words are the first ``n_words`` of the sentiment task's positive and negative lists (1 to 10).

    >>> review_constitution(2)
    ('Choose the review that praises more. Praise words: great, good.', 'Choose the review that complains less. Complaint words: bad, dull.')
    """
    n_words = check_integer("n_words", n_words, minimum=1)
    if n_words > len(POSITIVE_WORDS):
        raise ValueError(f"n_words must be at most {len(POSITIVE_WORDS)}, got {n_words}")
    return (
        "Choose the review that praises more. Praise words: " + ", ".join(POSITIVE_WORDS[:n_words]) + ".",
        "Choose the review that complains less. Complaint words: " + ", ".join(NEGATIVE_WORDS[:n_words]) + ".",
    )


def _words(text):
    return [w for w in (t.strip(_STRIP) for t in text.lower().split()) if w]


class PrincipleJudge:
    r"""A judge that scores completions by the rules its written principles state (a toy feedback model).

    Each principle is one string holding one of these rules (case-insensitive); the score of a completion
    is the sum of what the rules give it:

    - ``"... praise words: w1, w2, ..."``: +1 for every occurrence of a listed word;
    - ``"... complaint words: w1, w2, ..."``: -1 for every occurrence of a listed word;
    - ``"... count each word once ..."``: the two rules above count distinct words, not occurrences;
    - ``"... do not repeat ..."``: -1 for every repeated occurrence of a praise or complaint word;
    - ``"... only these words: w1, w2, ..."``: -1 for every word not in the list;
    - ``"... at most N words ..."``: -1 for every word beyond N;
    - ``"... end with a period ..."``: -1 when the completion does not end with ``"."``.

    A principle that says ``"weight w"`` (a number) multiplies what its rule gives by w; a word list runs to
    the end of its principle (put the weight before it). Words are split on spaces, lower-cased and stripped of
    punctuation. A principle that states none of
    these rules raises ``ValueError`` (a feedback model that ignored it silently would hide the mistake).
    Two completions compare by :math:`P(a \succ b) = \sigma((s_a - s_b) / T)` with ``temperature`` T.

    Args:
        principles: a list or tuple of principle strings (the constitution).
        temperature: T > 0 of the preference probability.

    >>> judge = PrincipleJudge(review_constitution() + ("Count each word once.", "End with a period."))
    >>> judge.score([" great great great.", " great fun", " fun."]).tolist()
    [1.0, 1.0, 1.0]
    """

    def __init__(self, principles, temperature: float = 1.0):
        principles = check_texts("principles", principles)
        if not principles:
            raise ValueError("principles is empty: a judge needs at least one principle")
        self.principles = tuple(principles)
        self.temperature = check_positive("temperature", temperature)
        self.praise, self.complaint, self.allowed = {}, {}, None
        self.distinct, self.max_words = False, None
        self.weights = dict(allowed=1.0, max_words=1.0, period=0.0, repeat=0.0)
        for i, text in enumerate(self.principles):
            if not self._read(text.lower().strip()):
                raise ValueError(f"principles[{i}] states no rule the judge knows: {text!r} (see PrincipleJudge)")

    def _read(self, text) -> bool:
        found = False
        match = _WEIGHT.search(text)
        weight = float(match.group(1)) if match else 1.0
        match = _WORD_LIST.search(text)
        if match:
            kind, rest = match.groups()
            words = [w for w in (t.strip(" .") for t in rest.split(",")) if w]
            if not words:
                raise ValueError(f"the principle {text!r} lists no word")
            if kind == "praise words":
                self.praise.update(dict.fromkeys(words, weight))
            elif kind == "complaint words":
                self.complaint.update(dict.fromkeys(words, weight))
            else:
                self.allowed = set(words) if self.allowed is None else self.allowed | set(words)
                self.weights["allowed"] = weight
            found = True
        if "count each word once" in text:
            self.distinct = found = True
        if "do not repeat" in text:
            self.weights["repeat"], found = weight, True
        match = _AT_MOST.search(text)
        if match:
            self.max_words, self.weights["max_words"], found = int(match.group(1)), weight, True
        if "end with a period" in text:
            self.weights["period"], found = weight, True
        return found

    def __repr__(self):
        return f"PrincipleJudge({len(self.principles)} principles, temperature={self.temperature})"

    def score(self, completions) -> np.ndarray:
        """One score per completion: the sum of what each principle's rule gives it (float array)."""
        completions = check_texts("completions", completions)
        out = np.zeros(len(completions))
        for i, text in enumerate(completions):
            words = _words(text)
            counted = set(words) if self.distinct else words
            s = sum(self.praise.get(w, 0.0) for w in counted) - sum(self.complaint.get(w, 0.0) for w in counted)
            polar = [w for w in words if w in self.praise or w in self.complaint]
            s -= self.weights["repeat"] * (len(polar) - len(set(polar)))
            if self.allowed is not None:
                s -= self.weights["allowed"] * sum(w not in self.allowed for w in words)
            if self.max_words is not None:
                s -= self.weights["max_words"] * max(0, len(words) - self.max_words)
            if not text.rstrip().endswith("."):
                s -= self.weights["period"]
            out[i] = s
        return out

    def preference_prob(self, completions_a, completions_b) -> np.ndarray:
        r""":math:`P(a \succ b) = \sigma((s_a - s_b) / T)` per pair (0.5 where the judge cannot tell them apart).

        Scores equal up to rounding count as equal (a tie, exactly 0.5, which ``label_pairs`` settles by a
        coin): with fractional weights, 1.1 + 2.2 is 3.3000000000000003 for one completion and 3.3 the other's.

        >>> judge = PrincipleJudge(("Weight 1.1. Praise words: great.", "Weight 2.2. Praise words: fun.",
        ...                         "Weight 3.3. Praise words: nice."))
        >>> judge.preference_prob([" great fun."], [" nice."]).tolist()
        [0.5]
        """
        a, b = self.score(completions_a), self.score(completions_b)
        if a.shape != b.shape:
            raise ValueError(f"completions_a ({len(a)}) and completions_b ({len(b)}) must have one length")
        diff = np.where(np.isclose(a, b, rtol=1e-9, atol=1e-12), 0.0, a - b)
        return 0.5 * (1.0 + np.tanh(0.5 * diff / self.temperature))

    def label_pairs(self, prompts, completions_a, completions_b, seed=0) -> list:
        """Preference records ``{"prompt", "chosen", "rejected", "chosen_first", "judge_prob", "tie"}``.

        The chosen completion is the one the judge prefers (``judge_prob`` is its probability of being
        preferred, >= 0.5); where the judge scores both the same (``tie``) a coin flip seeded by ``seed``
        decides, as a feedback model at 50/50 would. The records train a reward model or DPO like
        ``SentimentTask.label_pairs``' records do.
        """
        prompts = check_texts("prompts", prompts)
        p = self.preference_prob(completions_a, completions_b)
        if len(prompts) != len(p):
            raise ValueError(f"prompts ({len(prompts)}) and the completions ({len(p)}) must have one length")
        coin = np.random.default_rng(seed).random(len(p)) < 0.5
        a_wins = np.where(p == 0.5, coin, p > 0.5)
        records = []
        for x, a, b, pa, win in zip(prompts, completions_a, completions_b, p, a_wins):
            chosen, rejected, prob = (a, b, pa) if win else (b, a, 1.0 - pa)
            records.append({"prompt": x, "chosen": chosen, "rejected": rejected, "chosen_first": bool(win),
                            "judge_prob": float(prob), "tie": bool(pa == 0.5)})
        return records
