"""Tests of rlhf_edu.{numpy,torch}.anatomy (appendix A1): RMSNorm, SwiGLU, the noisy top-k router, LLaMA counts.

Right values come from elsewhere: hand arithmetic, plain-Python loops, ``transformers``' own modules
(``LlamaRMSNorm``, ``LlamaMLP``, ``LlamaForCausalLM`` and ``MixtralForCausalLM`` on the meta device), finite
differences, and a Monte Carlo of the router's "probability of staying in the top k".
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from rlhf_edu.numpy import anatomy as na
from rlhf_edu.torch import anatomy as ta

# ---------------------------------------------------------------- published sizes, written out by hand

#: (V, D, L, F, H, H_kv, tied, head_dim) and the total of the model card / paper where one is published.
LLAMA_SIZES = {
    "llama2-7b": ((32000, 4096, 32, 11008, 32, 32, False, None), 6_738_415_616),
    "llama2-13b": ((32000, 5120, 40, 13824, 40, 40, False, None), 13_015_864_320),
    "llama2-70b": ((32000, 8192, 80, 28672, 64, 8, False, None), 68_976_648_192),
    "llama3.2-1b": ((128256, 2048, 16, 8192, 32, 8, True, 64), 1_235_814_400),
}


def _hf_config(V, D, L, F, H, H_kv, tied, head_dim, **extra):
    from transformers import LlamaConfig

    kw = {} if head_dim is None else {"head_dim": head_dim}
    return LlamaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, intermediate_size=F, num_attention_heads=H,
                       num_key_value_heads=H_kv, tie_word_embeddings=tied, **kw, **extra)


def _meta_count(model_cls, config):
    with torch.device("meta"):  # shapes only: no memory, nothing downloaded
        model = model_cls(config)
    return sum(p.numel() for p in model.parameters())  # a tied matrix is one Parameter, counted once


# ---------------------------------------------------------------- llama_parameter_count


@pytest.mark.parametrize("name", sorted(LLAMA_SIZES))
def test_published_llama_sizes_match_transformers_on_the_meta_device(name):
    from transformers import LlamaForCausalLM

    (V, D, L, F, H, H_kv, tied, head_dim), published = LLAMA_SIZES[name]
    total = na.llama_parameter_count(V, D, L, F, H, H_kv, tied, head_dim=head_dim)
    assert total == published
    assert total == _meta_count(LlamaForCausalLM, _hf_config(V, D, L, F, H, H_kv, tied, head_dim))
    assert ta.llama_parameter_count(V, D, L, F, H, H_kv, tied, head_dim=head_dim) == total


def test_llama2_13b_step_by_step_as_in_the_notes():
    parts = na.llama_parameter_count(32000, 5120, 40, 13824, 40, 40, breakdown=True)
    assert parts["embedding"] == 32000 * 5120 == 163_840_000
    assert parts["attention"] == 40 * (3 * 26_214_400 + 26_214_400)  # W_Q, W_K, W_V (5120 x 5120) and W_O
    assert parts["mlp"] == 40 * (2 * 5120 * 13824 + 13824 * 5120)  # W_1, W_2 (5120 x 13824), W_3
    assert parts["norms"] == 81 * 5120  # two per layer, one at the end
    assert parts["lm_head"] == 163_840_000
    assert parts["per_layer"] == 104_857_600 + 212_336_640 + 10_240
    assert sum(parts[k] for k in ("embedding", "attention", "mlp", "norms", "lm_head")) == parts["total"]


@pytest.mark.parametrize("extra", [dict(mlp_bias=True), dict(attention_bias=True), dict(mlp_bias=True, attention_bias=True)])
def test_biases_as_transformers_adds_them(extra):
    from transformers import LlamaForCausalLM

    sizes = (101, 48, 3, 80, 6, 2, False, None)
    got = na.llama_parameter_count(*sizes[:7], **extra)
    assert got == _meta_count(LlamaForCausalLM, _hf_config(*sizes, **extra))
    assert got > na.llama_parameter_count(*sizes[:7])


def test_head_dim_not_hidden_over_heads_and_tied_tiny_model():
    from transformers import LlamaForCausalLM

    sizes = (61, 40, 2, 88, 4, 2, True, 12)
    assert na.llama_parameter_count(*sizes[:7], head_dim=12) == _meta_count(LlamaForCausalLM, _hf_config(*sizes))


def test_the_books_tiny_policy():
    from rlhf_edu.lm import char_tokenizer, count_parameters, tiny_causal_lm

    tok = char_tokenizer()
    model = tiny_causal_lm(tok, arch="llama")
    c = model.config
    V, D, F = len(tok), 128, 512
    by_hand = V * D + 2 * (4 * D * D + 3 * D * F + 2 * D) + D + V * D
    assert na.llama_parameter_count(V, c.hidden_size, c.num_hidden_layers, c.intermediate_size,
                                    c.num_attention_heads, c.num_key_value_heads) == by_hand == count_parameters(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_attention_heads=6, num_key_value_heads=4), "num_key_value_heads"),
        (dict(hidden_size=50), "hidden_size"),
        (dict(num_layers=0), "num_layers"),
        (dict(vocab_size=-3), "vocab_size"),
        (dict(head_dim=0), "head_dim"),
    ],
)
def test_llama_count_rejects_bad_sizes_naming_the_argument(kwargs, match):
    base = dict(vocab_size=100, hidden_size=64, num_layers=2, intermediate_size=128, num_attention_heads=4,
                num_key_value_heads=2)
    with pytest.raises(ValueError, match=match):
        na.llama_parameter_count(**{**base, **kwargs})


def test_llama_count_rejects_non_integers():
    with pytest.raises(TypeError, match="hidden_size"):
        na.llama_parameter_count(100, 64.0, 2, 128, 4, 2)


@pytest.mark.parametrize("kwargs, name", [({"tie_word_embeddings": "no"}, "tie_word_embeddings"),
                                          ({"breakdown": 2}, "breakdown"), ({"mlp_bias": 1}, "mlp_bias"),
                                          ({"attention_bias": None}, "attention_bias")])
def test_llama_count_rejects_flags_that_are_not_bools(kwargs, name):
    # "no" would otherwise count as True: a tied model, V x D parameters short, without a word
    for mod in (na, ta):
        with pytest.raises(TypeError, match=name):
            mod.llama_parameter_count(100, 64, 2, 128, 4, 2, **kwargs)
    assert na.llama_parameter_count(100, 64, 2, 128, 4, 2, np.bool_(True)) == na.llama_parameter_count(100, 64, 2, 128, 4, 2, True)


# ---------------------------------------------------------------- rms_norm


def test_rms_norm_by_hand_and_the_norm_is_sqrt_d():
    y = na.rms_norm(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4), eps=0.0)
    rms = math.sqrt((1 + 4 + 9 + 16) / 4)
    np.testing.assert_allclose(y, np.array([1, 2, 3, 4]) / rms, rtol=1e-15)
    assert np.linalg.norm(y) == pytest.approx(2.0)  # sqrt(D), not 1
    assert np.sqrt(np.mean(y**2)) == pytest.approx(1.0)


def test_rms_norm_matches_transformers_llama_rms_norm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    rng = np.random.default_rng(1)
    x, gain = rng.normal(size=(2, 5, 16)) * 3, 1 + rng.normal(size=16)
    module = LlamaRMSNorm(16, eps=1e-5)  # it always normalises in float32 (even a float64 input)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(gain))
        expected = module(torch.tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(na.rms_norm(x, gain, eps=1e-5), expected, rtol=1e-5, atol=1e-6)
    got = ta.rms_norm(torch.tensor(x, dtype=torch.float32), torch.tensor(gain, dtype=torch.float32), eps=1e-5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_rms_norm_half_precision_upcasts_like_transformers():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = torch.tensor([[300.0, -200.0, 100.0, 50.0]], dtype=torch.float16)  # 300**2 overflows float16
    module = LlamaRMSNorm(4).half()
    got = ta.rms_norm(x, torch.ones(4, dtype=torch.float16))
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got, module(x))
    naive = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)  # what the upcast avoids
    assert not torch.isfinite((x * x).mean()).item() and (naive == 0).all()


def test_rms_norm_grad_matches_finite_differences():
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(3, 5)), rng.normal(size=5)
    g = na.rms_norm_grad(x, w, eps=1e-3)
    h = 1e-6
    for idx in np.ndindex(x.shape):
        dx = np.zeros_like(x)
        dx[idx] = h
        fd = (na.rms_norm(x + dx, w, 1e-3).sum() - na.rms_norm(x - dx, w, 1e-3).sum()) / (2 * h)
        assert g["x"][idx] == pytest.approx(fd, rel=1e-6, abs=1e-9)
    for j in range(5):
        dw = np.zeros(5)
        dw[j] = h
        fd = (na.rms_norm(x, w + dw, 1e-3).sum() - na.rms_norm(x, w - dw, 1e-3).sum()) / (2 * h)
        assert g["weight"][j] == pytest.approx(fd, rel=1e-6)
    # scale invariance (gamma = 1, eps = 0): the gradient is orthogonal to x
    g0 = na.rms_norm_grad(x, np.ones(5), eps=0.0)
    np.testing.assert_allclose(np.sum(g0["x"] * x, axis=-1), 0.0, atol=1e-12)


@pytest.mark.parametrize("mod", [na, ta], ids=["numpy", "torch"])
def test_rms_norm_errors_name_the_argument(mod):
    with pytest.raises(ValueError, match="weight"):
        mod.rms_norm(np.ones((2, 4)), np.ones(3))
    with pytest.raises(ValueError, match="eps"):
        mod.rms_norm(np.ones(4), np.ones(4), eps=-1e-6)
    with pytest.raises(ValueError, match="eps = 0"):
        mod.rms_norm(np.zeros((1, 4)), np.ones(4), eps=0.0)
    with pytest.raises(ValueError, match="x"):
        mod.rms_norm(np.array([1.0, np.inf]), np.ones(2))


# ---------------------------------------------------------------- swiglu


def test_swiglu_by_hand_one_unit():
    a, b, c = 2.0, 3.0, 0.5
    silu = a / (1 + math.exp(-a))
    got = na.swiglu(np.array([1.0]), np.array([[a]]), np.array([[b]]), np.array([[c]]))
    assert got[0] == pytest.approx(silu * b * c, rel=1e-14)


def test_swiglu_matches_transformers_llama_mlp_with_transposed_weights():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=12, intermediate_size=20, num_attention_heads=4, num_key_value_heads=4)).double()
    x = torch.randn(3, 4, 12, dtype=torch.float64)
    with torch.no_grad():
        expected = mlp(x).numpy()
    weights = [m.weight.detach().T.numpy() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
    np.testing.assert_allclose(na.swiglu(x.numpy(), *weights), expected, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="weight.T"):  # the (out, in) layout of nn.Linear is caught and named
        na.swiglu(x.numpy(), mlp.gate_proj.weight.detach().numpy(), *weights[1:])


def test_swiglu_no_overflow_for_very_negative_gates():
    with np.errstate(all="raise"):
        got = na.swiglu(np.array([1.0]), np.array([[-1e4]]), np.array([[1.0]]), np.array([[1.0]]))
    assert got[0] == 0.0 or abs(got[0]) < 1e-300


@pytest.mark.parametrize("mod", [na, ta], ids=["numpy", "torch"])
def test_swiglu_shape_errors_name_the_argument(mod):
    x, wg, wd = np.ones((2, 4)), np.ones((4, 6)), np.ones((6, 4))
    with pytest.raises(ValueError, match="w_up"):
        mod.swiglu(x, wg, np.ones((4, 5)), wd)
    with pytest.raises(ValueError, match="w_down"):
        mod.swiglu(x, wg, wg, np.ones((4, 6)))
    with pytest.raises(ValueError, match="w_gate"):
        mod.swiglu(np.ones((2, 3)), wg, wg, wd)


# ---------------------------------------------------------------- noisy_top_k_gating


def _router_by_loops(x, wg, wn, k, noise):
    """The paper's equations with Python loops: kth_excluding by removing component i and sorting."""
    n, e = len(x), len(wg[0])
    softplus = lambda z: math.log1p(math.exp(-abs(z))) + max(z, 0.0)  # noqa: E731
    phi = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))  # noqa: E731
    gates, probs = [], []
    for t in range(n):
        clean = [sum(x[t][d] * wg[d][i] for d in range(len(x[t]))) for i in range(e)]
        std = [softplus(sum(x[t][d] * wn[d][i] for d in range(len(x[t])))) for i in range(e)]
        h = [clean[i] + noise[t][i] * std[i] for i in range(e)]
        top = sorted(range(e), key=lambda i: -h[i])[:k]
        z = sum(math.exp(h[i]) for i in top)
        gates.append([math.exp(h[i]) / z if i in top else 0.0 for i in range(e)])
        row = []
        for i in range(e):
            others = sorted((h[j] for j in range(e) if j != i), reverse=True)
            kth_excluding = others[k - 1] if k - 1 < len(others) else -math.inf
            row.append(phi((clean[i] - kth_excluding) / std[i]))
        probs.append(row)
    importance = [sum(g[i] for g in gates) for i in range(e)]
    load = [sum(p[i] for p in probs) for i in range(e)]
    cv2 = lambda v: statistics.pvariance(v) / statistics.mean(v) ** 2  # noqa: E731
    return gates, importance, load, cv2(importance), cv2(load)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_router_matches_the_papers_equations_written_as_loops(k):
    rng = np.random.default_rng(k)
    x, wg, wn, noise = rng.normal(size=(7, 4)), rng.normal(size=(4, 5)), 0.5 * rng.normal(size=(4, 5)), rng.normal(size=(7, 5))
    out = na.noisy_top_k_gating(x, wg, wn, k, noise, w_importance=0.2, w_load=0.3)
    gates, importance, load, cv_imp, cv_load = _router_by_loops(x.tolist(), wg.tolist(), wn.tolist(), k, noise.tolist())
    np.testing.assert_allclose(out["gates"], gates, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["importance"], importance, rtol=1e-12)
    np.testing.assert_allclose(out["load"], load, rtol=1e-10)
    assert out["importance_loss"] == pytest.approx(0.2 * cv_imp, rel=1e-10)
    assert out["load_loss"] == pytest.approx(0.3 * cv_load, rel=1e-9)
    assert out["loss"] == pytest.approx(0.2 * cv_imp + 0.3 * cv_load, rel=1e-9)
    assert ((out["gates"] > 0).sum(axis=1) == k).all()
    np.testing.assert_allclose(out["gates"].sum(axis=1), 1.0)
    assert set(map(tuple, np.sort(out["top_k"], axis=1))) == {tuple(sorted(np.flatnonzero(g))) for g in out["gates"]}


