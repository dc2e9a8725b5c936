r"""Exercise checkers of chapter 0 (the RLHF pipeline), whose answers the chapter does not print.

- ``check_alpaca_sft_example(fn)``: a variant. ``fn(instruction, input, output) -> (text, mask)``: the training
  text of one Alpaca record and its loss mask, one 0/1 per character, 1 exactly on the output's characters.
  The chapter prints the template (``rlhf_edu.train.instruction_templates.alpaca_prompt``), never the mask.
- ``check_ptx_loss(fn)``: find the bug. ``fn(ppo_loss, ptx_logp, ptx_mask, ptx_coef) -> loss``: the loss that
  PPO-ptx minimises, the PPO loss plus ``ptx_coef`` times the mean negative log-likelihood per real token of a
  padded batch of pre-training texts. The chapter writes the objective (to maximise) and computes it on a batch
  without padding; the loss, its sign and the padding are the exercise.
- ``check_constitution(principles)``: design, then measure. Write principles for
  ``rlhf_edu.tasks.PrincipleJudge`` whose labels agree with the gold ranking on at least
  :data:`CONSTITUTION_TARGET` of the checker's review pairs (the chapter's constitution reaches much less).
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import ExerciseResult, _not_done, make_checker
from rlhf_edu.tasks.ai_feedback import PrincipleJudge, review_constitution
from rlhf_edu.tasks.sentiment import NOUNS, POSITIVE_WORDS, VOCABULARY, SentimentTask, gold_reward
from rlhf_edu.train.instruction_templates import alpaca_prompt

__all__ = ["check_alpaca_sft_example", "check_ptx_loss", "check_constitution", "constitution_agreement",
           "CONSTITUTION_TARGET"]


# ---- 1. the SFT training text of an Alpaca record, and its loss mask ----


def alpaca_sft_example_reference(instruction, input, output):  # noqa: A002 (the record's field)
    """The solution: ``(alpaca_prompt(instruction, input) + output, mask)``, the mask 1 on the output only."""
    prompt = alpaca_prompt(instruction, input)
    return prompt + output, np.array([0] * len(prompt) + [1] * len(output))


_RECORDS = (
    ("Rewrite the following sentence using passive voice.", "The team achieved great results.",
     "Great results were achieved by the team."),
    ("Name three primary colours.", "", "Red, yellow and blue."),
    ("What are the five most common causes of stress among people?", "", "Work, money, relationships, health, family."),
    ("Translate to French.", "Good morning", "Bonjour"),
    ("Write a review.", "the film was", " great fun."),
)


def _alpaca_why(instruction, input, output, text, mask):  # noqa: A002
    want_text, want_mask = alpaca_sft_example_reference(instruction, input, output)
    if text != want_text:
        if not input and "### Input:" in text:
            return ("a record without an input has no '### Input:' section and the shorter preamble; "
                    "use alpaca_prompt(instruction, input), which handles both cases")
        if text.startswith(output) or not text.endswith(output):
            return "the output comes last: text = alpaca_prompt(instruction, input) + output"
        return "build the text with rlhf_edu.train.instruction_templates.alpaca_prompt, then append the output"
    mask = np.asarray(mask)
    if mask.shape != want_mask.shape:
        return f"one mask entry per character of the text: {len(want_mask)} here, got shape {mask.shape}"
    if mask.all():
        return ("the loss covers the template and the instruction too: the model would be trained to write "
                "prompts; SFT trains on the response only")
    if (mask != want_mask).any():
        return "the mask is 1 exactly on the characters of the output (the response), 0 on the prompt before it"
    return ""


def check_alpaca_sft_example(fn, seed=0, verbose=True) -> ExerciseResult:
    """Run ``fn(instruction, input, output) -> (text, mask)`` on Alpaca-style records (with and without an input);
    print PASS or the first record it gets wrong, what was expected and the likely misconception."""
    name = "alpaca_sft_example"
    records = list(_RECORDS)
    rng = np.random.default_rng(seed)
    for _ in range(5):  # a few more, from the review task's words
        words = [str(w) for w in rng.choice(list(POSITIVE_WORDS) + list(NOUNS), size=3)]
        records.append(("Write a short review of the " + words[2] + ".", "" if rng.random() < 0.5 else words[0],
                        " " + words[0] + " and " + words[1] + "."))
    for n, (instruction, inp, output) in enumerate(records):
        try:
            got = fn(instruction, inp, output)
        except NotImplementedError:
            return _not_done(name, verbose)
        except Exception as exc:  # the student's bug, reported with the record
            why = f"raised {type(exc).__name__}: {exc}"
        else:
            try:
                text, mask = got
            except (TypeError, ValueError):
                why = "return a pair (text, mask)"
            else:
                why = _alpaca_why(instruction, inp, output, text, mask)
        if why:
            want_text, want_mask = alpaca_sft_example_reference(instruction, inp, output)
            message = "\n".join([
                f"FAIL {name} after {n} correct records:",
                f"  instruction = {instruction!r}, input = {inp!r}, output = {output!r}",
                f"  expected: text ending {want_text[-40:]!r}, mask with {int(want_mask.sum())} ones out of "
                f"{len(want_mask)} (the last {len(output)} characters)",
                f"  likely misconception: {why}",
            ])
            if verbose:
                print(message)
            return ExerciseResult(name, False, n, message)
    message = f"PASS {name}: {len(records)} records (with and without an input)"
    if verbose:
        print(message)
    return ExerciseResult(name, True, len(records), message)


# ---- 2. PPO-ptx's loss, with padded pre-training texts ----


def ptx_loss_reference(ppo_loss, ptx_logp, ptx_mask, ptx_coef):
    r"""The solution: :math:`\mathcal L_{PPO} + \gamma \cdot \big(-\sum_{b,t} m_{bt}\log\pi(x_{bt}) / \sum_{b,t} m_{bt}\big)`.

    PPO-ptx maximises ``objective + gamma * E[log pi(x)]``; as a loss to minimise that is ``+ gamma * NLL``,
    the NLL a mean over the real tokens of the batch (padding, mask 0, does not count).
    """
    logp, mask = np.asarray(ptx_logp, dtype=float), np.asarray(ptx_mask, dtype=float)
    return float(ppo_loss) + ptx_coef * (-(logp * mask).sum() / mask.sum())


def _ptx_case(rng):
    B, T = int(rng.integers(1, 5)), int(rng.integers(2, 9))
    lengths = rng.integers(1, T + 1, size=B)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(float)
    mask[0, :] = 1.0  # one full row: the batch is padded to it
    logp = np.where(mask > 0, np.log(rng.uniform(0.02, 0.99, size=(B, T))), 0.0)
    return (float(rng.normal()), logp, mask, float(rng.choice([0.5, 1.0, 27.8]))), {}


check_ptx_loss = make_checker(
    "ptx_loss",
    reference=ptx_loss_reference,
    edge_cases=[
        ((0.25, np.log([[0.5, 0.25]]), np.ones((1, 2)), 1.0), {}),                                   # 0.25 + 1.0397
        ((0.0, np.log([[0.5, 0.5, 0.5], [0.25, 1.0, 1.0]]), np.array([[1, 1, 1], [1, 0, 0]]), 2.0), {}),  # padding
        ((-0.3, np.log([[0.5, 0.25]]), np.ones((1, 2)), 0.0), {}),                                    # gamma 0: PPO
    ],
    random_case=_ptx_case,
    hint="likely misconceptions: adding gamma * mean(log pi) to a loss that is MINIMISED (that pushes the "
    "pre-training likelihood down; the objective's + gamma * E[log pi] is + gamma * NLL in the loss); "
    "averaging over the padding too (the mask's zeros dilute the mean); a mean per row, then over rows "
    "(rows of different lengths weigh the same), instead of one mean over all real tokens",
)


# ---- 3. a constitution whose judge agrees with the gold ranking ----

#: Agreement with the gold ranking that ``check_constitution`` asks for (ties of the judge count half).
CONSTITUTION_TARGET = 0.85
_N_PAIRS = 600


def _corrupt(text, rng):
    """One of the defects the gold reward dislikes and the SFT data never shows (or none)."""
    words = text.strip().rstrip(".").split()
    kind = int(rng.integers(5))
    if kind == 0:  # repeat an opinion word
        polar = [w for w in words if w in POSITIVE_WORDS] or [str(rng.choice(POSITIVE_WORDS))]
        words = words + [polar[0], polar[0]]
    elif kind == 1:  # misspell a word
        i = int(rng.integers(len(words)))
        w = words[i]
        j = int(rng.integers(len(w)))
        words[i] = w[:j] + "xq"[int(rng.integers(2))] + w[j + 1:]
    elif kind == 2:  # ramble past eight words
        words = words + ["and", "the", "plot", "was", "quite", "long", "and", "slow"][: 9 - min(len(words), 8)]
    if kind == 3:  # no final period
        return " " + " ".join(words)
    return " " + " ".join(words) + "."


def _constitution_pairs(seed=0):
    """Pairs of reviews from the task's SFT-like distribution, each corrupted with probability 0.6, whose gold
    rewards differ (ties dropped): the checker's fixed test set."""
    rng = np.random.default_rng(seed)
    texts = SentimentTask(seed=0).sample_completions(2 * _N_PAIRS, seed=seed)
    texts = [_corrupt(t, rng) if rng.random() < 0.6 else t for t in texts]
    a, b = texts[0::2], texts[1::2]
    ga, gb = gold_reward(a), gold_reward(b)
    keep = ga != gb
    return [x for x, k in zip(a, keep) if k], [x for x, k in zip(b, keep) if k], (ga > gb)[keep]


