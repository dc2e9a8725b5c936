r"""The review task: write a positive review, judged by a documented gold reward.

Used by the chapters on reward models, PPO, GRPO, DPO and its relatives (KTO), and reward
overoptimisation.

A prompt names what is reviewed (``"review: the film was"``); a completion is a short phrase of opinion
words, filler and nouns ending in a period (``" great but the plot was dull."``). The SFT data mixes
positive and negative opinions, so a model fine-tuned on it starts in the middle of the gold reward.

The gold reward (:func:`gold_reward`) plays the role of Gao et al.'s (2022) 6B "gold-standard" reward
model: a fixed, known judge. A reader likes distinct positive words and dislikes negative ones, and also
dislikes four *defects* that the SFT-like data never shows: a repeated opinion word, more than 8 words,
a word that is not English (not in the vocabulary), a missing final period. Preference pairs are drawn
from the SFT-like distribution and labelled by a noisy Bradley-Terry draw on the gold reward, so a reward
model learned from them sees the sentiment part only. A policy that games such a proxy without a KL
leash, say by writing ``" great great great lovely great"``, can push the proxy up while the gold reward
falls (reward overoptimisation, Goodhart's law).

>>> task = SentimentTask(seed=0)
>>> prompt, completion = task.sft_corpus(1)[0]
>>> prompt.startswith("review: the "), completion.endswith(".")
(True, True)
>>> gold_reward([" great fun.", " dull and boring.", " great great great great."]).round(4)
array([0.8808, 0.1192, 0.0914])
"""

from __future__ import annotations

import math

import numpy as np

from rlhf_edu.tasks.base import (
    MAX_COMPLETION_CHARS,
    SPLITS,
    Streams,
    check_n,
    check_prompts_match,
    check_split,
    check_texts,
)
from rlhf_edu.validation import check_choice, check_in_range, check_integer, check_positive

__all__ = [
    "POSITIVE_WORDS",
    "NEGATIVE_WORDS",
    "VOCABULARY",
    "gold_reward",
    "gold_reward_breakdown",
    "bradley_terry_choice",
    "SentimentTask",
    "to_records",
]

#: Words that make a review positive (+1 each, counted once per completion).
POSITIVE_WORDS = ("great", "good", "fun", "lovely", "nice", "superb", "charming", "sweet", "cool", "fresh")
#: Words that make a review negative (-1 each, counted once per completion).
NEGATIVE_WORDS = ("bad", "dull", "awful", "boring", "poor", "weak", "bland", "messy", "stale", "slow")
#: Adjectives without polarity: they let the SFT data say something that is neither.
NEUTRAL_ADJECTIVES = ("long", "short", "loud", "quiet", "simple", "new", "old", "busy", "big", "small")
INTENSIFIERS = ("very", "quite", "so", "really", "rather")
NOUNS = ("plot", "cast", "music", "staff", "price", "view", "ending", "pace", "story", "sound")
CONNECTIVES = ("and", "but", "the", "was", "is")
#: Every word a review may use; anything else is a non-word (a defect for the gold reward).
VOCABULARY = frozenset(
    POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_ADJECTIVES + INTENSIFIERS + NOUNS + CONNECTIVES
)
_POSITIVE, _NEGATIVE = frozenset(POSITIVE_WORDS), frozenset(NEGATIVE_WORDS)
_POLAR = _POSITIVE | _NEGATIVE

SUBJECTS = ("film", "food", "book", "game", "hotel", "show", "song", "play",
            "cafe", "album", "trip", "class", "meal", "park", "room", "app")
VERBS = ("was", "is")
#: Every prompt of the task. A fixed quarter is held out: (subject i, verb j) is a test prompt when
#: (i + 3 j) % 4 == 0, so every subject stays in training with its other verb and the test split asks
#: for subject-verb combinations never seen in training.
ALL_PROMPTS = tuple(f"review: the {s} {v}" for s in SUBJECTS for v in VERBS)
_SPLIT_PROMPTS = {
    "train": tuple(f"review: the {s} {v}" for i, s in enumerate(SUBJECTS) for j, v in enumerate(VERBS)
                   if (i + 3 * j) % 4 != 0),
    "test": tuple(f"review: the {s} {v}" for i, s in enumerate(SUBJECTS) for j, v in enumerate(VERBS)
                  if (i + 3 * j) % 4 == 0),
}

