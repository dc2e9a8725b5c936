"""PyTorch twins of ``rlhf_edu.numpy.advantages`` (chapters 4 and 5): same names, same arguments, any device.

The backward recursions run as a loop over time only, each step one vectorised operation over the batch
on the inputs' device, and stay differentiable (gradients reach rewards, values and last_value).
"""

from __future__ import annotations

import torch

from rlhf_edu.numpy.advantages import GROUP_SCALES, GROUP_STDS, check_last_value, check_truncation
from rlhf_edu.validation import (
    allows_neg_inf,
    check_finite,
    check_binary,
    check_choice,
    check_in_range,
    check_mask,
    check_min_size,
    check_nonnegative,
    check_positive,
    check_same_shape,
)

__all__ = [
    "discounted_returns",
    "gae",
    "group_normalized_advantages",
    "leave_one_out_advantages",
    "constant_groups",
    "whiten",
]


def _float_tensor(name, x, like=None, finite=True):
    """``x`` as a floating tensor (on ``like``'s device and dtype when given); NaN and inf raise ``ValueError``
    naming ``name`` (-inf is allowed for log-probs and logits; ``finite=False`` skips the check)."""
    if like is not None:
        x = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    else:
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            if x.dtype == torch.bool or x.dtype.is_complex:
                raise TypeError(f"{name} must be real numbers, got dtype {x.dtype}")
            x = x.to(torch.get_default_dtype())
    if finite:
        check_finite(name, x, allow_neg_inf=allows_neg_inf(name))
    return x


def _discounted_cumsum(x, discount, tail):
    """y_t = x_t + discount_t * y_{t+1}, y_T = tail, over the last axis (discount: float or like x)."""
    # the loop's cost is per-op overhead, not arithmetic: slice all steps at once (unbind) and do one
    # fused op per step (x + c * y)
    xs = x.unbind(-1)
    cs = discount.unbind(-1) if isinstance(discount, torch.Tensor) else None
    running = tail
    out = [None] * len(xs)
    for t in reversed(range(len(xs))):
        if cs is None:
            running = torch.add(xs[t], running, alpha=discount)
        else:
            running = torch.addcmul(xs[t], cs[t], running)
        out[t] = running
    return torch.stack(out, dim=-1)


