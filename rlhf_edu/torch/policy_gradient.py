"""PyTorch twins of ``rlhf_edu.numpy.policy_gradient`` (chapters 4 and 5): same names, same arguments, any device.

The analytic gradients of the NumPy module (``*_grad``) have no twin: here autograd is the gradient.
"""

from __future__ import annotations

import torch

from rlhf_edu.numpy.policy_gradient import (
    GRPO_AGGREGATIONS,
    GSPO_CLIP_EPS,
    GSPO_CLIP_EPS_HIGH,
    IMPORTANCE_SAMPLING,
    MAX_LOG_RATIO,
    advantages_per_sequence,
    check_max_length,
)
from rlhf_edu.numpy.divergences import KL_ESTIMATORS
from rlhf_edu.torch.advantages import _float_tensor  # one conversion and NaN check for the torch tree
from rlhf_edu.torch.divergences import _kl_from_log_ratio, kl_estimate
from rlhf_edu.validation import (
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
    "ppo_clip_objective",
    "ppo_clip_loss",
    "value_loss",
    "grpo_loss",
    "cispo_loss",
    "kl_penalized_rewards",
]


def _advantages_per_token(advantages, logp):
    advantages = _float_tensor("advantages", advantages, like=logp)
    if advantages_per_sequence(advantages, logp.shape):
        advantages = advantages.unsqueeze(-1)
    return advantages


def _mask_weights(mask, like, per_row=False):
    if mask is None:
        return torch.ones_like(like)
    mask = torch.as_tensor(mask, device=like.device)
    check_same_shape(logp=like, mask=mask)
    check_mask("mask", mask, per_row=per_row)
    return mask.to(like.dtype)


def _masked_mean(x, m):
    # where, not x * m: padding may hold inf and inf * 0 is NaN
    return torch.where(m > 0, x, torch.zeros_like(x)).sum() / m.sum()


def _clip_range(clip_eps, clip_eps_high, names=("clip_eps", "clip_eps_high")):
    low = check_in_range(names[0], clip_eps, 0.0, 1.0, high_open=True)
    high = low if clip_eps_high is None else check_nonnegative(names[1], clip_eps_high)
    return low, high


def _sequence_mean(x, m):
    return torch.where(m > 0, x, torch.zeros_like(x)).sum(dim=-1) / m.sum(dim=-1)


