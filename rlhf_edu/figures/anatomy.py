r"""Slide figures and one small experiment of appendix A1 (the anatomy of the policy).

- :data:`PUBLISHED_LLAMA_SIZES`: the sizes of LLaMA-2 7B, 13B and 70B and of Llama 3.2 1B (tied embeddings),
  written out by hand from the papers and model cards, as arguments of ``llama_parameter_count``;
  :func:`tiny_policy_sizes`: the same for the book's tiny policy (``tiny_causal_lm(arch="llama")``);
- :func:`train_router_balance`: a noisy top-k router trained on its load-balancing loss alone, from a
  router that sends most tokens to two experts.

Figures (each takes only keyword arguments with defaults and returns a matplotlib ``Figure``):

- :func:`llama_block_figure` (``chA1_llama_block``): the decoder, part by part, with LLaMA-2 13B's counts;
- :func:`parameter_bars_figure` (``chA1_llama2_13b_parts``): where the parameters of one model sit (the
  chapter's widget redraws it for other sizes);
- :func:`parameter_breakdown_figure` (``chA1_parameter_breakdown``): the shares of the parts across models;
- :func:`rms_norm_figure` (``chA1_rms_norm``): RMSNorm puts vectors on the sphere of radius :math:`\sqrt D`;
- :func:`swiglu_figure` (``chA1_swiglu``): SiLU against ReLU, and the gate of a SwiGLU unit;
- :func:`grouped_query_figure` (``chA1_grouped_query_attention``): KV cache and attention weights against the
  number of key/value heads;
- :func:`router_balance_figure` (``chA1_router_balance``): the balancing loss spreads the tokens.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.anatomy import llama_parameter_count, rms_norm
from rlhf_edu.validation import check_integer, check_positive

__all__ = [
    "PUBLISHED_LLAMA_SIZES",
    "PART_LABELS",
    "tiny_policy_sizes",
    "kv_cache_bytes_per_token",
    "train_router_balance",
    "llama_block_figure",
    "parameter_bars_figure",
    "parameter_breakdown_figure",
    "rms_norm_figure",
    "swiglu_figure",
    "grouped_query_figure",
    "router_balance_figure",
]

#: Published sizes (Touvron et al. 2023, Table/appendix of "Llama 2"; the Llama 3.2 model card), as keyword
#: arguments of ``llama_parameter_count``. Nothing is downloaded: these numbers are the whole configuration.
PUBLISHED_LLAMA_SIZES = {
    "LLaMA-2 7B": dict(vocab_size=32000, hidden_size=4096, num_layers=32, intermediate_size=11008,
                       num_attention_heads=32, num_key_value_heads=32),
    "LLaMA-2 13B": dict(vocab_size=32000, hidden_size=5120, num_layers=40, intermediate_size=13824,
                        num_attention_heads=40, num_key_value_heads=40),
    "LLaMA-2 70B": dict(vocab_size=32000, hidden_size=8192, num_layers=80, intermediate_size=28672,
                        num_attention_heads=64, num_key_value_heads=8),
    "Llama-3.2 1B (tied)": dict(vocab_size=128256, hidden_size=2048, num_layers=16, intermediate_size=8192,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
}

#: The parts of the breakdown, in the order of the forward pass, with their colours.
PART_LABELS = {"embedding": "embedding", "attention": "attention (Q, K, V, O)", "mlp": "SwiGLU MLP",
               "norms": "RMSNorm gains", "lm_head": "output layer"}
_COLORS = {"embedding": "tab:blue", "attention": "tab:orange", "mlp": "tab:green", "norms": "tab:red",
           "lm_head": "tab:purple"}


def tiny_policy_sizes():
    """The book's tiny policy (``tiny_causal_lm(char_tokenizer(), arch="llama")``) as ``llama_parameter_count``
    arguments, read from the model's config (built on the meta device: no weights).

    >>> tiny_policy_sizes()["hidden_size"], tiny_policy_sizes()["intermediate_size"]
    (128, 512)
    """
    import torch

    from rlhf_edu.lm import char_tokenizer, tiny_causal_lm

    with torch.device("meta"):
        c = tiny_causal_lm(char_tokenizer(), arch="llama").config
    return dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_layers=c.num_hidden_layers,
                intermediate_size=c.intermediate_size, num_attention_heads=c.num_attention_heads,
                num_key_value_heads=c.num_key_value_heads, tie_word_embeddings=bool(c.tie_word_embeddings))


def kv_cache_bytes_per_token(num_layers, num_key_value_heads, head_dim, bytes_per_value=2):
    r"""Bytes of key/value cache one token occupies while generating: :math:`2 L H_{kv} d_h` values (a key and
    a value vector per key/value head per layer), ``bytes_per_value`` each (2 for bfloat16).

    >>> kv_cache_bytes_per_token(80, 8, 128)   # LLaMA-2 70B in bfloat16: 320 KiB per token
    327680
    """
    return (2 * check_integer("num_layers", num_layers, 1) * check_integer("num_key_value_heads", num_key_value_heads, 1)
            * check_integer("head_dim", head_dim, 1) * check_integer("bytes_per_value", bytes_per_value, 1))


def train_router_balance(steps=150, n_tokens=256, dim=8, n_experts=8, k=2, lr=0.05, seed=0):
    """Train a noisy top-k router on its load-balancing loss alone (``w_importance = w_load = 1``), with Adam
    (six lines written out below; ``torch.optim`` would first import ``torch._dynamo``, seconds of start-up).

    The start is skewed: a constant input feature (a bias) favours experts 0 and 1 (1 and 2 counting from 1,
    as the chapter and the figure do), so they receive most of the tokens. Each step draws fresh noise from one NumPy generator (seeded), through
    ``rlhf_edu.torch.noisy_top_k_gating(..., rng=generator)``. Returns a dict: ``loss``, ``importance_loss``,
    ``load_loss`` (one per step), ``tokens_before`` and ``tokens_after`` (tokens per expert, noise-free
    routing of the batch, before and after training), and ``steps``.
    """
    import torch

    from rlhf_edu.torch.anatomy import noisy_top_k_gating

    steps = check_integer("steps", steps, 1)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_tokens, dim))
    x[:, 0] = 1.0
    w_gate = 0.3 * rng.normal(size=(dim, n_experts))
    w_gate[0, :2] += (2.5, 2.0)
    xt = torch.tensor(x)
    wg = torch.tensor(w_gate, requires_grad=True)
    wn = torch.zeros((dim, n_experts), dtype=torch.float64, requires_grad=True)
    lr = check_positive("lr", lr)
    params = [wg, wn]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def tokens_per_expert():
        with torch.no_grad():
            top = noisy_top_k_gating(xt, wg, wn, k)["top_k"]
        return np.bincount(top.numpy().ravel(), minlength=n_experts)

    before = tokens_per_expert()
    history = {"loss": [], "importance_loss": [], "load_loss": []}
    for step in range(1, steps + 1):
        out = noisy_top_k_gating(xt, wg, wn, k, rng=rng, w_importance=1.0, w_load=1.0)
        grads = torch.autograd.grad(out["loss"], params)
        with torch.no_grad():
            for p, g, (m, v) in zip(params, grads, moments):  # Adam (Kingma and Ba, 2015)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                p -= lr * (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + eps)
        for key in history:
            history[key].append(out[key].item())
    return {**{key: np.array(v) for key, v in history.items()}, "tokens_before": before,
            "tokens_after": tokens_per_expert(), "steps": steps}


def _millions(n):
    return f"{n / 1e6:,.2f}M" if n < 1e9 else f"{n / 1e9:,.3f}B"


@slide_figure("chA1_llama_block")
def llama_block_figure(sizes=None):
    """The decoder as a column of boxes, input at the bottom, each with its weights' shapes and count."""
    s = dict(PUBLISHED_LLAMA_SIZES["LLaMA-2 13B"] if sizes is None else sizes)
    parts = llama_parameter_count(**s, breakdown=True)
    V, D, L, F = s["vocab_size"], s["hidden_size"], s["num_layers"], s["intermediate_size"]
    H, H_kv = s["num_attention_heads"], s["num_key_value_heads"]
    d_h = D // H
    per_attn, per_mlp = parts["attention"] // L, parts["mlp"] // L
    rows = [  # (text, count text, colour, inside the repeated block)
        ("token ids  (B, T)", "", "0.9", False),
        (f"embedding  E: {V} x {D}", _millions(parts["embedding"]), _COLORS["embedding"], False),
        (f"RMSNorm  gamma: {D}", f"{D:,}", _COLORS["norms"], True),
        (f"attention  W_Q: {D} x {H * d_h},  W_K, W_V: {D} x {H_kv * d_h},  W_O: {H * d_h} x {D}"
         f"\n{H} query heads, {H_kv} key/value heads of dimension {d_h}; rotary positions (no weights)",
         _millions(per_attn), _COLORS["attention"], True),
        ("+ residual", "", "0.95", True),
        (f"RMSNorm  gamma: {D}", f"{D:,}", _COLORS["norms"], True),
        (f"SwiGLU  W_gate, W_up: {D} x {F},  W_down: {F} x {D}", _millions(per_mlp), _COLORS["mlp"], True),
        ("+ residual", "", "0.95", True),
        (f"final RMSNorm  gamma: {D}", f"{D:,}", _COLORS["norms"], False),
        (f"output layer  W_out: {D} x {V}" + ("  (tied: = E transposed)" if s.get("tie_word_embeddings") else ""),
         _millions(parts["lm_head"]), _COLORS["lm_head"], False),
        ("logits  (B, T, V)  ->  softmax: the policy pi(next token | prefix)", "", "0.9", False),
    ]
    fig, ax = plt.subplots(figsize=(10, 6.6), layout="constrained")
    n = len(rows)
    for i, (text, count, color, inside) in enumerate(rows):
        y = i
        x0 = 0.08 if inside else 0.0
        width = 0.72 - x0 if inside else 0.8
        ax.add_patch(plt.Rectangle((x0, y - 0.38), width, 0.76, facecolor=color, alpha=0.35, edgecolor="k", lw=0.6))
        ax.text(x0 + 0.01, y, text, va="center", ha="left", fontsize=8.5)
        if count:
            ax.text(0.99, y, count, va="center", ha="right", fontsize=9, family="monospace")
        if i < n - 1:
            ax.annotate("", xy=(0.4, y + 0.62), xytext=(0.4, y + 0.38), arrowprops=dict(arrowstyle="->", lw=0.6))
    inner = [i for i, r in enumerate(rows) if r[3]]
    ax.add_patch(plt.Rectangle((0.04, inner[0] - 0.5), 0.72, len(inner), fill=False, edgecolor="k", ls="--", lw=1.0))
    ax.text(0.045, inner[-1] + 0.45, f"x {L} layers:  {_millions(parts['per_layer'])} per layer", fontsize=9,
            va="top", ha="left", style="italic")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(-0.6, n - 0.4)
    ax.axis("off")
    ax.set_title(f"A LLaMA decoder, input at the bottom: {parts['total']:,} parameters "
                 f"(V={V}, D={D}, L={L}, F={F}, H={H}, H_kv={H_kv})", fontsize=10)
    return fig


