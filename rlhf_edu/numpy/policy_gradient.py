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
    "kl_penalized_rewards",
]

#: Valid ``aggregation`` choices of :func:`grpo_loss`.
GRPO_AGGREGATIONS = ("sequence_mean", "token_mean", "dr_grpo")

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


def _clip_range(clip_eps, clip_eps_high):
    low = check_in_range("clip_eps", clip_eps, 0.0, 1.0, high_open=True)
    high = low if clip_eps_high is None else check_nonnegative("clip_eps_high", clip_eps_high)
    return low, high


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
              max_log_ratio=MAX_LOG_RATIO, return_stats=False):
    r"""GRPO's loss (Shao et al., 2024, DeepSeekMath, eq. 3), with the DAPO and Dr. GRPO aggregations.

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

    At :math:`\pi = \pi_{old}` the gradient is the lecture notes'
    :math:`-\frac1G\sum_i\frac1{|o_i|}\sum_t (\hat A_{i,t} + \beta(\frac{\pi_{ref}}{\pi} - 1))
    \nabla\log\pi` (for sequence_mean). ``advantages`` per sequence ``(B,)`` or per token ``(B, T)``;
    ``clip_eps_high`` as in :func:`ppo_clip_objective`; ``max_log_ratio`` as in :func:`ppo_clip_loss`
    (applied to both log ratios). ``return_stats=True`` returns ``(loss, {"clip_fraction", "kl"})``, the
    mean over real tokens of the clipped indicator and of the KL estimate. Used in chapter 5.

    >>> logp = np.log(np.full((2, 2), 0.5))
    >>> float(grpo_loss(logp, logp, logp, np.array([1.0, 0.5]), np.ones((2, 2))))
    -0.75
    """
    check_choice("aggregation", aggregation, GRPO_AGGREGATIONS)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_nonnegative("beta", beta)
    logp = as_float_array("logp", logp)
    logp_old = as_float_array("logp_old", logp_old)
    logp_ref = as_float_array("logp_ref", logp_ref)
    check_same_shape(logp=logp, logp_old=logp_old, logp_ref=logp_ref)
    if logp.ndim < 1:
        raise ValueError("logp must have a token axis (shape (B, T)), got a scalar")
    if mask is None:
        raise ValueError("mask is required: pass np.ones_like(logp) when every token is real")
    adv = _advantages_per_token(advantages, logp)
    m = _mask_weights(mask, logp, per_row=aggregation == "sequence_mean")
    low, high = _clip_range(clip_eps, clip_eps_high)
    ratio = np.exp(_log_ratio(logp, logp_old, max_log_ratio))
    per_token = -_clip_surrogate(ratio, adv, low, high)
    # kl_estimate sees only the difference logp - logp_ref, here bounded like the ratio
    kl = _kl_from_log_ratio(_log_ratio(logp, logp_ref, max_log_ratio), estimator)
    if beta > 0:
        per_token = per_token + beta * kl
    per_token = np.where(m > 0, per_token, 0.0)
    if aggregation == "sequence_mean":
        loss = (per_token.sum(axis=-1) / m.sum(axis=-1)).mean()
    elif aggregation == "token_mean":
        loss = per_token.sum() / m.sum()
    else:
        length = logp.shape[-1] if max_length is None else check_max_length(max_length, m)
        n_sequences = per_token.size // logp.shape[-1]
        loss = per_token.sum() / (n_sequences * length)
    if not return_stats:
        return loss
    stats = {
        "clip_fraction": _masked_mean(_clipped_away(ratio, adv, low, high).astype(logp.dtype), m),
        "kl": _masked_mean(kl, m),
    }
    return loss, stats


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
