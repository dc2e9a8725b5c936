r"""The optimum of KL-regularised reward maximisation (chapter 6, DPO's derivation; first look in chapter 2).

For one prompt, RLHF maximises :math:`J(\pi) = \mathbb{E}_{y\sim\pi}[r(y)] - \beta\,\mathrm{KL}(\pi \| \pi_{ref})`.
Rewriting (the lecture notes' "DPO objective" slides),

.. math:: J(\pi) = \beta \log Z - \beta\,\mathrm{KL}(\pi \| \pi^*), \qquad
          \pi^*(y) = \frac{\pi_{ref}(y)\, e^{r(y)/\beta}}{Z}, \qquad Z = \sum_y \pi_{ref}(y)\, e^{r(y)/\beta},

so by Gibbs' inequality the maximiser is :math:`\pi^*` and the maximum is :math:`\beta \log Z`. Solved for
the reward, :math:`r(y) = \beta \log\frac{\pi^*(y)}{\pi_{ref}(y)} + \beta \log Z`: every policy implies a
reward up to a per-prompt constant, which is what DPO trains.

Everything here is for discrete distributions on the last axis. NumPy references; the PyTorch twins are
in ``rlhf_edu.torch.optimal``.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.numpy.divergences import kl_divergence, kl_divergence_grad
from rlhf_edu.validation import (
    as_float_array,
    check_broadcastable,
    check_positive,
    check_probabilities,
    check_values_in_range,
)

__all__ = [
    "kl_regularized_optimum",
    "log_partition",
    "log_partition_grad",
    "implied_reward",
    "implied_reward_grad",
    "kl_regularized_objective",
    "kl_regularized_objective_grad",
]


def _sum_to_shape(g, shape):
    """Sum a broadcast gradient back to the shape of the argument it belongs to."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)  # log 0 = -inf is wanted: a zero-probability answer stays impossible


def _checked(ref_probs, rewards, beta):
    beta = check_positive("beta", beta)
    ref_probs = as_float_array("ref_probs", ref_probs)
    rewards = as_float_array("rewards", rewards)
    check_probabilities("ref_probs", ref_probs)
    check_values_in_range("rewards", rewards, -np.inf, np.inf, low_open=True, high_open=True)
    check_broadcastable(ref_probs=ref_probs, rewards=rewards)
    if rewards.ndim == 0:
        raise ValueError("rewards must have one entry per answer (at least one axis), got a scalar")
    return ref_probs, rewards, beta


def _tilted_logits(ref_probs, rewards, beta):
    """log pi_ref(y) + r(y)/beta, the unnormalised log of pi*."""
    return _log(ref_probs) + rewards / beta