def _aggregate(per_token, m, aggregation, max_length):
    if aggregation == "sequence_mean":
        return _sequence_mean(per_token, m).mean()
    if aggregation == "token_mean":
        return per_token.sum() / m.sum()
    length = per_token.shape[-1] if max_length is None else check_max_length(max_length, m)
    return per_token.sum() / ((per_token.numel() // per_token.shape[-1]) * length)


def _log_ratio(logp, logp_other, max_log_ratio):
    log_ratio = logp - logp_other
    if max_log_ratio is not None:
        bound = check_positive("max_log_ratio", max_log_ratio)
        log_ratio = log_ratio.clamp(-bound, bound)
    return log_ratio


def _clipped_away(ratio, advantages, low, high):
    return ((advantages > 0) & (ratio > 1.0 + high)) | ((advantages < 0) & (ratio < 1.0 - low))


def _add_kl_and_aggregate(per_token, kl, beta, m, aggregation, max_length):
    if kl is not None and beta > 0:
        per_token = per_token + beta * kl
    return _aggregate(torch.where(m > 0, per_token, torch.zeros_like(per_token)), m, aggregation, max_length)


def _token_inputs(mask, **logps):
    """The per-token log-prob tensors (first ``logp``; the others on its dtype and device), checked."""
    first = _float_tensor("logp", logps.pop("logp"))
    arrays = {"logp": first, **{name: _float_tensor(name, x, like=first) for name, x in logps.items()}}
    check_same_shape(**arrays)
    if first.ndim < 1:
        raise ValueError("logp must have a token axis (shape (B, T)), got a scalar")
    if mask is None:
        raise ValueError("mask is required: pass torch.ones_like(logp) when every token is real")
    return arrays.values()


def reinforce_loss(logp, advantages, mask=None):
    r"""-mean over kept tokens of A * log pi (see the NumPy reference).

    >>> reinforce_loss(torch.log(torch.tensor([0.5, 0.25])), torch.tensor([1.0, -1.0]))
    tensor(-0.3466)
    """
    logp = _float_tensor("logp", logp)
    adv = _advantages_per_token(advantages, logp)
    m = _mask_weights(mask, logp)
    return -_masked_mean(adv * logp, m)


def ppo_clip_objective(ratio, advantages, clip_eps=0.2, clip_eps_high=None):
    r"""min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A) per element (see the NumPy reference).

    >>> ppo_clip_objective(torch.tensor([3.0, 3.0]), torch.tensor([1.0, -1.0]))
    tensor([ 1.2000, -3.0000])
    """
    ratio = _float_tensor("ratio", ratio)
    if bool((ratio < 0).any()):
        raise ValueError(
            f"ratio must be >= 0 (pi / pi_old, a ratio of probabilities), found {float(ratio[ratio < 0][0]):.6g}: "
            "a log-ratio (logp - logp_old) passed instead of its exponential?"
        )
    advantages = _float_tensor("advantages", advantages, like=ratio)
    check_broadcastable(ratio=ratio, advantages=advantages)
    low, high = _clip_range(clip_eps, clip_eps_high)
    return _clip_surrogate(ratio, advantages, low, high)


def _clip_surrogate(ratio, advantages, low, high):
    """min(rho A, clip(rho, 1 - low, 1 + high) A) without checks (ppo_clip_loss's ratio may be inf by request)."""
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - low, 1.0 + high) * advantages
    return torch.minimum(unclipped, clipped)


def ppo_clip_loss(logp, logp_old, advantages, mask=None, clip_eps=0.2, clip_eps_high=None, *,
                  max_log_ratio=MAX_LOG_RATIO, return_stats=False):
    r"""PPO's clipped policy loss with ratio exp(logp - logp_old) (see the NumPy reference).

    With ``return_stats=True`` returns ``(loss, {"clip_fraction", "approx_kl"})``, the stats detached.

    >>> ppo_clip_loss(torch.log(torch.tensor([0.3])), torch.log(torch.tensor([0.1])), torch.tensor([1.0]))
    tensor(-1.2000)
    """
    logp = _float_tensor("logp", logp)
    logp_old = _float_tensor("logp_old", logp_old, like=logp)
    check_same_shape(logp=logp, logp_old=logp_old)
    adv = _advantages_per_token(advantages, logp)
    m = _mask_weights(mask, logp)
    low, high = _clip_range(clip_eps, clip_eps_high)
    log_ratio = _log_ratio(logp, logp_old, max_log_ratio)
    ratio = torch.exp(log_ratio)
    loss = -_masked_mean(_clip_surrogate(ratio, adv, low, high), m)
    if not return_stats:
        return loss
    with torch.no_grad():
        stats = {
            "clip_fraction": _masked_mean(_clipped_away(ratio, adv, low, high).to(logp.dtype), m),
            "approx_kl": _masked_mean(_kl_from_log_ratio(-log_ratio, "k3"), m),
        }
    return loss, stats


def value_loss(values, returns, old_values=None, clip=None, mask=None):
    r"""0.5 * mean (V - R)^2, optionally PPO2-clipped around ``old_values`` (see the NumPy reference).

    >>> value_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    tensor(1.2500)
    """
    values = _float_tensor("values", values)
    returns = _float_tensor("returns", returns, like=values)
    check_same_shape(values=values, returns=returns)
    m = _mask_weights(mask, values)
    err = (values - returns) ** 2
    if clip is not None:
        clip = check_positive("clip", clip)
        if old_values is None:
            raise ValueError("old_values is required when clip is given (the clip is around the old values)")
        old_values = _float_tensor("old_values", old_values, like=values)
        check_same_shape(values=values, old_values=old_values)
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * _masked_mean(err, m)


def grpo_loss(logp, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04,
              aggregation="sequence_mean", max_length=None, estimator="k3", *, clip_eps_high=None,
              importance_sampling="token", sequence_clip_eps=GSPO_CLIP_EPS, sequence_clip_eps_high=GSPO_CLIP_EPS_HIGH,
              max_log_ratio=MAX_LOG_RATIO, return_stats=False):
    r"""GRPO's clipped loss plus beta * KL to the reference, aggregated; GSPO's sequence ratio with
    ``importance_sampling="sequence"`` (see the NumPy reference).

    >>> logp = torch.log(torch.full((2, 2), 0.5))
    >>> grpo_loss(logp, logp, logp, torch.tensor([1.0, 0.5]), torch.ones(2, 2))
    tensor(-0.7500)
    """
    check_choice("aggregation", aggregation, GRPO_AGGREGATIONS)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_choice("importance_sampling", importance_sampling, IMPORTANCE_SAMPLING)
    beta = check_nonnegative("beta", beta)
    logp, logp_old, logp_ref = _token_inputs(mask, logp=logp, logp_old=logp_old, logp_ref=logp_ref)
    adv = _advantages_per_token(advantages, logp)
    per_row = aggregation == "sequence_mean" or importance_sampling == "sequence"
    m = _mask_weights(mask, logp, per_row=per_row)
    low, high = _clip_range(clip_eps, clip_eps_high)
    seq_low, seq_high = _clip_range(sequence_clip_eps, sequence_clip_eps_high,
                                    ("sequence_clip_eps", "sequence_clip_eps_high"))
    log_ratio = _log_ratio(logp, logp_old, max_log_ratio)
    if importance_sampling == "sequence":  # GSPO: s_i = exp(mean_t log ratio), the same at every token of row i
        log_ratio = _sequence_mean(log_ratio, m).unsqueeze(-1).expand_as(logp)
        low, high = seq_low, seq_high
    ratio = torch.exp(log_ratio)
    per_token = -_clip_surrogate(ratio, adv, low, high)
    kl = _kl_from_log_ratio(_log_ratio(logp, logp_ref, max_log_ratio), estimator)
    loss = _add_kl_and_aggregate(per_token, kl, beta, m, aggregation, max_length)
    if not return_stats:
        return loss
    with torch.no_grad():
        stats = {
            "clip_fraction": _masked_mean(_clipped_away(ratio, adv, low, high).to(logp.dtype), m),
            "kl": _masked_mean(kl, m),
        }
    return loss, stats


def cispo_loss(logp, logp_old, advantages, mask, ratio_max=5.0, aggregation="token_mean", max_length=None, *,
               logp_ref=None, beta=0.0, estimator="k3", max_log_ratio=MAX_LOG_RATIO, return_stats=False):
    r"""CISPO (MiniMax-M1, 2025): -sg(min(ratio, ratio_max)) * A * log pi per token, aggregated as GRPO;
    optional beta * KL to ``logp_ref`` (see the NumPy reference).

    >>> lp_old = torch.log(torch.tensor([[0.1, 0.5]])); lp = torch.log(torch.tensor([[0.8, 0.5]])).requires_grad_()
    >>> loss = cispo_loss(lp, lp_old, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)); loss.backward()
    >>> round(loss.item(), 4), lp.grad.tolist()   # the capped weight 5 still passes a gradient
    (0.2113, [[-2.5, 0.5]])
    """
    check_choice("aggregation", aggregation, GRPO_AGGREGATIONS)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    ratio_max = check_positive("ratio_max", ratio_max)
    beta = check_nonnegative("beta", beta)
    logp, logp_old = _token_inputs(mask, logp=logp, logp_old=logp_old)
    if beta > 0 and logp_ref is None:
        raise ValueError("beta > 0 needs logp_ref: the KL term is to the reference model")
    adv = _advantages_per_token(advantages, logp)
    m = _mask_weights(mask, logp, per_row=aggregation == "sequence_mean")
    ratio = torch.exp(_log_ratio(logp, logp_old, max_log_ratio))
    # sg(min(ratio, ratio_max)): a weight, not a path for gradients (0 on padding, whose ratio may be NaN)
    weight = torch.where(m > 0, ratio.clamp(max=ratio_max), torch.zeros_like(ratio)).detach()
    kl = None
    if logp_ref is not None:
        logp_ref = _float_tensor("logp_ref", logp_ref, like=logp)
        check_same_shape(logp=logp, logp_ref=logp_ref)
        kl = _kl_from_log_ratio(_log_ratio(logp, logp_ref, max_log_ratio), estimator)
    per_token = -weight * adv * torch.where(m > 0, logp, torch.zeros_like(logp))
    loss = _add_kl_and_aggregate(per_token, kl, beta, m, aggregation, max_length)
    if not return_stats:
        return loss
    with torch.no_grad():
        stats = {"clip_fraction": _masked_mean((ratio > ratio_max).to(logp.dtype), m)}
        if kl is not None:
            stats["kl"] = _masked_mean(kl, m)
    return loss, stats


def kl_penalized_rewards(score, logp, logp_ref, mask, beta, estimator="k1"):
    r"""Per-token -beta * KL, plus the score at the last real token; 0 on padding (see the NumPy reference).

    >>> kl_penalized_rewards(torch.tensor([1.0]), torch.zeros(1, 3), torch.zeros(1, 3),
    ...                      torch.tensor([[1, 1, 0]]), beta=0.1)
    tensor([[0., 1., 0.]])
    """
    beta = check_nonnegative("beta", beta)
    logp = _float_tensor("logp", logp)
    logp_ref = _float_tensor("logp_ref", logp_ref, like=logp)
    score = _float_tensor("score", score, like=logp)
    check_same_shape(logp=logp, logp_ref=logp_ref)
    if logp.ndim < 1:
        raise ValueError("logp must have a token axis (shape (B, T)), got a scalar")
    if tuple(score.shape) != tuple(logp.shape[:-1]):
        raise ValueError(
            f"score must have one value per sequence, shape {tuple(logp.shape[:-1])}, got {tuple(score.shape)}"
        )
    m = _mask_weights(mask, logp, per_row=True)
    kl = kl_estimate(logp, logp_ref, estimator)
    rewards = torch.where(m > 0, -beta * kl, torch.zeros_like(kl))
    steps = logp.shape[-1]
    last = steps - 1 - torch.argmax(m.flip(-1), dim=-1)  # the last 1 of each row
    at_last = (torch.arange(steps, device=logp.device) == last.unsqueeze(-1)).to(logp.dtype)
    return rewards + score.unsqueeze(-1) * at_last
