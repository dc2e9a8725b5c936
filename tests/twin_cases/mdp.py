"""Twin-harness cases for rlhf_edu.{numpy,torch}.mdp.

The MDP argument is a NumPy ``TabularMDP`` (the harness passes objects through unchanged); the torch
twins convert it to the dtype and device of the policy / value tensor given with it, which the harness
does set, so every case that has such an array runs in float64 and float32. Builders return the MDP
(a dataclass, compared field by field) and the ``GridLayout``.
"""

import numpy as np

from rlhf_edu.numpy import mdp as M
from twin_harness import Case

_rng = np.random.default_rng(0)


def _random_mdp(S=6, A=3, gamma=0.8, terminal_state=True):
    """A dense random MDP; the last state is absorbing with zero reward (terminal) if asked."""
    P = _rng.dirichlet(np.ones(S), size=(S, A))
    R = _rng.normal(size=(S, A))
    if terminal_state:
        P[-1] = 0.0
        P[-1, :, -1] = 1.0
        R[-1] = 0.0
    return P, R, gamma


_P, _R, _G = _random_mdp()
RANDOM = M.TabularMDP(_P, _R, _G)
CLASSIC, _ = M.classic_grid_world()
TWO, _ = M.two_by_two_world()
SLIPPERY, _ = M.grid_world((3, 4), walls=[(1, 1)], terminals=[(0, 3), (1, 3)],
                           reward_cells={(0, 3): 1.0, (1, 3): -1.0}, step_reward=-0.04, slip=0.2, gamma=0.95)

_pi_random = _rng.dirichlet(np.ones(3), size=6)  # strictly positive: finite differences stay valid
_pi_classic = _rng.dirichlet(np.ones(4), size=25)
_pi_two = _rng.dirichlet(np.ones(4), size=4)
_pi_slippery = _rng.dirichlet(np.ones(4), size=SLIPPERY.n_states)
_uniform_classic = np.full((25, 4), 0.25)


def _first(out):
    return out[0]


CASES = {
    "TabularMDP": [
        Case((_P, _R, _G), id="random-inferred-terminal"),
        Case((_P, _R, 1.0), kwargs={"terminal": np.array([0, 0, 0, 0, 0, 1], dtype=bool),
                                    "state_names": tuple("abcdef"), "action_names": ("x", "y", "z")},
             id="gamma1-named"),
        Case((CLASSIC.transitions, CLASSIC.rewards, 0.9), id="classic-no-terminal"),
    ],
    "GridLayout": [
        Case(((2, 2), [[False, False], [False, True]], [[True, False], [False, False]], [[0, 1], [2, -1]],
              ((0, 0), (0, 1), (1, 0))), kwargs={"start": (1, 0), "teleports": {(0, 1): ((1, 0), 2.0)}},
             id="2x2-wall"),
    ],
    "grid_world": [
        Case(((3, 4),), kwargs={"walls": [(1, 1)], "terminals": [(0, 3), (1, 3)],
                                "reward_cells": {(0, 3): 1.0, (1, 3): -1.0}, "step_reward": -0.04,
                                "slip": 0.2, "gamma": 0.95, "start": (2, 0)}, id="slippery-3x4"),
        Case(((2, 3),), kwargs={"teleports": {(0, 0): ((1, 2), 3.0)}, "off_grid_reward": -2.0},
             id="teleport"),
    ],
    "classic_grid_world": [Case(id="gamma0.9"), Case((0.5,), id="gamma0.5")],
    "two_by_two_world": [Case(id="notes"), Case((-2.0, 0.9, 0.1), id="slip-discounted")],
    "action_values": [
        Case((RANDOM, _rng.normal(size=6)), grad=("v",), id="random"),
        Case((CLASSIC, _rng.normal(size=25)), grad=("v",), id="classic"),
    ],
    "policy_evaluation": [
        Case((RANDOM, _pi_random), grad=("policy",), id="exact-random"),
        Case((CLASSIC, _pi_classic), grad=("policy",), id="exact-classic"),
        Case((TWO, _pi_two), grad=("policy",), id="exact-gamma1"),
        Case((SLIPPERY, _pi_slippery), grad=("policy",), id="exact-slippery"),
        Case((RANDOM, _pi_random, "iterative"), id="iterative-sync"),
        Case((RANDOM, _pi_random), kwargs={"method": "iterative", "in_place": True}, id="iterative-in-place"),
        Case((CLASSIC, _uniform_classic, "iterative"), id="iterative-classic"),
        Case((TWO, _pi_two, "iterative"), kwargs={"in_place": True}, id="iterative-gamma1-in-place"),
    ],
    "policy_evaluation_sweeps": [
        Case((CLASSIC, _uniform_classic, 10), grad=("policy",), id="sync"),
        Case((RANDOM, _pi_random, 7), kwargs={"in_place": True, "v0": _rng.normal(size=6)}, grad=("policy",),
             id="in-place-v0"),
        Case((TWO, _pi_two, 0), id="zero-sweeps"),
    ],
    "greedy_policy": [
        Case((_rng.normal(size=(7, 4)),), id="no-ties"),
        Case((np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [-1.0, -5.0, -1.0]]),), id="ties-first"),
        Case((np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [-1.0, -5.0, -1.0]]), "uniform"), id="ties-uniform"),
        Case((np.array([[1.0, 1.5, 0.0]]), "uniform", 0.6), id="atol"),
    ],
    "value_iteration": [
        Case((CLASSIC,), kwargs={"v0": np.zeros(25)}, id="classic"),
        Case((CLASSIC,), kwargs={"v0": np.zeros(25), "ties": "uniform"}, id="classic-uniform-ties"),
        Case((RANDOM, 1e-12), kwargs={"v0": _rng.normal(size=6)}, id="random-v0"),
        Case((TWO,), kwargs={"v0": np.zeros(4)}, id="gamma1"),
        Case((SLIPPERY,), kwargs={"v0": np.zeros(SLIPPERY.n_states)}, id="slippery"),
    ],
    "value_iteration_sweeps": [
        Case((CLASSIC, 6), kwargs={"v0": np.zeros(25)}, id="classic"),  # max over exact ties: no gradient
        Case((RANDOM, 4), kwargs={"v0": _rng.normal(size=6)}, grad=("v0",), id="random-v0"),
    ],
    "policy_iteration": [
        Case((CLASSIC,), kwargs={"policy": _uniform_classic}, id="classic"),
        Case((RANDOM, _pi_random), id="random"),
        Case((TWO,), kwargs={"policy": np.full((4, 4), 0.25), "ties": "uniform"}, id="gamma1-uniform-ties"),
        Case((SLIPPERY, _pi_slippery), id="slippery"),
    ],
}