def _logsumexp(x):
    m = np.max(x, axis=-1, keepdims=True)  # finite: ref_probs has some positive entry per row
    return (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def kl_regularized_optimum(ref_probs, rewards, beta):
    r"""The maximiser :math:`\pi^*` of :math:`J(\pi) = \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{ref})`.

    .. math:: \pi^*(y) = \frac{\pi_{ref}(y)\, e^{r(y)/\beta}}{Z}, \qquad Z = \sum_{y'} \pi_{ref}(y')\, e^{r(y')/\beta}

    A softmax of :math:`\log\pi_{ref} + r/\beta`, computed in log space (max-shifted), so
    :math:`r/\beta = 10^7` does not overflow. Small ``beta`` concentrates :math:`\pi^*` on the best
    answers (:math:`\beta\to 0`: the argmax, ties split in proportion to :math:`\pi_{ref}`); large ``beta``
    keeps it at :math:`\pi_{ref}` (:math:`\beta\to\infty`). Answers with :math:`\pi_{ref}(y) = 0` keep
    probability 0. Source: the lecture notes (Lagrangian and "DPO objective" slides; Rafailov et al.,
    2023, eq. 4). Chapters 2 and 6.

    >>> kl_regularized_optimum([0.5, 0.5], [1.0, 0.0], beta=1.0).round(4)
    array([0.7311, 0.2689])
    >>> kl_regularized_optimum([0.5, 0.5], [1e4, 0.0], beta=1e-3)
    array([1., 0.])
    """
    ref_probs, rewards, beta = _checked(ref_probs, rewards, beta)
    logits = _tilted_logits(ref_probs, rewards, beta)
    return np.exp(logits - _logsumexp(logits)[..., None])


def log_partition(ref_probs, rewards, beta):
    r"""The log partition function :math:`\log Z = \log \sum_y \pi_{ref}(y)\, e^{r(y)/\beta}` (a logsumexp).

    :math:`\beta \log Z` is the optimal value of the KL-regularised objective and the per-prompt constant
    that DPO's implied reward leaves out. :math:`\mathbb{E}_{\pi_{ref}}[r]/\beta \le \log Z \le \max r/\beta`
    (Jensen; the max). Source: the lecture notes ("We can define the partition function"). Chapter 6.

    >>> round(float(log_partition([0.5, 0.5], [np.log(3.0), np.log(1.0)], beta=1.0)), 6)  # log 2
    0.693147
    """
    ref_probs, rewards, beta = _checked(ref_probs, rewards, beta)
    return _logsumexp(_tilted_logits(ref_probs, rewards, beta))


def log_partition_grad(ref_probs, rewards, beta):
    r"""Analytic gradient of ``sum(log_partition(...))``: it is :math:`\pi^*` again.

    .. math:: \frac{\partial \log Z}{\partial r(y)} = \frac{\pi^*(y)}{\beta}, \qquad
              \frac{\partial \log Z}{\partial \pi_{ref}(y)} = \frac{e^{r(y)/\beta}}{Z}

    (the second is :math:`\pi^*(y)/\pi_{ref}(y)`, written so it stays finite where
    :math:`\pi_{ref}(y) = 0`). Chapter 6.

    >>> {k: v.round(4) for k, v in log_partition_grad([0.5, 0.5], [1.0, 0.0], 1.0).items()}
    {'ref_probs': array([1.4621, 0.5379]), 'rewards': array([0.7311, 0.2689])}
    """
    ref_probs, rewards, beta = _checked(ref_probs, rewards, beta)
    logits = _tilted_logits(ref_probs, rewards, beta)
    log_z = _logsumexp(logits)[..., None]
    d_ref = np.exp(rewards / beta - log_z)
    d_rewards = np.exp(logits - log_z) / beta
    return {"ref_probs": _sum_to_shape(d_ref, ref_probs.shape), "rewards": _sum_to_shape(d_rewards, rewards.shape)}


def implied_reward(policy_probs, ref_probs, beta):
    r"""The reward a policy implies: :math:`\beta \log\frac{\pi(y)}{\pi_{ref}(y)}`.

    If :math:`\pi = \pi^*` for reward r, then :math:`r(y) = \beta\log\frac{\pi(y)}{\pi_{ref}(y)} + \beta\log Z`:
    this function returns r up to the per-prompt constant :math:`\beta \log Z`, which cancels in
    reward differences (hence in Bradley-Terry, hence DPO). :math:`-\infty` where :math:`\pi(y) = 0`,
    :math:`+\infty` where :math:`\pi_{ref}(y) = 0 < \pi(y)`, NaN (undefined) where both are 0.
    Source: the lecture notes ("Step 2: Solve for RM(x, y)"; Rafailov et al., 2023, eq. 5). Chapter 6.

    >>> implied_reward([0.7311, 0.2689], [0.5, 0.5], beta=1.0).round(3)
    array([ 0.38, -0.62])
    """
    beta = check_positive("beta", beta)
    policy_probs = as_float_array("policy_probs", policy_probs)
    ref_probs = as_float_array("ref_probs", ref_probs)
    check_probabilities("policy_probs", policy_probs)
    check_probabilities("ref_probs", ref_probs)
    check_broadcastable(policy_probs=policy_probs, ref_probs=ref_probs)
    with np.errstate(invalid="ignore"):
        return beta * (_log(policy_probs) - _log(ref_probs))


def implied_reward_grad(policy_probs, ref_probs, beta):
    r"""Analytic gradient of ``sum(implied_reward(...))``: :math:`\beta/\pi(y)` and :math:`-\beta/\pi_{ref}(y)`.

    .. math:: \frac{\partial}{\partial \pi(y)} \beta\log\frac{\pi(y)}{\pi_{ref}(y)} = \frac{\beta}{\pi(y)}, \qquad
              \frac{\partial}{\partial \pi_{ref}(y)} \beta\log\frac{\pi(y)}{\pi_{ref}(y)} = -\frac{\beta}{\pi_{ref}(y)}

    (every entry free). Why DPO's gradient is large on answers the policy finds unlikely. Chapter 6.

    >>> {k: v.round(4) for k, v in implied_reward_grad([0.25, 0.75], [0.5, 0.5], 2.0).items()}
    {'policy_probs': array([8.    , 2.6667]), 'ref_probs': array([-4., -4.])}
    """
    beta = check_positive("beta", beta)
    policy_probs = as_float_array("policy_probs", policy_probs)
    ref_probs = as_float_array("ref_probs", ref_probs)
    check_probabilities("policy_probs", policy_probs)
    check_probabilities("ref_probs", ref_probs)
    shape = check_broadcastable(policy_probs=policy_probs, ref_probs=ref_probs)
    with np.errstate(divide="ignore"):
        d_policy = np.broadcast_to(beta / policy_probs, shape)
        d_ref = np.broadcast_to(-beta / ref_probs, shape)
    return {
        "policy_probs": _sum_to_shape(d_policy, policy_probs.shape),
        "ref_probs": _sum_to_shape(d_ref, ref_probs.shape),
    }


def kl_regularized_objective(policy_probs, ref_probs, rewards, beta):
    r"""The RLHF objective for one prompt: :math:`J(\pi) = \sum_y \pi(y) r(y) - \beta\,\mathrm{KL}(\pi \| \pi_{ref})`.

    Its maximum over :math:`\pi` is :math:`\beta\log Z`, reached at ``kl_regularized_optimum``, and
    :math:`J(\pi) = \beta\log Z - \beta\,\mathrm{KL}(\pi\|\pi^*)` for every :math:`\pi` (the lecture notes'
    "DPO objective (cont'd)"). :math:`-\infty` if :math:`\pi` puts mass where :math:`\pi_{ref}` has none.
    Source: Ziegler et al. (2019), InstructGPT (2022), the lecture notes. Chapters 2 and 6.

    >>> float(kl_regularized_objective([0.5, 0.5], [0.5, 0.5], [1.0, 0.0], beta=1.0))
    0.5
    """
    beta = check_positive("beta", beta)
    policy_probs = as_float_array("policy_probs", policy_probs)
    ref_probs, rewards, beta = _checked(ref_probs, rewards, beta)
    check_probabilities("policy_probs", policy_probs)
    check_broadcastable(policy_probs=policy_probs, ref_probs=ref_probs, rewards=rewards)
    expected_reward = np.sum(policy_probs * rewards, axis=-1)
    return expected_reward - beta * kl_divergence(policy_probs, ref_probs)


def kl_regularized_objective_grad(policy_probs, ref_probs, rewards, beta):
    r"""Analytic gradient of ``sum(kl_regularized_objective(...))`` (every entry free, not projected).

    .. math:: \frac{\partial J}{\partial \pi(y)} = r(y) - \beta\left(\log\frac{\pi(y)}{\pi_{ref}(y)} + 1\right), \quad
              \frac{\partial J}{\partial \pi_{ref}(y)} = \beta\frac{\pi(y)}{\pi_{ref}(y)}, \quad
              \frac{\partial J}{\partial r(y)} = \pi(y)

    Setting the first to a constant (the Lagrange multiplier of :math:`\sum_y \pi(y) = 1`) gives
    :math:`\pi^*`: the lecture notes' "Solving the Lagrangian". Chapter 6.

    >>> g = kl_regularized_objective_grad([0.5, 0.5], [0.5, 0.5], [1.0, 0.0], 1.0)
    >>> g["policy_probs"], g["rewards"]
    (array([ 0., -1.]), array([0.5, 0.5]))
    """
    beta = check_positive("beta", beta)
    policy_probs = as_float_array("policy_probs", policy_probs)
    ref_probs, rewards, beta = _checked(ref_probs, rewards, beta)
    check_probabilities("policy_probs", policy_probs)
    shape = check_broadcastable(policy_probs=policy_probs, ref_probs=ref_probs, rewards=rewards)
    kl = kl_divergence_grad(np.broadcast_to(policy_probs, shape), np.broadcast_to(ref_probs, shape))
    d_policy = rewards - beta * kl["p"]
    d_ref = -beta * kl["q"]
    d_rewards = np.broadcast_to(policy_probs, shape)
    return {
        "policy_probs": _sum_to_shape(np.broadcast_to(d_policy, shape), policy_probs.shape),
        "ref_probs": _sum_to_shape(np.broadcast_to(d_ref, shape), ref_probs.shape),
        "rewards": _sum_to_shape(np.broadcast_to(d_rewards, shape), rewards.shape),
    }
