r"""Policy-gradient losses: REINFORCE, PPO's clipped surrogate, the value loss, GRPO, KL-penalised rewards.

Chapter 4 (policy gradients and PPO, PPO for language models) and chapter 5 (GRPO). Every loss here is
a number to MINIMISE (the negative of the objective the papers maximise). Shapes: ``logp`` and friends
are per-token log-probabilities ``(..., T)`` of the sampled tokens, time on the LAST axis, leading axes a
batch of sequences; ``mask`` marks real tokens (1) and padding (0); ``advantages`` are per token
``(..., T)`` or per sequence ``(...,)`` (repeated over the tokens, as GRPO's :math:`\hat A_{i,t} = \tilde r_i`).

NumPy references; the PyTorch twins are in ``rlhf_edu.torch.policy_gradient``.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.numpy.divergences import KL_ESTIMATORS
from rlhf_edu.numpy.divergences import _kl_from_log_ratio, kl_estimate
from rlhf_edu.validation import (
    as_float_array,
    check_broadcastable,
    check_choice,
    check_in_range,
    check_integer,
    check_mask,
    check_nonnegative,
    check_positive,
    check_same_shape,
)

__all__ = [
    "reinforce_loss",
    "reinforce_loss_grad",
    "ppo_clip_objective",
    "ppo_clip_objective_grad",
    "ppo_clip_loss",
    "value_loss",
    "grpo_loss",
    "cispo_loss",
    "cispo_loss_grad",
    "kl_penalized_rewards",
]

#: Valid ``aggregation`` choices of :func:`grpo_loss` and :func:`cispo_loss`.
GRPO_AGGREGATIONS = ("sequence_mean", "token_mean", "dr_grpo")

#: Valid ``importance_sampling`` choices of :func:`grpo_loss`: a ratio per token (GRPO) or one per sequence (GSPO).
IMPORTANCE_SAMPLING = ("token", "sequence")

#: GSPO's clip range for the sequence ratio (Zheng et al., 2025, their experiments: 3e-4 below, 4e-4 above).
#: A length-normalised ratio moves far less than a token's, so its range is about a thousand times narrower.
GSPO_CLIP_EPS, GSPO_CLIP_EPS_HIGH = 3e-4, 4e-4

#: Default bound on |log ratio| before ``exp`` (as verl does): e^20 ~ 5e8 is far outside any clip range,
#: and without it exp overflows (float32 beyond 88.7) and gives an infinite loss or a NaN gradient.
MAX_LOG_RATIO = 20.0


def advantages_per_sequence(advantages, logp_shape) -> bool:
    """True if ``advantages`` has one value per sequence (``logp_shape[:-1]``), False if one per token.

    Raises a ``ValueError`` naming ``advantages`` for any other shape. Shared with the torch twin.
    """
    shape = tuple(getattr(advantages, "shape", np.shape(advantages)))
    logp_shape = tuple(logp_shape)
    if shape == logp_shape:
        return False
    if shape == logp_shape[:-1]:
        return True
    raise ValueError(
        f"advantages must have shape {logp_shape} (one per token) or {logp_shape[:-1]} "
        f"(one per sequence), got {shape}"
    )


def _advantages_per_token(advantages, logp):
    advantages = as_float_array("advantages", advantages)
    if advantages_per_sequence(advantages, logp.shape):
        advantages = advantages[..., None]
    return advantages


def _mask_weights(mask, like, per_row=False):
    """0/1 float weights of the real tokens (all ones when ``mask`` is None)."""
    if mask is None:
        return np.ones_like(like)
    mask = np.asarray(mask)
    check_same_shape(logp=like, mask=mask)
    check_mask("mask", mask, per_row=per_row)
    return mask.astype(like.dtype)


def _masked_mean(x, m):
    # where, not x * m: padding may hold inf and inf * 0 is NaN
    return np.where(m > 0, x, 0.0).sum() / m.sum()


def _clip_range(clip_eps, clip_eps_high, names=("clip_eps", "clip_eps_high")):
    low = check_in_range(names[0], clip_eps, 0.0, 1.0, high_open=True)
    high = low if clip_eps_high is None else check_nonnegative(names[1], clip_eps_high)
    return low, high


def _sequence_mean(x, m):
    """Mean of ``x`` over each row's real tokens, shape ``x.shape[:-1]`` (every row has one: checked)."""
    return np.where(m > 0, x, 0.0).sum(axis=-1) / m.sum(axis=-1)


