"""Training-run figures: panels, overlays, NaN columns, reward-vs-KL."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rlhf_edu.plotting import plot_history, plot_reward_vs_kl  # noqa: E402
from rlhf_edu.plotting.training import METRIC_TITLES, _ema  # noqa: E402
from rlhf_edu.train import History  # noqa: E402


def _run(name, n=10, slope=0.05, eval_every=5):
    h = History(name)
    for s in range(n):
        row = dict(step=s, reward=0.4 + slope * s, gold_reward=0.4 + 0.5 * slope * s, kl=0.1 * s, seconds=0.5 * s)
        if s % eval_every == 0:
            row.update(eval_gold_reward=0.4 + 0.4 * slope * s, eval_kl=0.12 * s)
        h.log(**row)
    return h


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _visible_axes(fig):
    return [a for a in fig.axes if a.get_visible()]


def test_one_panel_per_key_with_titles_units_and_x_label():
    fig = plot_history(_run("ppo"), keys=("reward", "gold_reward", "kl", "eval_gold_reward"))
    assert isinstance(fig, Figure)
    axes = _visible_axes(fig)
    assert len(axes) == 4
    assert [a.get_title() for a in axes] == [METRIC_TITLES[k] for k in ("reward", "gold_reward", "kl",
                                                                        "eval_gold_reward")]
    assert "nats" in axes[2].get_title()
    assert all(a.get_xlabel() == "training step" for a in axes)
    # reward panel: one line with the logged values
    (line,) = axes[0].get_lines()
    np.testing.assert_allclose(line.get_ydata(), 0.4 + 0.05 * np.arange(10))


def test_runs_are_overlaid_with_a_legend_and_custom_labels():
    runs = [_run("ppo"), _run("grpo", slope=0.02)]
    fig = plot_history(runs, keys=("reward", "kl"), labels=["PPO", "GRPO"])
    for ax in _visible_axes(fig):
        assert len(ax.get_lines()) == 2
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["PPO", "GRPO"]
    fig = plot_history({"a": _run("x"), "b": _run("y")}, keys="reward")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]


def test_sparse_evaluation_columns_drop_nan_rows():
    fig = plot_history(_run("ppo", n=11, eval_every=5), keys=("eval_gold_reward",))
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [0, 5, 10])
    assert line.get_marker() == "o"
    assert np.isfinite(line.get_ydata()).all()


def test_all_nan_column_and_run_without_the_key_do_not_crash():
    h = _run("ppo")
    h.log(step=10, gold_reward=math.nan, reward=0.9)
    h2 = History("nan")
    for s in range(3):
        h2.log(step=s, kl=math.nan, reward=0.1)
    fig = plot_history([h, h2], keys=("kl", "gold_reward"))
    kl_ax, gold_ax = _visible_axes(fig)
    assert len(kl_ax.get_lines()) == 1  # the all-NaN run is skipped
    assert np.isfinite(gold_ax.get_lines()[0].get_ydata()).all()
    fig = plot_history(h2, keys=("kl",))
    assert any("no values" in t.get_text() for t in fig.axes[0].texts)


def test_smoothing_draws_a_faint_raw_curve_and_an_ema():
    fig = plot_history(_run("ppo"), keys=("reward",), smooth=0.9)
    raw, smoothed = fig.axes[0].get_lines()
    assert raw.get_alpha() == pytest.approx(0.25)
    np.testing.assert_allclose(smoothed.get_ydata(), _ema(raw.get_ydata(), 0.9))
    # sparse evaluation columns are averages already: drawn as they are
    fig = plot_history(_run("ppo", n=11), keys=("eval_gold_reward",), smooth=0.9)
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_allclose(line.get_ydata(), 0.4 + 0.02 * np.array([0, 5, 10]))
    # bias-corrected EMA: a constant stays constant, and the start is the first value
    np.testing.assert_allclose(_ema(np.full(5, 3.0), 0.9), 3.0)
    assert _ema(np.array([1.0, 5.0]), 0.5)[0] == 1.0


def test_x_seconds_and_given_axes():
    fig, axes = plt.subplots(1, 2)
    out = plot_history(_run("ppo"), keys=("reward", "kl"), x="seconds", axes=axes)
    assert out is fig
    assert axes[0].get_xlabel() == "wall-clock time (s)"
    np.testing.assert_allclose(axes[1].get_lines()[0].get_xdata(), 0.5 * np.arange(10))


def test_bad_inputs_are_named():
    h = _run("ppo")
    with pytest.raises(ValueError, match="keys"):
        plot_history(h, keys=("rewrd",))
    with pytest.raises(ValueError, match="smooth"):
        plot_history(h, smooth=1.0)
    with pytest.raises(ValueError, match="x must"):
        plot_history(h, x="epoch")
    with pytest.raises(ValueError, match="labels"):
        plot_history([h, h], labels=["one"])
    with pytest.raises(ValueError, match="history_or_list"):
        plot_history([])
    with pytest.raises(TypeError, match="History"):
        plot_history([{"reward": [1.0]}])
    with pytest.raises(ValueError, match="axes"):
        plot_history(h, keys=("reward", "kl"), axes=[plt.subplots()[1]])


def test_reward_vs_kl_prefers_evaluation_columns_and_marks_start_and_end():
    h = _run("ppo", n=11, eval_every=5)
    fig = plot_reward_vs_kl(h)
    ax = fig.axes[0]
    path, start, end, *legend_only = ax.get_lines()
    np.testing.assert_allclose(path.get_xdata(), [0.0, 0.6, 1.2])  # eval_kl at steps 0, 5, 10
    np.testing.assert_allclose(path.get_ydata(), 0.4 + 0.02 * np.array([0, 5, 10]))
    assert start.get_marker() == "s" and end.get_marker() == "*"
    assert (start.get_xdata()[0], end.get_xdata()[0]) == (0.0, 1.2)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ppo", "start", "end"]
    assert "KL" in ax.get_xlabel() and ax.get_ylabel() == "gold reward"


def test_reward_vs_kl_fallbacks_sqrt_proxy_and_nan():
    h = History("no-eval")
    for s in range(4):
        h.log(step=s, kl=float(s), gold_reward=0.5 - 0.1 * (s - 2) ** 2, reward=0.1 * s)
    fig = plot_reward_vs_kl([h, _run("ppo")], sqrt_kl=True, proxy_key="reward")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), np.sqrt([0, 1, 2, 3]))
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())
    assert "sqrt" in ax.get_xlabel()
    empty = History("empty")
    empty.log(step=0, kl=math.nan, gold_reward=0.3)
    fig = plot_reward_vs_kl(empty)
    assert any("no (KL, reward)" in t.get_text() for t in fig.axes[0].texts)
    with pytest.raises(ValueError, match="reward_key"):
        plot_reward_vs_kl(h, reward_key="gold")
