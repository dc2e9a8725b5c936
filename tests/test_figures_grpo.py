"""Chapter 5's slide figures build, take their widget arguments, and the measurements behind them hold."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from figure_checks import check_figure  # noqa: E402

from rlhf_edu.figures import grpo as figs  # noqa: E402
from rlhf_edu.figures import load_all  # noqa: E402

NAMES = ["ch05_group_advantages", "ch05_aggregation_weights", "ch05_one_line_changes", "ch05_rloo_variance",
         "ch05_memory"]


@pytest.mark.parametrize("name", NAMES)
def test_figure_builds_with_labelled_axes(name):
    check_figure(name, load_all()[name]())


def test_widget_arguments():
    for fig in (figs.rloo_variance_figure(group_size=8, group_sizes=(2, 8), n_batches=500),
                figs.group_advantages_figure(std="sample"), figs.memory_figure(n_params=70e9, precision="fp32"),
                figs.aggregation_weights_figure(lengths=(1, 3), max_length=4)):
        assert isinstance(fig, Figure)
        plt.close(fig)


def test_aggregation_weights_are_the_formulas():
    w = figs.aggregation_weights([2, 4, 8, 16], max_length=16)
    lengths = np.array([2, 4, 8, 16])
    np.testing.assert_allclose(w["sequence_mean"][:, 0], 1 / (4 * lengths))
    np.testing.assert_allclose(w["token_mean"][:, 0], 1 / 30)
    np.testing.assert_allclose(w["dr_grpo"][:, 0], 1 / 64)
    assert np.all(w["token_mean"][0, 2:] == 0)  # padding has no weight


def test_one_line_changes_drop_the_tokens_they_should():
    _, g = figs.token_gradients("GRPO")
    _, g_high = figs.token_gradients("DAPO clip-higher")
    _, g_cispo = figs.token_gradients("CISPO")
    _, g_gspo = figs.token_gradients("GSPO")
    assert g[0, 1] == 0 and g_high[0, 1] > 0      # ratio 1.24, A > 0: clipped at 1.2, free under 1.28
    assert g[2, 1] == 0 and g_high[2, 1] == 0     # ratio 0.7, A < 0: clip-higher leaves the low side alone
    assert np.all((g_cispo != 0) == (figs.one_line_batch()[3] > 0))  # CISPO: every real token keeps a gradient
    assert np.all(g_gspo[:3] == 0) and np.all(g_gspo[3, :4] < 0)  # GSPO's 3e-4 range: whole sequences drop


def test_rloo_is_unbiased_and_the_group_mean_is_not():
    est = figs.baseline_estimates(4, n_batches=20000)
    for name in ("no baseline", "moving average", "leave-one-out"):
        se = est[name].std(axis=0) / np.sqrt(20000)
        assert np.all(np.abs(est[name].mean(axis=0) - est["exact"]) < 4 * se + 1e-12), name
    np.testing.assert_allclose(est["group mean"], 0.75 * est["leave-one-out"], atol=1e-12)  # (G - 1) / G


def test_memory_by_hand():
    m = figs.rl_memory(7e9)
    assert sum(m["ppo"].values()) == pytest.approx(7e9 * (2 * 16 + 2 * 2))
    assert sum(m["grpo"].values()) == pytest.approx(7e9 * (16 + 2 + 2))
    m = figs.rl_memory(1e9, precision="fp32", reward_model=False)
    assert sum(m["ppo"].values()) == pytest.approx(1e9 * (2 * 16 + 2 * 4))
    assert sum(m["grpo"].values()) == pytest.approx(1e9 * (16 + 4))
    with pytest.raises(ValueError, match="precision"):
        figs.rl_memory(precision="bf16")
