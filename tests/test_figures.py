"""Smoke tests of the slide figures: each registered figure builds, returns a Figure, and is quick."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from figure_checks import check_figure  # noqa: E402

from rlhf_edu.figures import load_all  # noqa: E402

REGISTRY = load_all()


def _build(name):
    check_figure(name, REGISTRY[name]())


# ---- chapter 3 (rlhf_edu/figures/mdp.py) ----
CH03 = ["ch03_two_by_two_world", "ch03_discounting", "ch03_evaluation_sweeps", "ch03_classic_grid_world",
        "ch03_convergence", "ch03_slippery_world"]


@pytest.mark.parametrize("name", CH03)
def test_chapter3_figures_build(name):
    assert name in REGISTRY
    _build(name)


def test_chapter3_figures_take_the_widget_arguments():
    from rlhf_edu.figures import mdp as figs

    for fig in (figs.discounting_figure(gamma=0.5), figs.slippery_world_figure(slip=0.5),
                figs.evaluation_sweeps_figure(sweeps=(0, 5), in_place=True), figs.two_by_two_figure(step_reward=-2.0)):
        assert isinstance(fig, Figure)
        plt.close(fig)


# ---- chapter 4 (rlhf_edu/figures/policy_gradients.py) ----
CH04_FAST = ["ch04_reinforce_bandit", "ch04_baseline_variance", "ch04_clip_objective", "ch04_value_clip"]


@pytest.mark.parametrize("name", CH04_FAST)
def test_chapter4_figures_build(name):
    assert name in REGISTRY
    _build(name)


def test_chapter4_heavier_figures_build_with_small_settings():
    import numpy as np

    from rlhf_edu import numpy as rn
    from rlhf_edu.figures import policy_gradients as figs
    from rlhf_edu.train.tabular_ppo import train_tabular_ppo

    assert {"ch04_gae_bias_variance", "ch04_tabular_ppo"} <= set(REGISTRY)
    _, history = train_tabular_ppo(rn.two_by_two_world()[0], start=0, iterations=3)
    for fig in (figs.gae_bias_variance_figure(lam=0.5, n_episodes=200), figs.tabular_ppo_figure(history),
                figs.clip_objective_figure(clip_eps=0.5), figs.baseline_variance_figure(n_samples=8)):
        assert isinstance(fig, Figure)
        plt.close(fig)
    # the measurement behind the bias-variance figure: TD(0) biased, Monte Carlo noisy
    mdp, policy, critic = figs.bias_variance_world()
    res = figs.gae_bias_variance(mdp, policy, critic, [0.0, 1.0], n_episodes=1500)
    assert res["bias2"][0] > 10 * res["bias2"][1] and res["variance"][1] > 3 * res["variance"][0]
    np.testing.assert_allclose(res["mse"], res["bias2"] + res["variance"])


def test_reinforce_gradient_moments_match_sampling():
    import numpy as np

    from rlhf_edu.figures import policy_gradients as figs

    _, q, pi = figs.learn_sleep_bandit()
    assert np.isclose(pi[0], 4 / 7) and np.isclose(pi @ q, 0.6)
    rng = np.random.default_rng(0)
    a = rng.choice(2, size=200_000, p=pi)
    for b in (0.0, 0.6):
        g = (q[a] - b)[:, None] * (np.eye(2)[a] - pi)
        mean, var = figs.reinforce_gradient_moments(pi, q, b)
        np.testing.assert_allclose(g.mean(axis=0), mean, atol=3e-3)
        assert abs(((g - mean) ** 2).sum(axis=1).mean() - var) < 0.01 * max(var, 0.1)


# ---- chapters 1 and 2 (rlhf_edu/figures/bradley_terry.py, rlhf_edu/figures/kl_divergence.py) ----
CH01 = ["ch01_ratings_vs_comparisons", "ch01_choice_model", "ch01_bt_loss", "ch01_bt_recovery"]
CH02 = ["ch02_kl_terms", "ch02_forward_vs_reverse", "ch02_estimators_vs_log_ratio", "ch02_estimator_bias_std",
        "ch02_beta_tradeoff"]


@pytest.mark.parametrize("name", CH01 + CH02)
def test_chapter1_and_2_figures_build(name):
    assert name in REGISTRY
    _build(name)


def test_chapter1_and_2_widget_figures_take_their_arguments():
    from rlhf_edu.figures import bradley_terry as bt
    from rlhf_edu.figures import divergences as kl

    for fig in (bt.bt_playground_figure(gap=-2.0, noise=0.3), bt.bt_playground_figure(gap=0.0, noise=0.0),
                kl.kl_playground_figure(mu_p=-1.0, sigma_p=0.5, mu_q=1.0, sigma_q=2.0, n=300)):
        assert isinstance(fig, Figure)
        plt.close(fig)