@slide_figure("chA1_llama2_13b_parts")
def parameter_bars_figure(vocab_size=32000, hidden_size=5120, num_layers=40, intermediate_size=13824,
                          num_attention_heads=40, num_key_value_heads=40, tie_word_embeddings=False, title=None):
    """Where one model's parameters sit: one bar per part, in millions, with its share (default: LLaMA-2 13B)."""
    parts = llama_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, num_attention_heads,
                                  num_key_value_heads, tie_word_embeddings, breakdown=True)
    names = list(PART_LABELS)
    values = np.array([parts[k] for k in names], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    bars = ax.barh([PART_LABELS[k] for k in names], values / 1e6, color=[_COLORS[k] for k in names])
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {v / 1e6:,.1f}M ({100 * v / parts['total']:.1f}%)",
                va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, values.max() / 1e6 * 1.35)
    ax.set_xlabel("parameters (millions)")
    ax.set_title(title or (f"{parts['total'] / 1e9:.3f}B parameters: D={hidden_size}, L={num_layers}, F={intermediate_size}, "
                           f"H={num_attention_heads}, H_kv={num_key_value_heads}" + (", tied" if tie_word_embeddings else "")),
                 fontsize=10)
    return fig


@slide_figure("chA1_parameter_breakdown")
def parameter_breakdown_figure(models=None):
    """The share of each part in models from the book's tiny policy to LLaMA-2 70B (stacked bars, percent)."""
    models = dict(models or {"book's tiny policy": tiny_policy_sizes(), **PUBLISHED_LLAMA_SIZES})
    fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
    names = list(models)
    for row, name in enumerate(names):
        parts = llama_parameter_count(**models[name], breakdown=True)
        left = 0.0
        for key in PART_LABELS:
            share = 100 * parts[key] / parts["total"]
            ax.barh(row, share, left=left, color=_COLORS[key], label=PART_LABELS[key] if row == 0 else None)
            if share > 6:
                ax.text(left + share / 2, row, f"{share:.0f}%", ha="center", va="center", fontsize=8, color="white")
            left += share
        ax.text(101, row, _millions(parts["total"]), va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 112)
    ax.set_xlabel("share of the parameters (%)")
    ax.legend(ncol=5, fontsize=8, loc="lower center", bbox_to_anchor=(0.45, 1.0), frameon=False)
    return fig


