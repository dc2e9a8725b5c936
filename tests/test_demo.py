"""The README's main job (``rlhf-edu demo``) and the figure command, on their quick paths."""

import json

import pytest

from rlhf_edu.cli import main
from rlhf_edu.demo import format_table


@pytest.mark.slow
def test_quick_demo_writes_metrics_figures_and_table(tmp_path, capsys):
    assert main(["demo", "--quick", "--quiet", "--out", str(tmp_path), "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    results = metrics["results"]
    assert set(results) == {"sft", "reward_model", "ppo", "dpo", "grpo"}
    for name in ("ppo", "dpo", "grpo"):
        assert 0.0 <= results[name]["gold_reward"] <= 1.0 and results[name]["kl"] >= 0.0
    assert 0.0 <= results["reward_model"]["heldout_accuracy"] <= 1.0
    for png in ("training_curves.png", "reward_vs_kl.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    for name in ("sft", "reward_model", "ppo", "dpo", "grpo"):
        assert (tmp_path / "histories" / f"{name}.json").exists()
    out = capsys.readouterr().out
    assert "gold before" in out and "KL to SFT" in out


def test_format_table_lists_methods_against_the_sft_baseline():
    rows = {"sft": {"gold_reward": 0.4, "seconds": 1.0}, "ppo": {"gold_reward": 0.7, "kl": 2.5, "seconds": 30.0}}
    table = format_table(rows).splitlines()
    assert table[0].split() == ["method", "gold", "before", "gold", "after", "KL", "to", "SFT", "seconds"]
    assert table[2].split() == ["ppo", "0.400", "0.700", "2.500", "30.0"]


def test_figures_command_builds_a_named_figure(tmp_path):
    assert main(["figures", "--out", str(tmp_path), "--only", "ch03_two_by_two_world"]) == 0
    assert (tmp_path / "ch03_two_by_two_world.png").stat().st_size > 10_000


def test_figures_command_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown figures"):
        main(["figures", "--out", str(tmp_path), "--only", "no_such_figure"])
