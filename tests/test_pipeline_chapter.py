"""Chapter 0's library pieces: the Alpaca template, the AI-feedback judge, the slide figures and the exercises.

The exercise checkers pass their solution, fail the classic mistake with a message that names the input (or
the measured agreement) and the likely misconception, report the student edition's stub as not done; the
chapter holds each solution between nbgrader's markers and prints none of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from figure_checks import check_figure  # noqa: E402

from rlhf_edu.exercises import pipeline as ex0  # noqa: E402
from rlhf_edu.figures import load_all  # noqa: E402
from rlhf_edu.figures import pipeline as figs  # noqa: E402
from rlhf_edu.tasks import VOCABULARY, PrincipleJudge, SentimentTask, gold_reward, review_constitution  # noqa: E402
from rlhf_edu.train.instruction_templates import ALPACA_PREAMBLE, ALPACA_PREAMBLE_WITH_INPUT, alpaca_prompt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "chapters" / "00_the_rlhf_pipeline.md"


# ---- the Alpaca template ----


def test_alpaca_prompt_has_both_of_stanford_alpacas_forms():
    with_input = alpaca_prompt("Name a colour.", "in French")
    without = alpaca_prompt("Name a colour.")
    assert with_input == (f"{ALPACA_PREAMBLE_WITH_INPUT}\n\n### Instruction:\nName a colour.\n\n### Input:\nin French"
                          "\n\n### Response:\n")
    assert without == f"{ALPACA_PREAMBLE}\n\n### Instruction:\nName a colour.\n\n### Response:\n"
    assert "### Input:" not in without and with_input.endswith("### Response:\n")


@pytest.mark.parametrize("args, error", [((3,), TypeError), (("ok", None), TypeError), (("  ",), ValueError)])
def test_alpaca_prompt_refuses_bad_records(args, error):
    with pytest.raises(error, match="instruction|input"):
        alpaca_prompt(*args)


# ---- the judge ----


def test_first_constitution_counts_words_and_nothing_else():
    judge = PrincipleJudge(review_constitution())
    texts = [" great fun.", " great great great.", " grreat fun", " dull and boring.", " quiet."]
    assert judge.score(texts).tolist() == [2.0, 3.0, 1.0, -2.0, 0.0]
    p = judge.preference_prob([" great fun."], [" dull."])
    assert p[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert judge.preference_prob([" fun."], [" nice."])[0] == 0.5  # a tie


def test_every_rule_and_its_weight():
    judge = PrincipleJudge(("Praise words: good.", "Complaint words: bad.", "Count each word once.",
                            "Do not repeat a word (weight 2).", "Weight 3: use only these words: good, bad, the",
                            "Write at most 2 words.", "End with a period (weight 0.5)."))
    # good good the cat: +1 (distinct), -2 repeat, -3 (cat unknown), -2 (two words too many), -0.5 (no period)
    assert judge.score([" good good the cat"]).tolist() == [1 - 2 - 3 - 2 - 0.5]
    assert judge.score([" good bad."]).tolist() == [0.0]


def test_full_constitution_ranks_clean_pairs_like_gold():
    pairs = SentimentTask(seed=0).preference_pairs(200, seed=1, min_gap=0.05)
    judge = PrincipleJudge(review_constitution())
    p = judge.preference_prob([r["chosen"] for r in pairs], [r["rejected"] for r in pairs])
    gold_chosen_wins = np.array([r["gold_chosen"] > r["gold_rejected"] for r in pairs])
    assert np.all((p > 0.5) == gold_chosen_wins)  # clean reviews: the ten words are all the gold reward sees


def test_label_pairs_records_and_seeded_ties():
    judge = PrincipleJudge(review_constitution())
    a, b = [" great.", " fun.", " bad."], [" dull.", " nice.", " good."]
    recs = judge.label_pairs(["p"] * 3, a, b, seed=0)
    assert [r["chosen"] for r in (recs[0], recs[2])] == [" great.", " good."]
    assert recs[1]["tie"] and not recs[0]["tie"] and recs[0]["judge_prob"] > 0.5
    assert recs[1]["judge_prob"] == 0.5 and recs[1]["chosen"] in (" fun.", " nice.")
    assert judge.label_pairs(["p"] * 3, a, b, seed=0) == recs  # the coin of a tie is seeded
    assert all(set(r) == {"prompt", "chosen", "rejected", "chosen_first", "judge_prob", "tie"} for r in recs)


@pytest.mark.parametrize("principles, error", [
    ((), ValueError), ("Praise words: good.", TypeError), (("Be nice.",), ValueError), (("Praise words: ,",), ValueError),
])
def test_judge_refuses_principles_it_cannot_read(principles, error):
    with pytest.raises(error, match="principle"):
        PrincipleJudge(principles)


def test_scores_equal_up_to_rounding_are_a_tie():
    # 1.1 + 2.2 = 3.3000000000000003 != 3.3: without the tolerance the judge "prefers" a by 1e-16 and label_pairs
    # would always choose it instead of flipping the tie's coin
    judge = PrincipleJudge(("Weight 1.1. Praise words: great.", "Weight 2.2. Praise words: fun.",
                            "Weight 3.3. Praise words: nice."))
    a, b = [" great fun."] * 40, [" nice."] * 40
    s = judge.score(a[:1] + b[:1])
    assert s[0] != s[1] and abs(s[0] - s[1]) < 1e-12
    assert judge.preference_prob(a, b).tolist() == [0.5] * 40
    records = judge.label_pairs(["p"] * 40, a, b, seed=0)
    assert all(r["tie"] for r in records) and 5 < sum(r["chosen_first"] for r in records) < 35


def test_review_constitution_sizes():
    assert len(review_constitution(3)[0].split(":")[1].split(",")) == 3
    with pytest.raises(ValueError, match="n_words"):
        review_constitution(11)


# ---- the slide figures ----


@pytest.mark.parametrize("name", ["ch00_pipeline", "ch00_instructgpt_results", "ch00_chapter_map"])
def test_chapter0_figures_build(name):
    check_figure(name, load_all()[name]())


def test_chapter_map_covers_the_book_and_the_instructgpt_table_is_the_notes():
    assert [c[0] for c in figs.CHAPTER_MAP] == [str(i) for i in range(10)] + ["A1"]
    for number, stem, *_ in figs.CHAPTER_MAP:
        assert stem.startswith(f"{int(number):02d}_" if number.isdigit() else number + "_")
    assert figs.INSTRUCTGPT_NOTES["TruthfulQA (truthful and informative)"][0] == (0.224, 0.206, 0.413)


# ---- the exercises ----

NEW = ("check_alpaca_sft_example", "check_ptx_loss", "check_constitution")




def test_the_other_classic_mistakes_fail_too():
    # the no-input record built with an empty "### Input:" section
    def always_input(instruction, input, output):
        text = (f"{ALPACA_PREAMBLE_WITH_INPUT}\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
                f"### Response:\n") + output
        return text, np.array([0] * (len(text) - len(output)) + [1] * len(output))

    msg = ex0.check_alpaca_sft_example(always_input, verbose=False).message
    assert "no '### Input:' section" in msg
    # the right sign but the padding in the mean, and a mean of per-row means
    def padded(ppo_loss, logp, mask, gamma):
        return ppo_loss - gamma * np.mean(logp)

    def per_row(ppo_loss, logp, mask, gamma):
        logp, mask = np.asarray(logp), np.asarray(mask)
        return ppo_loss - gamma * np.mean((logp * mask).sum(-1) / mask.sum(-1))

    assert not ex0.check_ptx_loss(padded, verbose=False) and not ex0.check_ptx_loss(per_row, verbose=False)
    # principles the judge cannot read are a failure, not a crash
    assert "refused" in ex0.check_constitution(("Be good.",), verbose=False).message


def test_constitution_agreement_is_measured_on_pairs_with_and_without_defects():
    a, b, gold_a_wins = ex0._constitution_pairs()
    assert len(a) > 400 and np.all((gold_reward(a) > gold_reward(b)) == gold_a_wins)
    assert 0.6 < ex0.constitution_agreement(review_constitution()) < ex0.CONSTITUTION_TARGET
    naming_only_the_defects_but_repeats = review_constitution() + (
        "Count each word once.", "Use only these words: " + ", ".join(sorted(VOCABULARY)), "Write at most 8 words.",
        "End with a period.")
    assert ex0.constitution_agreement(naming_only_the_defects_but_repeats) < ex0.CONSTITUTION_TARGET


def _exercise_cells(md: Path):
    text = md.read_text()
    section = text[text.index("## 11. Exercises"):text.index("## 12.")]
    return re.findall(r"```\{code-cell\} ipython3\n(.*?)```", section, flags=re.S)


def test_chapter_exercises_are_marked_and_answers_not_printed():
    cells = _exercise_cells(CHAPTER)
    assert len(cells) >= 3
    for cell in cells:
        assert cell.count("### BEGIN SOLUTION") == 1 and cell.count("### END SOLUTION") == 1
        assert "result = check_" in cell
    text = CHAPTER.read_text()
    outside = text[: text.index("## 11. Exercises")]
    # no solution outside the exercises: the response mask, the ptx loss's sign, the defect principles
    assert "Do not repeat" not in outside and "Count each word once" not in outside
    assert "ptx_coef * nll" not in outside and "[1] * len(output)" not in outside
    assert "widgets.interactive(" not in text and "redraw_on_change(" in text
