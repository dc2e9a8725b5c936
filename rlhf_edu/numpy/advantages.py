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
    check_finite,
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

#: Valid ``std`` choices of :func:`group_normalized_advantages` (None = Dr. GRPO, mean only).
GROUP_STDS = ("population", "sample", None)

#: Valid ``scale`` choices of :func:`group_normalized_advantages`: the std of each group (GRPO) or of the whole
#: batch of group-centred rewards (REINFORCE++ with baseline; Lite PPO).
GROUP_SCALES = ("group", "batch")


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


def check_truncation(truncated, truncation_values, dones, shape):
    """Validate ``truncated``/``truncation_values`` of ``gae`` and ``discounted_returns`` (shared with torch).

    Both or neither must be given; ``truncated`` holds 0/1 with the rewards' shape and never coincides
    with a ``done`` (a step either terminates or is cut); ``truncation_values`` has the rewards' shape and
    is finite where ``truncated`` is 1 (elsewhere it is ignored and may hold anything).
    """
    if (truncated is None) != (truncation_values is None):
        raise ValueError(
            "truncated and truncation_values go together: truncated[t] = 1 marks a cut after step t and "
            "truncation_values[t] is V(s_{t+1}), the value the cut episode bootstraps from"
        )
    if truncated is None:
        return
    check_same_shape(rewards=np.empty(shape), truncated=truncated, truncation_values=truncation_values)
    check_binary("truncated", truncated)
    cut = _as_numpy_bool(truncated)
    if dones is not None and np.any(cut & _as_numpy_bool(dones)):
        t = tuple(int(i) for i in np.argwhere(cut & _as_numpy_bool(dones))[0])
        raise ValueError(f"truncated and dones are both 1 at index {t}: a step either ends its episode (done, "
                         "no bootstrap) or is cut by a time limit (truncated, bootstrap from truncation_values)")
    tv = truncation_values
    tv = tv.detach().cpu().numpy() if hasattr(tv, "detach") else np.asarray(tv)
    check_finite("truncation_values (where truncated)", tv[cut])


def _as_numpy_bool(x):
    return (x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)) != 0