def test_load_estimate_is_the_probability_of_staying_in_the_top_k_by_monte_carlo():
    rng = np.random.default_rng(5)
    x, wg, wn = rng.normal(size=(1, 3)), rng.normal(size=(3, 6)), 0.5 * rng.normal(size=(3, 6))
    noise = rng.normal(size=(1, 6))
    k = 2
    out = na.noisy_top_k_gating(x, wg, wn, k, noise)
    clean, std = (x @ wg)[0], np.logaddexp(0, x @ wn)[0]
    m = 200_000
    for i in range(6):  # redraw only expert i's noise, keep the others: how often is i in the top k?
        h = np.tile(clean + noise[0] * std, (m, 1))
        h[:, i] = clean[i] + rng.standard_normal(m) * std[i]
        in_top = (h > h[:, [i]]).sum(axis=1) < k
        p, se = in_top.mean(), math.sqrt(in_top.mean() * (1 - in_top.mean()) / m) + 1e-4
        assert abs(out["load"][i] - p) < 5 * se, (i, out["load"][i], p)


def test_router_noise_free_is_plain_top_k_softmax_and_dense_k_is_softmax():
    rng = np.random.default_rng(8)
    x, wg, wn = rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    logits = x @ wg
    dense = na.noisy_top_k_gating(x, wg, wn, 5)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # the notes' G_sigma
    np.testing.assert_allclose(dense["gates"], softmax, rtol=1e-12)
    np.testing.assert_allclose(dense["load"], np.full(5, 4.0))  # every expert always chosen
    one = na.noisy_top_k_gating(x, wg, wn, 1)
    np.testing.assert_array_equal(one["top_k"][:, 0], logits.argmax(axis=1))
    np.testing.assert_allclose(one["gates"].max(axis=1), 1.0)


