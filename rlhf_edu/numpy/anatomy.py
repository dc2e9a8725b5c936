r"""The parts of the policy network (appendix A1, "Anatomy of the policy").

The policy that RLHF fine-tunes is a decoder-only transformer of the LLaMA family: token embedding, a stack
of blocks (RMSNorm, attention with grouped-query key/value heads, RMSNorm, SwiGLU feed-forward, each with a
residual connection), a final RMSNorm and an output projection to the vocabulary. This module writes out
the pieces that are not plain matrix products, and counts the weights:

- :func:`rms_norm` (and its analytic gradient :func:`rms_norm_grad`): root-mean-square normalisation;
- :func:`swiglu`: the gated feed-forward network of LLaMA;
- :func:`noisy_top_k_gating`: the router of a sparse mixture of experts, with its load-balancing losses
  (the lecture notes' "Noisy Top-k Gating (Shazeer's approach)");
- :func:`llama_parameter_count`: the parameters of a LLaMA model from its sizes, part by part (the notes'
  LLaMA-2 13B arithmetic, for any configuration).

Weight layout: every weight matrix here multiplies from the right, ``x @ W`` with ``W`` of shape
``(in, out)``, as in the notes (":math:`W_1: (5120, 13824)`"). A ``torch.nn.Linear`` stores its weight as
``(out, in)``: pass ``linear.weight.T``.

NumPy references; the PyTorch twins are in ``rlhf_edu.torch.anatomy``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from rlhf_edu.validation import as_float_array, check_integer, check_nonnegative

__all__ = [
    "rms_norm",
    "rms_norm_grad",
    "swiglu",
    "noisy_top_k_gating",
    "llama_parameter_count",
]


def _check_rms_norm(x, weight, eps):
    x = as_float_array("x", x)
    weight = as_float_array("weight", weight)
    eps = check_nonnegative("eps", eps)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a last axis of features (..., D) with D >= 1, got shape {x.shape}")
    if weight.shape != x.shape[-1:]:
        raise ValueError(f"weight must have shape (D,) = {x.shape[-1:]} to match x's last axis, got {weight.shape}")
    mean_square = np.mean(x * x, axis=-1, keepdims=True)
    if eps == 0 and np.any(mean_square == 0):
        raise ValueError("x has a row of zeros and eps = 0: its RMS is 0 and the division is 0/0; use eps > 0")
    return x, weight, eps, mean_square


def rms_norm(x, weight, eps=1e-6):
    r"""RMSNorm: divide each feature vector by its root mean square, then scale each feature by a learned gain.

    .. math::

        \mathrm{RMS}(x) = \sqrt{\tfrac{1}{D}\textstyle\sum_{i=1}^{D} x_i^2 + \epsilon},\qquad
        y = \gamma \odot \frac{x}{\mathrm{RMS}(x)}

    over the last axis. Unlike LayerNorm there is no mean subtraction and no bias: :math:`D` parameters
    (``weight`` :math:`=\gamma`). Before the gain the output has root mean square 1, so its Euclidean norm is
    :math:`\sqrt D` (not 1: the lecture notes' "unit norm" is a slip). ``eps`` sits inside the square root, as
    in LLaMA (``rms_norm_eps``: 1e-5 in LLaMA-2, 1e-6 the ``transformers`` default).

    Shapes: ``x`` ``(..., D)``, ``weight`` ``(D,)``; returns ``(..., D)``.
    Raises ``ValueError`` for NaN/inf in ``x`` or ``weight``, a ``weight`` that is not ``(D,)``, ``eps < 0``,
    or a zero row with ``eps = 0``.
    Source: Zhang and Sennrich, "Root Mean Square Layer Normalization", 2019; Touvron et al., "LLaMA", 2023.
    Used in appendix A1.

    >>> rms_norm(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4)).round(4)
    array([0.3651, 0.7303, 1.0954, 1.4606])
    >>> round(float(np.linalg.norm(rms_norm(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4)))), 4)   # sqrt(D)
    2.0
    """
    x, weight, eps, mean_square = _check_rms_norm(x, weight, eps)
    return weight * (x / np.sqrt(mean_square + eps))


def rms_norm_grad(x, weight, eps=1e-6):
    r"""Analytic gradient of ``sum(rms_norm(x, weight, eps))`` with respect to ``x`` and ``weight``.

    With :math:`r = \mathrm{RMS}(x)` and :math:`S = \sum_j \gamma_j x_j / r` per row,

    .. math::

        \frac{\partial S}{\partial x_i} = \frac{\gamma_i}{r} - \frac{x_i}{D\,r^3}\sum_j \gamma_j x_j,\qquad
        \frac{\partial S}{\partial \gamma_j} = \sum_{\text{rows}} \frac{x_j}{r}

    (from :math:`\partial r/\partial x_i = x_i/(D r)`). Returns ``{"x": (..., D), "weight": (D,)}``.
    The second term is why a gradient never changes a row's scale to first order when :math:`\epsilon = 0`
    (for any gain :math:`\gamma`): :math:`\sum_i x_i\,\partial S/\partial x_i = 0`, since
    :math:`\sum_i x_i^2 = D r^2` (RMSNorm is scale-invariant).
    Same checks as :func:`rms_norm`. Appendix A1 checks it against autograd.

    >>> g = rms_norm_grad(np.array([3.0, 4.0]), np.ones(2), eps=0.0)
    >>> g["x"].round(4), g["weight"].round(4)
    (array([ 0.0453, -0.0339]), array([0.8485, 1.1314]))
    """
    x, weight, eps, mean_square = _check_rms_norm(x, weight, eps)
    r = np.sqrt(mean_square + eps)
    d = x.shape[-1]
    weighted = np.sum(weight * x, axis=-1, keepdims=True)
    grad_x = weight / r - x * weighted / (d * r**3)
    grad_w = (x / r).reshape(-1, d).sum(axis=0)
    return {"x": grad_x, "weight": grad_w}


def _silu(z):
    """z * sigmoid(z), written with tanh so that no exp overflows (sigmoid(z) = (1 + tanh(z / 2)) / 2)."""
    return 0.5 * z * (1.0 + np.tanh(0.5 * z))


def _check_swiglu_shapes(x, w_gate, w_up, w_down):
    if x.ndim == 0:
        raise ValueError("x must have a last axis of features (..., D), got a scalar")
    if w_gate.ndim != 2:
        raise ValueError(f"w_gate must be a matrix (D, F), got shape {w_gate.shape}")
    d = x.shape[-1]
    if w_gate.shape[0] != d:
        raise ValueError(f"w_gate must have shape (D, F) with D = {d} (x's last axis), got {w_gate.shape}; "
                         "a torch.nn.Linear stores (F, D): pass linear.weight.T")
    if w_up.shape != w_gate.shape:
        raise ValueError(f"w_up must have the shape of w_gate {w_gate.shape}, got {w_up.shape}")
    if w_down.shape != w_gate.shape[::-1]:
        raise ValueError(f"w_down must have shape (F, D) = {w_gate.shape[::-1]}, got {w_down.shape}")


def swiglu(x, w_gate, w_up, w_down):
    r"""The SwiGLU feed-forward network of LLaMA: a SiLU-gated product of two up-projections, projected down.

    .. math::

        \mathrm{FFN}(x) = \big(\mathrm{SiLU}(x W_{gate}) \odot x W_{up}\big)\, W_{down},\qquad
        \mathrm{SiLU}(z) = z\,\sigma(z)

    (the notes' :math:`W_1, W_2, W_3`; ``gate_proj``, ``up_proj``, ``down_proj`` in ``transformers``). SiLU
    is Swish with :math:`\beta = 1`. No biases: LLaMA's projections have none (the notes' "each has a bias
    term" is a slip), so the block holds :math:`3DF` parameters.

    Weight layout (``x @ W``): ``w_gate`` and ``w_up`` ``(D, F)``, ``w_down`` ``(F, D)``; for a
    ``torch.nn.Linear`` pass ``linear.weight.T``. Shapes: ``x`` ``(..., D)``; returns ``(..., D)``.
    Raises ``ValueError`` for NaN/inf in any argument or shapes that do not fit (the message names the
    argument and, for a transposed matrix, says so).
    Source: Shazeer, "GLU Variants Improve Transformer", 2020; Touvron et al., "LLaMA", 2023.
    Used in appendix A1.

    >>> float(swiglu(np.array([1.0]), np.array([[2.0]]), np.array([[3.0]]), np.array([[0.5]]))[0].round(4))
    2.6424
    """
    x = as_float_array("x", x)
    w_gate = as_float_array("w_gate", w_gate)
    w_up = as_float_array("w_up", w_up)
    w_down = as_float_array("w_down", w_down)
    _check_swiglu_shapes(x, w_gate, w_up, w_down)
    return (_silu(x @ w_gate) * (x @ w_up)) @ w_down


def _cv_squared(v):
    """Squared coefficient of variation of a vector: population variance over squared mean (0 for one entry)."""
    return np.var(v) / np.mean(v) ** 2


def _check_gating(x, w_gate, w_noise, k, noise, rng, w_importance, w_load):
    """Shape and value checks shared by both trees; returns (N, E, k, w_importance, w_load)."""
    if len(x.shape) != 2:
        raise ValueError(f"x must be (N, D): one row per token (flatten batch and time first), got shape {tuple(x.shape)}")
    n, d = x.shape
    if len(w_gate.shape) != 2 or w_gate.shape[0] != d:
        raise ValueError(f"w_gate must be (D, E) with D = {d}, got shape {tuple(w_gate.shape)}")
    if tuple(w_noise.shape) != tuple(w_gate.shape):
        raise ValueError(f"w_noise must have the shape of w_gate {tuple(w_gate.shape)}, got {tuple(w_noise.shape)}")
    e = w_gate.shape[1]
    if n == 0 or e == 0:
        raise ValueError(f"need at least one token and one expert, got N = {n}, E = {e}")
    k = check_integer("k", k, minimum=1)
    if k > e:
        raise ValueError(f"k must be <= the number of experts E = {e}, got {k}")
    if noise is not None and rng is not None:
        raise ValueError("pass noise (the standard normal draws) or rng (to draw them), not both")
    if noise is not None and tuple(noise.shape) != (n, e):
        raise ValueError(f"noise must have shape (N, E) = {(n, e)}, got {tuple(noise.shape)}")
    return n, e, k, check_nonnegative("w_importance", w_importance), check_nonnegative("w_load", w_load)


def _standard_normal(rng, shape):
    """Standard normal draws from a seed or a ``np.random.Generator`` (both trees use this, so they agree)."""
    if isinstance(rng, np.random.Generator):
        return rng.standard_normal(shape)
    return np.random.default_rng(check_integer("rng", rng, minimum=0)).standard_normal(shape)


def noisy_top_k_gating(x, w_gate, w_noise, k, noise=None, *, rng=None, w_importance=0.1, w_load=0.1):
    r"""The noisy top-k router of a sparse mixture of experts, with its two load-balancing losses.

    For each token :math:`x` (a row of ``x``), with :math:`\varepsilon_i \sim N(0, 1)`:

    .. math::

        H(x)_i &= (x W_g)_i + \varepsilon_i\,\mathrm{Softplus}\big((x W_{noise})_i\big)\\
        G(x) &= \mathrm{Softmax}\big(\mathrm{KeepTopK}(H(x), k)\big),\qquad
        \mathrm{KeepTopK}(v, k)_i = v_i \text{ if } v_i \text{ is among the } k \text{ largest, else } -\infty

    so exactly :math:`k` gates per token are non-zero and sum to 1, and the layer's output is
    :math:`y = \sum_i G(x)_i E_i(x)` (only the :math:`k` chosen experts run). Over the batch :math:`X`:

    - importance :math:`\mathrm{Importance}_i = \sum_x G(x)_i`, and
      :math:`L_{importance} = w_{importance}\,\mathrm{CV}(\mathrm{Importance})^2`;
    - load, a smooth estimate of the number of tokens sent to each expert:
      :math:`\mathrm{Load}_i = \sum_x P(x, i)` with
      :math:`P(x, i) = \Phi\Big(\frac{(xW_g)_i - \mathrm{kth\_excluding}(H(x), k, i)}{\mathrm{Softplus}((xW_{noise})_i)}\Big)`,
      the probability that expert :math:`i` stays in the top :math:`k` if only its own noise is drawn
      again (:math:`\mathrm{kth\_excluding}(v, k, i)` is the :math:`k`-th largest entry of :math:`v` without
      :math:`v_i`; :math:`\Phi` the standard normal CDF), and
      :math:`L_{load} = w_{load}\,\mathrm{CV}(\mathrm{Load})^2`;

    where :math:`\mathrm{CV}^2 = \mathrm{Var}/\mathrm{mean}^2` over the experts (population variance).
    ``loss`` is :math:`L_{importance} + L_{load}`, added to the task loss in training.

    Noise: pass the standard normal draws as ``noise`` ``(N, E)``, or ``rng`` (a seed or a
    ``np.random.Generator``) to draw them; with neither the router is noise-free (evaluation). The torch
    twin draws from the same NumPy generator, so one seed gives one routing in both trees. The load estimate
    uses the noise scale whether or not noise was drawn.

    Shapes: ``x`` ``(N, D)`` (flatten batch and time first), ``w_gate`` and ``w_noise`` ``(D, E)``,
    ``1 <= k <= E``. Returns a dict: ``gates`` ``(N, E)``, ``top_k`` ``(N, k)`` (indices, largest first),
    ``logits`` :math:`xW_g` and ``noisy_logits`` :math:`H(x)` ``(N, E)``, ``noise_std`` ``(N, E)``,
    ``importance`` and ``load`` ``(E,)``, ``importance_loss``, ``load_loss``, ``loss`` (scalars).
    Raises ``ValueError`` for NaN/inf inputs, shapes that do not fit, ``k`` outside ``[1, E]``, both
    ``noise`` and ``rng``, or negative loss weights.
    Source: Shazeer et al., "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts
    Layer", 2017 (eqs. 1, 3-5, 6-7 and appendix A, eqs. 8-11). Used in appendix A1.

    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> w = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> out = noisy_top_k_gating(x, w, np.zeros((2, 3)), k=2)
    >>> out["gates"].round(3)
    array([[0.881, 0.119, 0.   ],
           [0.   , 0.622, 0.378],
           [0.731, 0.269, 0.   ]])
    >>> out["importance"].round(3), round(float(out["loss"]), 4)
    (array([1.612, 1.011, 0.378]), 0.043)
    """
    x = as_float_array("x", x)
    w_gate = as_float_array("w_gate", w_gate)
    w_noise = as_float_array("w_noise", w_noise)
    if noise is not None:
        noise = as_float_array("noise", noise)
    n, e, k, w_importance, w_load = _check_gating(x, w_gate, w_noise, k, noise, rng, w_importance, w_load)
    if rng is not None:
        noise = _standard_normal(rng, (n, e))
    logits = x @ w_gate
    noise_std = np.logaddexp(0.0, x @ w_noise)  # Softplus, without overflow
    noisy = logits if noise is None else logits + noise * noise_std

    order = np.argsort(-noisy, axis=-1, kind="stable")
    top_k = order[:, :k]
    keep = np.zeros((n, e), dtype=bool)
    np.put_along_axis(keep, top_k, True, axis=-1)
    kept = np.where(keep, noisy, -np.inf)
    shifted = np.exp(kept - kept.max(axis=-1, keepdims=True))
    gates = shifted / shifted.sum(axis=-1, keepdims=True)

    # kth_excluding(H, k, i): for an expert in the top k, the k-th largest of the others is the (k+1)-th
    # largest of all; for one outside, the k-th largest. With k = E every expert is always chosen.
    if k == e:
        prob_in_top_k = np.ones((n, e))
    else:
        ranked = np.take_along_axis(noisy, order, axis=-1)
        threshold = np.where(keep, ranked[:, k : k + 1], ranked[:, k - 1 : k])
        prob_in_top_k = ndtr((logits - threshold) / noise_std)

    return _gating_result(gates, top_k, logits, noisy, noise_std, prob_in_top_k, w_importance, w_load, _cv_squared)


def _gating_result(gates, top_k, logits, noisy, noise_std, prob_in_top_k, w_importance, w_load, cv_squared):
    """Importance, load and their losses, and the router's output dict (arrays or tensors: both trees use it)."""
    importance = gates.sum(0)
    load = prob_in_top_k.sum(0)
    importance_loss = w_importance * cv_squared(importance)
    load_loss = w_load * cv_squared(load)
    return {
        "gates": gates,
        "top_k": top_k,
        "logits": logits,
        "noisy_logits": noisy,
        "noise_std": noise_std,
        "importance": importance,
        "load": load,
        "importance_loss": importance_loss,
        "load_loss": load_loss,
        "loss": importance_loss + load_loss,
    }


def llama_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, num_attention_heads,
                          num_key_value_heads, tie_word_embeddings=False, breakdown=False, *, head_dim=None,
                          attention_bias=False, mlp_bias=False):
    r"""The number of parameters of a LLaMA model from its sizes, and where they sit.

    With vocabulary :math:`V`, width :math:`D`, :math:`L` layers, SwiGLU width :math:`F`, :math:`H` query
    heads and :math:`H_{kv}` key/value heads of dimension :math:`d_h` (default :math:`D/H`):

    .. math::

        N = \underbrace{VD}_{\text{embedding}}
          + L\Big[\underbrace{D d_h H}_{W_Q} + \underbrace{2 D d_h H_{kv}}_{W_K, W_V}
                 + \underbrace{d_h H D}_{W_O} + \underbrace{3DF}_{\text{SwiGLU}}
                 + \underbrace{2D}_{\text{two RMSNorm } \gamma}\Big]
          + \underbrace{D}_{\text{final RMSNorm}}
          + \underbrace{VD}_{\text{output layer, unless tied}}

    With :math:`H_{kv} = H` and :math:`d_h H = D` the attention term is the notes' :math:`4D^2`;
    grouped-query attention (:math:`H_{kv} < H`) shrinks :math:`W_K, W_V` by :math:`H/H_{kv}`. A tied output
    layer reuses the embedding matrix and adds nothing. LLaMA has no biases; ``attention_bias=True`` adds
    :math:`d_h(H + 2H_{kv}) + D` per layer and ``mlp_bias=True`` adds :math:`2F + D` per layer (as
    ``transformers.LlamaConfig`` does), to measure what the notes' "each has a bias term" would cost.

    Args:
        vocab_size, hidden_size, num_layers, intermediate_size, num_attention_heads, num_key_value_heads:
            :math:`V, D, L, F, H, H_{kv}` (``num_hidden_layers`` in ``LlamaConfig``); positive integers with
            :math:`H` a multiple of :math:`H_{kv}` (each key/value head serves :math:`H/H_{kv}` query heads).
        tie_word_embeddings: whether the output layer is the transposed embedding (Llama 3.2 1B and 3B).
        breakdown: return a dict instead of the total: ``embedding``, ``attention``, ``mlp``, ``norms``
            (all RMSNorm gains, the final one included), ``lm_head`` (the output layer; 0 when tied), summing
            to ``total``, and ``per_layer`` (one block).
        head_dim: :math:`d_h`, when it is not :math:`D/H` (then :math:`D` need not be a multiple of :math:`H`).

    Raises ``TypeError`` for a size that is not an integer or a flag (``tie_word_embeddings``, ``breakdown``,
    ``attention_bias``, ``mlp_bias``) that is not a bool, ``ValueError`` (naming the argument) for a size
    below 1, :math:`H` not a multiple of :math:`H_{kv}`, or :math:`D` not a multiple of :math:`H` without
    ``head_dim``.
    Source: Touvron et al., "Llama 2: Open Foundation and Fine-Tuned Chat Models", 2023 (the sizes); the
    lecture notes' LLaMA-2 13B walk-through; Ainslie et al., "GQA", 2023. Checked in appendix A1 and the
    tests against ``transformers.LlamaForCausalLM`` built on the meta device.

    >>> llama_parameter_count(32000, 5120, 40, 13824, 40, 40)        # LLaMA-2 13B
    13015864320
    >>> round(llama_parameter_count(32000, 8192, 80, 28672, 64, 8) / 1e9, 2)   # LLaMA-2 70B (GQA, 8 KV heads)
    68.98
    >>> llama_parameter_count(32000, 5120, 40, 13824, 40, 40, breakdown=True)["per_layer"]
    317204480
    """
    for name, flag in (("tie_word_embeddings", tie_word_embeddings), ("breakdown", breakdown),
                       ("attention_bias", attention_bias), ("mlp_bias", mlp_bias)):
        if not isinstance(flag, (bool, np.bool_)):  # "no" or 2 would silently count as True
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r}")
    V = check_integer("vocab_size", vocab_size, minimum=1)
    D = check_integer("hidden_size", hidden_size, minimum=1)
    L = check_integer("num_layers", num_layers, minimum=1)
    F = check_integer("intermediate_size", intermediate_size, minimum=1)
    H = check_integer("num_attention_heads", num_attention_heads, minimum=1)
    H_kv = check_integer("num_key_value_heads", num_key_value_heads, minimum=1)
    if H % H_kv:
        raise ValueError(f"num_attention_heads must be a multiple of num_key_value_heads, got {H} and {H_kv}")
    if head_dim is None:
        if D % H:
            raise ValueError(f"hidden_size must be a multiple of num_attention_heads (or give head_dim), got {D} and {H}")
        d_h = D // H
    else:
        d_h = check_integer("head_dim", head_dim, minimum=1)

    attention = D * d_h * H + 2 * D * d_h * H_kv + d_h * H * D  # W_Q; W_K and W_V; W_O
    if attention_bias:
        attention += d_h * H + 2 * d_h * H_kv + D
    mlp = 3 * D * F  # gate (W_1), up (W_2), down (W_3)
    if mlp_bias:
        mlp += 2 * F + D
    norms = 2 * D  # the RMSNorm before attention and the one before the MLP: one gain vector each
    parts = {
        "embedding": V * D,
        "attention": L * attention,
        "mlp": L * mlp,
        "norms": L * norms + D,  # plus the final RMSNorm
        "lm_head": 0 if tie_word_embeddings else V * D,
    }
    total = sum(parts.values())
    if not breakdown:
        return total
    return {**parts, "per_layer": attention + mlp + norms, "total": total}
