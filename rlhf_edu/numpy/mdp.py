r"""Tabular Markov decision processes and dynamic programming (chapters 3 and 4).

The lecture notes model the RL problem as an MDP :math:`\langle \mathcal S, \mathcal A, P, R, \gamma\rangle`
with the return :math:`G_t = r_t + \gamma r_{t+1} + \gamma^2 r_{t+2} + \dots`, the values
:math:`V^\pi(s) = \mathbb E_\pi[G_t \mid s_t = s]`, :math:`Q^\pi(s, a) = \mathbb E_\pi[G_t \mid s_t = s, a_t = a]`
and the identity :math:`V^\pi(s) = \sum_a \pi(a|s) Q^\pi(s, a)`. With small state and action sets all of it
is a few matrix products, written here as plainly as they can be:

- :class:`TabularMDP` holds ``transitions[s, a, s2]`` :math:`= P(s_2 \mid s, a)`, ``rewards[s, a]``
  :math:`= \mathbb E[r \mid s, a]` and ``gamma``; terminal states are absorbing with zero reward;
- :func:`grid_world`, :func:`classic_grid_world` (Sutton & Barto's example 3.5) and
  :func:`two_by_two_world` (the notes' 2x2 world) build MDPs with a :class:`GridLayout` to draw them;
- :func:`policy_evaluation` (exact linear solve or iterative sweeps), :func:`policy_evaluation_sweeps`
  (the sweep-by-sweep history), :func:`action_values`, :func:`greedy_policy`, :func:`value_iteration`,
  :func:`value_iteration_sweeps` and :func:`policy_iteration`.

Policies are arrays of shape ``(S, A)`` whose rows sum to 1; values are arrays of shape ``(S,)``.
The PyTorch twins are in ``rlhf_edu.torch.mdp``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlhf_edu.validation import (
    as_float_array,
    check_choice,
    check_in_range,
    check_integer,
    check_nonnegative,
    check_probabilities,
)

__all__ = [
    "TabularMDP",
    "GridLayout",
    "grid_world",
    "classic_grid_world",
    "two_by_two_world",
    "policy_evaluation",
    "policy_evaluation_sweeps",
    "action_values",
    "greedy_policy",
    "value_iteration",
    "value_iteration_sweeps",
    "policy_iteration",
]

EVALUATION_METHODS = ("exact", "iterative")
TIE_RULES = ("first", "uniform")
#: Policy rows must sum to 1 within this (loose enough for finite-difference checks of dV/dpi).
POLICY_ATOL = 1e-5
#: Grid moves in the order of the action index: (name, arrow, (d_row, d_col)); row 0 is the top row.
GRID_ACTIONS = (
    ("up", "\u2191", (-1, 0)),
    ("down", "\u2193", (1, 0)),
    ("left", "\u2190", (0, -1)),
    ("right", "\u2192", (0, 1)),
)


# --------------------------------------------------------------------------------------------------
# The MDP
# --------------------------------------------------------------------------------------------------


def _absorbing_zero_reward(transitions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Boolean (S,): states that every action keeps in place with reward 0."""
    s = np.arange(transitions.shape[0])
    return np.all(transitions[s, :, s] == 1.0, axis=1) & np.all(rewards == 0.0, axis=1)


def _reaches_terminal(support: np.ndarray, terminal: np.ndarray) -> np.ndarray:
    """Boolean (S,): states from which a terminal state can be reached along edges of ``support[s, s2]``.

    Plain backward reachability (a breadth-first search written as repeated boolean products).
    """
    reach = np.asarray(terminal, dtype=bool).copy()
    while True:
        new = reach | np.any(support & reach[None, :], axis=1)
        if np.array_equal(new, reach):
            return reach
        reach = new


def _check_names(name, names, n):
    if names is None:
        return None
    names = tuple(names)
    if len(names) != n or not all(isinstance(x, str) for x in names):
        raise ValueError(f"{name} must be {n} strings, got {names!r}")
    return names


