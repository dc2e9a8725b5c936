"""The README's main job (``rlhf-edu demo``) and the figure command, on their quick paths."""

import json
import warnings

import numpy as np
import pytest

from rlhf_edu.cli import main
from rlhf_edu.demo import FIGURES, METHODS, format_changes, format_examples, format_table, write_figures
from rlhf_edu.train import History


@pytest.mark.slow
def test_quick_demo_writes_metrics_figures_table_and_samples_without_warnings(tmp_path, capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning, from any library, fails the demo
        assert main(["demo", "--quick", "--quiet", "--out", str(tmp_path), "--device", "cpu"]) == 0
    out, err = capfd.readouterr()
    assert err == ""  # nothing on stderr (no logging, no warnings) once the progress bars are off
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    results = metrics["results"]
    assert set(results) == {"sft", "reward_model", "ppo", "dpo", "grpo"}
    for name in ("sft", "ppo", "dpo", "grpo"):
        r = results[name]
        assert 0.0 <= r["gold_reward"] <= 1.0 and r["kl"] >= 0.0 and r["length"] > 0 and r["entropy"] >= 0.0
    assert 0.0 <= results["reward_model"]["heldout_accuracy"] <= 1.0
    for png in FIGURES:
        assert (tmp_path / png).stat().st_size > 10_000
    for name in ("sft", "reward_model", "ppo", "dpo", "grpo"):
        assert (tmp_path / "histories" / f"{name}.json").exists()
    for name in METHODS:  # every method, DPO included, evaluated on held-out prompts at least at start and end
        h = History.load_json(tmp_path / "histories" / f"{name}.json")
        for key in ("eval_reward", "eval_gold_reward", "eval_kl"):
            assert np.isfinite(h[key]).sum() >= 2, (name, key)
    assert "gold before" in out and "KL to SFT" in out and "entropy" in out
    assert out.count("before: ") == out.count("after:  ") == 3 * len(METHODS)
    for name in METHODS:
        assert f"  {name}: proxy reward " in out and "tokens, entropy" in out


def _rows():
    sft = {"gold_reward": 0.4, "reward": 0.1, "kl": 0.0, "length": 21.0, "entropy": 11.8, "seconds": 1.0,
           "examples": [("review: the film was", " dull but the story was old."), ("review: the film was", " ok."),
                        ("review: the meal was", " cold."), ("review: the hotel was", " fine."),
                        ("review: the album is", " loud.")]}
    ppo = {"gold_reward": 0.3, "reward": 2.0, "kl": 9.5, "length": 8.0, "entropy": 2.5, "seconds": 30.0,
           "examples": [("review: the film was", " cool."), ("review: the film was", " cool."),
                        ("review: the meal was", " cool."), ("review: the hotel was", " cool."),
                        ("review: the album is", " cool.")]}
    return {"sft": sft, "ppo": ppo}


def test_format_table_lists_methods_against_the_sft_baseline():
    table = format_table(_rows()).splitlines()
    assert table[0].split() == ["method", "gold", "before", "gold", "after", "proxy", "KL", "to", "SFT", "length",
                                "entropy"]
    assert table[2].split() == ["ppo", "0.400", "0.300", "2.000", "9.500", "8.0", "2.50"]


def test_format_changes_reports_length_entropy_and_overoptimisation():
    text = format_changes(_rows())
    assert "length 21.0 -> 8.0 tokens" in text and "entropy 11.8 -> 2.5 nats" in text
    assert "proxy reward +1.90, gold reward -0.100" in text and "over-optimisation" in text


def test_format_examples_pairs_before_and_after_on_three_distinct_prompts():
    lines = format_examples(_rows()).splitlines()
    assert lines.count("      before: ' dull but the story was old.'") == 1
    assert lines[lines.index("      before: ' dull but the story was old.'") + 1] == "      after:  ' cool.'"
    prompts = [line.strip() for line in lines if line.startswith("    '")]
    assert prompts == ["'review: the film was'", "'review: the meal was'", "'review: the hotel was'"]


def test_write_figures_draws_the_evaluation_points_of_every_method(tmp_path):
    histories = {}
    for name, steps, every in (("ppo", 6, 2), ("dpo", 12, 4), ("grpo", 6, 3)):
        h = History(name)
        for step in range(steps + 1):
            row = {"step": step, "reward": 0.1 * step}  # a training column, not drawn
            if step % every == 0 or step == steps:
                row.update(eval_reward=0.2 * step, eval_gold_reward=0.4 + 0.01 * step, eval_kl=0.5 * step)
            h.log(**row)
        histories[name] = h
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = write_figures(histories, tmp_path)
    assert sorted(p.name for p in paths) == sorted(FIGURES)
    for p in paths:
        assert p.stat().st_size > 10_000


def test_figures_command_builds_a_named_figure(tmp_path):
    assert main(["figures", "--out", str(tmp_path), "--only", "ch03_two_by_two_world"]) == 0
    assert (tmp_path / "ch03_two_by_two_world.png").stat().st_size > 10_000


def test_figures_command_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown figures"):
        main(["figures", "--out", str(tmp_path), "--only", "no_such_figure"])
