"""The exercises of chapter 8 (ReST and best-of-N): each checker passes its solution, fails the classic mistake it is
about with a message that names the input, expected and got and the likely misconception, reports the student
edition's stub as not done, and the chapter's exercise cells are marked and call their checkers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from rlhf_edu import numpy as rn
from rlhf_edu.exercises import best_of_n as ex8

ROOT = Path(__file__).resolve().parents[1]
CHECKERS = ["check_best_of_n_tiebreak", "check_best_of_n_level_kl", "check_max_n_within_kl", "check_rest_filter"]





def test_tiebreak_reference_by_enumeration():
    import itertools

    ref, rewards, lengths = np.array([0.2, 0.3, 0.1, 0.4]), np.array([1.0, 1.0, 0.0, 1.0]), np.array([3, 2, 1, 2])
    n = 3
    out = np.zeros(4)
    for draws in itertools.product(range(4), repeat=n):
        draws = list(draws)
        key = [(rewards[i], -lengths[i]) for i in draws]
        best = max(key)
        # among draws equal in (reward, length), the first one drawn is kept
        out[draws[key.index(best)]] += np.prod(ref[draws])
    np.testing.assert_allclose(ex8.best_of_n_tiebreak_reference(ref, rewards, lengths, n), out, atol=1e-14)


def test_level_kl_matches_the_answers_kl_and_stays_below_the_bound():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 10))
        ref = rng.dirichlet(np.ones(k))
        rewards = rng.integers(0, 4, size=k).astype(float)
        n = int(rng.integers(1, 20))
        levels = np.array([ref[rewards == t].sum() for t in np.unique(rewards)])
        kl = rn.kl_divergence(rn.best_of_n_probs(ref, rewards, n), ref)
        assert ex8.best_of_n_level_kl_reference(levels, n) == pytest.approx(kl, abs=1e-12)
        assert kl <= rn.best_of_n_kl_bound(n) + 1e-12


@pytest.mark.parametrize("budget", [0.0, 0.5, 1.0, 2.0, 4.0, 7.5])
def test_max_n_within_kl_is_the_largest_n(budget):
    n = ex8.max_n_within_kl_reference(budget)
    assert rn.best_of_n_kl_bound(n) <= budget < rn.best_of_n_kl_bound(n + 1)
    assert ex8.max_n_within_kl_reference(2.0) == 19 and math.exp(2.0) < 19


def test_the_other_classic_mistakes_fail_too():
    # best-of-n: the longer answer wins the tie-break
    def longer_wins(ref, rewards, lengths, n):
        return ex8.best_of_n_tiebreak_reference(ref, rewards, -np.asarray(lengths), n)

    result = ex8.check_best_of_n_tiebreak(longer_wins, verbose=False)
    assert not result and "LONGER" in result.message
    # the KL in the other direction
    def reverse_kl(masses, n):
        masses = np.asarray(masses, dtype=float)
        return float(rn.kl_divergence(masses, rn.best_of_n_probs(masses, np.arange(masses.size, dtype=float), n)))

    assert not ex8.check_best_of_n_level_kl(reverse_kl, verbose=False)
    # one too many samples
    assert not ex8.check_max_n_within_kl(lambda b: ex8.max_n_within_kl_reference(b) + 1, verbose=False)
    # the filter right, the thresholds never checked
    result = ex8.check_rest_filter(lambda r, t: np.asarray(r)[None, :] > np.asarray(t)[:, None], verbose=False)
    assert not result and "ValueError" in result.message


def _exercise_cells(md: Path):
    text = md.read_text()
    section = text[text.index("## 11. Exercises"):text.index("## 12.")]
    return re.findall(r"```\{code-cell\} ipython3\n(.*?)```", section, flags=re.S)


def test_chapter_exercises_are_marked_and_call_their_checkers():
    md = ROOT / "chapters" / "08_rest_best_of_n.md"
    cells = _exercise_cells(md)
    assert len(cells) == len(CHECKERS)
    for cell, name in zip(cells, CHECKERS):
        assert cell.count("### BEGIN SOLUTION") == 1 and cell.count("### END SOLUTION") == 1
        assert f"result = {name}(" in cell
    text = md.read_text()
    # the library's exercise references are never printed by the chapter
    assert "getsource(figs.filtered_distribution)" not in text and "best_of_n_level_kl_reference" not in text
    assert "widgets.interactive(" not in text and "redraw_on_change(" in text