@dataclasses.dataclass
class TabularMDP:
    r"""A finite MDP :math:`\langle \mathcal S, \mathcal A, P, R, \gamma\rangle` (the lecture notes, chapter 3).

    - ``transitions[s, a, s2]`` :math:`= P(s_{t+1} = s_2 \mid s_t = s, a_t = a)`, shape (S, A, S), each
      ``transitions[s, a]`` a distribution;
    - ``rewards[s, a]`` :math:`= \mathbb E[r_t \mid s_t = s, a_t = a]`, the expected immediate reward, shape (S, A);
    - ``gamma`` in [0, 1], the discount of :math:`G_t = \sum_k \gamma^k r_{t+k}`;
    - ``terminal``: boolean (S,). Terminal states must be absorbing with zero reward (every action stays,
      reward 0), so their value is 0. ``None`` (default) marks exactly the states that are absorbing with
      zero reward;
    - ``state_names``, ``action_names``: optional labels for printing and drawing.

    With ``gamma = 1`` the return is a plain sum, finite only if the episode ends: every state must be able
    to reach a terminal state, or the constructor raises ``ValueError``.

    >>> mdp = TabularMDP([[[0.0, 1.0]], [[0.0, 1.0]]], [[1.0], [0.0]], gamma=0.5)
    >>> mdp.n_states, mdp.n_actions, mdp.terminal.tolist()
    (2, 1, [False, True])
    """

    transitions: np.ndarray
    rewards: np.ndarray
    gamma: float
    terminal: np.ndarray | None = None
    state_names: tuple | None = None
    action_names: tuple | None = None

    def __post_init__(self):
        P = as_float_array("transitions", self.transitions).astype(np.float64)
        if P.ndim != 3 or P.shape[0] != P.shape[2] or 0 in P.shape:
            raise ValueError(f"transitions must have shape (S, A, S) with S, A >= 1, got {P.shape}")
        check_probabilities("transitions", P, axis=-1)
        S, A = P.shape[:2]
        r = as_float_array("rewards", self.rewards).astype(np.float64)
        if r.shape != (S, A):
            raise ValueError(f"rewards must have shape (S, A) = {(S, A)} to match transitions, got {r.shape}")
        if not np.all(np.isfinite(r)):
            raise ValueError("rewards contains NaN or inf")
        gamma = check_in_range("gamma", self.gamma, 0.0, 1.0)
        absorbing = _absorbing_zero_reward(P, r)
        if self.terminal is None:
            terminal = absorbing
        else:
            terminal = np.asarray(self.terminal)
            if terminal.shape != (S,) or not (terminal.dtype == bool or np.isin(terminal, (0, 1)).all()):
                raise ValueError(f"terminal must be a boolean array of shape ({S},), got {terminal.shape}")
            terminal = terminal.astype(bool)
            bad = terminal & ~absorbing
            if bad.any():
                raise ValueError(
                    f"terminal state {int(np.argmax(bad))} must be absorbing with zero reward "
                    "(transitions[s, a, s] = 1 and rewards[s, a] = 0 for every action)"
                )
        if gamma == 1.0:
            reach = _reaches_terminal(P.sum(axis=1) > 0, terminal)
            if not reach.all():
                raise ValueError(
                    f"gamma = 1 needs every state to reach a terminal state, but state {int(np.argmin(reach))} "
                    "cannot (returns would be infinite or undefined): use gamma < 1 or add a terminal state"
                )
        self.transitions, self.rewards, self.gamma, self.terminal = P, r, gamma, terminal
        self.state_names = _check_names("state_names", self.state_names, S)
        self.action_names = _check_names("action_names", self.action_names, A)

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]


def _check_mdp(mdp) -> TabularMDP:
    if not isinstance(mdp, TabularMDP):
        hint = " (a torch MDP converts with mdp.numpy())" if hasattr(mdp, "numpy") else ""
        raise TypeError(f"mdp must be a rlhf_edu.numpy.mdp.TabularMDP, got {type(mdp).__name__}{hint}")
    return mdp


def _check_policy(mdp: TabularMDP, policy) -> np.ndarray:
    policy = as_float_array("policy", policy).astype(np.float64)
    want = (mdp.n_states, mdp.n_actions)
    if policy.shape != want:
        raise ValueError(f"policy must have shape (S, A) = {want}, got {policy.shape}")
    check_probabilities("policy", policy, axis=-1, atol=POLICY_ATOL)
    return policy


def _check_values(mdp: TabularMDP, name: str, v) -> np.ndarray:
    v = as_float_array(name, v).astype(np.float64)
    if v.shape != (mdp.n_states,):
        raise ValueError(f"{name} must have shape (S,) = ({mdp.n_states},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")
    return v