def test_router_seed_gives_the_same_routing_in_both_trees_and_as_the_drawn_noise():
    rng = np.random.default_rng(9)
    x, wg, wn = rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    by_seed = na.noisy_top_k_gating(x, wg, wn, 2, rng=11)
    by_noise = na.noisy_top_k_gating(x, wg, wn, 2, np.random.default_rng(11).standard_normal((5, 3)))
    np.testing.assert_array_equal(by_seed["gates"], by_noise["gates"])
    twin = ta.noisy_top_k_gating(torch.tensor(x), torch.tensor(wg), torch.tensor(wn), 2, rng=11)
    np.testing.assert_allclose(twin["gates"].numpy(), by_seed["gates"], rtol=1e-12)
    np.testing.assert_array_equal(twin["top_k"].numpy(), by_seed["top_k"])


def test_router_balanced_batch_has_zero_loss():
    x = np.eye(4)  # token t prefers expert t: every expert gets one token and the same gate mass
    out = na.noisy_top_k_gating(x, 3 * np.eye(4), np.zeros((4, 4)), 1)
    assert out["importance_loss"] == pytest.approx(0.0, abs=1e-15)
    assert out["load_loss"] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("mod", [na, ta], ids=["numpy", "torch"])
def test_router_errors_name_the_argument(mod):
    x, w = np.ones((3, 2)), np.ones((2, 4))
    with pytest.raises(ValueError, match="k must be"):
        mod.noisy_top_k_gating(x, w, w, 5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        mod.noisy_top_k_gating(x, w, w, 0)
    with pytest.raises(ValueError, match="w_noise"):
        mod.noisy_top_k_gating(x, w, np.ones((2, 3)), 1)
    with pytest.raises(ValueError, match="noise must have shape"):
        mod.noisy_top_k_gating(x, w, w, 1, np.ones((3, 3)))
    with pytest.raises(ValueError, match="not both"):
        mod.noisy_top_k_gating(x, w, w, 1, np.ones((3, 4)), rng=0)
    with pytest.raises(ValueError, match=r"x must be \(N, D\)"):
        mod.noisy_top_k_gating(np.ones(2), w, w, 1)
    with pytest.raises(ValueError, match="w_load"):
        mod.noisy_top_k_gating(x, w, w, 1, w_load=-1.0)


# ---------------------------------------------------------------- the exercises' references (appendix A1)


@pytest.mark.parametrize("tied", [False, True])
def test_moe_exercise_reference_matches_transformers_mixtral_on_the_meta_device(tied):
    from transformers import MixtralConfig, MixtralForCausalLM

    from rlhf_edu.exercises.anatomy import MIXTRAL_8X7B, moe_parameter_count

    V, D, L, F, H, H_kv, E, k = MIXTRAL_8X7B
    config = MixtralConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, intermediate_size=F, num_attention_heads=H,
                           num_key_value_heads=H_kv, num_local_experts=E, num_experts_per_tok=k, tie_word_embeddings=tied)
    total, active = moe_parameter_count(*MIXTRAL_8X7B, tied)
    assert total == _meta_count(MixtralForCausalLM, config)
    if not tied:  # the Mixtral paper: 46.7B parameters, 12.9B active per token
        assert (round(total / 1e9, 1), round(active / 1e9, 1)) == (46.7, 12.9)
    # active = total minus the (E - k) experts a token skips
    assert total - active == L * (E - k) * 3 * D * F


def test_intermediate_size_exercise_reference_gives_the_sizes_used_above():
    from rlhf_edu.exercises.anatomy import PUBLISHED_INTERMEDIATE_SIZES, llama_intermediate_size

    for (d, multiple_of, mult), width in PUBLISHED_INTERMEDIATE_SIZES.items():
        assert llama_intermediate_size(d, multiple_of, mult) == width
    for (V, D, L, F, H, H_kv, tied, head_dim), _ in LLAMA_SIZES.values():
        assert any(d == D and w == F for (d, _, _), w in PUBLISHED_INTERMEDIATE_SIZES.items())


def test_switch_loss_reference_by_hand():
    from rlhf_edu.exercises.anatomy import switch_balance_loss

    z = np.log(np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]))  # both tokens go to expert 0
    # f = (1, 0, 0), P = (0.65, 0.25, 0.1): N * sum f P = 3 * 0.65
    assert switch_balance_loss(z) == pytest.approx(1.95, rel=1e-12)
    assert switch_balance_loss(np.eye(5) * 2.0) == pytest.approx(1.0, rel=1e-12)  # balanced: the minimum, 1
