"""PyTorch twins of ``rlhf_edu.numpy.anatomy`` (appendix A1): same names, same arguments, any device.

Weights multiply from the right (``x @ W``, ``W`` of shape ``(in, out)``); a ``torch.nn.Linear`` stores
``(out, in)``, so pass ``linear.weight.T``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf_edu.numpy import anatomy as _reference
from rlhf_edu.numpy.anatomy import _check_gating, _check_swiglu_shapes, _gating_result, _standard_normal
from rlhf_edu.validation import as_float_tensor, check_nonnegative

__all__ = ["rms_norm", "swiglu", "noisy_top_k_gating", "llama_parameter_count"]

_HALF = (torch.float16, torch.bfloat16)


def rms_norm(x, weight, eps=1e-6):
    """RMSNorm over the last axis, ``weight * x / sqrt(mean(x**2) + eps)`` (see the NumPy reference).

    Half-precision inputs (float16, bfloat16) are normalised in float32 and cast back before the gain, as
    ``transformers``' ``LlamaRMSNorm`` does: squaring a float16 activation of 300 overflows (300**2 > 65504).

    >>> rms_norm(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.ones(4))
    tensor([0.3651, 0.7303, 1.0954, 1.4606])
    """
    x = as_float_tensor("x", x)
    weight = as_float_tensor("weight", weight, like=x)
    eps = check_nonnegative("eps", eps)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a last axis of features (..., D) with D >= 1, got shape {tuple(x.shape)}")
    if tuple(weight.shape) != tuple(x.shape[-1:]):
        raise ValueError(f"weight must have shape (D,) = {tuple(x.shape[-1:])} to match x's last axis, got "
                         f"{tuple(weight.shape)}")
    h = x.float() if x.dtype in _HALF else x
    mean_square = h.pow(2).mean(dim=-1, keepdim=True)
    if eps == 0 and bool((mean_square == 0).any()):
        raise ValueError("x has a row of zeros and eps = 0: its RMS is 0 and the division is 0/0; use eps > 0")
    return weight * (h * torch.rsqrt(mean_square + eps)).to(x.dtype)


def swiglu(x, w_gate, w_up, w_down):
    """SwiGLU feed-forward ``(silu(x @ w_gate) * (x @ w_up)) @ w_down`` (see the NumPy reference).

    ``w_gate``, ``w_up`` ``(D, F)`` and ``w_down`` ``(F, D)``: for ``transformers``' ``LlamaMLP`` pass
    ``mlp.gate_proj.weight.T``, ``mlp.up_proj.weight.T``, ``mlp.down_proj.weight.T``.

    >>> round(float(swiglu(torch.tensor([1.0]), torch.tensor([[2.0]]), torch.tensor([[3.0]]),
    ...                    torch.tensor([[0.5]]))[0]), 4)
    2.6424
    """
    x = as_float_tensor("x", x)
    w_gate = as_float_tensor("w_gate", w_gate, like=x)
    w_up = as_float_tensor("w_up", w_up, like=x)
    w_down = as_float_tensor("w_down", w_down, like=x)
    _check_swiglu_shapes(x, w_gate, w_up, w_down)
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


def _cv_squared(v):
    return v.var(unbiased=False) / v.mean() ** 2


def noisy_top_k_gating(x, w_gate, w_noise, k, noise=None, *, rng=None, w_importance=0.1, w_load=0.1):
    """Noisy top-k router with its importance and load losses (see the NumPy reference for the formulas).

    ``rng`` (a seed or a ``np.random.Generator``) draws the noise with NumPy, as the reference does, so one
    seed routes the same tokens to the same experts in both trees; ``noise`` may be a tensor or an array.
    Gradients reach ``x``, ``w_gate`` and ``w_noise`` through the kept gates and the smooth load estimate.

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> w = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> round(float(noisy_top_k_gating(x, w, torch.zeros(2, 3), k=2)["loss"]), 4)
    0.043
    """
    x = as_float_tensor("x", x)
    w_gate = as_float_tensor("w_gate", w_gate, like=x)
    w_noise = as_float_tensor("w_noise", w_noise, like=x)
    if noise is not None:
        noise = as_float_tensor("noise", noise, like=x)
    n, e, k, w_importance, w_load = _check_gating(x, w_gate, w_noise, k, noise, rng, w_importance, w_load)
    if rng is not None:
        noise = torch.as_tensor(_standard_normal(rng, (n, e)), dtype=x.dtype, device=x.device)
    logits = x @ w_gate
    noise_std = torch.logaddexp(x @ w_noise, torch.zeros((), dtype=x.dtype, device=x.device))  # Softplus
    noisy = logits if noise is None else logits + noise * noise_std

    ranked, order = torch.sort(noisy, dim=-1, descending=True, stable=True)
    top_k = order[:, :k]
    keep = torch.zeros_like(noisy, dtype=torch.bool).scatter(-1, top_k, True)
    gates = torch.softmax(noisy.masked_fill(~keep, float("-inf")), dim=-1)

    if k == e:  # every expert is always chosen (and an infinite threshold would make 0 * inf gradients)
        prob_in_top_k = torch.ones_like(noisy)
    else:
        threshold = torch.where(keep, ranked[:, k : k + 1], ranked[:, k - 1 : k])
        prob_in_top_k = torch.special.ndtr((logits - threshold) / noise_std)

    return _gating_result(gates, top_k, logits, noisy, noise_std, prob_in_top_k, w_importance, w_load, _cv_squared)


def llama_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, num_attention_heads,
                          num_key_value_heads, tie_word_embeddings=False, breakdown=False, *, head_dim=None,
                          attention_bias=False, mlp_bias=False):
    """Parameters of a LLaMA model from its sizes: integer arithmetic, the same in both trees, so this calls
    the NumPy reference (it is here so that ``rlhf_edu.torch`` offers every name of ``rlhf_edu.numpy``).

    >>> llama_parameter_count(32000, 4096, 32, 11008, 32, 32)   # LLaMA-2 7B
    6738415616
    """
    return _reference.llama_parameter_count(
        vocab_size, hidden_size, num_layers, intermediate_size, num_attention_heads, num_key_value_heads,
        tie_word_embeddings, breakdown, head_dim=head_dim, attention_bias=attention_bias, mlp_bias=mlp_bias,
    )