def _policy_model(mdp: TabularMDP, policy: np.ndarray):
    """r_pi[s] = sum_a pi(a|s) r(s, a) and P_pi[s, s2] = sum_a pi(a|s) P(s2|s, a)."""
    r_pi = np.sum(policy * mdp.rewards, axis=1)
    P_pi = np.einsum("sa,sat->st", policy, mdp.transitions)
    return r_pi, P_pi


def _check_proper(mdp: TabularMDP, policy: np.ndarray) -> None:
    """With gamma = 1 the policy must end the episode from every state, else V is infinite or undefined."""
    if mdp.gamma < 1.0:
        return
    support = np.any((policy[:, :, None] > 0) & (mdp.transitions > 0), axis=1)
    reach = _reaches_terminal(support, mdp.terminal)
    if not reach.all():
        raise ValueError(
            f"policy never reaches a terminal state from state {int(np.argmin(reach))}; with gamma = 1 its "
            "values are infinite or undefined (give that state an action that leads towards a terminal state)"
        )


def _stop_tolerance(tol: float, v: np.ndarray) -> float:
    """``tol``, raised to a few units of float rounding at the scale of ``v`` (never reachable below that)."""
    return max(tol, 4.0 * np.finfo(np.float64).eps * max(1.0, float(np.max(np.abs(v), initial=0.0))))


def _tie_tolerance(q: np.ndarray) -> float:
    return 1e-8 * max(1.0, float(np.max(np.abs(q), initial=0.0)))


# --------------------------------------------------------------------------------------------------
# Grid worlds
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class GridLayout:
    """What is needed to draw a grid-world MDP (built by :func:`grid_world`; used by ``rlhf_edu.plotting``).

    - ``shape``: (rows, columns); cells are ``(row, col)`` with row 0 at the top;
    - ``walls``, ``terminals``: boolean arrays of that shape;
    - ``state_index``: int array of that shape, the state of each cell (-1 on walls); states are numbered
      row by row, skipping walls;
    - ``cells``: ``cells[s]`` is the ``(row, col)`` of state ``s``;
    - ``teleports``: ``{cell: (target cell, reward)}``; ``reward_cells``: ``{cell: reward for entering}``;
    - ``action_names``, ``action_arrows``, ``action_deltas``: per action, its name, an arrow character and
      its ``(d_row, d_col)`` move;
    - ``start``: the start cell or ``None``.

    Used in chapters 3 and 4.

    >>> _, layout = two_by_two_world()
    >>> layout.state_index.tolist(), layout.action_arrows
    ([[0, 1], [2, 3]], ('↑', '↓', '←', '→'))
    """

    shape: tuple
    walls: np.ndarray
    terminals: np.ndarray
    state_index: np.ndarray
    cells: tuple
    teleports: dict = dataclasses.field(default_factory=dict)
    reward_cells: dict = dataclasses.field(default_factory=dict)
    action_names: tuple = tuple(a[0] for a in GRID_ACTIONS)
    action_arrows: tuple = tuple(a[1] for a in GRID_ACTIONS)
    action_deltas: tuple = tuple(a[2] for a in GRID_ACTIONS)
    start: tuple | None = None

    def __post_init__(self):
        self.shape = tuple(int(n) for n in self.shape)
        self.walls = np.asarray(self.walls, dtype=bool)
        self.terminals = np.asarray(self.terminals, dtype=bool)
        self.state_index = np.asarray(self.state_index, dtype=np.int64)
        for name in ("walls", "terminals", "state_index"):
            if getattr(self, name).shape != self.shape:
                raise ValueError(f"{name} must have shape {self.shape}, got {getattr(self, name).shape}")
        self.cells = tuple((int(r), int(c)) for r, c in self.cells)
        self.action_names, self.action_arrows = tuple(self.action_names), tuple(self.action_arrows)
        self.action_deltas = tuple((int(dr), int(dc)) for dr, dc in self.action_deltas)
        if self.start is not None:
            self.start = (int(self.start[0]), int(self.start[1]))

    @property
    def n_states(self) -> int:
        return len(self.cells)

    def to_grid(self, v, fill=np.nan) -> np.ndarray:
        """Per-state values ``v`` of shape (S,) as a (rows, columns) float array, ``fill`` on walls."""
        v = np.asarray(v, dtype=float)
        if v.shape != (self.n_states,):
            raise ValueError(f"v must have shape ({self.n_states},) for this layout, got {v.shape}")
        grid = np.full(self.shape, fill, dtype=float)
        for s, (r, c) in enumerate(self.cells):
            grid[r, c] = v[s]
        return grid


