"""Chapter 8's figures and the exact measurements behind them (rlhf_edu/figures/best_of_n.py)."""

import doctest

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from figure_checks import check_figure  # noqa: E402

from rlhf_edu import numpy as rn  # noqa: E402
from rlhf_edu.figures import best_of_n as figs  # noqa: E402
from rlhf_edu.figures import REGISTRY  # noqa: E402  (filled by importing the module above)
from rlhf_edu.train import History  # noqa: E402

FAST = ["ch08_best_of_n_distribution", "ch08_kl_bound", "ch08_win_rate", "ch08_proxy_vs_gold_toy", "ch08_rest_filter"]


def test_doctests():
    assert doctest.testmod(figs).failed == 0


def test_toy_has_the_promised_ties_and_a_tieless_proxy():
    completions, ref, gold, proxy = figs.toy_answers()
    assert len(completions) == len(ref) == len(gold) == len(proxy) == 8
    assert ref.sum() == pytest.approx(1.0) and np.all(np.diff(gold) >= 0)  # worst to best by gold
    assert len(np.unique(gold)) == 6 and len(np.unique(proxy)) == 8
    assert completions[int(np.argmax(proxy))] == " great great."  # the proxy's blind spot: a repetition


@pytest.mark.parametrize("n", [1, 2, 3, 8, 32])
def test_win_rate_is_n_over_n_plus_1_in_the_continuous_limit_and_below_it_with_atoms(n):
    k = 2000
    win, tie = figs.best_of_n_win_rate(np.full(k, 1 / k), np.arange(k, dtype=float), n)
    assert win + tie / 2 == pytest.approx(n / (n + 1), abs=2e-3)
    _, ref, gold, proxy = figs.toy_answers()
    for rewards in (gold, proxy):
        w, t = figs.best_of_n_win_rate(ref, rewards, n)
        assert w + t / 2 <= n / (n + 1) + 1e-12
        if n == 1:
            assert w + t / 2 == pytest.approx(0.5, abs=1e-12)


def test_win_rate_matches_monte_carlo():
    _, ref, gold, _ = figs.toy_answers()
    rng = np.random.default_rng(0)
    n, trials = 3, 200_000
    draws = rng.choice(8, size=(trials, n), p=ref)
    kept = draws[np.arange(trials), np.argmax(gold[draws], axis=1)]
    other = rng.choice(8, size=trials, p=ref)
    win, tie = figs.best_of_n_win_rate(ref, gold, n)
    assert np.mean(gold[kept] > gold[other]) == pytest.approx(win, abs=5 * np.sqrt(win * (1 - win) / trials))
    assert np.mean(gold[kept] == gold[other]) == pytest.approx(tie, abs=5 * np.sqrt(tie * (1 - tie) / trials))


def test_filtered_distribution_is_the_conditional_and_its_kl_is_minus_log_q():
    _, ref, gold, _ = figs.toy_answers()
    for tau in (0.1, 0.4, 0.6, 0.8):
        probs, q = figs.filtered_distribution(ref, gold, tau)
        assert q == pytest.approx(ref[gold > tau].sum())
        np.testing.assert_allclose(probs, np.where(gold > tau, ref / q, 0.0))
        assert rn.kl_divergence(probs, ref) == pytest.approx(-np.log(q), abs=1e-12)
    # strict (the paper) against >= (train_rest) differ exactly at a level
    assert figs.filtered_distribution(ref, gold, 0.5)[1] < figs.filtered_distribution(ref, gold, 0.5, strict=False)[1]
    with pytest.raises(ValueError, match="passes"):
        figs.filtered_distribution(ref, gold, 0.9)


@pytest.mark.parametrize("name", FAST)
def test_fast_figures_build_with_labelled_axes(name):
    check_figure(name, REGISTRY[name](), both_axis_labels=True)


def test_widget_arguments_and_bad_ranking():
    for fig in (figs.best_of_n_distribution_figure(n=1, ranking="proxy"), figs.best_of_n_distribution_figure(n=64),
                figs.kl_bound_figure(max_n=8), figs.win_rate_figure(max_n=4), figs.proxy_toy_figure(max_n=16),
                figs.rest_filter_figure(thresholds=(0.3,))):
        assert isinstance(fig, Figure)
        plt.close(fig)
    with pytest.raises(ValueError, match="ranking"):
        figs.best_of_n_distribution_figure(ranking="length")


def test_tiny_model_figures_build_from_given_results():
    # made-up results of the right shape: the figures must not need a training run when given one
    ns = np.array([1, 2, 4])
    bound = np.array([rn.best_of_n_kl_bound(int(n)) for n in ns])
    curve = dict(n=ns, reward=np.array([1.0, 1.5, 2.0]), gold_reward=np.array([0.3, 0.35, 0.38]), kl=bound * 0.99,
                 kl_bound=bound)
    gold_curve = dict(n=ns, reward=np.array([0.3, 0.45, 0.55]), gold_reward=np.array([0.3, 0.45, 0.55]),
                      kl=bound * 0.8, kl_bound=bound)
    fig = figs.best_of_n_tiny_model_figure(curve, gold_curve)
    assert isinstance(fig, Figure)
    plt.close(fig)
    rest = History("rest", dict(grow_steps=2, improve_steps=2))
    for step in range(4):
        rest.log(step=step, eval_gold_reward=0.3 + 0.1 * step, eval_kl=0.5 * step)
    rest.log(step=4, eval_gold_reward=0.75, eval_kl=2.5)
    grpo = History("grpo", dict(group_size=8, prompts_per_step=4))
    for step in (0, 4, 8):
        grpo.log(step=step, eval_gold_reward=0.3 + 0.02 * step, eval_kl=0.1 * step)
    fig = figs.rest_vs_rl_figure(rest, grpo, samples_per_grow=64)
    xs = fig.axes[0].lines[0].get_xdata()
    # evaluated before each Improve step: a Grow's samples count from its first Improve step on
    assert list(xs) == [0, 64, 64, 128, 128]
    plt.close(fig)