_STRIP = ".,!?;:'()<>/"
PAIR_KEYS = ("prompt", "chosen", "rejected", "gold_chosen", "gold_rejected", "chosen_first")
RECORD_FORMS = ("preference", "ab", "kto", "sft")


def gold_reward_breakdown(completions, max_words: int = 8, decay: float = 0.5) -> dict:
    r"""Every term of :func:`gold_reward`, per completion, to see *why* a completion scores what it does.

    Returns a dict of arrays (one entry per completion): ``positive`` P and ``negative`` N (distinct
    opinion words), ``sentiment`` :math:`\sigma(P - N)`, the defect counts ``repeats``, ``unknown``,
    ``excess_words``, ``missing_period``, their sum ``defects``, and ``gold``.

    >>> b = gold_reward_breakdown([" great great fun"])
    >>> int(b["positive"][0]), int(b["repeats"][0]), int(b["missing_period"][0]), int(b["defects"][0])
    (2, 1, 1, 2)
    """
    completions = check_texts("completions", completions)
    max_words = check_integer("max_words", max_words, minimum=1)
    decay = check_in_range("decay", decay, 0.0, 1.0)
    rows = []
    for text in completions:
        words = [w for w in (t.strip(_STRIP) for t in text.split()) if w]
        polar = [w for w in words if w in _POLAR]
        pos = len(set(polar) & _POSITIVE)
        neg = len(set(polar) & _NEGATIVE)
        repeats = len(polar) - len(set(polar))
        unknown = sum(w not in VOCABULARY for w in words)
        excess = max(0, len(words) - max_words)
        no_period = int(not text.rstrip().endswith("."))
        defects = repeats + unknown + excess + no_period
        sentiment = 1.0 / (1.0 + math.exp(-(pos - neg)))
        readable = unknown < len(words)  # at least one real word
        gold = sentiment * decay**defects if readable else 0.0
        rows.append((pos, neg, sentiment, repeats, unknown, excess, no_period, defects, gold))
    names = ("positive", "negative", "sentiment", "repeats", "unknown", "excess_words",
             "missing_period", "defects", "gold")
    cols = list(zip(*rows)) if rows else [()] * len(names)
    out = {}
    for name, col in zip(names, cols):
        dtype = np.float64 if name in ("sentiment", "gold") else np.int64
        out[name] = np.asarray(col, dtype=dtype)
    return out


def gold_reward(completions, prompts=None, max_words: int = 8, decay: float = 0.5) -> np.ndarray:
    r"""The review task's gold reward in [0, 1]: a fixed, known judge of a completion (the lecture notes'
    "gold-standard reward model" of Gao et al., 2022, written as a formula).

    Split the completion on spaces and strip punctuation off each word. With P the number of DISTINCT
    positive words, N the number of distinct negative words (:data:`POSITIVE_WORDS`,
    :data:`NEGATIVE_WORDS`) and D the number of defects,

    .. math::  g = \sigma(P - N)\; \cdot\; \mathrm{decay}^{D},
               \qquad D = \text{repeats} + \text{unknown} + \max(0, \#\text{words} - \text{max\_words})
                          + [\text{no final period}],

    where *repeats* counts every extra occurrence of an opinion word ("great great" has one), *unknown*
    counts words outside :data:`VOCABULARY`, and a completion without any vocabulary word scores 0. The
    SFT-like data that preference pairs are drawn from never has a defect, so a reward model learned from
    those pairs cannot know about them: a policy that games it by repeating or rambling loses gold.
    ``prompts`` is accepted (and length-checked) so every task's reward has one signature; the review's
    gold does not depend on it. Used in the chapters on reward models, PPO, GRPO, DPO and reward
    overoptimisation.

    >>> gold_reward([" great fun.", " great but dull.", " dull and boring."]).round(4)
    array([0.8808, 0.5   , 0.1192])
    >>> gold_reward([" great great great great.", " great fun", " grreat.", ""]).round(4)
    array([0.0914, 0.4404, 0.    , 0.    ])
    """
    completions = check_texts("completions", completions)
    check_prompts_match(completions, prompts, required=False)
    return gold_reward_breakdown(completions, max_words=max_words, decay=decay)["gold"]