def _check_cell(name, cell, shape):
    try:
        r, c = cell
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold (row, col) pairs, got {cell!r}") from None
    if isinstance(r, bool) or isinstance(c, bool) or int(r) != r or int(c) != c:
        raise ValueError(f"{name} must hold integer (row, col) pairs, got {cell!r}")
    r, c = int(r), int(c)
    if not (0 <= r < shape[0] and 0 <= c < shape[1]):
        raise ValueError(f"{name} has cell {(r, c)} outside the {shape[0]}x{shape[1]} grid")
    return r, c


def _cell_set(name, cells, shape):
    return {_check_cell(name, cell, shape) for cell in (cells or ())}


def grid_world(
    shape,
    *,
    walls=(),
    terminals=(),
    reward_cells=None,
    teleports=None,
    step_reward=0.0,
    off_grid_reward=-1.0,
    slip=0.0,
    gamma=0.9,
    start=None,
    state_names=None,
):
    r"""A rectangular grid world as a :class:`TabularMDP`, with the :class:`GridLayout` to draw it.

    Each non-wall cell is a state; the four actions are ``up, down, left, right`` (row 0 at the top).
    From an ordinary cell a move to a free cell ``c`` gives ``step_reward + reward_cells.get(c, 0)``; a
    move off the grid or into a wall leaves the agent in place with ``off_grid_reward`` instead (-1 in
    Sutton & Barto's example 3.5). With probability ``slip`` the agent moves in one of the three other
    directions instead, uniformly, so ``P(intended) = 1 - slip``; ``rewards[s, a]`` is then the expected
    reward over where it lands. From a teleport cell ``{cell: (target, reward)}`` every action moves to
    ``target`` and gives ``reward`` (the A -> A' (+10) and B -> B' (+5) cells of example 3.5), never slipping.
    Terminal cells are absorbing with zero reward.

    Source: Sutton & Barto, "Reinforcement Learning: An Introduction" (2nd ed., 2018), examples 3.5 and 4.1;
    the grid world of the lecture notes. Used in chapters 3 and 4.

    >>> mdp, layout = grid_world((1, 3), terminals=[(0, 2)], step_reward=-1.0, gamma=1.0)
    >>> mdp.rewards.tolist()  # from the left cell: up, down and left bump (-1), right moves (-1)
    [[-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]]
    >>> layout.cells
    ((0, 0), (0, 1), (0, 2))
    """
    if len(tuple(shape)) != 2:
        raise ValueError(f"shape must be (rows, columns), got {shape!r}")
    rows = check_integer("shape", tuple(shape)[0], minimum=1)
    cols = check_integer("shape", tuple(shape)[1], minimum=1)
    shape = (rows, cols)
    wall_set = _cell_set("walls", walls, shape)
    terminal_set = _cell_set("terminals", terminals, shape)
    reward_cells = {_check_cell("reward_cells", k, shape): float(v) for k, v in (reward_cells or {}).items()}
    tele = {}
    for cell, spec in (teleports or {}).items():
        try:
            target, reward = spec
        except (TypeError, ValueError):
            raise ValueError(f"teleports must map a cell to (target cell, reward), got {spec!r}") from None
        tele[_check_cell("teleports", cell, shape)] = (_check_cell("teleports", target, shape), float(reward))
    for name, value in (("step_reward", step_reward), ("off_grid_reward", off_grid_reward)):
        if not np.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
    slip = check_in_range("slip", slip, 0.0, 1.0)
    if wall_set & terminal_set:
        raise ValueError(f"terminals and walls overlap at {sorted(wall_set & terminal_set)}")
    for cell, (target, _) in tele.items():
        if cell in wall_set or cell in terminal_set:
            raise ValueError(f"teleports: cell {cell} is a wall or terminal")
        if target in wall_set:
            raise ValueError(f"teleports: target {target} of {cell} is a wall")
    if set(reward_cells) & wall_set:
        raise ValueError(f"reward_cells: {sorted(set(reward_cells) & wall_set)} are walls")
    if start is not None:
        start = _check_cell("start", start, shape)
        if start in wall_set:
            raise ValueError(f"start {start} is a wall")

    walls_arr = np.zeros(shape, dtype=bool)
    for r, c in wall_set:
        walls_arr[r, c] = True
    state_index = np.full(shape, -1, dtype=np.int64)
    cells = [(r, c) for r in range(rows) for c in range(cols) if not walls_arr[r, c]]
    if not cells:
        raise ValueError("walls cover the whole grid: no state is left")
    for s, (r, c) in enumerate(cells):
        state_index[r, c] = s
    S, A = len(cells), len(GRID_ACTIONS)
    P = np.zeros((S, A, S))
    R = np.zeros((S, A))

    def move(cell, delta):
        """Where one move lands and its reward."""
        r, c = cell[0] + delta[0], cell[1] + delta[1]
        if not (0 <= r < rows and 0 <= c < cols) or walls_arr[r, c]:
            return cell, float(off_grid_reward)
        return (r, c), float(step_reward) + reward_cells.get((r, c), 0.0)

    for s, cell in enumerate(cells):
        if cell in terminal_set:
            P[s, :, s] = 1.0
            continue
        if cell in tele:
            target, reward = tele[cell]
            P[s, :, state_index[target]] = 1.0
            R[s, :] = reward
            continue
        for a in range(A):
            for b in range(A):
                prob = 1.0 - slip if b == a else slip / (A - 1)
                if prob == 0.0:
                    continue
                landing, reward = move(cell, GRID_ACTIONS[b][2])
                P[s, a, state_index[landing]] += prob
                R[s, a] += prob * reward

    terminals_arr = np.zeros(shape, dtype=bool)
    for r, c in terminal_set:
        terminals_arr[r, c] = True
    terminal = np.array([cell in terminal_set for cell in cells])
    if state_names is None:
        state_names = tuple(f"({r},{c})" for r, c in cells)
    mdp = TabularMDP(P, R, gamma, terminal=terminal, state_names=state_names,
                     action_names=tuple(a[0] for a in GRID_ACTIONS))
    layout = GridLayout(shape, walls_arr, terminals_arr, state_index, tuple(cells), teleports=tele,
                        reward_cells=reward_cells, start=start)
    return mdp, layout


