"""Exercise checkers of chapter 4 (policy gradients, PPO and GAE).

- ``reinforce_loss(logp, advantages, mask) -> loss``: :math:`-\\frac1N\\sum_t m_t A_t \\log\\pi_t` (a scalar);
- ``gae_advantages(rewards, values, gamma, lam, dones, last_value) -> advantages``: GAE over the last axis,
  with episode ends (``dones``) and the bootstrap value of a truncated row (``last_value``);
- ``clipped_objective(ratio, advantages, clip_eps) -> objective``: PPO's per-sample
  :math:`\\min(\\rho A, \\mathrm{clip}(\\rho, 1-\\epsilon, 1+\\epsilon) A)`;
- ``clipped_value_loss(values, returns, old_values, clip) -> loss``: PPO2's
  :math:`\\frac12 \\mathrm{mean}\\max((V-R)^2, (V_{old} + \\mathrm{clip}(V-V_{old}, -c, c) - R)^2)`.

The solutions are the library's ``rlhf_edu.numpy`` functions.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.advantages import gae
from rlhf_edu.numpy.policy_gradient import ppo_clip_objective, reinforce_loss, value_loss

__all__ = ["check_reinforce_loss", "check_gae", "check_clipped_objective", "check_value_loss_clipping"]


def gae_reference(rewards, values, gamma, lam, dones, last_value):
    """The solution: the advantages of ``rlhf_edu.numpy.advantages.gae`` (its first output)."""
    return gae(rewards, values, gamma, lam, dones=dones, last_value=last_value)[0]


def clipped_objective_reference(ratio, advantages, clip_eps):
    """The solution: ``rlhf_edu.numpy.policy_gradient.ppo_clip_objective``."""
    return ppo_clip_objective(ratio, advantages, clip_eps)


def clipped_value_loss_reference(values, returns, old_values, clip):
    """The solution: ``rlhf_edu.numpy.policy_gradient.value_loss`` with ``old_values`` and ``clip``."""
    return value_loss(values, returns, old_values=old_values, clip=clip)


# ---- REINFORCE ----


def _reinforce_case(rng):
    B, T = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    logp = np.log(rng.uniform(0.05, 1.0, size=(B, T)))
    adv = rng.normal(size=(B, T))
    mask = (rng.random((B, T)) < 0.8).astype(float)
    mask[:, 0] = 1.0  # at least one real token per row
    return (logp, adv, mask), {}


check_reinforce_loss = make_checker(
    "reinforce_loss",
    reference=reinforce_loss,
    edge_cases=[
        ((np.log([[0.5, 0.25]]), np.array([[1.0, -1.0]]), np.ones((1, 2))), {}),  # -0.3466
        ((np.log([[0.5, 0.25, 0.9]]), np.array([[2.0, 1.0, 5.0]]), np.array([[1.0, 1.0, 0.0]])), {}),  # padding
    ],
    random_case=_reinforce_case,
    hint="loss = -sum(mask * advantages * logp) / sum(mask): a MEAN over the real tokens, with a minus sign "
    "(we minimise); padding (mask 0) must not count",
)


# ---- GAE ----


def _gae_case(rng):
    B, T = int(rng.integers(1, 4)), int(rng.integers(1, 8))
    rewards = rng.normal(size=(B, T))
    values = rng.normal(size=(B, T))
    dones = (rng.random((B, T)) < 0.25).astype(float)
    gamma = float(rng.choice([0.9, 0.99, 1.0]))
    lam = float(rng.choice([0.0, 0.5, 0.95, 1.0]))
    return (rewards, values, gamma, lam, dones, rng.normal(size=B)), {}


check_gae = make_checker(
    "gae",
    reference=gae_reference,
    edge_cases=[
        # lam = 0: the TD residuals; lam = 1: G_t - V_t (the docstring examples of rn.gae)
        ((np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), 1.0, 0.0, np.zeros(3), 0.0), {}),
        ((np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), 1.0, 1.0, np.zeros(3), 0.0), {}),
        # the episode ends after step 1: nothing from step 2 leaks back; the row is cut after step 3 (bootstrap 2.0)
        ((np.array([1.0, 1.0, 1.0]), np.array([0.5, 0.5, 0.5]), 0.9, 0.95, np.array([0.0, 1.0, 0.0]), 2.0), {}),
    ],
    random_case=_gae_case,
    hint="go backwards: delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t with V_T = last_value, then "
    "A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}, A_T = 0",
)


# ---- PPO's clipped objective ----


def _clip_case(rng):
    shape = (int(rng.integers(1, 8)),)
    ratio = np.exp(rng.normal(scale=0.6, size=shape))
    adv = rng.normal(size=shape)
    return (ratio, adv, float(rng.choice([0.1, 0.2, 0.3]))), {}


check_clipped_objective = make_checker(
    "clipped_objective",
    reference=clipped_objective_reference,
    edge_cases=[
        ((np.array([3.0, 3.0]), np.array([1.0, -1.0]), 0.2), {}),  # the notes' "unlimited": 1.2 A, but 3 A if A < 0
        ((np.array([0.5, 0.5, 1.0]), np.array([1.0, -1.0, 2.0]), 0.2), {}),
    ],
    random_case=_clip_case,
    hint="np.minimum(ratio * A, np.clip(ratio, 1 - eps, 1 + eps) * A): the MIN of both terms, so a ratio that "
    "moved the wrong way is never clipped (ratio 3 with A = -1 gives -3, not -1.2)",
)


# ---- PPO2's clipped value loss ----


def _value_case(rng):
    n = int(rng.integers(1, 8))
    old = rng.normal(size=n)
    values = old + rng.normal(scale=0.5, size=n)
    returns = rng.normal(size=n)
    return (values, returns, old, float(rng.choice([0.1, 0.2, 0.5]))), {}


check_value_loss_clipping = make_checker(
    "value_loss_clipping",
    reference=clipped_value_loss_reference,
    edge_cases=[
        ((np.array([1.0, 2.0]), np.array([3.0, 3.0]), np.zeros(2), 0.5), {}),  # 3.125 (the docstring example)
        ((np.array([0.5]), np.array([1.0]), np.array([0.0]), 0.2), {}),          # clipped term wins: 0.32
    ],
    random_case=_value_case,
    hint="clipped = old_values + np.clip(values - old_values, -clip, clip); loss = 0.5 * mean(max((values - "
    "returns)**2, (clipped - returns)**2)): the MAX (pessimistic), and the 1/2",
)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _gae_by_hand(rewards, values, gamma, lam, dones, last_value):
    rewards, values, dones = (np.asarray(x, dtype=float) for x in (rewards, values, dones))
    adv = np.zeros_like(rewards)
    next_value = np.broadcast_to(np.asarray(last_value, dtype=float), rewards.shape[:-1])
    running = np.zeros(rewards.shape[:-1])
    for t in reversed(range(rewards.shape[-1])):
        not_done = 1.0 - dones[..., t]
        delta = rewards[..., t] + gamma * next_value * not_done - values[..., t]
        running = delta + gamma * lam * not_done * running
        adv[..., t] = running
        next_value = values[..., t]
    return adv


def _gae_ignoring_dones(rewards, values, gamma, lam, dones, last_value):
    return _gae_by_hand(rewards, values, gamma, lam, np.zeros_like(np.asarray(dones, dtype=float)), last_value)


RIGHT_SOLUTIONS = {
    "check_reinforce_loss": lambda logp, adv, mask: -np.sum(mask * adv * logp) / np.sum(mask),
    "check_gae": _gae_by_hand,
    "check_clipped_objective": lambda r, a, eps: np.minimum(r * a, np.clip(r, 1 - eps, 1 + eps) * a),
    "check_value_loss_clipping": lambda v, ret, old, c: 0.5 * np.mean(
        np.maximum((v - ret) ** 2, (old + np.clip(v - old, -c, c) - ret) ** 2)),
}

WRONG_SOLUTIONS = {
    # sums instead of averaging over the real tokens
    "check_reinforce_loss": lambda logp, adv, mask: -np.sum(mask * adv * logp),
    # bootstraps across episode ends
    "check_gae": _gae_ignoring_dones,
    # forgets the min: clips the ratio whatever the sign of A
    "check_clipped_objective": lambda r, a, eps: np.clip(r, 1 - eps, 1 + eps) * a,
    # takes the optimistic min instead of the max
    "check_value_loss_clipping": lambda v, ret, old, c: 0.5 * np.mean(
        np.minimum((v - ret) ** 2, (old + np.clip(v - old, -c, c) - ret) ** 2)),
}