@slide_figure("chA1_rms_norm")
def rms_norm_figure(n=300, seed=0):
    """2-D vectors of many scales before and after RMSNorm (gain 1): afterwards they lie on the circle of
    radius sqrt(2), root mean square 1, not on the unit circle."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) * np.exp(rng.uniform(-1.5, 1.5, size=(n, 1)))
    y = rms_norm(x, np.ones(2))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
    t = np.linspace(0, 2 * np.pi, 200)
    for ax, pts, title in ((axes[0], x, "before: x"), (axes[1], y, "after: x / RMS(x)")):
        ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.6)
        ax.plot(np.sqrt(2) * np.cos(t), np.sqrt(2) * np.sin(t), "C2", lw=1.2, label="radius sqrt(D) = 1.414 (RMS 1)")
        ax.plot(np.cos(t), np.sin(t), "k--", lw=0.8, label="unit circle (the notes' 'unit norm')")
        ax.set_aspect("equal")
        ax.set_xlabel("feature 1")
        ax.set_ylabel("feature 2")
        ax.set_title(title)
    axes[1].set_xlim(-2.2, 2.2)
    axes[1].set_ylim(-2.2, 2.2)
    axes[1].legend(fontsize=8, loc="upper right")
    return fig


@slide_figure("chA1_swiglu")
def swiglu_figure():
    """Left: SiLU against ReLU. Right: one SwiGLU unit, SiLU(a) * b, over its two inputs."""
    z = np.linspace(-6, 4, 400)
    silu = z / (1 + np.exp(-z))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    ax1.plot(z, np.maximum(z, 0), "k--", label="ReLU(z)")
    ax1.plot(z, silu, "C2", lw=2, label="SiLU(z) = z sigmoid(z)")
    i = np.argmin(silu)
    ax1.plot(z[i], silu[i], "C3o")
    ax1.annotate(f"minimum {silu[i]:.3f} at z = {z[i]:.2f}", (z[i], silu[i]), xytext=(-5.5, 1.5), fontsize=8,
                 arrowprops=dict(arrowstyle="->", lw=0.6))
    ax1.set_xlabel("pre-activation z")
    ax1.set_ylabel("activation")
    ax1.legend(fontsize=8)
    a, b = np.meshgrid(np.linspace(-4, 4, 161), np.linspace(-2, 2, 81))
    out = a / (1 + np.exp(-a)) * b
    im = ax2.pcolormesh(a, b, out, cmap="RdBu_r", vmin=-8, vmax=8, shading="auto")
    fig.colorbar(im, ax=ax2, label="SiLU(a) * b")
    ax2.set_xlabel("gate input a = (x W_gate)_j")
    ax2.set_ylabel("up input b = (x W_up)_j")
    ax2.set_title("one SwiGLU unit: the gate scales the linear path", fontsize=10)
    return fig


@slide_figure("chA1_grouped_query_attention")
def grouped_query_figure(sizes=None, context=4096, batch=1):
    """KV cache (GiB for ``batch`` sequences of ``context`` tokens, bfloat16) and attention weights against the
    number of key/value heads, for LLaMA-2 70B's sizes by default (64 query heads; the model uses 8)."""
    s = dict(PUBLISHED_LLAMA_SIZES["LLaMA-2 70B"] if sizes is None else sizes)
    H, D, L = s["num_attention_heads"], s["hidden_size"], s["num_layers"]
    d_h = D // H
    kv = np.array([h for h in range(1, H + 1) if H % h == 0])
    cache = np.array([kv_cache_bytes_per_token(L, h, d_h) * context * batch / 2**30 for h in kv])
    attn = np.array([llama_parameter_count(**{**s, "num_key_value_heads": int(h)}, breakdown=True)["attention"] for h in kv])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    colors = ["C3" if h == s["num_key_value_heads"] else "C0" for h in kv]
    ax1.bar([str(h) for h in kv], cache, color=colors)
    ax1.set_xlabel("key/value heads H_kv (MQA = 1 ... MHA = H)")
    ax1.set_ylabel(f"KV cache (GiB), {batch} x {context} tokens")
    ax1.set_title("the cache grows with H_kv", fontsize=10)
    ax2.bar([str(h) for h in kv], attn / 1e9, color=colors)
    ax2.set_xlabel("key/value heads H_kv")
    ax2.set_ylabel("attention weights, all layers (billions)")
    ax2.set_title(f"red: the model's choice, H_kv = {s['num_key_value_heads']}", fontsize=10)
    return fig