def classic_grid_world(gamma=0.9):
    r"""The 5x5 grid world of Sutton & Barto's example 3.5 (figure 3.2), with its layout.

    Every action from A = (0, 1) gives +10 and moves to A' = (4, 1); from B = (0, 3) it gives +5 and moves
    to B' = (2, 3); a move off the grid gives -1 and leaves the agent in place; every other move gives 0.
    No terminal state; ``gamma = 0.9`` in the book, where the equiprobable random policy has
    V(A) = 8.8 (figure 3.2) and the optimal values have V*(A) = 24.4 (figure 3.5).

    Source: Sutton & Barto, "Reinforcement Learning: An Introduction" (2nd ed., 2018). Chapters 3 and 4.

    >>> mdp, layout = classic_grid_world()
    >>> v = policy_evaluation(mdp, np.full((25, 4), 0.25))
    >>> round(float(v[layout.state_index[0, 1]]), 1), round(float(v[layout.state_index[4, 1]]), 1)
    (8.8, -1.3)
    """
    return grid_world(
        (5, 5),
        teleports={(0, 1): ((4, 1), 10.0), (0, 3): ((2, 3), 5.0)},
        step_reward=0.0,
        off_grid_reward=-1.0,
        gamma=gamma,
    )


def two_by_two_world(step_reward=-1.0, gamma=1.0, slip=0.0):
    r"""The 2x2 grid world of the lecture notes, states ``s0 s1 / s2 s3``, with its layout.

    The notes' slide lists four states, a start state and a terminal state, an action space and rewards;
    the pictures with the actions and rewards are not in the text, so the book fixes them the standard way
    (as in Sutton & Barto's example 4.1): start ``s0`` top left, terminal ``s3`` bottom right, four moves
    ``up, down, left, right``, reward ``step_reward`` (-1) for every move (a move off the grid leaves the
    agent in place, also at -1), no discount (``gamma = 1``): the value is minus the expected number of
    steps to the end.

    Hand computation for the equiprobable random policy, by symmetry ``V(s1) = V(s2) = x``, ``V(s0) = y``:
    ``x = -1 + (2x + y + 0)/4`` and ``y = -1 + (2y + 2x)/4``, so ``y = x - 2`` and ``x = -6, y = -8``.
    The optimal values are ``(-2, -1, -1, 0)``.

    Source: the lecture notes ("Grid World Environment, size of the world [2 X 2]"). Chapters 3 and 4.

    >>> mdp, layout = two_by_two_world()
    >>> policy_evaluation(mdp, np.full((4, 4), 0.25)).round(6).tolist()
    [-8.0, -6.0, -6.0, 0.0]
    """
    return grid_world(
        (2, 2),
        terminals=[(1, 1)],
        step_reward=step_reward,
        off_grid_reward=step_reward,
        slip=slip,
        gamma=gamma,
        start=(0, 0),
        state_names=("s0", "s1", "s2", "s3"),
    )