def _prepare(rewards, gamma, dones, last_value, truncated=None, truncation_values=None):
    """Validated float arrays: rewards (plus gamma * V at cut steps), the per-step continuation factor or
    None, the factor that keeps the bootstrap of the next step (not done), the bootstrap values at the
    cut steps (0 elsewhere) or None, and the last value per row."""
    rewards = as_float_array("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    check_in_range("gamma", gamma, 0.0, 1.0)
    check_truncation(truncated, truncation_values, dones, rewards.shape)
    not_done = None
    if dones is not None:
        dones = np.asarray(dones)
        check_same_shape(rewards=rewards, dones=dones)
        check_binary("dones", dones)
        not_done = 1.0 - dones.astype(rewards.dtype)
    cut_values = None
    carry = not_done
    if truncated is not None:
        cut = np.asarray(truncated) != 0
        tv = as_float_array("truncation_values", truncation_values, finite=False).astype(rewards.dtype)
        cut_values = np.where(cut, tv, 0.0).astype(rewards.dtype)
        not_cut = 1.0 - cut.astype(rewards.dtype)
        carry = not_cut if not_done is None else not_done * not_cut
    last_value = as_float_array("last_value", last_value)
    check_last_value(last_value, rewards.shape[:-1])
    last_value = np.broadcast_to(last_value, rewards.shape[:-1]).astype(rewards.dtype)
    return rewards, carry, not_done, cut_values, truncated, last_value


def discounted_returns(rewards, gamma, dones=None, last_value=0.0, truncated=None, truncation_values=None):
    r"""Discounted return of every step: :math:`G_t = r_t + \gamma (1 - d_t) G_{t+1}`, :math:`G_T = V_{last}`.

    ``dones[..., t] = 1`` means the episode ended after step t (terminated): nothing after it is added,
    and the next step starts a new episode. ``last_value`` (a scalar or one value per row) bootstraps the
    step after the final one, :math:`G_{T-1} = r_{T-1} + \gamma V_{last}`, for a row cut off by the
    rollout length (truncated), unless its final step is done.

    Truncation in the middle of a row (a time limit: the episode was cut, not ended):
    ``truncated[..., t] = 1`` says the episode was cut after step t, and ``truncation_values[..., t]``
    is :math:`V(s_{t+1})`, the value of the state it was cut in. The return stops there like at a done
    (nothing of the next episode is added) but bootstraps from that value:
    :math:`G_t = r_t + \gamma\, V^{cut}_t`. Both arrays have the rewards' shape (``truncation_values``
    is read only where ``truncated`` is 1); a step cannot be both done and truncated.
    Source: Sutton & Barto (2018), eq. 3.9; Pardo et al. (2018), "Time limits in reinforcement learning";
    the lecture notes, "discounted sum of future rewards". Used in chapter 4.

    Without dones this is one linear filter (``scipy.signal.lfilter``, as in Spinning Up); with dones, a
    backward loop over time, vectorised over the batch. Raises ``ValueError`` for NaN/inf rewards or
    values, gamma outside [0, 1], mismatched shapes, or non-0/1 flags.

    >>> discounted_returns(np.array([1.0, 1.0, 1.0]), 0.5)
    array([1.75, 1.5 , 1.  ])
    >>> discounted_returns(np.array([1.0, 1.0, 1.0]), 0.5, dones=np.array([0, 1, 0]), last_value=2.0)
    array([1.5, 1. , 2. ])
    >>> discounted_returns(np.array([1.0, 1.0, 1.0]), 0.5, truncated=np.array([0, 1, 0]),
    ...                    truncation_values=np.array([0.0, 4.0, 0.0]), last_value=2.0)
    array([2.5, 3. , 2. ])
    """
    rewards, carry, _, cut_values, _, last_value = _prepare(rewards, gamma, dones, last_value, truncated,
                                                            truncation_values)
    if cut_values is not None:
        rewards = rewards + float(gamma) * cut_values
    discount = float(gamma) if carry is None else float(gamma) * carry
    return _discounted_cumsum(rewards, discount, last_value)


def gae(rewards, values, gamma, lam, dones=None, last_value=0.0, truncated=None, truncation_values=None):
    r"""Generalized Advantage Estimation (Schulman et al., 2016, eq. 16); returns ``(advantages, returns)``.

    .. math::
        \delta_t = r_t + \gamma V_{t+1} (1 - d_t) - V_t, \qquad
        A_t = \delta_t + \gamma\lambda (1 - d_t) A_{t+1} = \sum_l (\gamma\lambda)^l \delta_{t+l},

    with :math:`V_T` = ``last_value`` (scalar or per row; the bootstrap of a truncated row) and
    :math:`A_T = 0`; ``returns = advantages + values`` are the critic's regression targets (the
    TD(lambda) returns). ``lam = 1`` gives the Monte Carlo advantage :math:`G_t - V_t` (high variance),
    ``lam = 0`` the TD residual :math:`\delta_t` (high bias): the lecture notes' bias-variance trade-off.

    Truncation versus termination: ``dones[..., t] = 1`` (terminated) means no value after step t;
    ``truncated[..., t] = 1`` means the episode was CUT after step t by a time limit, and
    ``truncation_values[..., t]`` is :math:`V(s_{t+1})` of the state it was cut in. At a cut step the TD
    target bootstraps from that value and the recursion stops (nothing of the next episode leaks in):

    .. math:: \delta_t = r_t + \gamma V^{cut}_t - V_t, \qquad A_t = \delta_t .

    Shapes: ``rewards``, ``values``, ``dones``, ``truncated``, ``truncation_values`` all ``(..., T)``
    (time last); ``last_value`` a scalar or ``(...)``. Raises ``ValueError`` for NaN/inf inputs, a step
    both done and truncated, one of ``truncated``/``truncation_values`` without the other, mismatched
    shapes. Source: Schulman et al. (2016); Pardo et al. (2018). Used in chapter 4.

    >>> adv, ret = gae(np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), gamma=1.0, lam=0.0)
    >>> adv, ret
    (array([0. , 0. , 0.5]), array([0.5, 0.5, 1. ]))
    >>> gae(np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), gamma=1.0, lam=1.0)[0]
    array([0.5, 0.5, 0.5])

    Cut after step 1, where the value of the state it was cut in is 3.0:

    >>> gae(np.array([1.0, 0.5, -1.0, 2.0]), np.array([0.5, 0.4, 0.3, 0.2]), 0.9, 0.8, last_value=2.0,
    ...     truncated=np.array([0, 1, 0, 0]), truncation_values=np.array([0.0, 3.0, 0.0, 0.0]))[0].round(4)
    array([2.876, 2.8  , 1.472, 3.6  ])
    """
    rewards, carry, not_done, cut_values, truncated, last_value = _prepare(rewards, gamma, dones, last_value,
                                                                           truncated, truncation_values)
    values = as_float_array("values", values)
    check_same_shape(rewards=rewards, values=values)
    check_in_range("lam", lam, 0.0, 1.0)
    gamma, lam = float(gamma), float(lam)
    next_values = np.concatenate([values[..., 1:], last_value[..., None]], axis=-1)
    if cut_values is not None:
        next_values = np.where(np.asarray(truncated) != 0, cut_values, next_values)
    if carry is None:
        deltas = rewards + gamma * next_values - values
        discount = gamma * lam
    else:
        bootstrap = next_values if not_done is None else next_values * not_done
        deltas = rewards + gamma * bootstrap - values
        discount = gamma * lam * carry
    advantages = _discounted_cumsum(deltas, discount, np.zeros_like(last_value))
    return advantages, advantages + values


def constant_groups(rewards):
    r"""Which groups (last axis) have all-equal rewards: the zero-variance groups of GRPO and RLOO.

    A group counts as constant when :math:`\max_i r_i - \min_i r_i \le 4\,\epsilon_{dtype}
    \max_i |r_i|` (:math:`\epsilon_{dtype}` the machine epsilon of the rewards' dtype): equal up to a
    few roundings, so ``0.1 + 0.2`` and ``0.3`` are equal, in float32 as in float64. Such a group carries
    no learning signal, and every group advantage of this module is exactly 0 on it (in every dtype and
    for any eps), instead of a float residue of the mean divided by std + eps. The one decision, shared
    by ``group_normalized_advantages``, ``leave_one_out_advantages`` and the trainers' logged
    ``frac_zero_std_groups``, so they always agree.

    Shapes: ``(..., G)`` to a boolean ``(...)``. NaN/inf rewards raise ``ValueError``. Chapter 5.

    >>> constant_groups(np.array([[0.9, 0.9, 0.9], [1.0, 0.0, 1.0]], dtype=np.float32))
    array([ True, False])
    >>> bool(constant_groups(np.array([0.1 + 0.2, 0.3])))
    True
    """
    rewards = as_float_array("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    return _constant_groups(rewards)


def _constant_groups(rewards):
    hi, lo = rewards.max(axis=-1), rewards.min(axis=-1)
    scale = np.maximum(np.abs(hi), np.abs(lo))
    return (hi - lo) <= 4 * np.finfo(rewards.dtype).eps * scale


def group_normalized_advantages(rewards, std="population", eps=1e-6, scale="group"):
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

    ``scale`` chooses over what the std is taken (the mean is always the group's):

    - ``"group"`` (the default, GRPO): each group's own std, as above;
    - ``"batch"``: one std for the whole batch (every axis), of the group-centred rewards
      :math:`\tilde r_{q,i} = r_{q,i} - \mu_q`, :math:`A_{q,i} = \tilde r_{q,i} / (\mathrm{std}_{q,i}(\tilde r)
      + \epsilon)`: REINFORCE++ with baseline (Hu et al., 2025) and the "group mean, batch std" of Lite
      PPO (Liu et al., 2025, "Tricks or traps?"). Every group keeps its sign and its relative sizes, but
      a group of nearly equal rewards is no longer blown up to unit spread. (TRL's
      ``scale_rewards="batch"`` divides by the std of the raw rewards instead, which also counts the
      spread between prompts.) ``std`` still picks the population or the Bessel std (over all N
      samples). With a single group (shape ``(G,)``) both scales agree.

    A group of equal rewards (``constant_groups``: equal up to rounding) gets advantage exactly 0, in
    every dtype, for every ``std`` and ``scale`` and any ``eps >= 0``; without this the float residue of
    the centred rewards (~1e-8 in float32) divided by std + eps gave e.g. 0.056 for three rewards of 0.9
    in float32. ``eps >= 0`` (``eps = 0`` is the paper's formula exactly) only guards nearly equal rewards.
    Shapes ``(..., G)`` to ``(..., G)``. Raises ``ValueError`` for NaN/inf rewards, ``eps < 0``, an
    unknown ``std`` or ``scale``, or ``std="sample"`` with G = 1. Used in chapter 5.

    >>> group_normalized_advantages(np.array([1.0, 0.0, 0.0, 1.0])).round(4)
    array([ 1., -1., -1.,  1.])
    >>> group_normalized_advantages(np.array([1.0, 0.0, 0.0, 1.0]), std=None)
    array([ 0.5, -0.5, -0.5,  0.5])
    >>> group_normalized_advantages(np.float32([0.9, 0.9, 0.9]), eps=0.0)
    array([0., 0., 0.], dtype=float32)

    Two prompts, one with rewards far apart and one nearly equal: per group both get unit spread; with
    the batch std (of the centred rewards 1, -1, 0.01, -0.01) the second stays small:

    >>> r = np.array([[2.0, 0.0], [0.51, 0.49]])
    >>> group_normalized_advantages(r, eps=0.0).round(4)
    array([[ 1., -1.],
           [ 1., -1.]])
    >>> group_normalized_advantages(r, eps=0.0, scale="batch").round(4)
    array([[ 1.4141, -1.4141],
           [ 0.0141, -0.0141]])
    """
    check_choice("std", std, GROUP_STDS)
    check_choice("scale", scale, GROUP_SCALES)
    rewards = as_float_array("rewards", rewards)
    check_min_size("rewards", rewards, 1)
    constant = _constant_groups(rewards)[..., None]
    centered = np.where(constant, 0.0, rewards - rewards.mean(axis=-1, keepdims=True)).astype(rewards.dtype)
    if std is None:
        return centered
    check_nonnegative("eps", eps)
    if std == "sample" and rewards.shape[-1] < 2:
        raise ValueError(
            "rewards has groups of size 1 on the last axis: std='sample' divides by G - 1 = 0; "
            "use std='population' or std=None, or sample at least 2 completions per prompt"
        )
    ddof = 1 if std == "sample" else 0
    if scale == "batch":  # one std over every sample of the batch, of the group-centred rewards
        sigma = centered.std(ddof=ddof)
        if constant.all():  # no group varies: every advantage is 0, divide by 1 (not by 0 + eps = 0)
            return centered
        return (centered / (sigma + eps)).astype(rewards.dtype)
    sigma = rewards.std(axis=-1, ddof=ddof, keepdims=True)
    return centered / np.where(constant, 1.0, sigma + eps).astype(rewards.dtype)


def leave_one_out_advantages(rewards):
    r"""RLOO's advantage (Ahmadian et al., 2024; Kool et al., 2019): each reward minus the mean of the others.

    .. math:: A_i = r_i - \frac{1}{G-1}\sum_{j \ne i} r_j = \frac{G}{G-1}\,(r_i - \bar r)

    over each group on the last axis (the lecture notes' RLOO gradient estimate). The baseline of sample
    i does not depend on sample i, so the gradient estimate stays unbiased; the advantages of a group sum
    to zero. Needs G >= 2. A group of equal rewards (``constant_groups``) gets exactly 0 in every dtype.

    Infinite rewards are refused (``ValueError``, like NaN): with one :math:`r_i = +\infty` the limit is
    :math:`A_i = +\infty` and :math:`A_j = -\infty` for the others, and with two it is undefined;
    neither is a usable advantage (the loss would be inf or NaN), so clip or cap the reward upstream.
    Shapes ``(..., G)`` to ``(..., G)``. Used in chapter 5.

    >>> leave_one_out_advantages(np.array([1.0, 0.0, 0.0, 1.0])).round(4)
    array([ 0.6667, -0.6667, -0.6667,  0.6667])
    """
    rewards = as_float_array("rewards", rewards)
    check_min_size("rewards", rewards, 2)
    group_size = rewards.shape[-1]
    baseline = (rewards.sum(axis=-1, keepdims=True) - rewards) / (group_size - 1)
    return np.where(_constant_groups(rewards)[..., None], 0.0, rewards - baseline).astype(rewards.dtype)


def whiten(x, mask=None, shift_mean=True, eps=1e-8):
    r"""Normalise ``x`` to mean 0 and variance 1 over its (masked) elements: the PPO advantage-whitening detail.

    .. math:: \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad
        \mu = \frac{\sum m x}{\sum m}, \quad \sigma^2 = \frac{\sum m (x - \mu)^2}{\sum m}

    with statistics over ALL kept elements of the batch (not per row), the population variance, and
    ``eps`` inside the square root (as TRL's ``masked_whiten``; TRL's variance is Bessel-corrected, a
    factor (n-1)/n that vanishes for real batch sizes). ``shift_mean=False`` adds the mean back (only
    rescales; what TRL does for rewards). Padding (``mask == 0``) comes out as 0, so it cannot leak into a
    loss; NaN or inf in a kept element raises ``ValueError`` (in padding it is ignored). Source: OpenAI
    baselines' PPO2 (2017); Huang et al., "The 37 implementation details of PPO"
    (2022). Used in chapter 4.

    >>> whiten(np.array([1.0, 2.0, 3.0, 4.0])).round(4)
    array([-1.3416, -0.4472,  0.4472,  1.3416])
    >>> whiten(np.array([1.0, 2.0, 3.0, 99.0]), mask=np.array([1, 1, 1, 0])).round(4)
    array([-1.2247,  0.    ,  1.2247,  0.    ])
    """
    x = as_float_array("x", x, finite=False)
    check_positive("eps", eps)
    if mask is None:
        m = np.ones_like(x)
    else:
        mask = np.asarray(mask)
        check_same_shape(x=x, mask=mask)
        check_mask("mask", mask)
        m = mask.astype(x.dtype)
    check_finite("x (where mask is 1)", x[m > 0])
    x_kept = np.where(m > 0, x, 0.0)  # padding may hold anything, even inf
    n = m.sum()
    mean = x_kept.sum() / n
    var = (((x_kept - mean) * m) ** 2).sum() / n
    out = (x_kept - mean) / np.sqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return np.where(m > 0, out, 0.0)
