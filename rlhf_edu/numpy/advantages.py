"""Returns and advantages: discounted returns, GAE, GRPO group advantages, RLOO, whitening.

Chapter 4 (policy gradients, PPO: returns, GAE, whitening) and chapter 5 (GRPO and RLOO: advantages from
a group of samples instead of a critic). Time is on the LAST axis everywhere; leading axes are a batch
(for the group functions, the last axis is the group of G samples for one prompt).

NumPy references; the PyTorch twins are in ``rlhf_edu.torch.advantages``.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from rlhf_edu.validation import (
    as_float_array,
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

#: Valid ``std`` choices of :func:`group_normalized_advantages` (None = Dr. GRPO, mean only).
GROUP_STDS = ("population", "sample", None)


def check_last_value(last_value, batch_shape):
    """Raise ``ValueError`` unless ``last_value`` (a scalar or one value per row) broadcasts to ``batch_shape``.

    Shared with the torch twin, so the rule and the message are written once.
    """
    shape = tuple(getattr(last_value, "shape", np.shape(last_value)))
    try:
        if np.broadcast_shapes(shape, tuple(batch_shape)) != tuple(batch_shape):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"last_value must be a scalar or have the batch shape {tuple(batch_shape)} "
            f"(rewards without the time axis), got shape {shape}"
        ) from None


def _discounted_cumsum(x, discount, tail):
    r"""y_t = x_t + discount_t * y_{t+1} with y_T = tail, backwards over the last axis.

    A constant ``discount`` is one linear filter, run on the time-reversed signal with ``tail`` appended
    (Spinning Up's ``discount_cumsum``). A per-step ``discount`` (episodes that end mid-row) is a
    backward loop over time only, each step vectorised over the batch.
    """
    if np.ndim(discount) == 0:
        padded = np.concatenate([x, tail[..., None]], axis=-1)
        y = lfilter([1.0], [1.0, -float(discount)], padded[..., ::-1], axis=-1)[..., ::-1]
        return np.ascontiguousarray(y[..., :-1], dtype=x.dtype)
    y = np.empty_like(x)
    running = tail
    for t in reversed(range(x.shape[-1])):
        running = x[..., t] + discount[..., t] * running
        y[..., t] = running
    return y


def _prepare(rewards, gamma, dones, last_value):
    """Validated float arrays (rewards, not-done factor or None, last value per row)."""
    rewards = as_float_array("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    check_in_range("gamma", gamma, 0.0, 1.0)
    not_done = None
    if dones is not None:
        dones = np.asarray(dones)
        check_same_shape(rewards=rewards, dones=dones)
        check_binary("dones", dones)
        not_done = 1.0 - dones.astype(rewards.dtype)
    last_value = as_float_array("last_value", last_value)
    check_last_value(last_value, rewards.shape[:-1])
    last_value = np.broadcast_to(last_value, rewards.shape[:-1]).astype(rewards.dtype)
    return rewards, not_done, last_value


def discounted_returns(rewards, gamma, dones=None, last_value=0.0):
    r"""Discounted return of every step: :math:`G_t = r_t + \gamma (1 - d_t) G_{t+1}`, :math:`G_T = V_{last}`.

    ``dones[..., t] = 1`` means the episode ended after step t (terminated): nothing after it is added,
    and the next step starts a new episode. ``last_value`` (a scalar or one value per row) bootstraps the
    step after the final one, :math:`G_{T-1} = r_{T-1} + \gamma V_{last}`, for a row cut off by the
    rollout length (truncated), unless its final step is done. (An episode cut by a time limit in the
    middle of a row is not "done" in this sense; mark it done and add :math:`\gamma V(s_{next})` to that
    step's reward, the usual bootstrap trick.) Source: Sutton & Barto (2018), eq. 3.9;
    the lecture notes, "discounted sum of future rewards". Used in chapter 4.

    Without dones this is one linear filter (``scipy.signal.lfilter``, as in Spinning Up); with dones, a
    backward loop over time, vectorised over the batch.

    >>> discounted_returns(np.array([1.0, 1.0, 1.0]), 0.5)
    array([1.75, 1.5 , 1.  ])
    >>> discounted_returns(np.array([1.0, 1.0, 1.0]), 0.5, dones=np.array([0, 1, 0]), last_value=2.0)
    array([1.5, 1. , 2. ])
    """
    rewards, not_done, last_value = _prepare(rewards, gamma, dones, last_value)
    discount = float(gamma) if not_done is None else float(gamma) * not_done
    return _discounted_cumsum(rewards, discount, last_value)


def gae(rewards, values, gamma, lam, dones=None, last_value=0.0):
    r"""Generalized Advantage Estimation (Schulman et al., 2016, eq. 16); returns ``(advantages, returns)``.

    .. math::
        \delta_t = r_t + \gamma V_{t+1} (1 - d_t) - V_t, \qquad
        A_t = \delta_t + \gamma\lambda (1 - d_t) A_{t+1} = \sum_l (\gamma\lambda)^l \delta_{t+l},

    with :math:`V_T` = ``last_value`` (scalar or per row; the bootstrap of a truncated row) and
    :math:`A_T = 0`; ``returns = advantages + values`` are the critic's regression targets (the
    TD(lambda) returns). ``lam = 1`` gives the Monte Carlo advantage :math:`G_t - V_t` (high variance),
    ``lam = 0`` the TD residual :math:`\delta_t` (high bias): the lecture notes' bias-variance trade-off.
    Used in chapter 4.

    >>> adv, ret = gae(np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), gamma=1.0, lam=0.0)
    >>> adv, ret
    (array([0. , 0. , 0.5]), array([0.5, 0.5, 1. ]))
    >>> gae(np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), gamma=1.0, lam=1.0)[0]
    array([0.5, 0.5, 0.5])
    """
    rewards, not_done, last_value = _prepare(rewards, gamma, dones, last_value)
    values = as_float_array("values", values)
    check_same_shape(rewards=rewards, values=values)
    check_in_range("lam", lam, 0.0, 1.0)
    gamma, lam = float(gamma), float(lam)
    next_values = np.concatenate([values[..., 1:], last_value[..., None]], axis=-1)
    if not_done is None:
        deltas = rewards + gamma * next_values - values
        discount = gamma * lam
    else:
        deltas = rewards + gamma * next_values * not_done - values
        discount = gamma * lam * not_done
    advantages = _discounted_cumsum(deltas, discount, np.zeros_like(last_value))
    return advantages, advantages + values


def group_normalized_advantages(rewards, std="population", eps=1e-6):
    r"""GRPO's group-relative advantage (Shao et al., 2024, DeepSeekMath, eq. 3): one value per sample.

    .. math:: A_i = \frac{r_i - \mathrm{mean}(r_1..r_G)}{\mathrm{std}(r_1..r_G) + \epsilon}

    over each group on the last axis (one group = the G samples of one prompt; leading axes are
    prompts). ``std`` chooses the denominator:

    - ``"population"`` (the default): :math:`\sigma^2 = \frac1G \sum_j (r_j - \mu)^2`, the definition
      the lecture notes write out, and the one for which each group's advantages have unit standard
      deviation; it is also defined (and gives 0) for a group of one;
    - ``"sample"``: the Bessel-corrected :math:`\frac1{G-1}\sum_j (r_j - \mu)^2`, what ``torch.std`` and
      hence TRL's GRPOTrainer use; advantages are smaller by :math:`\sqrt{(G-1)/G}`. Needs G >= 2;
    - ``None``: no division, :math:`A_i = r_i - \mu` (Dr. GRPO, Liu et al., 2025: dividing by the std
      up-weights prompts that are nearly always or nearly never solved).

    ``eps`` keeps a group of equal rewards (std 0) at advantage 0 instead of 0/0. Used in chapter 5.

    >>> group_normalized_advantages(np.array([1.0, 0.0, 0.0, 1.0])).round(4)
    array([ 1., -1., -1.,  1.])
    >>> group_normalized_advantages(np.array([1.0, 0.0, 0.0, 1.0]), std=None)
    array([ 0.5, -0.5, -0.5,  0.5])
    """
    check_choice("std", std, GROUP_STDS)
    rewards = as_float_array("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    centered = rewards - rewards.mean(axis=-1, keepdims=True)
    if std is None:
        return centered
    check_positive("eps", eps)
    if std == "sample" and rewards.shape[-1] < 2:
        raise ValueError(
            "rewards has groups of size 1 on the last axis: std='sample' divides by G - 1 = 0; "
            "use std='population' or std=None, or sample at least 2 completions per prompt"
        )
    sigma = rewards.std(axis=-1, ddof=1 if std == "sample" else 0, keepdims=True)
    return centered / (sigma + eps)


def leave_one_out_advantages(rewards):
    r"""RLOO's advantage (Ahmadian et al., 2024; Kool et al., 2019): each reward minus the mean of the others.

    .. math:: A_i = r_i - \frac{1}{G-1}\sum_{j \ne i} r_j = \frac{G}{G-1}\,(r_i - \bar r)

    over each group on the last axis (the lecture notes' RLOO gradient estimate). The baseline of sample
    i does not depend on sample i, so the gradient estimate stays unbiased; the advantages of a group sum
    to zero. Needs G >= 2. Used in chapter 5.

    >>> leave_one_out_advantages(np.array([1.0, 0.0, 0.0, 1.0])).round(4)
    array([ 0.6667, -0.6667, -0.6667,  0.6667])
    """
    rewards = as_float_array("rewards", rewards)
    check_min_size("rewards", rewards, 2)
    group_size = rewards.shape[-1]
    baseline = (rewards.sum(axis=-1, keepdims=True) - rewards) / (group_size - 1)
    return rewards - baseline


def whiten(x, mask=None, shift_mean=True, eps=1e-8):
    r"""Normalise ``x`` to mean 0 and variance 1 over its (masked) elements: the PPO advantage-whitening detail.

    .. math:: \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad
        \mu = \frac{\sum m x}{\sum m}, \quad \sigma^2 = \frac{\sum m (x - \mu)^2}{\sum m}

    with statistics over ALL kept elements of the batch (not per row), the population variance, and
    ``eps`` inside the square root (as TRL's ``masked_whiten``; TRL's variance is Bessel-corrected, a
    factor (n-1)/n that vanishes for real batch sizes). ``shift_mean=False`` adds the mean back (only
    rescales; what TRL does for rewards). Padding (``mask == 0``) comes out as 0, so it cannot leak into a
    loss. Source: OpenAI baselines' PPO2 (2017); Huang et al., "The 37 implementation details of PPO"
    (2022). Used in chapter 4.

    >>> whiten(np.array([1.0, 2.0, 3.0, 4.0])).round(4)
    array([-1.3416, -0.4472,  0.4472,  1.3416])
    >>> whiten(np.array([1.0, 2.0, 3.0, 99.0]), mask=np.array([1, 1, 1, 0])).round(4)
    array([-1.2247,  0.    ,  1.2247,  0.    ])
    """
    x = as_float_array("x", x)
    check_positive("eps", eps)
    if mask is None:
        m = np.ones_like(x)
    else:
        mask = np.asarray(mask)
        check_same_shape(x=x, mask=mask)
        check_mask("mask", mask)
        m = mask.astype(x.dtype)
    x_kept = np.where(m > 0, x, 0.0)  # padding may hold anything, even inf
    n = m.sum()
    mean = x_kept.sum() / n
    var = (((x_kept - mean) * m) ** 2).sum() / n
    out = (x_kept - mean) / np.sqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return np.where(m > 0, out, 0.0)
