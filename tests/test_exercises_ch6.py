"""The exercises of chapter 6 (the DPO derivation): each checker accepts its solution, rejects the classic mistake
with a message that names the input, expected and got and the likely misconception, reports the student edition's
stub as not done (tests/test_exercises.py, for every checker); the references are right on their own terms; the chapter marks its solutions and does not
print the answers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import rlhf_edu.exercises as ex
from rlhf_edu import numpy as rn
from rlhf_edu.exercises import dpo as ex6

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "chapters" / "06_dpo_derivation.md"





def test_plackett_luce_is_dpo_for_two_and_log_k_factorial_at_the_reference():
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (np.log(rng.uniform(0.01, 1, size=6)) for _ in range(4))
    got = ex6.plackett_luce_dpo_reference(np.stack([pc, pr], -1), np.stack([rc, rr], -1), 0.3)
    np.testing.assert_allclose(got, rn.dpo_loss(pc, pr, rc, rr, 0.3), rtol=1e-12)
    same = np.log(rng.dirichlet(np.ones(4), size=2))
    np.testing.assert_allclose(ex6.plackett_luce_dpo_reference(same, same, 1.0), np.log(24.0), rtol=1e-12)
    # a naive exp/log underflows where the reference does not
    assert np.isfinite(ex6.plackett_luce_dpo_reference(np.array([[-1.0, -1500.0, -3000.0]]), np.full((1, 3), -2.0), 1.0)).all()


def test_kl_budget_beta_spends_the_budget_and_is_the_constrained_optimum():
    ref, r = ex6._TOY_REF, ex6._TOY_REWARDS
    for eps in (0.01, 0.5, 2.2):
        beta = ex6.kl_budget_beta_reference(ref, r, eps)
        pi = rn.kl_regularized_optimum(ref, r, beta)
        assert abs(rn.kl_divergence(pi, ref) - eps) < 1e-9
        # no policy within the budget has more expected reward (random policies, scaled into the budget)
        others = np.random.default_rng(1).dirichlet(np.ones(5), size=3000)
        inside = others[rn.kl_divergence(others, ref) <= eps]
        assert inside.size == 0 or (inside @ r).max() <= pi @ r + 1e-12
    with pytest.raises(ValueError):
        ex6.kl_budget_beta_reference(ref, r, -np.log(0.1))


def test_buggy_completion_logps_is_wrong_and_the_reference_matches_the_library():
    import torch

    from rlhf_edu.lm import char_tokenizer, prompt_completion_batch, sequence_logprobs, tiny_causal_lm

    tok = char_tokenizer()
    model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    batch = prompt_completion_batch(tok, ["review: the film was"] * 2, [" great fun.", " dull."])
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double().numpy()
        want = sequence_logprobs(model.double(), batch.input_ids, batch.attention_mask, batch.completion_mask).numpy()
    ids, mask = batch.input_ids.numpy(), batch.completion_mask.numpy()
    # the rows are right-aligned prompts of one length here, so the position ids need no care
    assert (batch.attention_mask.numpy() == 1)[:, : batch.prompt_length].all()
    np.testing.assert_allclose(ex6.completion_logps_reference(logits, ids, mask), want, rtol=1e-5)
    assert not np.allclose(ex6.buggy_completion_logps(logits, ids, mask), want, rtol=1e-2)


def test_mean_limit_is_pi_star_at_beta_over_length_for_equal_lengths():
    ref, r = ex6._TOY_REF, ex6._TOY_REWARDS
    np.testing.assert_allclose(ex6.mean_logp_limit_reference(ref, r, np.full(5, 4.0), 2.0),
                               rn.kl_regularized_optimum(ref, r, 0.5), rtol=1e-9)


def _exercise_cells(md: Path):
    text = md.read_text()
    section = text[text.index("## 11. Exercises"):text.index("## 12.")]
    return re.findall(r"```\{code-cell\} ipython3\n(.*?)```", section, flags=re.S)


def test_chapter_exercises_are_marked_and_do_not_print_the_references():
    cells = [c for c in _exercise_cells(CHAPTER) if "result = check_" in c]
    assert len(cells) >= 3
    for cell in cells:
        assert cell.count("### BEGIN SOLUTION") == 1 and cell.count("### END SOLUTION") == 1
    text = CHAPTER.read_text()
    for reference in ("plackett_luce_dpo_reference", "kl_budget_beta_reference", "completion_logps_reference",
                      "mean_logp_limit_reference"):
        assert reference not in text
