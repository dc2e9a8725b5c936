"""PyTorch twins of ``rlhf_edu.numpy.advantages`` (chapters 4 and 5): same names, same arguments, any device.

The backward recursions run as a loop over time only, each step one vectorised operation over the batch
on the inputs' device, and stay differentiable (gradients reach rewards, values and last_value).
"""

from __future__ import annotations

import torch

from rlhf_edu.numpy.advantages import GROUP_STDS, check_last_value
from rlhf_edu.validation import (
    check_binary,
    check_choice,
    check_in_range,
    check_mask,
    check_min_size,
    check_positive,
    check_same_shape,
)

__all__ = [
    "discounted_returns",
    "gae",
    "group_normalized_advantages",
    "leave_one_out_advantages",
    "whiten",
]


def _float_tensor(name, x, like=None):
    """``x`` as a floating tensor (on ``like``'s device and dtype when given)."""
    if like is not None:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        if x.dtype == torch.bool or x.dtype.is_complex:
            raise TypeError(f"{name} must be real numbers, got dtype {x.dtype}")
        x = x.to(torch.get_default_dtype())
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


def _prepare(rewards, gamma, dones, last_value):
    rewards = _float_tensor("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    check_in_range("gamma", gamma, 0.0, 1.0)
    not_done = None
    if dones is not None:
        dones = torch.as_tensor(dones, device=rewards.device)
        check_same_shape(rewards=rewards, dones=dones)
        check_binary("dones", dones)
        not_done = 1.0 - dones.to(rewards.dtype)
    check_last_value(last_value, rewards.shape[:-1])
    last_value = _float_tensor("last_value", last_value, like=rewards).expand(rewards.shape[:-1])
    return rewards, not_done, last_value


def discounted_returns(rewards, gamma, dones=None, last_value=0.0):
    r"""G_t = r_t + gamma (1 - d_t) G_{t+1}, G_T = last_value (see the NumPy reference).

    >>> discounted_returns(torch.tensor([1.0, 1.0, 1.0]), 0.5)
    tensor([1.7500, 1.5000, 1.0000])
    """
    rewards, not_done, last_value = _prepare(rewards, gamma, dones, last_value)
    discount = float(gamma) if not_done is None else float(gamma) * not_done
    return _discounted_cumsum(rewards, discount, last_value)


def gae(rewards, values, gamma, lam, dones=None, last_value=0.0):
    r"""GAE (Schulman et al., 2016): ``(advantages, advantages + values)`` (see the NumPy reference).

    >>> gae(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.5, 0.5]), gamma=1.0, lam=0.0)[0]
    tensor([0.0000, 0.0000, 0.5000])
    """
    rewards, not_done, last_value = _prepare(rewards, gamma, dones, last_value)
    values = _float_tensor("values", values, like=rewards)
    check_same_shape(rewards=rewards, values=values)
    check_in_range("lam", lam, 0.0, 1.0)
    gamma, lam = float(gamma), float(lam)
    next_values = torch.cat([values[..., 1:], last_value.unsqueeze(-1)], dim=-1)
    if not_done is None:
        deltas = rewards + gamma * next_values - values
        discount = gamma * lam
    else:
        deltas = rewards + gamma * next_values * not_done - values
        discount = gamma * lam * not_done
    advantages = _discounted_cumsum(deltas, discount, torch.zeros_like(last_value))
    return advantages, advantages + values


def group_normalized_advantages(rewards, std="population", eps=1e-6):
    r"""GRPO group advantage (r - mean) / (std + eps) on the last axis (see the NumPy reference).

    >>> group_normalized_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), std=None)
    tensor([ 0.5000, -0.5000, -0.5000,  0.5000])
    """
    check_choice("std", std, GROUP_STDS)
    rewards = _float_tensor("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    centered = rewards - rewards.mean(dim=-1, keepdim=True)
    if std is None:
        return centered
    check_positive("eps", eps)
    if std == "sample" and rewards.shape[-1] < 2:
        raise ValueError(
            "rewards has groups of size 1 on the last axis: std='sample' divides by G - 1 = 0; "
            "use std='population' or std=None, or sample at least 2 completions per prompt"
        )
    sigma = rewards.std(dim=-1, correction=1 if std == "sample" else 0, keepdim=True)
    return centered / (sigma + eps)


def leave_one_out_advantages(rewards):
    r"""RLOO advantage r_i - mean_{j != i} r_j on the last axis (see the NumPy reference).

    >>> leave_one_out_advantages(torch.tensor([1.0, 0.0]))
    tensor([ 1., -1.])
    """
    rewards = _float_tensor("rewards", rewards)
    check_min_size("rewards", rewards, 2)
    group_size = rewards.shape[-1]
    baseline = (rewards.sum(dim=-1, keepdim=True) - rewards) / (group_size - 1)
    return rewards - baseline


def whiten(x, mask=None, shift_mean=True, eps=1e-8):
    r"""(x - mean) / sqrt(var + eps) over the masked elements; padding -> 0 (see the NumPy reference).

    >>> whiten(torch.tensor([1.0, 2.0, 3.0, 99.0]), mask=torch.tensor([1, 1, 1, 0]))
    tensor([-1.2247,  0.0000,  1.2247,  0.0000])
    """
    x = _float_tensor("x", x)
    check_positive("eps", eps)
    if mask is None:
        m = torch.ones_like(x)
    else:
        mask = torch.as_tensor(mask, device=x.device)
        check_same_shape(x=x, mask=mask)
        check_mask("mask", mask)
        m = mask.to(x.dtype)
    x_kept = torch.where(m > 0, x, torch.zeros_like(x))  # padding may hold anything, even inf
    n = m.sum()
    mean = x_kept.sum() / n
    var = (((x_kept - mean) * m) ** 2).sum() / n
    out = (x_kept - mean) / torch.sqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m > 0, out, torch.zeros_like(out))
