"""Appendix A1's figures (rlhf_edu/figures/anatomy.py): each builds with labelled axes, and the experiment and
numbers behind them are right."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from figure_checks import check_figure  # noqa: E402

from rlhf_edu.figures import REGISTRY  # noqa: E402
from rlhf_edu.figures import anatomy as figs  # noqa: E402  (registers its figures; load_all would import every chapter's)

CHA1 = ["chA1_llama_block", "chA1_llama2_13b_parts", "chA1_parameter_breakdown", "chA1_rms_norm", "chA1_swiglu",
        "chA1_grouped_query_attention", "chA1_router_balance"]


@pytest.mark.parametrize("name", CHA1)
def test_appendix_a1_figures_build_with_labelled_axes(name):
    check_figure(name, REGISTRY[name]())


def test_widget_arguments_and_other_models():
    for fig in (figs.parameter_bars_figure(hidden_size=1024, num_layers=4, num_attention_heads=8, num_key_value_heads=2),
                figs.llama_block_figure(figs.PUBLISHED_LLAMA_SIZES["LLaMA-2 70B"]),
                figs.grouped_query_figure(figs.PUBLISHED_LLAMA_SIZES["LLaMA-2 7B"], context=128, batch=2)):
        assert isinstance(fig, Figure)
        plt.close(fig)


def test_kv_cache_by_hand():
    # LLaMA-2 70B: 80 layers x (K and V) x 8 heads x 128 dims x 2 bytes
    assert figs.kv_cache_bytes_per_token(80, 8, 128) == 80 * 2 * 8 * 128 * 2 == 320 * 1024
    # multi-head 70B would hold 8 times as much
    assert figs.kv_cache_bytes_per_token(80, 64, 128) == 8 * figs.kv_cache_bytes_per_token(80, 8, 128)


def test_published_sizes_and_the_tiny_policy():
    from rlhf_edu.lm import char_tokenizer
    from rlhf_edu.numpy.anatomy import llama_parameter_count

    totals = {name: llama_parameter_count(**s) for name, s in figs.PUBLISHED_LLAMA_SIZES.items()}
    assert totals == {"LLaMA-2 7B": 6_738_415_616, "LLaMA-2 13B": 13_015_864_320, "LLaMA-2 70B": 68_976_648_192,
                      "Llama-3.2 1B (tied)": 1_235_814_400}
    tiny = figs.tiny_policy_sizes()
    assert tiny == dict(vocab_size=len(char_tokenizer()), hidden_size=128, num_layers=2, intermediate_size=512,
                        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)


def test_router_training_balances_the_experts():
    r = figs.train_router_balance(steps=150)
    before, after = r["tokens_before"], r["tokens_after"]
    assert before.sum() == after.sum() == 256 * 2  # every token goes to k = 2 experts
    assert before[:2].sum() > 0.8 * before.sum()  # the skewed start: experts 0 and 1 take most tokens
    assert after.max() < 1.5 * after.sum() / 8 and after.min() > 0.5 * after.sum() / 8, after
    assert r["loss"][-10:].mean() < 0.05 * r["loss"][:10].mean(), (r["loss"][:3], r["loss"][-3:])
    np.testing.assert_allclose(r["loss"], r["importance_loss"] + r["load_loss"])
