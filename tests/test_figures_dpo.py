"""Chapter 6's figures and the toy behind them (rlhf_edu/figures/dpo.py): the figures build, and the
measurements they show are right (DPO on exact preferences reaches pi*, and the two bugs do not)."""

import doctest

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rlhf_edu.figures.dpo as figs  # noqa: E402
from figure_checks import check_figure  # noqa: E402

from rlhf_edu import numpy as rn  # noqa: E402
from rlhf_edu.exercises.dpo import mean_logp_limit_reference  # noqa: E402
from rlhf_edu.figures import REGISTRY  # noqa: E402
from rlhf_edu.lm import char_tokenizer  # noqa: E402
from rlhf_edu.tasks import gold_reward  # noqa: E402

CH06 = ["ch06_tilted_reference", "ch06_beta_path", "ch06_dpo_weight", "ch06_toy_dpo", "ch06_implied_reward"]


def test_doctests():
    result = doctest.testmod(figs, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", CH06)
def test_chapter6_figures_build_with_labelled_axes(name):
    assert name in REGISTRY  # registered on import of rlhf_edu.figures.dpo
    check_figure(name, REGISTRY[name]())


@pytest.mark.parametrize("beta", [0.05, 1.0, 50.0])
def test_widget_figures_take_beta(beta):
    for fn in (figs.beta_path_figure, figs.tilted_reference_figure, figs.dpo_weight_figure):
        plt.close(fn(beta=beta))


def test_the_toy_is_the_sentiment_task_on_the_annotator_scale():
    toy = figs.review_toy()
    np.testing.assert_allclose(toy["rewards"], 10.0 * gold_reward(list(toy["responses"])))
    assert np.all(np.diff(toy["rewards"]) < 0)  # best first
    tok = char_tokenizer()
    lengths = [len(tok(text)["input_ids"]) + 1 for text in toy["responses"]]  # + the end token
    assert toy["lengths"].tolist() == lengths
    assert abs(toy["ref_probs"].sum() - 1.0) < 1e-12


def test_dpo_on_exact_preferences_reaches_pi_star_and_the_entropy_of_the_labels():
    toy = figs.review_toy()
    ref, r, beta = toy["ref_probs"], toy["rewards"], toy["beta"]
    fit = figs.fit_dpo_on_toy(ref, r, beta)
    pi_star = rn.kl_regularized_optimum(ref, r, beta)
    np.testing.assert_allclose(fit["policy"], pi_star, atol=1e-10)
    i, j = np.triu_indices(5, 1)
    p = rn.bradley_terry_prob(r[i], r[j])
    entropy = np.mean(-p * np.log(p) - (1 - p) * np.log(1 - p))
    assert abs(fit["losses"][-1] - entropy) < 1e-10
    assert abs(fit["losses"][0] - np.log(2)) < 1e-12  # at the reference every pair costs log 2
    assert fit["policies"].shape == (401, 5) and np.allclose(fit["policies"].sum(axis=1), 1.0)
    # the implied reward is r - beta log Z
    implied = rn.implied_reward(fit["policy"], ref, beta)
    np.testing.assert_allclose(implied, r - beta * rn.log_partition(ref, r, beta), atol=1e-8)


def test_the_two_bugs_miss_pi_star():
    toy = figs.review_toy()
    ref, r, beta, lengths = toy["ref_probs"], toy["rewards"], toy["beta"], toy["lengths"]
    pi_star = rn.kl_regularized_optimum(ref, r, beta)
    live = figs.fit_dpo_on_toy(ref, r, beta, reference="live")
    assert np.allclose(live["losses"], np.log(2))  # the margin is 0 forever
    assert live["policy"][0] > 0.99 and 0.5 * np.abs(live["policy"] - pi_star).sum() > 0.5
    mean = figs.fit_dpo_on_toy(ref, r, beta, reduction="mean", lengths=lengths, steps=1500, lr=30.0)
    assert 0.5 * np.abs(mean["policy"] - pi_star).sum() > 0.5
    # it heads for the fixed point of exercise 4, and its loss reaches the same minimum as the right run
    np.testing.assert_allclose(mean["policy"], mean_logp_limit_reference(ref, r, lengths, beta), atol=1e-3)
    assert abs(mean["losses"][-1] - figs.fit_dpo_on_toy(ref, r, beta)["losses"][-1]) < 1e-4


def test_mean_limit_is_where_a_well_conditioned_mean_run_ends():
    ref, r, lengths, beta = np.array([0.5, 0.3, 0.2]), np.array([1.0, 0.0, -0.5]), np.array([2.0, 1.0, 3.0]), 1.0
    fit = figs.fit_dpo_on_toy(ref, r, beta, reduction="mean", lengths=lengths, steps=2000, lr=3.0)
    np.testing.assert_allclose(fit["policy"], mean_logp_limit_reference(ref, r, lengths, beta), atol=1e-8)


def test_fit_refuses_bad_input():
    toy = figs.review_toy()
    with pytest.raises(ValueError, match="lengths"):
        figs.fit_dpo_on_toy(toy["ref_probs"], toy["rewards"], 1.0, reduction="mean")
    with pytest.raises(ValueError, match="reference"):
        figs.fit_dpo_on_toy(toy["ref_probs"], toy["rewards"], 1.0, reference="copy")
    with pytest.raises(ValueError, match="beta"):
        figs.fit_dpo_on_toy(toy["ref_probs"], toy["rewards"], 0.0)
    with pytest.raises(ValueError):
        figs.fit_dpo_on_toy(toy["ref_probs"], toy["rewards"][:3], 1.0)