def bradley_terry_choice(gold_a, gold_b, beta: float = 10.0, noise: float = 0.0, rng=None) -> np.ndarray:
    r"""Draw simulated annotators' choices: True where completion a is preferred over b.

    Bradley-Terry (1952), as in the lecture notes: :math:`P(a \succ b) = \sigma(\beta\,(g_a - g_b))`
    (:math:`\beta` the annotator's rationality, ``1/beta`` a temperature; ``beta=inf`` always picks the
    higher gold, ties by a fair coin). Then, with probability ``noise``, the label is flipped (an annotator
    slip). Agreement with the gold ranking falls as ``beta`` falls or ``noise`` rises. The same uniform
    draws are used whatever ``beta`` and ``noise``, so sweeping them changes labels monotonically.

    >>> bradley_terry_choice([0.9, 0.1], [0.1, 0.9], beta=float("inf"), rng=0)
    array([ True, False])
    """
    gold_a = np.asarray(gold_a, dtype=np.float64)
    gold_b = np.asarray(gold_b, dtype=np.float64)
    if gold_a.shape != gold_b.shape:
        raise ValueError(f"shapes must match: gold_a {gold_a.shape}, gold_b {gold_b.shape}")
    beta = check_positive("beta", beta)
    noise = check_in_range("noise", noise, 0.0, 0.5)
    rng = np.random.default_rng(rng)
    diff = gold_a - gold_b
    if math.isinf(beta):
        p_a = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    else:
        p_a = 0.5 * (1.0 + np.tanh(0.5 * beta * diff))  # sigma(beta * diff) without overflow
    u_choice = rng.random(diff.shape)
    u_flip = rng.random(diff.shape)
    return (u_choice < p_a) ^ (u_flip < noise)


def _plackett_luce_order(gold: np.ndarray, beta: float, rng) -> np.ndarray:
    """Ranking best first drawn from Plackett-Luce with utilities beta * gold (Gumbel-max trick).

    For two items this is exactly the Bradley-Terry draw: P(a first) = sigma(beta (g_a - g_b)).
    """
    gumbel = rng.gumbel(size=gold.shape)
    if math.isinf(beta):
        return np.lexsort((gumbel, -gold))  # by gold, ties in random order
    return np.argsort(-(beta * gold + gumbel), kind="stable")