def constitution_agreement(principles, seed=0) -> float:
    """Fraction of the checker's pairs on which ``PrincipleJudge(principles)`` ranks like the gold reward (a
    judge's tie counts 1/2). The chapter's ``review_constitution()`` reaches about 0.7 here."""
    a, b, gold_a_wins = _constitution_pairs(seed)
    p = PrincipleJudge(principles).preference_prob(a, b)
    return float(np.mean(np.where(p == 0.5, 0.5, (p > 0.5) == gold_a_wins)))


def check_constitution(principles, seed=0, verbose=True) -> ExerciseResult:
    """``principles``: a tuple of principle strings for ``PrincipleJudge``, or a function of no argument returning
    them. PASS when the judge's labels agree with the gold ranking on at least ``CONSTITUTION_TARGET`` of the
    checker's pairs (reviews with and without the defects the gold reward counts)."""
    name = "constitution"
    if callable(principles):
        try:
            principles = principles()
        except NotImplementedError:
            return _not_done(name, verbose)
    try:
        got = constitution_agreement(principles, seed)
    except (TypeError, ValueError) as exc:
        message = f"FAIL {name}: the judge refused your principles: {exc}"
        if verbose:
            print(message)
        return ExerciseResult(name, False, 0, message)
    base = constitution_agreement(review_constitution(), seed)
    if got >= CONSTITUTION_TARGET:
        message = (f"PASS {name}: your judge agrees with the gold ranking on {got:.3f} of the pairs "
                   f"(the chapter's constitution: {base:.3f}; asked: {CONSTITUTION_TARGET})")
        ok = True
    else:
        message = "\n".join([
            f"FAIL {name}: your judge agrees with the gold ranking on {got:.3f} of the pairs, asked for "
            f"{CONSTITUTION_TARGET} (the chapter's constitution: {base:.3f})",
            "  likely misconception: a judge knows only what its principles say. The gold reward also counts a "
            "repeated opinion word, a word that is not English, more than eight words and a missing final period "
            "as defects; say so in principles the judge can read (see help(PrincipleJudge) for the forms)",
        ])
        ok = False
    if verbose:
        print(message)
    return ExerciseResult(name, ok, 1, message)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _alpaca_with_template_in_loss(instruction, input, output):  # noqa: A002
    text = alpaca_prompt(instruction, input) + output
    return text, np.ones(len(text), dtype=int)


def _ptx_buggy(ppo_loss, ptx_logp, ptx_mask, ptx_coef):
    return ppo_loss + ptx_coef * np.mean(ptx_logp)  # the sign, and the padding in the mean


def _full_constitution():
    return review_constitution() + (
        "Count each word once.",
        "Do not repeat a praise or complaint word.",
        "Use only these words: " + ", ".join(sorted(VOCABULARY)),
        "Write at most 8 words.",
        "End with a period.",
    )


RIGHT_SOLUTIONS = {
    "check_alpaca_sft_example": alpaca_sft_example_reference,
    "check_ptx_loss": ptx_loss_reference,
    "check_constitution": _full_constitution,
}
WRONG_SOLUTIONS = {
    "check_alpaca_sft_example": _alpaca_with_template_in_loss,
    "check_ptx_loss": _ptx_buggy,
    "check_constitution": review_constitution,
}
