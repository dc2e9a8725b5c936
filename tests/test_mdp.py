"""Tests of rlhf_edu.{numpy,torch}.mdp and rlhf_edu.plotting.grid_world (chapters 3 and 4).

Published numbers: Sutton & Barto (2018), figure 3.2 (random policy) and figure 3.5 (optimal values) of
the 5x5 grid world of example 3.5, and figure 4.1 (the 4x4 grid world of example 4.1); the lecture notes'
2x2 world against a hand computation. Identities: V = sum_a pi Q, the Bellman equations, value iteration
== policy iteration == exact evaluation of the greedy policy, iterative == exact evaluation.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rlhf_edu import numpy as rn  # noqa: E402
from rlhf_edu import torch as rt  # noqa: E402
from rlhf_edu.numpy import mdp as nm  # noqa: E402
from rlhf_edu.plotting import plot_evaluation_sweeps, plot_grid_values  # noqa: E402
from rlhf_edu.torch import mdp as tm  # noqa: E402

# Sutton & Barto (2018), figure 3.2: the equiprobable random policy, gamma = 0.9.
FIG_3_2 = np.array([
    [3.3, 8.8, 4.4, 5.3, 1.5],
    [1.5, 3.0, 2.3, 1.9, 0.5],
    [0.1, 0.7, 0.7, 0.4, -0.4],
    [-1.0, -0.4, -0.4, -0.6, -1.2],
    [-1.9, -1.3, -1.2, -1.4, -2.0],
])
# Figure 3.5: the optimal values v*.
FIG_3_5 = np.array([
    [22.0, 24.4, 22.0, 19.4, 17.5],
    [19.8, 22.0, 19.8, 17.8, 16.0],
    [17.8, 19.8, 17.8, 16.0, 14.4],
    [16.0, 17.8, 16.0, 14.4, 13.0],
    [14.4, 16.0, 14.4, 13.0, 11.7],
])
# Figure 4.1 (k = infinity): the 4x4 grid with terminal corners, -1 per step, gamma = 1, random policy.
FIG_4_1 = np.array([
    [0, -14, -20, -22],
    [-14, -18, -20, -20],
    [-20, -20, -18, -14],
    [-22, -20, -14, 0],
], dtype=float)

UP, DOWN, LEFT, RIGHT = range(4)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tabular tensors are tiny: one thread avoids OpenMP spin-waits on a busy 2-core machine (10x faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
TREES = [pytest.param(nm, id="numpy"), pytest.param(tm, id="torch")]


def _np(x):
    return x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=float)


def _uniform(mdp):
    S, A = mdp.n_states, mdp.n_actions
    return np.full((S, A), 1.0 / A)


def _policy_like(lib, p):
    return torch.as_tensor(p, dtype=torch.float64) if lib is tm else p


def _random_mdp(seed, S=5, A=3, gamma=0.9, terminal=True):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    P[rng.random((S, A, S)) < 0.3] = 0.0  # sparse rows, some transitions impossible
    P[:, :, rng.integers(S)] += 1e-3
    P /= P.sum(axis=-1, keepdims=True)
    R = rng.normal(size=(S, A))
    if terminal:
        P[-1] = 0.0
        P[-1, :, -1] = 1.0
        R[-1] = 0.0
    return nm.TabularMDP(P, R, gamma)


def _four_by_four(lib=nm):
    return lib.grid_world((4, 4), terminals=[(0, 0), (3, 3)], step_reward=-1.0, gamma=1.0)


# --------------------------------------------------------------------------------------------------
# Published values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", TREES)
@pytest.mark.parametrize("method", ["exact", "iterative"])
def test_classic_grid_random_policy_matches_figure_3_2(lib, method):
    mdp, layout = lib.classic_grid_world()
    v = _np(lib.policy_evaluation(mdp, _policy_like(lib, _uniform(mdp)), method=method))
    grid = layout.to_grid(v)
    # the book prints one decimal: every value lies within half a unit of the last digit
    assert np.all(np.abs(grid - FIG_3_2) <= 0.05 + 1e-9), np.round(grid, 2)
    assert round(grid[0, 1], 1) == 8.8 and round(grid[4, 1], 1) == -1.3  # V(A), V(A')
    assert round(grid[0, 3], 1) == 5.3 and round(grid[2, 3], 1) == 0.4  # V(B), V(B')
    # V(A) < 10: from A' the agent is likely to fall off the bottom edge
    assert grid[0, 1] < 10.0


@pytest.mark.parametrize("lib", TREES)
def test_classic_grid_optimal_values_match_figure_3_5(lib):
    mdp, layout = lib.classic_grid_world()
    v_vi, pi_vi = lib.value_iteration(mdp, ties="uniform")
    v_pi, pi_pi = lib.policy_iteration(mdp, ties="uniform")
    for v in (v_vi, v_pi):
        grid = layout.to_grid(_np(v))
        assert np.all(np.abs(grid - FIG_3_5) <= 0.05 + 1e-9), np.round(grid, 2)
    assert round(float(layout.to_grid(_np(v_vi))[0, 1]), 1) == 24.4
    # figure 3.5's optimal policy: from A every action is optimal; at (0, 0) "right" (towards A) only;
    # at (1, 0) "up" and "right" tie; at (4, 4) "up" and "left" tie
    pi = _np(pi_vi)
    idx = layout.state_index
    np.testing.assert_allclose(pi[idx[0, 1]], [0.25] * 4)
    np.testing.assert_allclose(pi[idx[0, 0]], [0, 0, 0, 1])
    np.testing.assert_allclose(pi[idx[1, 0]], [0.5, 0, 0, 0.5])
    np.testing.assert_allclose(pi[idx[4, 4]], [0.5, 0, 0.5, 0])
    np.testing.assert_allclose(pi, _np(pi_pi))


@pytest.mark.parametrize("lib", TREES)
def test_four_by_four_matches_figure_4_1(lib):
    mdp, layout = _four_by_four(lib)
    pi = _policy_like(lib, _uniform(mdp))
    for method in ("exact", "iterative"):
        v = _np(lib.policy_evaluation(mdp, pi, method=method))
        np.testing.assert_allclose(layout.to_grid(v), FIG_4_1, atol=1e-8)
    # figure 4.1, k = 1, 2, 3 (rounded to one decimal in the book)
    hist = _np(lib.policy_evaluation_sweeps(mdp, pi, 3))
    np.testing.assert_allclose(layout.to_grid(hist[1])[0], [0, -1, -1, -1])
    np.testing.assert_allclose(layout.to_grid(hist[2])[0], [0, -1.75, -2, -2])
    np.testing.assert_allclose(layout.to_grid(hist[3])[0], [0, -2.4375, -2.9375, -3.0])


# --------------------------------------------------------------------------------------------------
# The 2x2 world of the lecture notes, by hand
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", TREES)
def test_two_by_two_world_structure_and_hand_values(lib):
    mdp, layout = lib.two_by_two_world()
    assert mdp.state_names == ("s0", "s1", "s2", "s3")
    assert mdp.action_names == ("up", "down", "left", "right")
    assert layout.start == (0, 0) and layout.terminals[1, 1] and layout.terminals.sum() == 1
    np.testing.assert_array_equal(_np(mdp.terminal), [0, 0, 0, 1])
    P = _np(mdp.transitions)
    # from s0: up and left bump into the edge (stay), down -> s2, right -> s1
    np.testing.assert_array_equal(P[0].argmax(axis=1), [0, 2, 0, 1])
    # from s1: down reaches the terminal s3; from s2: right reaches it
    assert P[1, DOWN, 3] == 1.0 and P[2, RIGHT, 3] == 1.0
    np.testing.assert_array_equal(_np(mdp.rewards)[:3], -1.0)
    np.testing.assert_array_equal(_np(mdp.rewards)[3], 0.0)
    # the random policy: x = -1 + (2x + y)/4, y = -1 + (2y + 2x)/4  =>  x = -6, y = -8
    pi = _policy_like(lib, _uniform(mdp))
    np.testing.assert_allclose(_np(lib.policy_evaluation(mdp, pi)), [-8, -6, -6, 0], atol=1e-12)
    np.testing.assert_allclose(_np(lib.policy_evaluation(mdp, pi, "iterative")), [-8, -6, -6, 0], atol=1e-8)
    # optimal: minus the number of steps to the end
    v, greedy = lib.value_iteration(mdp)
    np.testing.assert_allclose(_np(v), [-2, -1, -1, 0], atol=1e-12)
    np.testing.assert_array_equal(_np(greedy)[:3].argmax(axis=1), [DOWN, DOWN, RIGHT])
    # Q of s0 under the random policy: bumping costs 1 and stays (-1 + -8), moving costs 1 (-1 + -6)
    q = _np(lib.action_values(mdp, _policy_like(lib, np.array([-8.0, -6.0, -6.0, 0.0]))))
    np.testing.assert_allclose(q[0], [-9, -7, -9, -7])


def test_two_by_two_world_with_discount_and_slip_by_hand():
    # gamma = 0.5, deterministic: V*(s1) = -1, V*(s0) = -1 + 0.5 * -1 = -1.5
    mdp, _ = nm.two_by_two_world(gamma=0.5)
    v, _ = nm.value_iteration(mdp)
    np.testing.assert_allclose(v, [-1.5, -1, -1, 0], atol=1e-9)
    # slip 0.3: from s1 "down" reaches s3 w.p. 0.7 and goes left to s0 w.p. 0.1; up/right bump (stay)
    mdp, _ = nm.two_by_two_world(slip=0.3)
    np.testing.assert_allclose(mdp.transitions[1, DOWN], [0.1, 0.2, 0.0, 0.7])


# --------------------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------------------


def _worlds():
    slippery, _ = nm.grid_world((3, 4), walls=[(1, 1)], terminals=[(0, 3), (1, 3)],
                                reward_cells={(0, 3): 1.0, (1, 3): -1.0}, step_reward=-0.04, slip=0.2, gamma=0.95)
    return [nm.classic_grid_world()[0], _four_by_four()[0], nm.two_by_two_world()[0], slippery,
            _random_mdp(1), _random_mdp(2, S=7, A=2, gamma=0.99, terminal=False)]


@pytest.mark.parametrize("lib", TREES)
@pytest.mark.parametrize("k", range(6))
def test_value_iteration_equals_policy_iteration_equals_exact_evaluation_of_greedy(lib, k):
    mdp = _worlds()[k]
    v_vi, pi_vi = lib.value_iteration(mdp, tol=1e-12)
    v_pi, pi_pi = lib.policy_iteration(mdp)
    v_greedy = lib.policy_evaluation(mdp, pi_vi)
    scale = max(1.0, float(np.abs(_np(v_pi)).max()))
    np.testing.assert_allclose(_np(v_vi), _np(v_pi), atol=1e-9 * scale)
    np.testing.assert_allclose(_np(v_greedy), _np(v_pi), atol=1e-9 * scale)
    np.testing.assert_allclose(_np(lib.policy_evaluation(mdp, pi_pi)), _np(v_pi), atol=1e-9 * scale)
    # Bellman optimality residual: max_a Q*(s, a) = V*(s)
    q = _np(lib.action_values(mdp, v_pi))
    assert np.max(np.abs(q.max(axis=1) - _np(v_pi))) < 1e-9 * scale
    # the optimal policy is at least as good as any other, in every state (random policies)
    rng = np.random.default_rng(k)
    for _ in range(3):
        other = rng.dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)
        assert np.all(nm.policy_evaluation(mdp, other) <= _np(v_pi) + 1e-9 * scale)


@given(seed=st.integers(0, 2**32 - 1), S=st.integers(1, 6), A=st.integers(1, 4),
       gamma=st.floats(0.0, 0.95), terminal=st.booleans())
@settings(max_examples=50, deadline=None)
def test_v_equals_policy_average_of_q_and_iterative_equals_exact(seed, S, A, gamma, terminal):
    mdp = _random_mdp(seed, S, A, gamma, terminal=terminal)
    rng = np.random.default_rng(seed + 1)
    policy = rng.dirichlet(np.ones(A), size=S)
    policy[rng.random((S, A)) < 0.3] = 0.0
    policy[:, 0] += 1e-3
    policy /= policy.sum(axis=1, keepdims=True)
    v = nm.policy_evaluation(mdp, policy)
    q = nm.action_values(mdp, v)
    np.testing.assert_allclose(np.sum(policy * q, axis=1), v, atol=1e-9)  # V = sum_a pi Q
    bound = 1e-10 * gamma / (1 - gamma) + 1e-12
    for in_place in (False, True):
        v_it = nm.policy_evaluation(mdp, policy, "iterative", in_place=in_place)
        assert np.max(np.abs(v_it - v)) <= bound * 1.01 + 1e-12
    np.testing.assert_array_equal(v[mdp.terminal], 0.0)
    # torch agrees on the same MDP (float64)
    vt = tm.policy_evaluation(mdp, torch.tensor(policy))
    np.testing.assert_allclose(vt.numpy(), v, atol=1e-10)


@given(seed=st.integers(0, 2**32 - 1), S=st.integers(1, 5), A=st.integers(1, 3), gamma=st.floats(0.0, 0.9))
@settings(max_examples=30, deadline=None)
def test_policy_iteration_from_any_start_reaches_the_value_iteration_optimum(seed, S, A, gamma):
    mdp = _random_mdp(seed, S, A, gamma)
    start = np.eye(A)[np.random.default_rng(seed).integers(A, size=S)]  # a deterministic starting policy
    v_pi, pi = nm.policy_iteration(mdp, start)
    v_vi, _ = nm.value_iteration(mdp, tol=1e-12)
    np.testing.assert_allclose(v_pi, v_vi, atol=1e-9)
    assert np.all(pi.sum(axis=1) == 1) and set(np.unique(pi)) <= {0.0, 1.0}


def test_gauss_seidel_converges_in_fewer_sweeps_than_synchronous():
    mdp, _ = nm.classic_grid_world()
    pi = _uniform(mdp)
    tol = 1e-6

    def sweeps_needed(in_place):
        """The first sweep after which no value moved by more than tol (policy_evaluation's stopping rule)."""
        hist = nm.policy_evaluation_sweeps(mdp, pi, 300, in_place=in_place)
        return int(np.argmax(np.max(np.abs(np.diff(hist, axis=0)), axis=1) <= tol)) + 1

    sync, gs = sweeps_needed(False), sweeps_needed(True)
    assert 1 < gs < sync
    v = nm.policy_evaluation(mdp, pi)
    np.testing.assert_allclose(nm.policy_evaluation(mdp, pi, "iterative", tol, in_place=True, max_sweeps=gs), v,
                               atol=tol * 0.9 / 0.1)
    with pytest.raises(RuntimeError, match="max_sweeps"):
        nm.policy_evaluation(mdp, pi, "iterative", tol, in_place=False, max_sweeps=gs)
    np.testing.assert_allclose(nm.policy_evaluation(mdp, pi, "iterative", tol, max_sweeps=sync), v, atol=tol * 9)
    # the in-place sweep really uses the new values: after one sweep from 0 they differ from Jacobi's
    one_sync = nm.policy_evaluation_sweeps(mdp, pi, 1)[1]
    one_gs = nm.policy_evaluation_sweeps(mdp, pi, 1, in_place=True)[1]
    assert one_gs[0] == one_sync[0] and not np.allclose(one_gs, one_sync)


@pytest.mark.parametrize("lib", TREES)
def test_sweeps_histories_start_at_v0_and_converge(lib):
    mdp, _ = lib.classic_grid_world()
    pi = _policy_like(lib, _uniform(mdp))
    hist = _np(lib.policy_evaluation_sweeps(mdp, pi, 400))
    assert hist.shape == (401, 25)
    np.testing.assert_array_equal(hist[0], 0.0)
    np.testing.assert_allclose(hist[-1], _np(lib.policy_evaluation(mdp, pi)), atol=1e-12)
    # each sweep is one application of the backup V <- sum_a pi (r + gamma P V)
    q = _np(lib.action_values(mdp, torch.tensor(hist[5]) if lib is tm else hist[5]))
    np.testing.assert_allclose(hist[6], q.mean(axis=1), atol=1e-12)
    v_star, _ = lib.value_iteration(mdp)
    vi = _np(lib.value_iteration_sweeps(mdp, 400))
    np.testing.assert_allclose(vi[-1], _np(v_star), atol=1e-12)
    # value iteration from 0 increases monotonically here (all optimal values are positive)
    assert np.all(np.diff(vi, axis=0) >= -1e-12)
    # v0 is the first row (terminal states forced to 0)
    mdp4, _ = _four_by_four(lib)
    v0 = np.arange(16.0)
    start = _np(lib.value_iteration_sweeps(mdp4, 0, v0=torch.tensor(v0) if lib is tm else v0))[0]
    np.testing.assert_array_equal(start, np.where(_np(mdp4.terminal), 0.0, v0))


@pytest.mark.parametrize("lib", TREES)
def test_terminal_states_have_zero_value(lib):
    mdp, layout = _four_by_four(lib)
    rng = np.random.default_rng(0)
    term = _np(mdp.terminal).astype(bool)
    assert term.sum() == 2 and layout.terminals.sum() == 2
    pi = _policy_like(lib, rng.dirichlet(np.ones(4), size=16))
    for v in (lib.policy_evaluation(mdp, pi), lib.policy_evaluation(mdp, pi, "iterative", in_place=True),
              lib.value_iteration(mdp)[0], lib.policy_iteration(mdp)[0],
              lib.policy_evaluation_sweeps(mdp, pi, 5)[-1]):
        np.testing.assert_array_equal(_np(v)[term], 0.0)
    # terminal states absorb with zero reward
    P, R = _np(mdp.transitions), _np(mdp.rewards)
    for s in np.flatnonzero(term):
        np.testing.assert_array_equal(P[s, :, s], 1.0)
        np.testing.assert_array_equal(R[s], 0.0)


# --------------------------------------------------------------------------------------------------
# Grid worlds
# --------------------------------------------------------------------------------------------------


@given(rows=st.integers(1, 4), cols=st.integers(1, 4), slip=st.floats(0.0, 1.0),
       wall_seed=st.integers(0, 1000), step_reward=st.floats(-2, 2), off=st.floats(-2, 2))
@settings(max_examples=50, deadline=None)
def test_grid_world_rows_sum_to_one_and_rewards_are_expectations(rows, cols, slip, wall_seed, step_reward, off):
    rng = np.random.default_rng(wall_seed)
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    walls = [cells[i] for i in rng.permutation(len(cells))[: len(cells) // 3]]
    free = [c for c in cells if c not in walls]
    terminals = free[:1] if len(free) > 1 else []
    mdp, layout = nm.grid_world((rows, cols), walls=walls, terminals=terminals, slip=slip,
                                step_reward=step_reward, off_grid_reward=off)
    assert mdp.n_states == len(free) == layout.n_states
    np.testing.assert_allclose(mdp.transitions.sum(axis=-1), 1.0, atol=1e-12)
    assert np.all(mdp.transitions >= 0)
    # walls are not states; every free cell maps back to its state
    assert np.all(layout.state_index[layout.walls] == -1)
    for s, (r, c) in enumerate(layout.cells):
        assert layout.state_index[r, c] == s
    # each non-terminal reward is an average of step_reward and off_grid_reward weighted by the landing odds
    live = ~mdp.terminal
    lo, hi = min(step_reward, off), max(step_reward, off)
    assert np.all(mdp.rewards[live] >= lo - 1e-12) and np.all(mdp.rewards[live] <= hi + 1e-12)
    # the intended move happens with probability 1 - slip (when it does not bump)
    if 0 < slip < 1 and (0, 1) in free and (0, 0) in free and (0, 0) not in terminals:
        s, s2 = layout.state_index[0, 0], layout.state_index[0, 1]
        assert mdp.transitions[s, RIGHT, s2] == pytest.approx(1 - slip)
        assert mdp.transitions[s, UP, s2] == pytest.approx(slip / 3)


def test_grid_world_walls_teleports_and_reward_cells():
    mdp, layout = nm.grid_world((2, 3), walls=[(0, 1)], teleports={(1, 0): ((0, 2), 7.0)},
                                reward_cells={(1, 2): 2.0}, step_reward=-0.5, off_grid_reward=-3.0)
    idx = layout.state_index
    assert idx[0, 1] == -1 and mdp.n_states == 5
    # (0, 0) -> right runs into the wall: stays, off_grid_reward
    assert mdp.transitions[idx[0, 0], RIGHT, idx[0, 0]] == 1.0 and mdp.rewards[idx[0, 0], RIGHT] == -3.0
    # teleport: every action goes to (0, 2) with +7
    np.testing.assert_array_equal(mdp.transitions[idx[1, 0], :, idx[0, 2]], 1.0)
    np.testing.assert_array_equal(mdp.rewards[idx[1, 0]], 7.0)
    # entering the reward cell: step_reward + 2
    assert mdp.rewards[idx[1, 1], RIGHT] == pytest.approx(1.5)
    assert not mdp.terminal.any() and layout.teleports == {(1, 0): ((0, 2), 7.0)}


def test_classic_grid_world_layout():
    mdp, layout = nm.classic_grid_world()
    assert layout.shape == (5, 5) and mdp.n_states == 25 and mdp.n_actions == 4 and mdp.gamma == 0.9
    a, a2, b, b2 = (layout.state_index[c] for c in [(0, 1), (4, 1), (0, 3), (2, 3)])
    np.testing.assert_array_equal(mdp.transitions[a, :, a2], 1.0)
    np.testing.assert_array_equal(mdp.rewards[a], 10.0)
    np.testing.assert_array_equal(mdp.transitions[b, :, b2], 1.0)
    np.testing.assert_array_equal(mdp.rewards[b], 5.0)
    corner = layout.state_index[0, 0]
    np.testing.assert_array_equal(mdp.rewards[corner], [-1, 0, -1, 0])  # up, down, left, right
    assert layout.action_arrows == ("\u2191", "\u2193", "\u2190", "\u2192")


def test_mdp_dataclass_infers_terminals_and_converts_between_trees():
    P = np.zeros((3, 2, 3))
    P[0, :, 1] = 1.0
    P[1, 0, 2] = 1.0
    P[1, 1, 1] = 1.0  # stays, but with a reward: not terminal
    P[2, :, 2] = 1.0
    R = np.array([[1.0, 1.0], [0.0, -0.5], [0.0, 0.0]])
    mdp = nm.TabularMDP(P, R, 1.0)
    np.testing.assert_array_equal(mdp.terminal, [False, False, True])
    torch_mdp = tm.TabularMDP(torch.tensor(P, dtype=torch.float32), torch.tensor(R), 1.0)
    assert torch_mdp.rewards.dtype == torch.float32 and torch_mdp.terminal.dtype == torch.bool
    back = torch_mdp.numpy()
    assert isinstance(back, nm.TabularMDP)
    np.testing.assert_array_equal(back.terminal, mdp.terminal)
    # a NumPy MDP goes into torch functions: dtype and device follow the policy
    pi = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]], dtype=torch.float32)
    v = tm.policy_evaluation(mdp, pi)
    assert v.dtype == torch.float32
    np.testing.assert_allclose(v.numpy(), nm.policy_evaluation(mdp, pi.double().numpy()), atol=1e-6)
    assert tm.value_iteration(mdp)[0].dtype == torch.float64  # no tensor given: float64
    f32, _ = tm.two_by_two_world(dtype=torch.float32)
    assert tm.value_iteration(f32)[0].dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# greedy_policy
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", TREES)
def test_greedy_policy_ties(lib):
    q = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, -1.0, 5.0]])
    qq = torch.tensor(q) if lib is tm else q
    np.testing.assert_array_equal(_np(lib.greedy_policy(qq)), [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(_np(lib.greedy_policy(qq, "uniform")),
                               [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [0, 0, 1]])
    # near-ties within rounding are ties; a real gap is not
    near = np.array([[1.0, 1.0 + 1e-12, 0.9]])
    np.testing.assert_allclose(_np(lib.greedy_policy(torch.tensor(near) if lib is tm else near, "uniform")),
                               [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(_np(lib.greedy_policy(torch.tensor(near) if lib is tm else near, "uniform", 0.2)),
                               [[1 / 3, 1 / 3, 1 / 3]])


@given(seed=st.integers(0, 2**32 - 1), S=st.integers(1, 6), A=st.integers(1, 5))
@settings(max_examples=50, deadline=None)
def test_greedy_policy_is_a_distribution_on_maximisers(seed, S, A):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(S, A)).astype(float)  # many exact ties
    for ties in ("first", "uniform"):
        pi = nm.greedy_policy(q, ties)
        np.testing.assert_allclose(pi.sum(axis=1), 1.0)
        np.testing.assert_allclose(np.sum(pi * q, axis=1), q.max(axis=1))  # all mass on maximisers
        np.testing.assert_allclose(tm.greedy_policy(torch.tensor(q), ties).numpy(), pi)
    np.testing.assert_array_equal(nm.greedy_policy(q).argmax(axis=1), q.argmax(axis=1))  # lowest index


# --------------------------------------------------------------------------------------------------
# Gradients (torch) and extreme rewards
# --------------------------------------------------------------------------------------------------


def test_gradient_of_values_wrt_policy_is_visitation_times_q():
    """dV(s0)/dpi(a|s) = [(I - gamma P_pi)^{-1}]_{s0, s} Q^pi(s, a): the tabular policy-gradient theorem."""
    mdp = _random_mdp(3, S=5, A=3, gamma=0.8)
    rng = np.random.default_rng(3)
    pi = rng.dirichlet(np.ones(3), size=5)
    pi_t = torch.tensor(pi, requires_grad=True)
    v = tm.policy_evaluation(mdp, pi_t)
    v[0].backward()
    P_pi = np.einsum("sa,sat->st", pi, mdp.transitions)
    live = ~mdp.terminal
    M = np.zeros((5, 5))
    M[np.ix_(live, live)] = np.linalg.inv(np.eye(live.sum()) - mdp.gamma * P_pi[np.ix_(live, live)])
    q = nm.action_values(mdp, nm.policy_evaluation(mdp, pi))
    expected = M[0][:, None] * q
    np.testing.assert_allclose(pi_t.grad.numpy(), expected, atol=1e-10)


def test_gradient_wrt_rewards_gradcheck():
    base, _ = tm.two_by_two_world(gamma=0.9)
    pi = torch.tensor(np.random.default_rng(0).dirichlet(np.ones(4), size=4))

    def values(rewards):
        # rewards of the terminal state must stay 0: only the live rows vary
        full = torch.cat([rewards, torch.zeros(1, 4, dtype=rewards.dtype)])
        return tm.policy_evaluation(tm.TabularMDP(base.transitions, full, base.gamma), pi)

    r = base.rewards[:3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(values, (r,), eps=1e-6, atol=1e-8)
    # dV/dr(s, a) = visitation(s) * pi(a|s): with sum(V), the column sums of (I - gamma P_pi)^{-1}
    r.grad = None
    values(r).sum().backward()
    assert torch.all(r.grad > 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("reward", [1e4, -1e4])
def test_extreme_rewards_give_finite_values_and_gradients(dtype, reward):
    mdp, _ = tm.grid_world((3, 3), terminals=[(2, 2)], reward_cells={(2, 2): reward, (0, 2): -reward},
                           slip=0.1, gamma=0.99, dtype=dtype)
    pi = torch.full((9, 4), 0.25, dtype=dtype, requires_grad=True)
    v = tm.policy_evaluation(mdp, pi)
    assert v.dtype == dtype and torch.isfinite(v).all()
    v.sum().backward()
    assert torch.isfinite(pi.grad).all()
    for out in (tm.value_iteration(mdp)[0], tm.policy_iteration(mdp)[0],
                tm.policy_evaluation(mdp, pi.detach(), "iterative")):
        assert out.dtype == dtype and torch.isfinite(out).all()
    v64 = nm.policy_evaluation(mdp.numpy(), np.full((9, 4), 0.25))
    assert np.all(np.isfinite(v64))
    np.testing.assert_allclose(v.detach().double().numpy(), v64, rtol=1e-4 if dtype == torch.float32 else 1e-10,
                               atol=1e-3 if dtype == torch.float32 else 1e-8)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def _valid():
    P = np.zeros((2, 2, 2))
    P[0, :, 1] = 1.0
    P[1, :, 1] = 1.0
    return P, np.array([[1.0, 2.0], [0.0, 0.0]])


@pytest.mark.parametrize("lib", TREES)
def test_bad_mdp_raises_naming_the_argument(lib):
    P, R = _valid()
    lib.TabularMDP(P, R, 1.0)  # the valid one
    bad_sum = P.copy()
    bad_sum[0, 1] = [0.3, 0.3]
    with pytest.raises(ValueError, match="transitions must sum to 1"):
        lib.TabularMDP(bad_sum, R, 0.9)
    negative = P.copy()
    negative[0, 0] = [-0.5, 1.5]
    with pytest.raises(ValueError, match="transitions has negative"):
        lib.TabularMDP(negative, R, 0.9)
    with pytest.raises(ValueError, match="transitions must have shape"):
        lib.TabularMDP(P[:, :, :1], R, 0.9)
    with pytest.raises(ValueError, match="rewards must have shape"):
        lib.TabularMDP(P, R[:, :1], 0.9)
    with pytest.raises(ValueError, match="rewards contains NaN"):
        lib.TabularMDP(P, np.array([[np.nan, 0.0], [0.0, 0.0]]), 0.9)
    for gamma in (-0.1, 1.5):
        with pytest.raises(ValueError, match="gamma"):
            lib.TabularMDP(P, R, gamma)
    with pytest.raises(TypeError, match="gamma"):
        lib.TabularMDP(P, R, "0.9")
    # gamma = 1 with no reachable end: a two-state loop
    loop = np.zeros((2, 1, 2))
    loop[0, 0, 1] = loop[1, 0, 0] = 1.0
    with pytest.raises(ValueError, match="gamma = 1 needs every state to reach a terminal"):
        lib.TabularMDP(loop, np.zeros((2, 1)), 1.0)
    lib.TabularMDP(loop, np.zeros((2, 1)), 0.99)  # fine with discounting
    # a state that cannot reach the terminal one
    trap = np.zeros((3, 1, 3))
    trap[0, 0, 2] = trap[1, 0, 1] = trap[2, 0, 2] = 1.0
    with pytest.raises(ValueError, match="state 1 cannot"):
        lib.TabularMDP(trap, np.array([[1.0], [-1.0], [0.0]]), 1.0)
    with pytest.raises(ValueError, match="terminal state 0 must be absorbing"):
        lib.TabularMDP(P, R, 0.9, terminal=np.array([True, True]))
    with pytest.raises(ValueError, match="terminal must be a boolean"):
        lib.TabularMDP(P, R, 0.9, terminal=np.array([True]))
    with pytest.raises(ValueError, match="state_names"):
        lib.TabularMDP(P, R, 0.9, state_names=("only one",))


@pytest.mark.parametrize("lib", TREES)
def test_bad_policy_and_arguments_raise(lib):
    mdp, _ = lib.two_by_two_world()
    good = _policy_like(lib, _uniform(mdp))
    with pytest.raises(ValueError, match="policy must have shape"):
        lib.policy_evaluation(mdp, _policy_like(lib, np.full((4, 3), 1 / 3)))
    with pytest.raises(ValueError, match="policy must have shape"):
        lib.policy_evaluation_sweeps(mdp, _policy_like(lib, np.full((3, 4), 0.25)), 2)
    with pytest.raises(ValueError, match="policy must sum to 1"):
        lib.policy_evaluation(mdp, _policy_like(lib, np.full((4, 4), 0.3)))
    with pytest.raises(ValueError, match="policy has negative"):
        lib.policy_evaluation(mdp, _policy_like(lib, np.tile([[-0.5, 0.5, 0.5, 0.5]], (4, 1))))
    with pytest.raises(ValueError, match="method"):
        lib.policy_evaluation(mdp, good, method="monte-carlo")
    with pytest.raises(ValueError, match="tol"):
        lib.policy_evaluation(mdp, good, tol=-1.0)
    with pytest.raises(ValueError, match="max_sweeps"):
        lib.policy_evaluation(mdp, good, max_sweeps=0)
    with pytest.raises(ValueError, match="n_sweeps"):
        lib.policy_evaluation_sweeps(mdp, good, -1)
    with pytest.raises(ValueError, match="v must have shape"):
        lib.action_values(mdp, _policy_like(lib, np.zeros(3)))
    with pytest.raises(ValueError, match="v0 must have shape"):
        lib.value_iteration(mdp, v0=_policy_like(lib, np.zeros(5)))
    with pytest.raises(ValueError, match="ties"):
        lib.greedy_policy(_policy_like(lib, np.zeros((2, 2))), ties="random")
    with pytest.raises(ValueError, match="q must have shape"):
        lib.greedy_policy(_policy_like(lib, np.zeros(3)))
    with pytest.raises(TypeError, match="mdp must be"):
        lib.policy_evaluation("not an mdp", good)
    # gamma = 1 and a policy that never ends the episode: s0 always bumps up
    stuck = _uniform(mdp)
    stuck[0] = [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="policy never reaches a terminal state from state 0"):
        lib.policy_evaluation(mdp, _policy_like(lib, stuck))
    with pytest.raises(RuntimeError, match="max_iterations"):
        lib.value_iteration(lib.classic_grid_world()[0], max_iterations=3)


def test_value_iteration_diverges_with_gamma_one_and_a_rewarding_loop():
    # the end is reachable, but circling between s0 and s1 pays +1 forever: V* is infinite
    P = np.zeros((3, 2, 3))
    P[0, 0, 1] = P[1, 0, 0] = 1.0  # action 0: loop
    P[0, 1, 2] = P[1, 1, 2] = 1.0  # action 1: end
    P[2, :, 2] = 1.0
    mdp = nm.TabularMDP(P, np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), 1.0)
    with pytest.raises(RuntimeError, match="gamma = 1"):
        nm.value_iteration(mdp, max_iterations=200)


@pytest.mark.parametrize("lib", TREES)
def test_bad_grid_world_raises(lib):
    with pytest.raises(ValueError, match="walls has cell"):
        lib.grid_world((2, 2), walls=[(2, 0)])
    with pytest.raises(ValueError, match="terminals"):
        lib.grid_world((2, 2), terminals=[(0, 5)])
    with pytest.raises(ValueError, match="overlap"):
        lib.grid_world((2, 2), walls=[(0, 0)], terminals=[(0, 0)])
    with pytest.raises(ValueError, match="slip"):
        lib.grid_world((2, 2), slip=1.5)
    with pytest.raises(ValueError, match="gamma"):
        lib.grid_world((2, 2), gamma=2.0)
    with pytest.raises(ValueError, match="teleports"):
        lib.grid_world((2, 2), teleports={(0, 0): (1, 1)})
    with pytest.raises(ValueError, match="shape"):
        lib.grid_world((0, 2))
    with pytest.raises(ValueError, match="whole grid"):
        lib.grid_world((1, 2), walls=[(0, 0), (0, 1)])
    with pytest.raises(ValueError, match="gamma = 1 needs"):
        lib.grid_world((2, 2), gamma=1.0)  # no terminal cell


# --------------------------------------------------------------------------------------------------
# Plotting (Agg)
# --------------------------------------------------------------------------------------------------


def test_plot_grid_values_returns_a_labelled_figure():
    mdp, layout = nm.classic_grid_world()
    v, pi = nm.value_iteration(mdp, ties="uniform")
    fig = plot_grid_values(layout, v, pi, title="Optimal values")
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        assert len(fig.axes) == 2  # the grid and its colorbar
        ax = fig.axes[0]
        assert ax.get_title() == "Optimal values" and ax.get_xlabel() == "column" and ax.get_ylabel() == "row"
        assert "value" in fig.axes[1].get_ylabel()
        texts = [t.get_text() for t in ax.texts]
        assert "24.4" in texts and "A" in texts and "A'" in texts and "+10" in texts
    finally:
        plt.close(fig)
    # into a given axes, torch inputs, no colorbar, walls and terminals
    tmdp, tlayout = tm.grid_world((3, 4), walls=[(1, 1)], terminals=[(0, 3)], start=(2, 0))
    fig, ax = plt.subplots()
    try:
        v, pi = tm.value_iteration(tmdp)
        out = plot_grid_values(tlayout, v, pi, ax=ax, colorbar=False)
        assert out is fig and len(fig.axes) == 1
        assert "end" in [t.get_text() for t in ax.texts] and "start" in [t.get_text() for t in ax.texts]
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="v must have shape"):
        plot_grid_values(layout, np.zeros(3))
    with pytest.raises(ValueError, match="policy must have shape"):
        plot_grid_values(layout, v=np.zeros(25), policy=np.zeros((25, 2)))
    with pytest.raises(TypeError, match="layout"):
        plot_grid_values(mdp, np.zeros(25))


def test_plot_evaluation_sweeps_has_one_axes_per_sweep_and_a_colorbar():
    mdp, layout = _four_by_four()
    history = nm.policy_evaluation_sweeps(mdp, _uniform(mdp), 10)
    fig = plot_evaluation_sweeps(layout, history, sweeps=[0, 1, 2, 10], mdp=mdp)
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        assert len(fig.axes) == 5
        assert [ax.get_title() for ax in fig.axes[:4]] == ["sweep 0", "sweep 1", "sweep 2", "sweep 10 (last)"]
        assert fig._suptitle is not None and "sweep" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
    thist = tm.value_iteration_sweeps(tm.classic_grid_world()[0], 3)
    fig = plot_evaluation_sweeps(nm.classic_grid_world()[1], thist, sweeps=(0, -1))
    try:
        assert len(fig.axes) == 3 and fig.axes[1].get_title() == "sweep 3 (last)"
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="sweeps"):
        plot_evaluation_sweeps(layout, history, sweeps=[0, 11])
    with pytest.raises(ValueError, match="history must have shape"):
        plot_evaluation_sweeps(layout, history[:, :3])


def test_public_names_are_exported_from_both_packages():
    for name in nm.__all__:
        assert getattr(rn, name) is getattr(nm, name)
        assert getattr(rt, name) is getattr(tm, name)
    assert rt.GridLayout is rn.GridLayout