class SentimentTask:
    """The review task: prompts, SFT data, simulated preference data and the gold reward.

    Args:
        seed: seeds every random stream (see ``rlhf_edu.tasks.base``): same seed, same data.
        p_positive, p_negative: probability that an adjective of the SFT-like distribution is positive,
            negative (else neutral). The defaults (0.3, 0.4) put the mean gold of the SFT data at 0.47.
        max_words, decay: passed to :func:`gold_reward`.

    Every sampling method takes ``split="train"|"test"`` (disjoint prompts: the test split holds 8 of the
    32 prompts, subject-verb combinations never seen in training; its random streams are seeded apart)
    and ``seed=None|int`` (None: continue this task's stream; an int: a one-off reproducible draw).

    >>> task = SentimentTask(seed=0)
    >>> len(task.all_prompts("train")), len(task.all_prompts("test"))
    (24, 8)
    >>> sorted(task.preference_pairs(1)[0])
    ['chosen', 'chosen_first', 'gold_chosen', 'gold_rejected', 'prompt', 'rejected']
    """

    name = "sentiment"
    _STREAMS = ("prompts", "completions", "sft", "pairs", "kwise", "kto", "label")

    def __init__(self, seed: int = 0, p_positive: float = 0.3, p_negative: float = 0.4,
                 max_words: int = 8, decay: float = 0.5):
        self.seed = check_integer("seed", seed, minimum=0)
        self.p_positive = check_in_range("p_positive", p_positive, 0.0, 1.0)
        self.p_negative = check_in_range("p_negative", p_negative, 0.0, 1.0)
        if self.p_positive + self.p_negative > 1.0:
            raise ValueError(f"p_positive + p_negative must be <= 1, got {self.p_positive + self.p_negative}")
        self.max_words = check_integer("max_words", max_words, minimum=1)
        self.decay = check_in_range("decay", decay, 0.0, 1.0)
        self._streams = Streams(self.seed, self._STREAMS)

    def __repr__(self):
        return (f"SentimentTask(seed={self.seed}, p_positive={self.p_positive}, "
                f"p_negative={self.p_negative})")

    # ----- the reward --------------------------------------------------------------------------------
    def reward(self, completions, prompts=None) -> np.ndarray:
        """The gold reward (:func:`gold_reward` with this task's ``max_words`` and ``decay``)."""
        return gold_reward(completions, prompts, max_words=self.max_words, decay=self.decay)

    def metrics(self, completions, prompts=None) -> dict:
        """Means over a batch, for training logs: ``gold``, ``sentiment``, ``defects``, ``repeats``."""
        check_prompts_match(check_texts("completions", completions), prompts, required=False)
        b = gold_reward_breakdown(completions, max_words=self.max_words, decay=self.decay)
        if len(b["gold"]) == 0:
            raise ValueError("completions is empty: no metric to average")
        return {k: float(np.mean(b[k])) for k in ("gold", "sentiment", "defects", "repeats")}

    # ----- prompts and completions -------------------------------------------------------------------
    def all_prompts(self, split: str = "train") -> list:
        """Every prompt of the split (24 train, 8 test), in a fixed order."""
        return list(_SPLIT_PROMPTS[check_split(split)])

    def _draw_prompts(self, rng, n: int, split: str) -> list:
        pool = _SPLIT_PROMPTS[split]
        return [pool[i] for i in rng.integers(len(pool), size=n)]

    def prompts(self, n: int, split: str = "train", seed=None) -> list:
        """``n`` prompts drawn uniformly (with replacement) from the split."""
        n, split = check_n(n), check_split(split)
        return self._draw_prompts(self._streams.get("prompts", split, seed), n, split)

    def _adjective(self, rng, used: set) -> str:
        u = rng.random()
        if u < self.p_positive:
            pool = POSITIVE_WORDS
        elif u < self.p_positive + self.p_negative:
            pool = NEGATIVE_WORDS
        else:
            pool = NEUTRAL_ADJECTIVES
        free = [w for w in pool if w not in used]  # never repeat a word: the SFT data has no defect
        word = free[rng.integers(len(free))]
        used.add(word)
        if rng.random() < 0.3:
            word = f"{INTENSIFIERS[rng.integers(len(INTENSIFIERS))]} {word}"
        return word

    def _completion(self, rng) -> str:
        while True:  # rejection keeps every completion within the character and word budget
            used, nouns = set(), list(NOUNS)
            parts = [self._adjective(rng, used)]
            for _ in range(rng.choice(3, p=(0.35, 0.4, 0.25))):
                conj = ("and", "but")[rng.integers(2)]
                if rng.random() < 0.5:
                    parts.append(f"{conj} {self._adjective(rng, used)}")
                else:
                    noun = nouns.pop(rng.integers(len(nouns)))
                    parts.append(f"{conj} the {noun} was {self._adjective(rng, used)}")
            text = " " + " ".join(parts) + "."
            if len(text) <= MAX_COMPLETION_CHARS and len(text.split()) <= self.max_words:
                return text

    def sample_completions(self, n: int, split: str = "train", seed=None) -> list:
        """``n`` completions from the SFT-like distribution (mixed opinions, no defect, leading space)."""
        n, split = check_n(n), check_split(split)
        rng = self._streams.get("completions", split, seed)
        return [self._completion(rng) for _ in range(n)]

    def sft_corpus(self, n: int, split: str = "train", seed=None) -> list:
        """``n`` (prompt, completion) pairs of MIXED sentiment for supervised fine-tuning.

        ``prompt + completion`` is the full text (completions start with a space). Mean gold reward
        of the completions is about 0.47 with the default ``p_positive``, ``p_negative`` (30% of them
        score above 0.5).
        """
        n, split = check_n(n), check_split(split)
        rng = self._streams.get("sft", split, seed)
        prompts = self._draw_prompts(rng, n, split)
        return [(p, self._completion(rng)) for p in prompts]

    # ----- simulated human feedback ------------------------------------------------------------------
    def _distinct_completions(self, rng, k: int, min_gap: float = 0.0) -> list:
        out, golds = [], []
        for _ in range(10_000):
            c = self._completion(rng)
            g = float(self.reward([c])[0])
            if c not in out and all(abs(g - h) >= min_gap for h in golds):
                out.append(c)
                golds.append(g)
                if len(out) == k:
                    return out
        raise RuntimeError(f"could not draw {k} completions at least {min_gap} apart in gold reward")

    def label_pairs(self, prompts, completions_a, completions_b, beta: float = 10.0, noise: float = 0.0,
                    seed=None) -> list:
        """Label your own pairs (e.g. sampled from a policy) by the simulated annotator.

        Returns records like :meth:`preference_pairs`; ``chosen_first`` is True when the chosen one is
        from ``completions_a``.
        """
        completions_a = check_texts("completions_a", completions_a)
        completions_b = check_texts("completions_b", completions_b)
        prompts = check_texts("prompts", prompts)
        if not (len(prompts) == len(completions_a) == len(completions_b)):
            raise ValueError(f"prompts ({len(prompts)}), completions_a ({len(completions_a)}) and "
                             f"completions_b ({len(completions_b)}) must have one length")
        if not prompts:
            raise ValueError("prompts is empty: nothing to label")
        rng = self._streams.get("label", "train", seed)
        return self._label(prompts, completions_a, completions_b, beta, noise, rng)

    def _label(self, prompts, comp_a, comp_b, beta, noise, rng) -> list:
        gold_a, gold_b = self.reward(comp_a), self.reward(comp_b)
        a_wins = bradley_terry_choice(gold_a, gold_b, beta=beta, noise=noise, rng=rng)
        records = []
        for p, a, b, ga, gb, w in zip(prompts, comp_a, comp_b, gold_a, gold_b, a_wins):
            chosen, rejected, gc, gr = (a, b, ga, gb) if w else (b, a, gb, ga)
            records.append({"prompt": p, "chosen": chosen, "rejected": rejected,
                            "gold_chosen": float(gc), "gold_rejected": float(gr), "chosen_first": bool(w)})
        return records

    def preference_pairs(self, n: int, beta: float = 10.0, noise: float = 0.0, split: str = "train",
                         seed=None, min_gap: float = 0.0) -> list:
        r"""``n`` preference records ``{"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected",
        "chosen_first"}``.

        Two different completions a, b are drawn from the SFT-like distribution for one prompt and
        labelled by :func:`bradley_terry_choice`: :math:`P(a \succ b) = \sigma(\beta (g_a - g_b))`, then
        flipped with probability ``noise``. ``chosen_first`` says whether the chosen completion was the
        first drawn (it is, about half the time: position carries no signal). ``min_gap > 0`` redraws b
        until the golds differ by at least that much (drop ties, which only teach noise).
        """
        n, split = check_n(n), check_split(split)
        beta = check_positive("beta", beta)
        noise = check_in_range("noise", noise, 0.0, 0.5)
        min_gap = check_in_range("min_gap", min_gap, 0.0, 0.5)
        rng = self._streams.get("pairs", split, seed)
        prompts = self._draw_prompts(rng, n, split)
        drawn = [self._distinct_completions(rng, 2, min_gap) for _ in range(n)]
        return self._label(prompts, [d[0] for d in drawn], [d[1] for d in drawn], beta, noise, rng)

    def k_wise_rankings(self, n: int, k: int = 4, beta: float = 10.0, split: str = "train",
                        seed=None) -> list:
        r"""``n`` records ``{"prompt", "completions", "gold"}``: k distinct completions ranked BEST FIRST.

        The ranking is a Plackett-Luce draw with utilities :math:`\beta g` (the K-wise generalisation of
        Bradley-Terry used for InstructGPT's K = 4..9 rankings): the first is picked with probability
        softmax(beta g), then the next among the rest, ...; for k = 2 it is the Bradley-Terry draw.
        ``gold`` lists the gold rewards in the same (ranked) order.
        """
        n, split = check_n(n), check_split(split)
        k = check_integer("k", k, minimum=2)
        beta = check_positive("beta", beta)
        rng = self._streams.get("kwise", split, seed)
        prompts = self._draw_prompts(rng, n, split)
        records = []
        for p in prompts:
            comps = self._distinct_completions(rng, k)
            gold = self.reward(comps)
            order = _plackett_luce_order(gold, beta, rng)
            records.append({"prompt": p, "completions": [comps[i] for i in order],
                            "gold": [float(gold[i]) for i in order]})
        return records

    def kto_examples(self, n: int, threshold: float = 0.5, noise: float = 0.0, split: str = "train",
                     seed=None) -> list:
        """``n`` unpaired records ``{"prompt", "completion", "label", "gold"}`` for KTO (binary feedback).

        ``label`` is True ("desirable") when the gold reward exceeds ``threshold``, flipped with probability
        ``noise``. With the defaults about 30% of the examples are desirable (an imbalance KTO is built for).
        """
        n, split = check_n(n), check_split(split)
        threshold = check_in_range("threshold", threshold, 0.0, 1.0)
        noise = check_in_range("noise", noise, 0.0, 0.5)
        rng = self._streams.get("kto", split, seed)
        prompts = self._draw_prompts(rng, n, split)
        comps = [self._completion(rng) for _ in range(n)]
        gold = self.reward(comps)
        labels = (gold > threshold) ^ (rng.random(n) < noise)
        return [{"prompt": p, "completion": c, "label": bool(lab), "gold": float(g)}
                for p, c, lab, g in zip(prompts, comps, labels, gold)]


