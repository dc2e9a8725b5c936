r"""Exercise checkers of appendix A1 (the anatomy of the policy). None of them is answered by what the chapter prints.

- ``check_llama_intermediate_size(fn)``: ``fn(hidden_size, multiple_of, ffn_dim_multiplier=None)``, the SwiGLU
  width of a LLaMA model by Meta's rule (a derivation: the factor that keeps a three-matrix SwiGLU at the cost
  of a ReLU MLP of width :math:`4D`, then the rounding). Checked on the published LLaMA-2 and Llama-3 sizes.
- ``check_moe_parameter_count(fn)``: ``fn(vocab_size, hidden_size, num_layers, intermediate_size,
  num_attention_heads, num_key_value_heads, num_experts, experts_per_token, tie_word_embeddings=False)``
  returns ``(total, active)``: the parameters of a LLaMA whose SwiGLU is a mixture of experts with a linear
  router (Mixtral-style), and those one token uses (a variant of the chapter's count).
- ``check_switch_balance_loss(fn)``: ``fn(router_logits)``, the Switch Transformer's load-balancing loss
  :math:`N\sum_i f_i P_i` (without its weight :math:`\alpha`), the simpler successor of the notes' noisy
  top-k losses (a variant).
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.bradley_terry import _with_diagnosis
from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.anatomy import llama_parameter_count
from rlhf_edu import validation as _validation  # imported as a module: a check_* name here would be taken for a checker

__all__ = ["check_llama_intermediate_size", "check_moe_parameter_count", "check_switch_balance_loss"]

#: (hidden_size, multiple_of, ffn_dim_multiplier) -> intermediate_size of published models (their params.json).
PUBLISHED_INTERMEDIATE_SIZES = {
    (4096, 256, None): 11008,  # LLaMA-2 7B
    (5120, 256, None): 13824,  # LLaMA-2 13B
    (8192, 4096, 1.3): 28672,  # LLaMA-2 70B, Llama 3 70B
    (4096, 1024, 1.3): 14336,  # Llama 3 8B
    (16384, 4096, 1.2): 53248,  # Llama 3.1 405B
    (2048, 256, 1.5): 8192,  # Llama 3.2 1B
    (3072, 256, 1.0): 8192,  # Llama 3.2 3B
}


def llama_intermediate_size(hidden_size, multiple_of=256, ffn_dim_multiplier=None):
    """Meta's rule (``FeedForward`` in the llama repositories): ``int(2 * 4D / 3)``, times the multiplier
    (truncated again), rounded UP to a multiple of ``multiple_of``."""
    d = _validation.check_integer("hidden_size", hidden_size, minimum=1)
    m = _validation.check_integer("multiple_of", multiple_of, minimum=1)
    hidden = int(2 * (4 * d) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(_validation.check_positive("ffn_dim_multiplier", ffn_dim_multiplier) * hidden)
    return m * ((hidden + m - 1) // m)


def _random_width(rng):
    d = 64 * int(rng.integers(1, 257))
    m = int(rng.choice([32, 64, 128, 256, 1024, 4096]))
    mult = None if rng.random() < 0.5 else float(rng.choice([1.0, 1.2, 1.3, 1.5]))
    return (d, m, mult), {}


_intermediate_base = make_checker(
    "llama_intermediate_size",
    reference=llama_intermediate_size,
    edge_cases=[(key, {}) for key in PUBLISHED_INTERMEDIATE_SIZES] + [((96, 32, None), {})],  # 256 already a multiple
    random_case=_random_width,
    rtol=0.0,
    atol=0.0,
    hint="a ReLU MLP of width 4D has 2 * D * 4D weights; a SwiGLU of width F has three D x F matrices: solve for F; "
    "then int(...), times ffn_dim_multiplier when given (int again), and round UP to a multiple of multiple_of",
)


def _diagnose_intermediate(fn):
    got = fn(5120, 256, None)
    if got == 4 * 5120:
        return "4D is the width of a two-matrix ReLU MLP; SwiGLU has three matrices, so the width shrinks"
    if got == 13568:
        return "rounded to the NEAREST multiple of 256 (13653 -> 13568); Meta rounds up (-> 13824)"
    if fn(8192, 4096, 1.3) != 28672 and got == 13824:
        return "ffn_dim_multiplier (LLaMA-2 70B: 1.3) scales the width before the rounding"
    return None


check_llama_intermediate_size = _with_diagnosis("llama_intermediate_size", _intermediate_base, _diagnose_intermediate)


def moe_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, num_attention_heads,
                        num_key_value_heads, num_experts, experts_per_token, tie_word_embeddings=False):
    """(total, active) of a LLaMA whose SwiGLU is ``num_experts`` experts behind a linear router (D x E, no bias)."""
    E = _validation.check_integer("num_experts", num_experts, minimum=1)
    k = _validation.check_integer("experts_per_token", experts_per_token, minimum=1)
    if k > E:
        raise ValueError(f"experts_per_token must be <= num_experts, got {k} > {E}")
    parts = llama_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, num_attention_heads,
                                  num_key_value_heads, tie_word_embeddings, breakdown=True)
    shared = parts["total"] - parts["mlp"]  # embeddings, attention, norms, output layer
    expert = 3 * hidden_size * intermediate_size
    router = hidden_size * E  # runs for every token, so it is active too
    return shared + num_layers * (E * expert + router), shared + num_layers * (k * expert + router)


#: Mixtral 8x7B (Jiang et al., 2024): 46.7B parameters, 12.9B active per token.
MIXTRAL_8X7B = (32000, 4096, 32, 14336, 32, 8, 8, 2)


def _random_moe(rng):
    h_kv = int(rng.choice([1, 2, 4]))
    h = h_kv * int(rng.integers(1, 4))
    d = h * 8 * int(rng.integers(1, 5))
    e = int(rng.integers(1, 17))
    return (int(rng.integers(10, 5000)), d, int(rng.integers(1, 9)), int(rng.integers(8, 300)), h, h_kv, e,
            int(rng.integers(1, e + 1)), bool(rng.random() < 0.3)), {}


_moe_base = make_checker(
    "moe_parameter_count",
    reference=moe_parameter_count,
    edge_cases=[(MIXTRAL_8X7B, {}), (MIXTRAL_8X7B[:6] + (1, 1), {}), ((32000, 4096, 32, 14336, 32, 8, 8, 2, True), {})],
    random_case=_random_moe,
    rtol=0.0,
    atol=0.0,
    hint="each layer keeps its attention and norms, and holds num_experts copies of the SwiGLU (3 D F each) plus "
    "a router that maps a D-vector to one logit per expert; a token runs the router and experts_per_token experts; "
    "return two integers (total, active)",
    expected_errors=[(MIXTRAL_8X7B[:6] + (2, 3), {}, ValueError)],
)


def _diagnose_moe(fn):
    total, active = moe_parameter_count(*MIXTRAL_8X7B)
    got_total, got_active = fn(*MIXTRAL_8X7B)
    router = 32 * 4096 * 8
    if got_active == got_total:
        return "every parameter is stored, but a token only runs experts_per_token experts: active < total"
    if (got_total, got_active) == (total - router, active - router):
        return "the router (a D x num_experts matrix per layer) is missing"
    if got_active == active - router:
        return "the router runs for every token: count it in the active parameters too"
    return None


check_moe_parameter_count = _with_diagnosis("moe_parameter_count", _moe_base, _diagnose_moe)


def switch_balance_loss(router_logits):
    """N * sum_i f_i P_i: f_i the fraction of tokens whose top-1 expert is i, P_i the mean router probability of i."""
    z = _validation.as_float_array("router_logits", router_logits)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"router_logits must be (T, N) with T, N >= 1, got shape {z.shape}")
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    n = z.shape[1]
    f = np.bincount(z.argmax(axis=1), minlength=n) / z.shape[0]
    return float(n * np.sum(f * probs.mean(axis=0)))


def _random_router(rng):
    t, n = int(rng.integers(1, 40)), int(rng.integers(2, 9))
    z = rng.normal(size=(t, n)) * float(rng.uniform(0.1, 4.0))
    if rng.random() < 0.4:  # a collapsed router: one expert favoured by most tokens
        z[:, int(rng.integers(n))] += 3.0
    return (z,), {}


_switch_base = make_checker(
    "switch_balance_loss",
    reference=switch_balance_loss,
    edge_cases=[
        ((np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 2.0]]),), {}),
        ((np.array([[5.0, 0.0, 0.0], [4.0, 0.0, 1.0]]),), {}),  # collapsed on expert 0
        ((np.array([[0.3, -1.2]]),), {}),  # one token
    ],
    random_case=_random_router,
    rtol=1e-9,
    atol=1e-12,
    hint="P = softmax(router_logits) per token, averaged over tokens; f counts each token once, for its argmax "
    "expert, as a fraction of the tokens; multiply sum_i f_i P_i by the number of experts N (so a balanced router "
    "gives 1)",
)


def _diagnose_switch(fn):
    z = np.array([[5.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 2.0, 0.5]])
    got = float(fn(z))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    ref = switch_balance_loss(z)
    if np.isclose(got, 3 * np.sum(p.mean(axis=0) ** 2)):
        return "f_i must be the fraction of tokens DISPATCHED to expert i (argmax, not differentiable), not the mean probability"
    if np.isclose(got, ref / 3):
        return "multiply by the number of experts N, so that a perfectly balanced router scores 1"
    if np.isclose(got, ref * 3):
        return "f and P are fractions and means over the T tokens: divide the counts and sums by T"
    return None


check_switch_balance_loss = _with_diagnosis("switch_balance_loss", _switch_base, _diagnose_switch)


def _rounded_to_nearest(hidden_size, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * hidden_size / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * int(round(hidden / multiple_of))


def _moe_without_router(*args, **kwargs):
    total, active = moe_parameter_count(*args, **kwargs)
    router = args[2] * args[1] * args[6]
    return total - router, active - router


def _soft_switch(router_logits):
    z = np.asarray(router_logits, dtype=float)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return float(z.shape[1] * np.sum(p.mean(axis=0) ** 2))


RIGHT_SOLUTIONS = {
    "check_llama_intermediate_size": llama_intermediate_size,
    "check_moe_parameter_count": moe_parameter_count,
    "check_switch_balance_loss": switch_balance_loss,
}
WRONG_SOLUTIONS = {
    "check_llama_intermediate_size": _rounded_to_nearest,
    "check_moe_parameter_count": _moe_without_router,
    "check_switch_balance_loss": _soft_switch,
}