def _prepare(rewards, gamma, dones, last_value, truncated=None, truncation_values=None):
    rewards = _float_tensor("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    check_in_range("gamma", gamma, 0.0, 1.0)
    check_truncation(truncated, truncation_values, dones, tuple(rewards.shape))
    not_done = None
    if dones is not None:
        dones = torch.as_tensor(dones, device=rewards.device)
        check_same_shape(rewards=rewards, dones=dones)
        check_binary("dones", dones)
        not_done = 1.0 - dones.to(rewards.dtype)
    cut, cut_values, carry = None, None, not_done
    if truncated is not None:
        cut = torch.as_tensor(truncated, device=rewards.device) != 0
        tv = _float_tensor("truncation_values", truncation_values, like=rewards, finite=False)
        cut_values = torch.where(cut, tv, torch.zeros_like(tv))
        not_cut = 1.0 - cut.to(rewards.dtype)
        carry = not_cut if not_done is None else not_done * not_cut
    check_last_value(last_value, rewards.shape[:-1])
    last_value = _float_tensor("last_value", last_value, like=rewards).expand(rewards.shape[:-1])
    return rewards, carry, not_done, cut_values, cut, last_value


def discounted_returns(rewards, gamma, dones=None, last_value=0.0, truncated=None, truncation_values=None):
    r"""G_t = r_t + gamma (1 - d_t) G_{t+1}, G_T = last_value; a cut step bootstraps from
    ``truncation_values`` and stops (see the NumPy reference).

    >>> discounted_returns(torch.tensor([1.0, 1.0, 1.0]), 0.5)
    tensor([1.7500, 1.5000, 1.0000])
    """
    rewards, carry, _, cut_values, _, last_value = _prepare(rewards, gamma, dones, last_value, truncated,
                                                            truncation_values)
    if cut_values is not None:
        rewards = rewards + float(gamma) * cut_values
    discount = float(gamma) if carry is None else float(gamma) * carry
    return _discounted_cumsum(rewards, discount, last_value)


def gae(rewards, values, gamma, lam, dones=None, last_value=0.0, truncated=None, truncation_values=None):
    r"""GAE (Schulman et al., 2016): ``(advantages, advantages + values)``, with termination (``dones``) and
    truncation (``truncated``, ``truncation_values``) told apart (see the NumPy reference).

    >>> gae(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.5, 0.5]), gamma=1.0, lam=0.0)[0]
    tensor([0.0000, 0.0000, 0.5000])
    """
    rewards, carry, not_done, cut_values, cut, last_value = _prepare(rewards, gamma, dones, last_value, truncated,
                                                                     truncation_values)
    values = _float_tensor("values", values, like=rewards)
    check_same_shape(rewards=rewards, values=values)
    check_in_range("lam", lam, 0.0, 1.0)
    gamma, lam = float(gamma), float(lam)
    next_values = torch.cat([values[..., 1:], last_value.unsqueeze(-1)], dim=-1)
    if cut_values is not None:
        next_values = torch.where(cut, cut_values, next_values)
    if carry is None:
        deltas = rewards + gamma * next_values - values
        discount = gamma * lam
    else:
        bootstrap = next_values if not_done is None else next_values * not_done
        deltas = rewards + gamma * bootstrap - values
        discount = gamma * lam * carry
    advantages = _discounted_cumsum(deltas, discount, torch.zeros_like(last_value))
    return advantages, advantages + values


def constant_groups(rewards):
    """Boolean ``(...)``: groups (last axis) whose rewards are equal up to rounding (see the NumPy reference).

    >>> constant_groups(torch.tensor([[0.9, 0.9, 0.9], [1.0, 0.0, 1.0]]))
    tensor([ True, False])
    """
    rewards = _float_tensor("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    return _constant_groups(rewards)


def _constant_groups(rewards):
    hi, lo = rewards.detach().amax(dim=-1), rewards.detach().amin(dim=-1)
    scale = torch.maximum(hi.abs(), lo.abs())
    return (hi - lo) <= 4 * torch.finfo(rewards.dtype).eps * scale


def group_normalized_advantages(rewards, std="population", eps=1e-6, scale="group"):
    r"""GRPO group advantage (r - mean) / (std + eps) on the last axis; ``scale="batch"`` takes one std over
    the batch of group-centred rewards (see the NumPy reference).

    >>> group_normalized_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), std=None)
    tensor([ 0.5000, -0.5000, -0.5000,  0.5000])
    """
    check_choice("std", std, GROUP_STDS)
    check_choice("scale", scale, GROUP_SCALES)
    rewards = _float_tensor("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    constant = _constant_groups(rewards).unsqueeze(-1)
    centered = rewards - rewards.mean(dim=-1, keepdim=True)
    centered = torch.where(constant, torch.zeros_like(centered), centered)
    if std is None:
        return centered
    check_nonnegative("eps", eps)
    if std == "sample" and rewards.shape[-1] < 2:
        raise ValueError(
            "rewards has groups of size 1 on the last axis: std='sample' divides by G - 1 = 0; "
            "use std='population' or std=None, or sample at least 2 completions per prompt"
        )
    correction = 1 if std == "sample" else 0
    if scale == "batch":
        if bool(constant.all()):  # no group varies: every advantage is 0 (dividing by 0 + eps would give NaN grads)
            return centered
        return centered / (centered.std(correction=correction) + eps)
    sigma = rewards.std(dim=-1, correction=correction, keepdim=True)
    # constant groups: divide 0 by 1 (not by std + eps = 0, whose gradient would be NaN)
    return centered / torch.where(constant, torch.ones_like(sigma), sigma + eps)


def leave_one_out_advantages(rewards):
    r"""RLOO advantage r_i - mean_{j != i} r_j on the last axis (see the NumPy reference).

    >>> leave_one_out_advantages(torch.tensor([1.0, 0.0]))
    tensor([ 1., -1.])
    """
    rewards = _float_tensor("rewards", rewards)
    check_min_size("rewards", rewards, 2)
    group_size = rewards.shape[-1]
    baseline = (rewards.sum(dim=-1, keepdim=True) - rewards) / (group_size - 1)
    advantages = rewards - baseline
    return torch.where(_constant_groups(rewards).unsqueeze(-1), torch.zeros_like(advantages), advantages)


def whiten(x, mask=None, shift_mean=True, eps=1e-8):
    r"""(x - mean) / sqrt(var + eps) over the masked elements; padding -> 0 (see the NumPy reference).

    >>> whiten(torch.tensor([1.0, 2.0, 3.0, 99.0]), mask=torch.tensor([1, 1, 1, 0]))
    tensor([-1.2247,  0.0000,  1.2247,  0.0000])
    """
    x = _float_tensor("x", x, finite=False)
    check_positive("eps", eps)
    if mask is None:
        m = torch.ones_like(x)
    else:
        mask = torch.as_tensor(mask, device=x.device)
        check_same_shape(x=x, mask=mask)
        check_mask("mask", mask)
        m = mask.to(x.dtype)
    check_finite("x (where mask is 1)", x[m > 0])
    x_kept = torch.where(m > 0, x, torch.zeros_like(x))  # padding may hold anything, even inf
    n = m.sum()
    mean = x_kept.sum() / n
    var = (((x_kept - mean) * m) ** 2).sum() / n
    out = (x_kept - mean) / torch.sqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m > 0, out, torch.zeros_like(out))