def to_records(pairs, form: str = "preference") -> list:
    """Convert :meth:`SentimentTask.preference_pairs` records into the usual dataset forms.

    - ``"preference"``: ``{"prompt", "chosen", "rejected"}`` (reward-model and DPO training, TRL's form);
    - ``"ab"``: ``{"prompt", "answer_1", "answer_2", "chosen": 1 | 2}``, the lecture notes' table (answers
      in the order drawn, so ``chosen`` is 1 about half the time);
    - ``"kto"``: two unpaired records ``{"prompt", "completion", "label"}`` per pair (chosen True,
      rejected False), TRL's unpaired form;
    - ``"sft"``: ``(prompt, chosen)`` tuples (fine-tuning on the preferred answers only).

    >>> pair = {"prompt": "p", "chosen": " good.", "rejected": " bad.", "gold_chosen": 0.7,
    ...         "gold_rejected": 0.3, "chosen_first": False}
    >>> to_records([pair], "ab")
    [{'prompt': 'p', 'answer_1': ' bad.', 'answer_2': ' good.', 'chosen': 2}]
    """
    check_choice("form", form, RECORD_FORMS)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty")
    needed = ("prompt", "chosen", "rejected") + (("chosen_first",) if form == "ab" else ())
    for i, r in enumerate(pairs):
        if not isinstance(r, dict) or any(key not in r for key in needed):
            raise ValueError(f"pairs[{i}] must be a dict with the keys {list(needed)}")
    if form == "preference":
        return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in pairs]
    if form == "ab":
        out = []
        for r in pairs:
            first, second = (r["chosen"], r["rejected"])
            if not r["chosen_first"]:
                first, second = second, first
            out.append({"prompt": r["prompt"], "answer_1": first, "answer_2": second,
                        "chosen": 1 if r["chosen_first"] else 2})
        return out
    if form == "kto":
        out = []
        for r in pairs:
            out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
            out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
        return out
    return [(r["prompt"], r["chosen"]) for r in pairs]
