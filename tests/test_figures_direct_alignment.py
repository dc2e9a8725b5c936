"""Chapter 7's figures and the toy behind them (rlhf_edu/figures/direct_alignment.py): real checks, not smoke."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from figure_checks import check_figure  # noqa: E402

from rlhf_edu import numpy as rn  # noqa: E402
from rlhf_edu.figures import direct_alignment as da  # noqa: E402
from rlhf_edu.figures import load_all  # noqa: E402
from rlhf_edu.tasks import gold_reward  # noqa: E402

CH07 = ["ch07_gpo_functions", "ch07_target_margin", "ch07_dpo_vs_ipo", "ch07_prospect_value", "ch07_length_bias"]


@pytest.mark.parametrize("name", CH07)
def test_chapter7_figures_build_with_labelled_axes(name):
    registry = load_all()
    assert name in registry
    check_figure(name, registry[name](), both_axis_labels=True)


def test_figures_take_the_widget_arguments():
    for fig in (da.dpo_vs_ipo_figure(beta=0.2, steps=20), da.prospect_value_figure(alpha=1.0, lam=1.0, beta=3.0),
                da.target_margin_figure(beta=1.0),
                da.length_bias_figure(np.array([3, 5, 9]), np.array([-2.0, -4.0, -7.5]), chosen=[True, False, True])):
        assert isinstance(fig, Figure)
        plt.close(fig)


def test_toy_is_ranked_by_the_gold_reward_and_g_is_the_win_rate():
    answers, ref = da.ranking_toy()
    assert (np.diff(gold_reward(list(answers))) < 0).all() and abs(ref.sum() - 1) < 1e-12
    pref = da.preference_matrix(4, p=0.8)
    np.testing.assert_allclose(pref + pref.T, np.ones((4, 4)))
    np.testing.assert_allclose(da.ipo_scores(da.preference_matrix(4), np.full(4, 0.25)), [0.875, 0.625, 0.375, 0.125])


@pytest.mark.parametrize("p,beta", [(1.0, 0.2), (0.8, 1.0)])
def test_ipo_trained_on_the_exact_loss_reaches_its_closed_form(p, beta):
    answers, ref = da.ranking_toy()
    pref, mu = da.preference_matrix(4, p=p), np.full(4, 0.25)
    run = da.fit_offline("ipo", ref, pref, mu, beta)
    star = rn.kl_regularized_optimum(ref, da.ipo_scores(pref, mu), beta)
    np.testing.assert_allclose(run["probs"][-1], star, atol=1e-9)
    assert run["probs"].shape == (301, 4) and run["margins"].shape == (301, 3)


def test_for_any_mu_the_expected_ipo_loss_is_stationary_at_pi_ref_exp_g_over_beta():
    import torch

    from rlhf_edu.torch import direct as td

    answers, ref = da.ranking_toy()
    pref, mu, beta = da.preference_matrix(4, p=0.9), np.array([0.4, 0.3, 0.2, 0.1]), 0.5
    star = rn.kl_regularized_optimum(ref, da.ipo_scores(pref, mu), beta)
    weights = mu[:, None] * mu[None, :] * pref
    np.fill_diagonal(weights, 0.0)
    win, lose = np.nonzero(weights)
    theta = torch.log(torch.tensor(star)).requires_grad_(True)
    log_ref = torch.log(torch.tensor(ref))
    logp = torch.log_softmax(theta, dim=-1)
    loss = (torch.tensor(weights[win, lose]) * td.ipo_loss(logp[win], logp[lose], log_ref[win], log_ref[lose], beta)).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    assert grad.abs().max().item() < 1e-12


def test_dpo_with_deterministic_labels_keeps_growing_but_converges_with_noisy_ones():
    answers, ref = da.ranking_toy()
    mu = np.full(4, 0.25)
    hard = da.fit_offline("dpo", ref, da.preference_matrix(4), mu, 0.5, steps=300)
    m = hard["margins"][:, 0]
    assert m[300] > m[200] + 0.2 and m[200] > m[100] + 0.2 and hard["loss"][-1] > 0
    soft = da.fit_offline("dpo", ref, da.preference_matrix(4, p=0.8), mu, 0.5, steps=300, lr=2.0)
    s = soft["margins"][:, 0]
    assert abs(s[300] - s[200]) < 1e-3 < abs(m[300] - m[200])


def test_gpo_names_train_too():
    answers, ref = da.ranking_toy()
    run = da.fit_offline("squared", ref, da.preference_matrix(4), np.full(4, 0.25), 0.5)
    np.testing.assert_allclose(run["margins"][-1], [1.0, 1.0, 1.0], atol=1e-8)  # GPO's (x - 1)^2 aims at 1 / beta