# --------------------------------------------------------------------------------------------------
# Dynamic programming
# --------------------------------------------------------------------------------------------------


def action_values(mdp, v):
    r"""Action values from state values: :math:`Q(s, a) = r(s, a) + \gamma \sum_{s_2} P(s_2 \mid s, a) V(s_2)`.

    With ``v`` = :math:`V^\pi` this is :math:`Q^\pi` (one step of the Bellman expectation equation); with
    ``v`` = :math:`V^*` it is :math:`Q^*`. Shape (S, A). Source: Bellman (1957); the lecture notes.
    Chapters 3 and 4.

    >>> mdp, _ = two_by_two_world()
    >>> action_values(mdp, [-2.0, -1.0, -1.0, 0.0])[0].tolist()  # s0: up, down, left, right
    [-3.0, -2.0, -3.0, -2.0]
    """
    mdp = _check_mdp(mdp)
    v = _check_values(mdp, "v", v)
    return mdp.rewards + mdp.gamma * mdp.transitions @ v


def policy_evaluation(mdp, policy, method="exact", tol=1e-10, in_place=False, max_sweeps=10_000):
    r"""The value :math:`V^\pi` of ``policy`` (shape (S, A), rows summing to 1); shape (S,).

    :math:`V^\pi` solves the Bellman expectation equation :math:`V = r_\pi + \gamma P_\pi V` with
    :math:`r_\pi(s) = \sum_a \pi(a|s) r(s, a)` and :math:`P_\pi(s, s_2) = \sum_a \pi(a|s) P(s_2|s, a)`.

    - ``method="exact"``: solve :math:`(I - \gamma P_\pi) V = r_\pi` over the non-terminal states
      (terminal states have V = 0);
    - ``method="iterative"``: repeat the backup :math:`V \leftarrow r_\pi + \gamma P_\pi V` from V = 0
      until no value changes by more than ``tol`` (then ``|V - V^\pi| <= tol \gamma / (1 - \gamma)``), at most
      ``max_sweeps`` sweeps. ``in_place=False`` backs up all states from the previous sweep (synchronous,
      Jacobi); ``in_place=True`` updates the states one by one in index order, each using the newest
      values (Gauss-Seidel), which usually needs fewer sweeps. The sweeps themselves:
      :func:`policy_evaluation_sweeps`.

    With ``gamma = 1`` the policy must reach a terminal state from every state (``ValueError`` otherwise).
    Source: Sutton & Barto (2018), sections 3.5 and 4.1; the lecture notes. Chapters 3 and 4.

    >>> mdp, _ = two_by_two_world()
    >>> policy_evaluation(mdp, np.full((4, 4), 0.25), method="iterative").round(6).tolist()
    [-8.0, -6.0, -6.0, 0.0]
    """
    mdp = _check_mdp(mdp)
    policy = _check_policy(mdp, policy)
    check_choice("method", method, EVALUATION_METHODS)
    check_nonnegative("tol", tol)
    max_sweeps = check_integer("max_sweeps", max_sweeps, minimum=1)
    _check_proper(mdp, policy)
    r_pi, P_pi = _policy_model(mdp, policy)
    live = ~mdp.terminal
    if method == "exact":
        v = np.zeros(mdp.n_states)
        A = np.eye(int(live.sum())) - mdp.gamma * P_pi[np.ix_(live, live)]
        v[live] = np.linalg.solve(A, r_pi[live])
        return v
    v = np.zeros(mdp.n_states)
    for _ in range(max_sweeps):
        new = _evaluation_sweep(mdp, r_pi, P_pi, v, in_place)
        delta = np.max(np.abs(new - v))
        v = new
        if delta <= _stop_tolerance(tol, v):
            return v
    raise RuntimeError(f"policy_evaluation did not converge to tol={tol} in max_sweeps={max_sweeps} sweeps")