def _aggregate(per_token, m, aggregation, max_length):
    """GRPO's three ways from per-token losses to one number (see :func:`grpo_loss`); padding already 0."""
    if aggregation == "sequence_mean":
        return _sequence_mean(per_token, m).mean()
    if aggregation == "token_mean":
        return per_token.sum() / m.sum()
    length = per_token.shape[-1] if max_length is None else check_max_length(max_length, m)
    return per_token.sum() / ((per_token.size // per_token.shape[-1]) * length)


def _add_kl_and_aggregate(per_token, kl, beta, m, aggregation, max_length):
    """The tail GRPO and CISPO share: add beta * KL per token (when there is a KL), zero the padding, aggregate."""
    if kl is not None and beta > 0:
        per_token = per_token + beta * kl
    return _aggregate(np.where(m > 0, per_token, 0.0), m, aggregation, max_length)


def _token_inputs(mask, **logps):
    """The per-token log-prob arrays (first ``logp``), checked: numbers, one shape with a token axis, a mask given."""
    arrays = {name: as_float_array(name, x) for name, x in logps.items()}
    check_same_shape(**arrays)
    if arrays["logp"].ndim < 1:
        raise ValueError("logp must have a token axis (shape (B, T)), got a scalar")
    if mask is None:
        raise ValueError("mask is required: pass np.ones_like(logp) when every token is real")
    return arrays.values()


def _aggregation_weights(m, aggregation, max_length):
    """The weight of each token in :func:`_aggregate` (loss = sum of weight * per-token loss); 0 on padding."""
    if aggregation == "sequence_mean":
        return m / m.sum(axis=-1, keepdims=True) / (m.size // m.shape[-1])
    if aggregation == "token_mean":
        return m / m.sum()
    length = m.shape[-1] if max_length is None else check_max_length(max_length, m)
    return m / ((m.size // m.shape[-1]) * length)


def _log_ratio(logp, logp_other, max_log_ratio):
    log_ratio = logp - logp_other
    if max_log_ratio is not None:
        bound = check_positive("max_log_ratio", max_log_ratio)
        log_ratio = np.clip(log_ratio, -bound, bound)
    return log_ratio


def reinforce_loss(logp, advantages, mask=None):
    r"""REINFORCE surrogate loss (Williams, 1992): :math:`L = -\frac{1}{N}\sum_t m_t A_t \log\pi(a_t|s_t)`.

    Its gradient is minus the lecture notes' REINFORCE-style estimator
    :math:`\frac1N \sum_i A_i \nabla_\theta \log\pi_\theta(a_i|s)`, averaged over the N kept (``mask``)
    elements. ``advantages`` (or a reward minus a baseline) are data: no gradient flows into them in a
    real trainer. Used in chapter 4; with leave-one-out advantages it is RLOO (chapter 5).

    >>> round(float(reinforce_loss(np.log([0.5, 0.25]), np.array([1.0, -1.0]))), 4)
    -0.3466
    """
    logp = as_float_array("logp", logp)
    adv = _advantages_per_token(advantages, logp)
    m = _mask_weights(mask, logp)
    return -_masked_mean(adv * logp, m)


def reinforce_loss_grad(logp, advantages, mask=None):
    r"""Analytic gradient of :func:`reinforce_loss`: :math:`\partial L/\partial \log\pi_t = -m_t A_t / N`.

    Returns ``{"logp": ..., "advantages": ...}`` (w.r.t. advantages: :math:`-m_t \log\pi_t / N`, summed
    over the tokens when advantages are per sequence).

    >>> reinforce_loss_grad(np.log([0.5, 0.25]), np.array([1.0, -1.0]))["logp"]
    array([-0.5,  0.5])
    """
    logp = as_float_array("logp", logp)
    per_sequence = advantages_per_sequence(advantages, logp.shape)
    adv = _advantages_per_token(advantages, logp)
    m = _mask_weights(mask, logp)
    n = m.sum()
    grad_adv = -np.where(m > 0, logp, 0.0) / n
    if per_sequence:
        grad_adv = grad_adv.sum(axis=-1)
    return {"logp": -adv * m / n, "advantages": grad_adv}


def check_max_length(max_length, mask_weights) -> int:
    """Dr. GRPO's ``max_length``: an integer >= 1 and >= the longest completion (most kept tokens in a row).

    Shared with the torch twin. A normaliser shorter than a completion is not Dr. GRPO's constant (the
    generation budget): it is usually a prompt length or a mean length passed by mistake.
    """
    max_length = check_integer("max_length", max_length, minimum=1)
    longest = int(round(float(mask_weights.sum(-1).max())))
    if max_length < longest:
        raise ValueError(
            f"max_length={max_length} is shorter than the longest completion ({longest} tokens in mask): "
            "Dr. GRPO divides by a constant at least as long as any completion (the generation budget, e.g. "
            "max_new_tokens); a mean length or a prompt length passed instead?"
        )
    return max_length


def ppo_clip_objective(ratio, advantages, clip_eps=0.2, clip_eps_high=None):
    r"""PPO's clipped surrogate per element (Schulman et al., 2017, eq. 7), to MAXIMISE.

    .. math:: \min\big(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon_{low}, 1+\epsilon_{high})\,A\big)

    with :math:`\epsilon_{low}` = ``clip_eps`` and :math:`\epsilon_{high}` = ``clip_eps_high`` (defaults
    to ``clip_eps``; DAPO's "clip-higher", Yu et al., 2025, uses 0.2 and 0.28). The min makes it a
    pessimistic bound: for A > 0 the gain stops once :math:`\rho > 1+\epsilon_{high}`, for A < 0 once
    :math:`\rho < 1-\epsilon_{low}`, while a ratio that moved the wrong way is never clipped.
    ``ratio`` and ``advantages`` broadcast together. Used in chapters 4 and 5.

    Raises ``ValueError`` for NaN/inf inputs or a negative ``ratio`` (a probability ratio is >= 0; a
    negative one is usually the log-ratio ``logp - logp_old`` passed instead of its exponential).

    The lecture notes' example: "unlimited" had probability 0.1, now 0.3, so the ratio is 3; with
    epsilon 0.2 the objective is 1.2 A when A > 0, but 3 A when A < 0 (the min keeps the unclipped term):

    >>> ppo_clip_objective(np.array([3.0, 3.0]), np.array([1.0, -1.0]))
    array([ 1.2, -3. ])
    """
    ratio = as_float_array("ratio", ratio)
    _check_ratio(ratio)
    advantages = as_float_array("advantages", advantages)
    check_broadcastable(ratio=ratio, advantages=advantages)
    low, high = _clip_range(clip_eps, clip_eps_high)
    return _clip_surrogate(ratio, advantages, low, high)


def _check_ratio(ratio):
    """A probability ratio is >= 0: a negative one is a log-ratio (or a difference) passed by mistake."""
    if np.any(ratio < 0):
        raise ValueError(
            f"ratio must be >= 0 (pi / pi_old, a ratio of probabilities), found {float(ratio[ratio < 0].flat[0]):.6g}: "
            "a log-ratio (logp - logp_old) passed instead of its exponential?"
        )


def _clip_surrogate(ratio, advantages, low, high):
    """min(rho A, clip(rho, 1 - low, 1 + high) A) without checks (ppo_clip_loss's ratio may be inf by request)."""
    unclipped = ratio * advantages
    clipped = np.clip(ratio, 1.0 - low, 1.0 + high) * advantages
    return np.minimum(unclipped, clipped)


def _sum_to_shape(x, shape):
    """Sum a broadcast gradient back to an argument's shape."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and x.shape[axis] != 1:
            x = x.sum(axis=axis, keepdims=True)
    return x


def _clipped_away(ratio, advantages, low, high):
    """Where the min picks the clipped term and it is constant: zero gradient (PPO's "clip fraction")."""
    return ((advantages > 0) & (ratio > 1.0 + high)) | ((advantages < 0) & (ratio < 1.0 - low))


def ppo_clip_objective_grad(ratio, advantages, clip_eps=0.2, clip_eps_high=None):
    r"""Analytic gradient of :func:`ppo_clip_objective` w.r.t. the ratio: ``{"ratio": ...}``.

    :math:`\partial/\partial\rho = A` wherever the unclipped term is the min or the ratio is inside the
    clip range, and 0 where clipping is active (:math:`A>0, \rho>1+\epsilon_{high}` or
    :math:`A<0, \rho<1-\epsilon_{low}`): there the sample stops pushing the policy.

    >>> ppo_clip_objective_grad(np.array([3.0, 3.0, 1.1]), np.array([1.0, -1.0, 2.0]))["ratio"]
    array([ 0., -1.,  2.])
    """
    ratio = as_float_array("ratio", ratio)
    advantages = as_float_array("advantages", advantages)
    check_broadcastable(ratio=ratio, advantages=advantages)
    low, high = _clip_range(clip_eps, clip_eps_high)
    grad = np.where(_clipped_away(ratio, advantages, low, high), 0.0, advantages)
    grad = np.broadcast_to(grad, np.broadcast_shapes(ratio.shape, advantages.shape))
    return {"ratio": _sum_to_shape(grad, ratio.shape).astype(ratio.dtype)}


def ppo_clip_loss(logp, logp_old, advantages, mask=None, clip_eps=0.2, clip_eps_high=None, *,
                  max_log_ratio=MAX_LOG_RATIO, return_stats=False):
    r"""PPO's clipped policy loss: minus the mean clipped surrogate over the kept tokens (Schulman et al., 2017).

    .. math:: L = -\frac1N \sum_t m_t \min\big(\rho_t A_t, \mathrm{clip}(\rho_t, 1-\epsilon_{low},
        1+\epsilon_{high}) A_t\big), \qquad \rho_t = \exp(\log\pi_t - \log\pi_{old,t})

    The ratio is formed in log space; the log ratio is bounded by ``max_log_ratio`` (default 20, as verl;
    ``None`` for none) so that the loss and its gradient stay finite for absurd ratios. With
    ``return_stats=True`` returns ``(loss, {"clip_fraction", "approx_kl"})``: the fraction of kept tokens
    whose gradient the clip removed, and the k3 estimate of KL(pi_old || pi),
    :math:`\frac1N\sum (\rho-1) - \log\rho` (Schulman, 2020), the usual early-stopping signal. Used in
    chapter 4 (and by the PPO trainer).

    The lecture notes' example, new probability 0.3, old 0.1, A = 1: the loss is -1.2.

    >>> round(float(ppo_clip_loss(np.log([0.3]), np.log([0.1]), np.array([1.0]))), 6)
    -1.2
    """
    logp = as_float_array("logp", logp)
    logp_old = as_float_array("logp_old", logp_old)
    check_same_shape(logp=logp, logp_old=logp_old)
    adv = _advantages_per_token(advantages, logp)
    m = _mask_weights(mask, logp)
    low, high = _clip_range(clip_eps, clip_eps_high)
    log_ratio = _log_ratio(logp, logp_old, max_log_ratio)
    ratio = np.exp(log_ratio)
    loss = -_masked_mean(_clip_surrogate(ratio, adv, low, high), m)
    if not return_stats:
        return loss
    stats = {
        "clip_fraction": _masked_mean(_clipped_away(ratio, adv, low, high).astype(logp.dtype), m),
        # kl_estimate sees only the difference: l = 0 - log_ratio = log pi_old - log pi
        "approx_kl": _masked_mean(_kl_from_log_ratio(-log_ratio, "k3"), m),
    }
    return loss, stats


def value_loss(values, returns, old_values=None, clip=None, mask=None):
    r"""The critic's loss: :math:`\frac12 \frac1N \sum_t m_t (V_t - R_t)^2`, optionally clipped (PPO2).

    With ``clip`` = c (and ``old_values``, the critic's values at rollout time), the OpenAI baselines PPO2
    form (2017) takes the worse of the plain and a clipped prediction, so the critic cannot move further
    than c from its old value in one update:

    .. math:: \tfrac12 \max\big((V - R)^2,\ (V_{old} + \mathrm{clip}(V - V_{old}, -c, c) - R)^2\big)

    ``old_values`` is only used when ``clip`` is given. ``returns`` are targets (e.g. GAE returns): data,
    no gradient. The lecture notes' critic loss :math:`L = \mathbb{E}_t[(V(s_t) - \mathrm{sg}(R_t))^2]`
    up to the factor 1/2. Used in chapter 4.

    >>> float(value_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0])))
    1.25
    >>> float(value_loss(np.array([1.0, 2.0]), np.array([3.0, 3.0]), old_values=np.zeros(2), clip=0.5))
    3.125
    """
    values = as_float_array("values", values)
    returns = as_float_array("returns", returns)
    check_same_shape(values=values, returns=returns)
    m = _mask_weights(mask, values)
    err = (values - returns) ** 2
    if clip is not None:
        check_positive("clip", clip)
        if old_values is None:
            raise ValueError("old_values is required when clip is given (the clip is around the old values)")
        old_values = as_float_array("old_values", old_values)
        check_same_shape(values=values, old_values=old_values)
        clipped = old_values + np.clip(values - old_values, -clip, clip)
        err = np.maximum(err, (clipped - returns) ** 2)
    return 0.5 * _masked_mean(err, m)


def grpo_loss(logp, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04,
              aggregation="sequence_mean", max_length=None, estimator="k3", *, clip_eps_high=None,
              importance_sampling="token", sequence_clip_eps=GSPO_CLIP_EPS, sequence_clip_eps_high=GSPO_CLIP_EPS_HIGH,
              max_log_ratio=MAX_LOG_RATIO, return_stats=False):
    r"""GRPO's loss (Shao et al., 2024, DeepSeekMath, eq. 3), with the DAPO and Dr. GRPO aggregations and GSPO.

    Per token, with :math:`\rho_t = \pi/\pi_{old}` and the KL estimate to the reference model
    (``estimator="k3"``: :math:`\frac{\pi_{ref}}{\pi} - \log\frac{\pi_{ref}}{\pi} - 1`, GRPO's eq. 4,
    from :func:`rlhf_edu.numpy.divergences.kl_estimate`):

    .. math:: \ell_{i,t} = -\Big(\min\big(\rho_t \hat A_{i,t},\ \mathrm{clip}(\rho_t, 1-\epsilon,
        1+\epsilon)\hat A_{i,t}\big) - \beta\, \mathbb{D}_{KL,t}\Big)

    aggregated over the real tokens (``mask``) of the B sequences by ``aggregation``:

    - ``"sequence_mean"`` (GRPO): :math:`\frac1B \sum_i \frac1{|o_i|}\sum_t \ell_{i,t}`, each sequence
      weighs the same, so a token of a long answer counts less;
    - ``"token_mean"`` (DAPO, Yu et al., 2025): :math:`\sum_{i,t}\ell_{i,t} / \sum_i |o_i|`, each token
      weighs the same;
    - ``"dr_grpo"`` (Liu et al., 2025): :math:`\sum_{i,t}\ell_{i,t} / (B \cdot` ``max_length``),
      a constant normaliser (``max_length`` defaults to T, the mask's last axis; ignored otherwise; a
      ``max_length`` shorter than the longest completion raises ``ValueError``).

    ``importance_sampling`` chooses the ratio:

    - ``"token"`` (GRPO): :math:`\rho_{i,t}` per token, clipped to :math:`[1-\epsilon, 1+\epsilon_{high}]`
      with ``clip_eps`` and ``clip_eps_high`` (DAPO's clip-higher; defaults to ``clip_eps``);
    - ``"sequence"`` (GSPO, Zheng et al., 2025): one ratio per sequence, the geometric mean of its token
      ratios, :math:`s_i = \exp\big(\frac1{|o_i|}\sum_t \log\frac{\pi_t}{\pi_{old,t}}\big)`, used in place
      of :math:`\rho_{i,t}` at every token of sequence i and clipped to :math:`[1-\epsilon_s,
      1+\epsilon_{s,high}]` with its own ``sequence_clip_eps`` (default 3e-4) and
      ``sequence_clip_eps_high`` (default 4e-4), GSPO's ranges: a length-normalised ratio moves about a
      thousand times less than a token's. No stop-gradient: the gradient of every token of sequence i
      flows through :math:`s_i`, :math:`\partial s_i/\partial\log\pi_t = s_i/|o_i|`. With per-sequence
      advantages and ``"sequence_mean"`` this is GSPO's objective :math:`\frac1G\sum_i \min(s_i \hat A_i,
      \mathrm{clip}(s_i, \cdot)\hat A_i)` exactly. Every row needs a real token.

    At :math:`\pi = \pi_{old}` the gradient is the lecture notes'
    :math:`-\frac1G\sum_i\frac1{|o_i|}\sum_t (\hat A_{i,t} + \beta(\frac{\pi_{ref}}{\pi} - 1))
    \nabla\log\pi` (for sequence_mean, with either ratio). ``advantages`` per sequence ``(B,)`` or per
    token ``(B, T)``; ``max_log_ratio`` as in :func:`ppo_clip_loss` (applied to the token log ratios
    before any mean, and to the log ratio to the reference). ``return_stats=True`` returns
    ``(loss, {"clip_fraction", "kl"})``, the mean over real tokens of the clipped indicator and of the KL
    estimate. Raises ``ValueError`` for an unknown option, mismatched shapes, a bad mask, NaN inputs or
    clip ranges outside [0, 1). Used in chapter 5.

    >>> logp = np.log(np.full((2, 2), 0.5))
    >>> float(grpo_loss(logp, logp, logp, np.array([1.0, 0.5]), np.ones((2, 2))))
    -0.75

    GSPO on one sequence whose two token ratios are 1.1 and 1/1.1: the sequence ratio is their geometric
    mean, exactly 1, so nothing is clipped even though the token ratio 1.1 is outside GSPO's range:

    >>> lp_old = np.log([[0.5, 0.5]]); lp = lp_old + np.log([[1.1, 1 / 1.1]])
    >>> round(float(grpo_loss(lp, lp_old, lp_old, np.array([1.0]), np.ones((1, 2)), beta=0.0,
    ...                       importance_sampling="sequence")), 6)
    -1.0
    """
    check_choice("aggregation", aggregation, GRPO_AGGREGATIONS)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_choice("importance_sampling", importance_sampling, IMPORTANCE_SAMPLING)
    check_nonnegative("beta", beta)
    logp, logp_old, logp_ref = _token_inputs(mask, logp=logp, logp_old=logp_old, logp_ref=logp_ref)
    adv = _advantages_per_token(advantages, logp)
    per_row = aggregation == "sequence_mean" or importance_sampling == "sequence"
    m = _mask_weights(mask, logp, per_row=per_row)
    low, high = _clip_range(clip_eps, clip_eps_high)
    seq_low, seq_high = _clip_range(sequence_clip_eps, sequence_clip_eps_high,
                                    ("sequence_clip_eps", "sequence_clip_eps_high"))
    log_ratio = _log_ratio(logp, logp_old, max_log_ratio)
    if importance_sampling == "sequence":  # GSPO: s_i = exp(mean_t log ratio), the same at every token of row i
        log_ratio = np.broadcast_to(_sequence_mean(log_ratio, m)[..., None], logp.shape)
        low, high = seq_low, seq_high
    ratio = np.exp(log_ratio)
    per_token = -_clip_surrogate(ratio, adv, low, high)
    # kl_estimate sees only the difference logp - logp_ref, here bounded like the ratio
    kl = _kl_from_log_ratio(_log_ratio(logp, logp_ref, max_log_ratio), estimator)
    loss = _add_kl_and_aggregate(per_token, kl, beta, m, aggregation, max_length)
    if not return_stats:
        return loss
    stats = {
        "clip_fraction": _masked_mean(_clipped_away(ratio, adv, low, high).astype(logp.dtype), m),
        "kl": _masked_mean(kl, m),
    }
    return loss, stats


def cispo_loss(logp, logp_old, advantages, mask, ratio_max=5.0, aggregation="token_mean", max_length=None, *,
               logp_ref=None, beta=0.0, estimator="k3", max_log_ratio=MAX_LOG_RATIO, return_stats=False):
    r"""CISPO's loss (MiniMax-M1, MiniMax, 2025): REINFORCE weighted by the detached, capped ratio.

    .. math:: \ell_{i,t} = -\,\mathrm{sg}\big(\min(\rho_{i,t}, \rho_{max})\big)\,\hat A_{i,t}\,
        \log\pi_\theta(o_{i,t}\mid q, o_{i,<t}), \qquad \rho_{i,t} = \frac{\pi_\theta}{\pi_{\theta_{old}}}

    aggregated over the real tokens as in :func:`grpo_loss` (``"token_mean"``, MiniMax-M1's choice, by
    default; ``"sequence_mean"``, ``"dr_grpo"`` with ``max_length``). PPO's clip multiplies the ratio
    itself, so a token whose ratio left the range gets no gradient at all (for rare, important tokens
    such as "However" or "Wait", MiniMax-M1 observed exactly that after the first update); CISPO clips
    only the *weight* and keeps :math:`\nabla\log\pi` for every token:
    :math:`\partial\ell_{i,t}/\partial\log\pi_{i,t} = -\min(\rho_{i,t}, \rho_{max})\hat A_{i,t}` (times the
    aggregation weight), whatever the ratio (:func:`cispo_loss_grad`). MiniMax-M1 sets no lower bound on
    the weight (only :math:`\epsilon^{IS}_{high}`; here ``ratio_max`` = :math:`1+\epsilon^{IS}_{high}`).
    The value of the loss is not a surrogate of the objective (``sg`` makes it a weighted log-likelihood):
    only its gradient means something. At :math:`\pi = \pi_{old}` the weight is 1 and the gradient is
    REINFORCE's with the group advantages.

    MiniMax-M1 uses no KL term (``beta = 0``, the default); with ``logp_ref`` and ``beta > 0`` the per-token
    :math:`\beta\,\mathbb D_{KL,t}` of :func:`grpo_loss` (``estimator``, default k3) is added before the
    aggregation, so a trainer can swap one loss for the other. ``max_log_ratio`` bounds the log ratios
    as in :func:`ppo_clip_loss`. ``return_stats=True`` returns ``(loss, {"clip_fraction": share of real
    tokens whose weight was capped, ...})``, plus ``"kl"`` (mean over real tokens) when ``logp_ref`` is
    given. Raises ``ValueError`` for ``ratio_max <= 0``, an unknown option, mismatched shapes, a bad mask,
    NaN inputs, or ``beta > 0`` without ``logp_ref``. Used in chapter 5.

    A token whose ratio is 8 (capped at 5) with advantage 1, and one at ratio 1 with advantage -1:

    >>> lp_old = np.log([[0.1, 0.5]]); lp = np.log([[0.8, 0.5]])
    >>> round(float(cispo_loss(lp, lp_old, np.array([[1.0, -1.0]]), np.ones((1, 2)))), 4)
    0.2113
    >>> cispo_loss_grad(lp, lp_old, np.array([[1.0, -1.0]]), np.ones((1, 2)))["logp"].round(4)
    array([[-2.5,  0.5]])
    """
    logp, m, weight, adv, kl, kl_grad, beta, stats = _cispo_parts(
        logp, logp_old, advantages, mask, ratio_max, aggregation, logp_ref, beta, estimator, max_log_ratio)
    loss = _add_kl_and_aggregate(-weight * adv * np.where(m > 0, logp, 0.0), kl, beta, m, aggregation, max_length)
    return (loss, stats) if return_stats else loss


def cispo_loss_grad(logp, logp_old, advantages, mask, ratio_max=5.0, aggregation="token_mean", max_length=None,
                    *, logp_ref=None, beta=0.0, estimator="k3", max_log_ratio=MAX_LOG_RATIO, return_stats=False):
    r"""Analytic gradient of :func:`cispo_loss` w.r.t. ``logp``: ``{"logp": ...}``.

    :math:`\partial L/\partial\log\pi_t = w_t\big(-\min(\rho_t, \rho_{max})\hat A_t + \beta\,
    \mathbb D'_{KL,t}\big)`, with :math:`w_t` the aggregation weight of token t (:math:`1/\sum|o|` for
    token_mean, :math:`1/(B|o_i|)` for sequence_mean, :math:`1/(B L)` for dr_grpo; 0 on padding) and
    :math:`\mathbb D'` the derivative of the KL estimate in :math:`\log\pi` (k1: 1, k2: :math:`\ell`,
    k3: :math:`1 - \pi_{ref}/\pi`; 0 where ``max_log_ratio`` bounds :math:`\ell`). The capped weight is a
    constant (stop-gradient), so no term comes from the ratio. ``return_stats`` is accepted and ignored.

    >>> cispo_loss_grad(np.log([[0.5, 0.5]]), np.log([[0.5, 0.5]]), np.array([2.0]), np.ones((1, 2)))["logp"]
    array([[-1., -1.]])
    """
    logp, m, weight, adv, kl, kl_grad, beta, _ = _cispo_parts(
        logp, logp_old, advantages, mask, ratio_max, aggregation, logp_ref, beta, estimator, max_log_ratio)
    per_token = -weight * adv
    if kl is not None and beta > 0:
        per_token = per_token + beta * kl_grad
    w = _aggregation_weights(m, aggregation, max_length)
    return {"logp": np.where(m > 0, w * per_token, 0.0)}


def _cispo_parts(logp, logp_old, advantages, mask, ratio_max, aggregation, logp_ref, beta, estimator,
                 max_log_ratio):
    """Checked inputs of :func:`cispo_loss` and its gradient: logp, mask weights, the capped weight, the
    advantages per token, the KL per token and its derivative in log pi (None without logp_ref), beta, stats."""
    check_choice("aggregation", aggregation, GRPO_AGGREGATIONS)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    ratio_max = check_positive("ratio_max", ratio_max)
    beta = check_nonnegative("beta", beta)
    logp, logp_old = _token_inputs(mask, logp=logp, logp_old=logp_old)
    if beta > 0 and logp_ref is None:
        raise ValueError("beta > 0 needs logp_ref: the KL term is to the reference model")
    adv = np.broadcast_to(_advantages_per_token(advantages, logp), logp.shape)
    m = _mask_weights(mask, logp, per_row=aggregation == "sequence_mean")
    ratio = np.exp(_log_ratio(logp, logp_old, max_log_ratio))
    weight = np.where(m > 0, np.minimum(ratio, ratio_max), 0.0)  # a number, not a function of theta: sg(.)
    stats = {"clip_fraction": _masked_mean((ratio > ratio_max).astype(logp.dtype), m)}
    kl = kl_grad = None
    if logp_ref is not None:
        logp_ref = as_float_array("logp_ref", logp_ref)
        check_same_shape(logp=logp, logp_ref=logp_ref)
        raw = logp - logp_ref
        log_ratio = _log_ratio(logp, logp_ref, max_log_ratio)
        kl = _kl_from_log_ratio(log_ratio, estimator)
        inside = (np.abs(raw) <= max_log_ratio) if max_log_ratio is not None else np.ones(raw.shape, dtype=bool)
        slope = {"k1": np.ones_like(log_ratio), "k2": log_ratio, "k3": -np.expm1(-log_ratio)}[estimator]
        kl_grad = np.where(inside, slope, 0.0)
        stats["kl"] = _masked_mean(kl, m)
    return logp, m, weight, adv, kl, kl_grad, beta, stats


def kl_penalized_rewards(score, logp, logp_ref, mask, beta, estimator="k1"):
    r"""Per-token rewards of PPO for language models (Ziegler et al., 2019; Ouyang et al., 2022, eq. 2).

    .. math:: r_t = -\beta\, \widehat{KL}_t(\pi \| \pi_{ref}) + [t = \text{last real token}]\ s

    The reward model's scalar ``score`` s (one per sequence, shape ``logp.shape[:-1]``) is paid at the
    last real token of each row; every real token pays the KL penalty (``estimator="k1"``, the plain log
    ratio :math:`\log\pi - \log\pi_{ref}`, as InstructGPT; see
    :func:`rlhf_edu.numpy.divergences.kl_estimate`); padding gets 0. Summed over a row it is the notes'
    objective :math:`r_\phi(x,y) - \beta \log\frac{\pi(y|x)}{\pi_{ref}(y|x)}` (for k1); GAE then spreads
    it over the tokens. The rewards are data: compute them from detached log-probs. Used in chapter 4.

    >>> kl_penalized_rewards(np.array([1.0]), np.log([[0.5, 0.5, 0.5]]), np.log([[0.25, 0.5, 0.5]]),
    ...                      np.array([[1, 1, 0]]), beta=0.1).round(4)
    array([[-0.0693,  1.    ,  0.    ]])
    """
    check_nonnegative("beta", beta)
    logp = as_float_array("logp", logp)
    logp_ref = as_float_array("logp_ref", logp_ref)
    score = as_float_array("score", score)
    check_same_shape(logp=logp, logp_ref=logp_ref)
    if logp.ndim < 1:
        raise ValueError("logp must have a token axis (shape (B, T)), got a scalar")
    if score.shape != logp.shape[:-1]:
        raise ValueError(f"score must have one value per sequence, shape {logp.shape[:-1]}, got {score.shape}")
    m = _mask_weights(mask, logp, per_row=True)
    kl = kl_estimate(logp, logp_ref, estimator)
    rewards = np.where(m > 0, -float(beta) * kl, 0.0)
    steps = logp.shape[-1]
    last = steps - 1 - np.argmax(m[..., ::-1], axis=-1)  # the last 1 of each row
    at_last = (np.arange(steps) == last[..., None]).astype(logp.dtype)
    return rewards + score[..., None] * at_last
