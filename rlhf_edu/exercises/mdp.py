"""Exercise checkers of chapter 3 (the grid-world MDP): a Bellman backup, one sweep of evaluation, a greedy policy.

The student's functions work on plain arrays (no ``TabularMDP``), so a failing input prints readably:

- ``bellman_backup(transitions, rewards, gamma, v) -> q``: :math:`Q(s,a) = r(s,a) + \\gamma \\sum_{s'} P(s'|s,a) V(s')`;
- ``evaluation_sweep(transitions, rewards, gamma, policy, v) -> v_new``: one synchronous sweep of
  iterative policy evaluation, :math:`V \\leftarrow r_\\pi + \\gamma P_\\pi V`;
- ``greedy(q) -> policy``: the one-hot greedy policy, ties to the lowest action index.

The solutions are the library's ``rlhf_edu.numpy.mdp`` functions (wrapped below to take arrays).
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.mdp import (
    TabularMDP,
    action_values,
    greedy_policy,
    policy_evaluation_sweeps,
    two_by_two_world,
)

__all__ = ["check_bellman_backup", "check_evaluation_sweep", "check_greedy_policy"]


def bellman_backup_reference(transitions, rewards, gamma, v):
    """The solution: ``rlhf_edu.numpy.mdp.action_values`` on the MDP ``(transitions, rewards, gamma)``."""
    return action_values(TabularMDP(transitions, rewards, gamma), v)


def evaluation_sweep_reference(transitions, rewards, gamma, policy, v):
    """The solution: row 1 of ``rlhf_edu.numpy.mdp.policy_evaluation_sweeps`` started from ``v``."""
    return policy_evaluation_sweeps(TabularMDP(transitions, rewards, gamma), policy, 1, v0=v)[1]


def greedy_reference(q):
    """The solution: ``rlhf_edu.numpy.mdp.greedy_policy(q, ties="first")``."""
    return greedy_policy(q, ties="first")


def _random_mdp(rng, n_states=None, n_actions=None):
    """Random transitions (rows on the simplex) and rewards; gamma < 1 so every MDP is valid."""
    S = int(rng.integers(2, 6)) if n_states is None else n_states
    A = int(rng.integers(2, 5)) if n_actions is None else n_actions
    P = rng.dirichlet(np.ones(S), size=(S, A))
    R = rng.normal(size=(S, A))
    gamma = float(rng.choice([0.0, 0.5, 0.9, 0.99]))
    return P, R, gamma


def _random_policy(rng, S, A):
    return rng.dirichlet(np.ones(A), size=S)


_WORLD, _ = two_by_two_world()
_P22, _R22 = _WORLD.transitions, _WORLD.rewards


def _backup_case(rng):
    P, R, gamma = _random_mdp(rng)
    return (P, R, gamma, rng.normal(size=P.shape[0]) * 3), {}


check_bellman_backup = make_checker(
    "bellman_backup",
    reference=bellman_backup_reference,
    edge_cases=[
        # the notes' 2x2 world with the optimal values: Q(s0) = (-3, -2, -3, -2)
        ((_P22, _R22, 1.0, np.array([-2.0, -1.0, -1.0, 0.0])), {}),
        # gamma = 0: Q is the immediate reward
        ((_P22, _R22, 0.0, np.array([5.0, 5.0, 5.0, 0.0])), {}),
    ],
    random_case=_backup_case,
    hint="Q[s, a] = rewards[s, a] + gamma * sum over s2 of transitions[s, a, s2] * v[s2]; "
    "in NumPy: rewards + gamma * transitions @ v (shape (S, A))",
)


def _sweep_case(rng):
    P, R, gamma = _random_mdp(rng)
    S, A = R.shape
    return (P, R, gamma, _random_policy(rng, S, A), rng.normal(size=S) * 3), {}


check_evaluation_sweep = make_checker(
    "evaluation_sweep",
    reference=evaluation_sweep_reference,
    edge_cases=[
        # the notes' 2x2 world, random policy, first two sweeps from 0: (-1, -1, -1, 0) then (-2, -1.75, -1.75, 0)
        ((_P22, _R22, 1.0, np.full((4, 4), 0.25), np.zeros(4)), {}),
        ((_P22, _R22, 1.0, np.full((4, 4), 0.25), np.array([-1.0, -1.0, -1.0, 0.0])), {}),
    ],
    random_case=_sweep_case,
    hint="average over actions with the policy: r_pi = sum_a policy[s, a] * rewards[s, a], "
    "P_pi[s, s2] = sum_a policy[s, a] * transitions[s, a, s2], then v_new = r_pi + gamma * P_pi @ v "
    "(every state from the OLD v, not max over actions)",
)


def _greedy_case(rng):
    S, A = int(rng.integers(1, 6)), int(rng.integers(2, 5))
    q = rng.normal(size=(S, A))
    if rng.random() < 0.5:  # a tie in row 0: the first of the tied actions wins
        q[0, -1] = q[0].max()
    return (q,), {}


check_greedy_policy = make_checker(
    "greedy_policy",
    reference=greedy_reference,
    edge_cases=[
        ((np.array([[-3.0, -2.0, -3.0, -2.0], [-2.0, -1.0, -2.0, 0.0]]),), {}),  # ties: take the first
        ((np.array([[1.0, 3.0, 3.0], [0.0, -1.0, -2.0]]),), {}),
    ],
    random_case=_greedy_case,
    hint="one row per state, probability 1 on np.argmax(q[s]) (the first of tied maxima) and 0 elsewhere, "
    "e.g. np.eye(q.shape[1])[q.argmax(axis=1)]",
)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _backup_without_discount(transitions, rewards, gamma, v):
    return rewards + transitions @ v  # forgot gamma


def _sweep_with_max(transitions, rewards, gamma, policy, v):
    return (rewards + gamma * transitions @ v).max(axis=1)  # value iteration, not evaluation of the policy


def _greedy_over_states(q):
    q = np.asarray(q, dtype=float)
    out = np.zeros_like(q)
    out[q.argmax(axis=0), np.arange(q.shape[1])] = 1.0  # argmax over the wrong axis
    return out


RIGHT_SOLUTIONS = {
    "check_bellman_backup": lambda P, R, gamma, v: np.asarray(R) + gamma * np.asarray(P) @ np.asarray(v),
    "check_evaluation_sweep": lambda P, R, gamma, pi, v: (
        np.sum(pi * R, axis=1) + gamma * np.einsum("sa,sat->st", pi, P) @ v
    ),
    "check_greedy_policy": lambda q: np.eye(np.shape(q)[1])[np.argmax(q, axis=1)],
}

WRONG_SOLUTIONS = {
    "check_bellman_backup": _backup_without_discount,
    "check_evaluation_sweep": _sweep_with_max,
    "check_greedy_policy": _greedy_over_states,
}