def _evaluation_sweep(mdp, r_pi, P_pi, v, in_place):
    """One sweep of the Bellman expectation backup, synchronous or in place; terminal values stay 0."""
    if not in_place:
        return np.where(mdp.terminal, 0.0, r_pi + mdp.gamma * P_pi @ v)
    v = v.copy()
    for s in range(mdp.n_states):
        v[s] = 0.0 if mdp.terminal[s] else r_pi[s] + mdp.gamma * P_pi[s] @ v
    return v


def policy_evaluation_sweeps(mdp, policy, n_sweeps, in_place=False, v0=None):
    r"""The first ``n_sweeps`` sweeps of iterative policy evaluation, for the chapter's animation.

    Returns an array of shape (n_sweeps + 1, S): row 0 is the start ``v0`` (zeros by default, terminal
    states forced to 0), row k the values after k sweeps of :math:`V \leftarrow r_\pi + \gamma P_\pi V`
    (``in_place`` as in :func:`policy_evaluation`). Sutton & Barto's figure 4.1 shows rows 0, 1, 2, 3, 10.

    Source: Sutton & Barto (2018), section 4.1. Chapters 3 and 4.

    >>> mdp, _ = two_by_two_world()
    >>> policy_evaluation_sweeps(mdp, np.full((4, 4), 0.25), 2).tolist()
    [[0.0, 0.0, 0.0, 0.0], [-1.0, -1.0, -1.0, 0.0], [-2.0, -1.75, -1.75, 0.0]]
    """
    mdp = _check_mdp(mdp)
    policy = _check_policy(mdp, policy)
    n_sweeps = check_integer("n_sweeps", n_sweeps, minimum=0)
    v = np.zeros(mdp.n_states) if v0 is None else _check_values(mdp, "v0", v0)
    v = np.where(mdp.terminal, 0.0, v)
    r_pi, P_pi = _policy_model(mdp, policy)
    history = [v]
    for _ in range(n_sweeps):
        history.append(_evaluation_sweep(mdp, r_pi, P_pi, history[-1], in_place))
    return np.stack(history)