@slide_figure("chA1_router_balance")
def router_balance_figure(result=None):
    """Tokens per expert before and after training a noisy top-k router on its balancing loss, and the loss."""
    r = train_router_balance() if result is None else result
    n_experts = len(r["tokens_before"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    idx = np.arange(n_experts)
    ax1.bar(idx - 0.2, r["tokens_before"], 0.4, label="before", color="C3")
    ax1.bar(idx + 0.2, r["tokens_after"], 0.4, label=f"after {r['steps']} steps", color="C0")
    ax1.axhline(np.sum(r["tokens_before"]) / n_experts, color="k", ls="--", lw=0.8, label="balanced")
    ax1.set_xticks(idx, [str(i + 1) for i in idx])  # counting from 1, as the chapter's text does
    ax1.set_xlabel("expert")
    ax1.set_ylabel("tokens routed (top-k, no noise)")
    ax1.legend(fontsize=8)
    steps = np.arange(1, r["steps"] + 1)
    ax2.semilogy(steps, r["importance_loss"], label="L_importance = CV(importance)^2")
    ax2.semilogy(steps, r["load_loss"], label="L_load = CV(load)^2")
    ax2.set_xlabel("training step")
    ax2.set_ylabel("loss (log scale)")
    ax2.legend(fontsize=8)
    return fig
