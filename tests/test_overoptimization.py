"""Gao et al.'s gold-reward forms and their least-squares fit (rlhf_edu.numpy.overoptimization), and chapter 9's
figures and measurement helpers (rlhf_edu.figures.overoptimization)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from figure_checks import check_figure  # noqa: E402

from rlhf_edu import numpy as rn  # noqa: E402
from rlhf_edu.figures import load_all  # noqa: E402
from rlhf_edu.figures import overoptimization as figs  # noqa: E402

D = np.array([0.3, 0.6, 0.9, 1.2, 1.6, 2.0, 2.5, 3.0, 3.6, 4.2])


# ---- the forms ----


def test_forms_are_zero_at_the_start_and_peak_where_the_algebra_says():
    assert rn.best_of_n_gold(0.0, 0.4, 0.1) == 0.0 and rn.rl_gold(0.0, 0.4, 0.1) == 0.0
    d = np.linspace(0.0, 10.0, 200_001)
    bon = rn.best_of_n_gold(d, 0.4, 0.1)
    assert abs(d[bon.argmax()] - 0.4 / 0.2) < 1e-4 and abs(bon.max() - 0.4**2 / 0.4) < 1e-9
    rl = rn.rl_gold(d, 0.3, 0.15)
    d_star = np.exp(0.3 / 0.15 - 1.0)  # alpha - beta (log d + 1) = 0
    assert abs(d[rl.argmax()] - d_star) < 1e-3 and abs(rl.max() - 0.15 * d_star) < 1e-8


def test_forms_broadcast_coefficients_over_curves():
    alpha, beta = np.array([[0.2], [0.4]]), np.array([[0.05], [0.1]])
    out = rn.rl_gold(D, alpha, beta)
    assert out.shape == (2, D.size)
    np.testing.assert_allclose(out[1], rn.rl_gold(D, 0.4, 0.1))


@pytest.mark.parametrize("form", [rn.best_of_n_gold, rn.rl_gold])
def test_forms_refuse_bad_input(form):
    with pytest.raises(ValueError, match="d"):
        form([-0.1, 1.0], 0.4, 0.1)  # d is a square root of a KL
    with pytest.raises(ValueError, match="alpha"):
        form([1.0], np.nan, 0.1)
    with pytest.raises(ValueError, match="broadcast"):
        form(np.ones(3), np.ones(2), 0.1)
    with pytest.raises(TypeError, match="d"):
        form(["a"], 0.4, 0.1)


# ---- the fit ----


@pytest.mark.parametrize("form,truth", [("best_of_n", (0.45, 0.08)), ("rl", (0.3, 0.12)), ("rl", (0.5, -0.05))])
def test_fit_recovers_noise_free_coefficients_exactly(form, truth):
    gain = (rn.best_of_n_gold if form == "best_of_n" else rn.rl_gold)(D, *truth)
    fit = rn.fit_gold_curve(D, gain, form=form)
    assert fit.form == form and fit.dof == D.size - 2
    assert abs(fit.alpha - truth[0]) < 1e-10 and abs(fit.beta - truth[1]) < 1e-10
    assert fit.alpha_se < 1e-8 and fit.beta_se < 1e-8 and fit.residual_std < 1e-9


@pytest.mark.parametrize("form", ["best_of_n", "rl"])
def test_fit_standard_errors_describe_the_spread_of_repeated_fits(form):
    """Coverage: over many synthetic experiments the truth lies within 2 SE as often as Student's t says, within
    3 SE almost always, and the SE matches the spread of the estimates."""
    rng = np.random.default_rng(1)
    truth = (0.4, 0.1)
    clean = (rn.best_of_n_gold if form == "best_of_n" else rn.rl_gold)(D, *truth)
    fits = [rn.fit_gold_curve(D, clean + 0.03 * rng.normal(size=D.size), form=form) for _ in range(3000)]
    alpha = np.array([f.alpha for f in fits])
    beta = np.array([f.beta for f in fits])
    for est, se, true in ((alpha, [f.alpha_se for f in fits], truth[0]), (beta, [f.beta_se for f in fits], truth[1])):
        z = np.abs(est - true) / np.array(se)
        assert abs(est.mean() - true) < 4 * est.std() / np.sqrt(est.size)  # unbiased
        assert 0.89 < np.mean(z < 2) < 0.95  # P(|t_8| < 2) = 0.919
        assert np.mean(z < 3) > 0.97  # P(|t_8| < 3) = 0.983
        assert 0.9 < np.sqrt(np.mean(np.square(se))) / est.std() < 1.1


def test_fit_matches_a_generic_least_squares_solver():
    rng = np.random.default_rng(2)
    gain = rn.rl_gold(D, 0.3, 0.1) + 0.02 * rng.normal(size=D.size)
    fit = rn.fit_gold_curve(D, gain, form="rl")
    X = np.stack([D, -D * np.log(D)], axis=1)
    coef, rss, *_ = np.linalg.lstsq(X, gain, rcond=None)
    np.testing.assert_allclose([fit.alpha, fit.beta], coef, rtol=1e-10)
    np.testing.assert_allclose(fit.covariance, rss[0] / (D.size - 2) * np.linalg.inv(X.T @ X), rtol=1e-8)


def test_fit_ignores_nothing_at_d_zero_but_a_degree_of_freedom():
    gain = rn.best_of_n_gold(D, 0.4, 0.1) + 0.01 * np.random.default_rng(3).normal(size=D.size)
    with_zero = rn.fit_gold_curve(np.append(0.0, D), np.append(0.0, gain), form="best_of_n")
    without = rn.fit_gold_curve(D, gain, form="best_of_n")
    assert abs(with_zero.alpha - without.alpha) < 1e-12 and with_zero.dof == without.dof + 1


def test_fit_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="at least 3"):
        rn.fit_gold_curve([1.0, 2.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="separate"):
        rn.fit_gold_curve([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])  # one distance only
    with pytest.raises(ValueError, match="separate"):
        rn.fit_gold_curve([0.0, 0.0, 1.0], [0.0, 0.0, 0.3], form="rl")  # log 1 = 0: beta unseen
    with pytest.raises(ValueError, match="form"):
        rn.fit_gold_curve(D, D, form="ppo")
    with pytest.raises(ValueError, match="shapes"):
        rn.fit_gold_curve(D, D[:-1])
    with pytest.raises(ValueError, match="gain"):
        rn.fit_gold_curve(D, np.where(D > 2, np.inf, D))


# ---- the figures and the measurements behind them ----


def test_goodhart_toy_regressional_against_extremal():
    gauss, heavy = figs.goodhart_toy("gaussian"), figs.goodhart_toy("heavy")
    np.testing.assert_allclose(gauss["kl"], heavy["kl"], atol=1e-9)  # distinct rewards: KL depends on n only
    assert np.all(gauss["kl"] <= gauss["kl_bound"] + 1e-9)
    assert np.all(np.diff(gauss["gold"]) > 0)  # light tails: the gold keeps rising
    peak = int(heavy["gold"].argmax())
    assert 0 < peak < len(heavy["n"]) - 1 and heavy["gold"][-1] < heavy["gold"][peak] - 1.0  # heavy: up, then down
    assert np.all(np.diff(heavy["proxy"]) > 0)  # while the proxy only rises
    with pytest.raises(ValueError, match="dof"):
        figs.goodhart_toy("heavy", dof=2.0)


def test_best_of_n_gold_curve_from_a_pool():
    rng = np.random.default_rng(4)
    gold = rng.random((3, 64))
    curve = figs.best_of_n_gold_curve(gold + 0.1 * rng.normal(size=gold.shape), gold, (1, 2, 8))
    np.testing.assert_allclose(curve["d"] ** 2, [rn.best_of_n_kl_bound(n) for n in (1, 2, 8)])
    assert np.all(curve["kl_pool"] <= curve["kl_bound"] + 1e-12) and np.all(np.diff(curve["gold"]) > 0)


def test_gold_labelled_pairs_drop_ties_and_nest():
    from rlhf_edu.tasks import SentimentTask

    task = SentimentTask(seed=0)
    comps = np.array([[" great fun.", " dull.", " fun.", " fun.", " nice.", " bad."]] * 2, dtype=object)
    pool = {"prompts": ["review: the film was", "review: the food is"], "completions": comps,
            "gold": np.array([rn_gold(comps[0])] * 2)}
    pairs = figs.gold_labelled_pairs(task, pool, 4, beta=float("inf"))
    assert len(pairs) == 4 and all(p["gold_chosen"] > p["gold_rejected"] for p in pairs)  # the (fun, fun) ties are gone
    assert figs.gold_labelled_pairs(task, pool, 2)[0]["prompt"] == pairs[0]["prompt"]
    with pytest.raises(ValueError, match="usable|pairs"):
        figs.gold_labelled_pairs(task, pool, 5)


def rn_gold(texts):
    from rlhf_edu.tasks import gold_reward

    return gold_reward(list(texts))


@pytest.mark.parametrize("name", ["ch09_goodhart_toy", "ch09_gold_forms"])
def test_chapter9_figures_build(name):
    check_figure(name, load_all()[name]())


def test_measured_curves_figure_takes_the_chapters_curves():
    assert "ch09_gold_vs_proxy" in load_all()
    d = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    curve = {"d": d, "gold": 0.3 + rn.rl_gold(d, 0.3, 0.2), "proxy": 2 * d}
    fig = figs.gold_proxy_figure({"a": curve}, {"a": curve, "b": {**curve, "gold": curve["gold"] + 0.01}})
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    plt.close(fig)