def greedy_policy(q, ties="first", atol=None):
    r"""The greedy policy :math:`\pi(s) = \arg\max_a Q(s, a)` of action values ``q`` (S, A), as an (S, A) array.

    Actions whose value is within ``atol`` of the row's maximum count as tied (default ``atol``:
    ``1e-8 * max(1, max|q|)``, so values equal up to rounding are ties). ``ties="first"`` puts probability 1
    on the lowest-index tied action (a deterministic policy, like ``np.argmax``); ``ties="uniform"`` spreads
    it evenly over all tied actions (Sutton & Barto's figures draw every tied arrow).

    Source: policy improvement, Sutton & Barto (2018), section 4.2. Chapters 3 and 4.

    >>> greedy_policy([[1.0, 3.0, 3.0], [0.0, -1.0, -2.0]]).tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    >>> greedy_policy([[1.0, 3.0, 3.0]], ties="uniform").tolist()
    [[0.0, 0.5, 0.5]]
    """
    q = as_float_array("q", q).astype(np.float64)
    if q.ndim != 2 or 0 in q.shape:
        raise ValueError(f"q must have shape (S, A) with S, A >= 1, got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("q contains NaN or inf")
    check_choice("ties", ties, TIE_RULES)
    atol = _tie_tolerance(q) if atol is None else check_nonnegative("atol", atol)
    tied = q >= q.max(axis=1, keepdims=True) - atol
    if ties == "uniform":
        return tied / tied.sum(axis=1, keepdims=True)
    return np.eye(q.shape[1])[np.argmax(tied, axis=1)]


def value_iteration(mdp, tol=1e-10, max_iterations=10_000, v0=None, ties="first"):
    r"""Optimal values and a greedy optimal policy by value iteration: returns ``(v, policy)``.

    Repeats the Bellman optimality backup :math:`V(s) \leftarrow \max_a [r(s, a) + \gamma \sum_{s_2}
    P(s_2|s, a) V(s_2)]` (synchronous) from ``v0`` (zeros by default) until no value changes by more than
    ``tol``; then ``|V - V^*| <= tol \gamma / (1 - \gamma)``. ``policy = greedy_policy(action_values(mdp, v),
    ties)``. Raises ``RuntimeError`` after ``max_iterations`` sweeps (with ``gamma = 1`` it may diverge).

    Source: Bellman (1957); Sutton & Barto (2018), section 4.4. Chapter 4.

    >>> mdp, _ = two_by_two_world()
    >>> v, pi = value_iteration(mdp)
    >>> v.tolist(), pi[0].tolist()  # from s0, "down" (index 1) is the first optimal move
    ([-2.0, -1.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    """
    mdp = _check_mdp(mdp)
    check_nonnegative("tol", tol)
    max_iterations = check_integer("max_iterations", max_iterations, minimum=1)
    v = np.zeros(mdp.n_states) if v0 is None else _check_values(mdp, "v0", v0)
    v = np.where(mdp.terminal, 0.0, v)
    for _ in range(max_iterations):
        new = np.where(mdp.terminal, 0.0, action_values(mdp, v).max(axis=1))
        delta = np.max(np.abs(new - v))
        v = new
        if delta <= _stop_tolerance(tol, v):
            return v, greedy_policy(action_values(mdp, v), ties)
    raise RuntimeError(
        f"value_iteration did not converge to tol={tol} in max_iterations={max_iterations} sweeps"
        + (" (with gamma = 1 values can diverge)" if mdp.gamma == 1.0 else "")
    )


def value_iteration_sweeps(mdp, n_sweeps, v0=None):
    r"""The first ``n_sweeps`` sweeps of value iteration, shape (n_sweeps + 1, S); row 0 is ``v0`` (zeros).

    Row k is :math:`T^{*k} v_0` with the optimality backup :math:`(T^* V)(s) = \max_a Q_V(s, a)` (see
    :func:`value_iteration`), for the chapter's animation. Source: Sutton & Barto (2018), section 4.4. Chapter 4.

    >>> mdp, _ = two_by_two_world()
    >>> value_iteration_sweeps(mdp, 2).tolist()
    [[0.0, 0.0, 0.0, 0.0], [-1.0, -1.0, -1.0, 0.0], [-2.0, -1.0, -1.0, 0.0]]
    """
    mdp = _check_mdp(mdp)
    n_sweeps = check_integer("n_sweeps", n_sweeps, minimum=0)
    v = np.zeros(mdp.n_states) if v0 is None else _check_values(mdp, "v0", v0)
    history = [np.where(mdp.terminal, 0.0, v)]
    for _ in range(n_sweeps):
        history.append(np.where(mdp.terminal, 0.0, action_values(mdp, history[-1]).max(axis=1)))
    return np.stack(history)


def policy_iteration(mdp, policy=None, max_iterations=1_000, ties="first"):
    r"""Optimal values and a greedy optimal policy by policy iteration: returns ``(v, policy)``.

    From ``policy`` (default: equiprobable random), alternate exact policy evaluation,
    :math:`V \leftarrow V^\pi`, and greedy improvement, :math:`\pi \leftarrow \text{greedy}(Q^\pi)`, until
    :math:`V^\pi` satisfies the Bellman optimality equation :math:`\max_a Q^\pi(s, a) = V^\pi(s)` (to
    rounding, ``1e-8 * max(1, max|V|)``); then it is :math:`V^*` (policy improvement theorem). Stopping on
    the values rather than on "the policy did not change" cannot loop between equally good policies.
    Raises ``RuntimeError`` after ``max_iterations`` improvements. With ``gamma = 1`` every improved policy
    must still reach a terminal state (true when each step costs something).

    Source: Howard (1960), "Dynamic Programming and Markov Processes"; Sutton & Barto (2018), section 4.3.
    Chapter 4.

    >>> mdp, _ = two_by_two_world()
    >>> v, pi = policy_iteration(mdp)
    >>> v.round(6).tolist(), pi.argmax(axis=1).tolist()
    ([-2.0, -1.0, -1.0, 0.0], [1, 1, 3, 0])
    """
    mdp = _check_mdp(mdp)
    max_iterations = check_integer("max_iterations", max_iterations, minimum=1)
    if policy is None:
        policy = np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)
    policy = _check_policy(mdp, policy)
    for _ in range(max_iterations):
        v = policy_evaluation(mdp, policy, "exact")
        q = action_values(mdp, v)
        if np.max(q.max(axis=1) - v) <= _tie_tolerance(q):
            return v, greedy_policy(q, ties)
        policy = greedy_policy(q, ties)
    raise RuntimeError(f"policy_iteration did not converge in max_iterations={max_iterations} improvements")
