"""Exercise checkers of chapter 3 (the grid-world MDP).

The chapter's exercises (section 11) use the last three; their answers are not printed anywhere in the chapter:

- ``check_q_iteration_sweep``: one sweep of *Q*-value iteration (the chapter prints value iteration on V only);
- ``check_random_walk_value``: predict-then-run, the value of the start of the 2x2 world under the random
  policy with gamma = 0.9 (the chapter computes it for gamma = 1 only);
- ``check_returns_with_episode_ends``: find the bug, discounted returns of a stream of episodes that leak
  across an episode's end.

The first three checkers (a Bellman backup, one sweep of evaluation, a greedy policy) are warm-ups whose
answers chapter 3 prints in its section 4; they are kept for the slides and the test suite.

The student's functions work on plain arrays (no ``TabularMDP``), so a failing input prints readably:

- ``bellman_backup(transitions, rewards, gamma, v) -> q``: :math:`Q(s,a) = r(s,a) + \\gamma \\sum_{s'} P(s'|s,a) V(s')`;
- ``evaluation_sweep(transitions, rewards, gamma, policy, v) -> v_new``: one synchronous sweep of
  iterative policy evaluation, :math:`V \\leftarrow r_\\pi + \\gamma P_\\pi V`;
- ``greedy(q) -> policy``: the one-hot greedy policy, ties to the lowest action index.

The solutions are the library's ``rlhf_edu.numpy.mdp`` functions (wrapped below to take arrays).
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import ExerciseResult, _not_done, make_checker
from rlhf_edu.numpy.advantages import discounted_returns
from rlhf_edu.numpy.mdp import (
    TabularMDP,
    action_values,
    greedy_policy,
    policy_evaluation,
    policy_evaluation_sweeps,
    two_by_two_world,
)

__all__ = [
    "check_bellman_backup",
    "check_evaluation_sweep",
    "check_greedy_policy",
    "check_q_iteration_sweep",
    "check_random_walk_value",
    "check_returns_with_episode_ends",
]


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


# ---- chapter 3's exercises: a variant, a prediction, a bug to find ----


def q_iteration_sweep_reference(transitions, rewards, gamma, q):
    """The solution: one synchronous sweep of Q-value iteration, Q(s,a) <- r(s,a) + gamma E_s' max_a' Q(s',a')."""
    P, R, q = (np.asarray(x, dtype=float) for x in (transitions, rewards, q))
    return R + gamma * P @ q.max(axis=1)


def _q_sweep_case(rng):
    P, R, gamma = _random_mdp(rng)
    return (P, R, gamma, rng.normal(size=R.shape) * 3), {}


check_q_iteration_sweep = make_checker(
    "q_iteration_sweep",
    reference=q_iteration_sweep_reference,
    edge_cases=[
        # the 2x2 world from Q = 0: one sweep gives the immediate rewards
        ((_P22, _R22, 1.0, np.zeros((4, 4))), {}),
        # the 2x2 world at Q*: a fixed point
        ((_P22, _R22, 1.0, np.array([[-3.0, -2.0, -3.0, -2.0], [-2.0, -1.0, -3.0, -2.0],
                                     [-3.0, -2.0, -2.0, -1.0], [0.0, 0.0, 0.0, 0.0]])), {}),
        # a next state with one very good and one very bad action: the optimality backup trusts the best one
        ((np.tile([0.0, 1.0], (2, 2, 1)), np.zeros((2, 2)), 0.5, np.array([[0.0, 0.0], [10.0, -10.0]])), {}),
    ],
    random_case=_q_sweep_case,
    hint="likely misconceptions: averaging over the next actions (that evaluates the uniform policy, not the "
    "optimal one); taking the best action over the wrong axis (over states instead of actions); forgetting "
    "that the next state is random (weight every s' by its probability); forgetting gamma",
)




def make_prediction_checker(name, question, truth, atol, diagnoses=()):
    """A predict-then-run checker: ``check(prediction)`` with a number, or a function of no argument returning one.

    ``truth()`` runs the computation (the "run"); the prediction passes within ``atol``. On a miss the message
    names the question, the prediction and the computed value, and, where the prediction is close to a known
    wrong answer in ``diagnoses`` (a list of ``(value, misconception)``), the likely misconception.
    """

    def check(prediction, seed=0, verbose=True) -> ExerciseResult:
        if callable(prediction):
            try:
                prediction = prediction()
            except NotImplementedError:
                return _not_done(name, verbose)
        try:
            got = float(prediction)
        except (TypeError, ValueError):
            raise TypeError(f"check_{name} expects a number (your prediction), got {type(prediction).__name__}")
        expected = float(truth())
        if abs(got - expected) <= atol:
            message = f"PASS {name}: your prediction {got:.4g} matches the run ({expected:.4f}) within {atol:g}"
            if verbose:
                print(message)
            return ExerciseResult(name, True, 1, message)
        lines = [f"FAIL {name}: {question}", f"  your prediction: {got:.4f}", f"  the run gives:   {expected:.4f}"]
        why = [text for value, text in diagnoses if abs(got - value) <= max(atol, 0.02)]
        lines.append("  likely misconception: " + (why[0] if why else "redo the Bellman equations by hand, "
                                                    "state by state, with the discount in every step"))
        message = "\n".join(lines)
        if verbose:
            print(message)
        return ExerciseResult(name, False, 0, message)

    check.__name__ = f"check_{name}"
    check.__doc__ = f"Predict-then-run: {question} Prints PASS or your prediction, the computed value and a hint."
    return check


def random_walk_value_09():
    """V(s0) of the 2x2 world under the equiprobable random policy with gamma = 0.9 (chapter 3's exact solve)."""
    world, _ = two_by_two_world(gamma=0.9)
    return policy_evaluation(world, np.full((4, 4), 0.25))[0]


check_random_walk_value = make_prediction_checker(
    "random_walk_value",
    "V(s0) of the 2x2 world, random policy, gamma = 0.9.",
    random_walk_value_09,
    atol=0.01,
    diagnoses=[
        (-8.0, "-8 is the value with gamma = 1; discounting makes the far-off costs weigh less"),
        (-10.0, "-1/(1 - gamma) is the value of a walk that never ends; this walk ends at s3"),
        (-2.0, "that is the optimal policy's value with gamma = 1, not the random walker's"),
        (-1.9, "that is the optimal policy's value (right then down) with gamma = 0.9, not the random walker's"),
        (-3.8509, "that is V(s1) = V(s2), one move closer to the end; the question asks for s0"),
    ],
)


def returns_with_episode_ends_reference(rewards, dones, gamma):
    """The solution: ``rlhf_edu.numpy.advantages.discounted_returns`` with ``dones`` (no bootstrap)."""
    return discounted_returns(np.asarray(rewards, dtype=float), gamma, dones=np.asarray(dones, dtype=float))


def _returns_case(rng):
    T = int(rng.integers(1, 9))
    rewards = np.round(rng.normal(size=T), 3)
    dones = (rng.random(T) < 0.3).astype(float)
    return (rewards, dones, float(rng.choice([0.5, 0.9, 1.0]))), {}


check_returns_with_episode_ends = make_checker(
    "returns_with_episode_ends",
    reference=returns_with_episode_ends_reference,
    edge_cases=[
        # two episodes of the 2x2 world: right, down (ends) | down, right (ends)
        ((np.array([-1.0, -1.0, -1.0, -1.0]), np.array([0.0, 1.0, 0.0, 1.0]), 0.9), {}),
        # an episode of one step, then one that is still running when the stream stops
        ((np.array([5.0, 1.0, 2.0]), np.array([1.0, 0.0, 0.0]), 1.0), {}),
        ((np.array([1.0, 2.0, 3.0]), np.zeros(3), 0.5), {}),  # one episode: the plain discounted sum
    ],
    random_case=_returns_case,
    hint="likely misconception: the return of a step sums the rewards of ITS episode only; at an episode's last "
    "step (done = 1) nothing of the next episode may be added. Also check that the step where done = 1 keeps "
    "its own reward, and that the discount still applies inside an episode",
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


def _q_sweep_mean(transitions, rewards, gamma, q):
    return np.asarray(rewards) + gamma * np.asarray(transitions) @ np.asarray(q).mean(axis=1)  # evaluates uniform


def _returns_leaking(rewards, dones, gamma):
    out, running = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running  # the bug: carries the next episode's return across the end
        out[t] = running
    return out


def _returns_fixed(rewards, dones, gamma):
    out, running = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * (1.0 - dones[t]) * running
        out[t] = running
    return out


RIGHT_SOLUTIONS = {
    "check_q_iteration_sweep": lambda P, R, gamma, q: np.asarray(R) + gamma * np.asarray(P) @ np.max(q, axis=1),
    "check_random_walk_value": -4.9689,
    "check_returns_with_episode_ends": _returns_fixed,
    "check_bellman_backup": lambda P, R, gamma, v: np.asarray(R) + gamma * np.asarray(P) @ np.asarray(v),
    "check_evaluation_sweep": lambda P, R, gamma, pi, v: (
        np.sum(pi * R, axis=1) + gamma * np.einsum("sa,sat->st", pi, P) @ v
    ),
    "check_greedy_policy": lambda q: np.eye(np.shape(q)[1])[np.argmax(q, axis=1)],
}

WRONG_SOLUTIONS = {
    "check_q_iteration_sweep": _q_sweep_mean,
    "check_random_walk_value": -8.0,  # the gamma = 1 answer
    "check_returns_with_episode_ends": _returns_leaking,
    "check_bellman_backup": _backup_without_discount,
    "check_evaluation_sweep": _sweep_with_max,
    "check_greedy_policy": _greedy_over_states,
}
