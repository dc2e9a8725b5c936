"""The exercises of chapters 3 and 4: each checker passes its solution, fails the classic mistake it is about with
a message that names the input, expected and got (or the prediction and the run) and the likely misconception,
reports the student edition's stub as not done, and the chapters do not print the answers (no solution outside
the nbgrader markers, no exercise whose reference the chapter prints)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rlhf_edu.exercises import mdp as ex3
from rlhf_edu.exercises import policy_gradients as ex4

ROOT = Path(__file__).resolve().parents[1]

NEW = {
    "check_q_iteration_sweep": ex3,
    "check_random_walk_value": ex3,
    "check_returns_with_episode_ends": ex3,
    "check_gae_truncation": ex4,
    "check_clip_prediction": ex4,
    "check_masked_whiten": ex4,
}


@pytest.mark.parametrize("name", sorted(NEW))
def test_right_passes_and_classic_mistake_fails_with_a_named_misconception(name, capsys):
    module = NEW[name]
    check = getattr(module, name)
    assert check(module.RIGHT_SOLUTIONS[name])
    assert "PASS" in capsys.readouterr().out
    result = check(module.WRONG_SOLUTIONS[name])
    out = capsys.readouterr().out
    assert not result and out.startswith("FAIL")
    assert "misconception" in out
    if "prediction" in name or "value" in name:
        assert "your prediction" in out and "the run gives" in out
    else:
        assert "expected" in out and "got" in out and "arg 0" in out


@pytest.mark.parametrize("name", sorted(NEW))
def test_stub_is_reported_not_done(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    result = getattr(NEW[name], name)(stub)
    assert not result and capsys.readouterr().out.startswith("NOT DONE YET")


def test_random_walk_value_is_the_exact_solve_and_diagnoses_gamma_one():
    assert abs(ex3.random_walk_value_09() - (-4.9689)) < 1e-4
    assert "gamma = 1" in ex3.check_random_walk_value(-8.0, verbose=False).message
    assert ex3.check_random_walk_value(lambda: -4.97, verbose=False)


def test_clip_prediction_names_the_sample_and_the_unclipped_mistake():
    msg = ex4.check_clip_prediction(([-1.4, -3.0, 2.4], [0.0, -2.0, 0.0]), verbose=False).message
    assert "sample 0" in msg and "ratio 0.7" in msg and "unclipped" in msg
    msg = ex4.check_clip_prediction(([-1.6, -2.4, 2.4], [0.0, -2.0, 0.0]), verbose=False).message
    assert "sample 1" in msg and "wrong way" in msg
    msg = ex4.check_clip_prediction(([-1.6, -3.0, 2.4], [0.0, 0.0, 0.0]), verbose=False).message
    assert "gradient of sample 1" in msg


def test_gae_truncation_reduces_to_rn_gae_without_mid_row_cuts():
    from rlhf_edu import numpy as rn

    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    dones = (rng.random((2, 6)) < 0.3).astype(float)
    last = rng.normal(size=2)
    next_values = np.concatenate([v[:, 1:], last[:, None]], axis=1)
    want = rn.gae(r, v, 0.9, 0.8, dones=dones, last_value=last)[0]
    got = ex4.gae_truncation_reference(r, v, next_values, dones, np.zeros_like(dones), 0.9, 0.8)
    assert np.allclose(got, want)


def test_the_other_classic_mistakes_fail_too():
    # GAE: treating a truncation as a termination (no bootstrap at the cut)
    def no_bootstrap(r, v, nv, term, trunc, gamma, lam):
        return ex4.gae_truncation_reference(r, v, nv, np.maximum(term, trunc), trunc, gamma, lam)

    assert not ex4.check_gae_truncation(no_bootstrap, verbose=False)
    # whitening per row, or with the Bessel correction
    def per_row(a, m):
        a, m = np.asarray(a, float), np.asarray(m, float)
        mean = (a * m).sum(-1, keepdims=True) / m.sum(-1, keepdims=True)
        var = (((a - mean) * m) ** 2).sum(-1, keepdims=True) / m.sum(-1, keepdims=True)
        return (a - mean) / np.sqrt(var + 1e-8) * m

    assert not ex4.check_masked_whiten(per_row, verbose=False)
    # Q-iteration without gamma
    assert not ex3.check_q_iteration_sweep(lambda P, R, g, q: R + P @ np.max(q, axis=1), verbose=False)


def _exercise_cells(md: Path):
    text = md.read_text()
    section = text[text.index("## 11. Exercises"):text.index("## 12.")]
    return re.findall(r"```\{code-cell\} ipython3\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("md", ["03_mdp_grid_world.md", "04_policy_gradients_ppo_gae.md"])
def test_chapter_exercises_are_marked_and_do_not_use_printed_references(md):
    cells = _exercise_cells(ROOT / "chapters" / md)
    assert len(cells) >= 3
    for cell in cells:
        assert cell.count("### BEGIN SOLUTION") == 1 and cell.count("### END SOLUTION") == 1
        assert "result = check_" in cell
    text = (ROOT / "chapters" / md).read_text()
    # the checkers whose answers section 4 prints are not exercises any more
    for printed in ("check_bellman_backup", "check_evaluation_sweep", "check_greedy_policy", "check_reinforce_loss",
                    "check_gae(", "check_clipped_objective", "check_value_loss_clipping"):
        assert printed not in text
    # widgets draw once per change (interactive_output), never with the re-running `interactive`
    assert "widgets.interactive(" not in text and "redraw_on_change(" in text
