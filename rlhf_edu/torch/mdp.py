r"""PyTorch twins of ``rlhf_edu.numpy.mdp`` (chapters 3 and 4): same names, same arguments, any device.

:class:`TabularMDP` holds tensors. Every function accepts a torch MDP or a NumPy one (converted to the
dtype and device of the policy or value tensor passed with it; float64 on the CPU when there is none),
and returns tensors on that dtype and device. :func:`policy_evaluation` with ``method="exact"`` is a
``torch.linalg.solve``, differentiable with respect to the policy and to ``mdp.rewards`` (chapter 4
differentiates :math:`V^\pi` through it).
"""

from __future__ import annotations

import dataclasses

import torch

from rlhf_edu.numpy import mdp as _ref
from rlhf_edu.numpy.mdp import EVALUATION_METHODS, POLICY_ATOL, TIE_RULES, GridLayout
from rlhf_edu.validation import (
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


def _as_float_tensor(name, x, dtype=None, device=None) -> torch.Tensor:
    try:
        t = torch.as_tensor(x, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from exc
    if dtype is not None:
        return t.to(dtype)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def _reaches_terminal(support: torch.Tensor, terminal: torch.Tensor) -> torch.Tensor:
    """Boolean (S,): states from which a terminal state can be reached along edges of ``support[s, s2]``."""
    reach = terminal.clone()
    while True:
        new = reach | torch.any(support & reach[None, :], dim=1)
        if torch.equal(new, reach):
            return reach
        reach = new


@dataclasses.dataclass
class TabularMDP:
    r"""A finite MDP with tensor fields: ``transitions[s, a, s2]``, ``rewards[s, a]``, ``gamma``, ``terminal``.

    Same fields and checks as ``rlhf_edu.numpy.mdp.TabularMDP``. The tensors share one float dtype and one
    device: those of ``transitions`` (of ``rewards`` if ``transitions`` is not a float tensor). ``rewards``
    may require grad. ``mdp.to(dtype, device)`` converts; ``mdp.numpy()`` gives the NumPy MDP.

    >>> mdp = TabularMDP(torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]), torch.tensor([[1.0], [0.0]]), gamma=0.5)
    >>> mdp.terminal
    tensor([False,  True])
    """

    transitions: torch.Tensor
    rewards: torch.Tensor
    gamma: float
    terminal: torch.Tensor | None = None
    state_names: tuple | None = None
    action_names: tuple | None = None

    def __post_init__(self):
        try:
            P = torch.as_tensor(self.transitions)
            r = torch.as_tensor(self.rewards, device=P.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError("transitions and rewards must be array-like of numbers") from exc
        if P.is_floating_point():
            dtype = P.dtype
        else:
            dtype = r.dtype if r.is_floating_point() else torch.get_default_dtype()
        P, r = P.to(dtype), r.to(dtype)
        if P.ndim != 3 or P.shape[0] != P.shape[2] or 0 in P.shape:
            raise ValueError(f"transitions must have shape (S, A, S) with S, A >= 1, got {tuple(P.shape)}")
        check_probabilities("transitions", P, axis=-1)
        S, A = P.shape[:2]
        if tuple(r.shape) != (S, A):
            raise ValueError(f"rewards must have shape (S, A) = {(S, A)} to match transitions, got {tuple(r.shape)}")
        if not bool(torch.isfinite(r).all()):
            raise ValueError("rewards contains NaN or inf")
        gamma = check_in_range("gamma", self.gamma, 0.0, 1.0)
        s = torch.arange(S, device=P.device)
        absorbing = torch.all(P[s, :, s] == 1.0, dim=1) & torch.all(r == 0.0, dim=1)
        if self.terminal is None:
            terminal = absorbing
        else:
            terminal = torch.as_tensor(self.terminal, device=P.device)
            if tuple(terminal.shape) != (S,) or not (
                terminal.dtype == torch.bool or bool(((terminal == 0) | (terminal == 1)).all())
            ):
                raise ValueError(f"terminal must be a boolean array of shape ({S},), got {tuple(terminal.shape)}")
            terminal = terminal.to(torch.bool)
            bad = terminal & ~absorbing
            if bool(bad.any()):
                raise ValueError(
                    f"terminal state {int(torch.argmax(bad.to(torch.uint8)))} must be absorbing with zero reward "
                    "(transitions[s, a, s] = 1 and rewards[s, a] = 0 for every action)"
                )
        if gamma == 1.0:
            reach = _reaches_terminal(P.sum(dim=1) > 0, terminal)
            if not bool(reach.all()):
                raise ValueError(
                    f"gamma = 1 needs every state to reach a terminal state, but state "
                    f"{int(torch.argmin(reach.to(torch.uint8)))} cannot (returns would be infinite or "
                    "undefined): use gamma < 1 or add a terminal state"
                )
        self.transitions, self.rewards, self.gamma, self.terminal = P, r, gamma, terminal
        self.state_names = _ref._check_names("state_names", self.state_names, S)
        self.action_names = _ref._check_names("action_names", self.action_names, A)

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.transitions.dtype

    @property
    def device(self) -> torch.device:
        return self.transitions.device

    def to(self, dtype=None, device=None) -> "TabularMDP":
        """The same MDP with its tensors converted (a no-op returning ``self`` when nothing changes)."""
        dtype = dtype or self.dtype
        device = torch.device(device) if device is not None else self.device
        if dtype == self.dtype and device == self.device:
            return self
        return TabularMDP(
            self.transitions.to(device=device, dtype=dtype),
            self.rewards.to(device=device, dtype=dtype),
            self.gamma,
            terminal=self.terminal.to(device),
            state_names=self.state_names,
            action_names=self.action_names,
        )

    def numpy(self) -> _ref.TabularMDP:
        """The NumPy ``rlhf_edu.numpy.mdp.TabularMDP`` with the same fields (float64)."""
        return _ref.TabularMDP(
            self.transitions.detach().cpu().double().numpy(),
            self.rewards.detach().cpu().double().numpy(),
            self.gamma,
            terminal=self.terminal.cpu().numpy(),
            state_names=self.state_names,
            action_names=self.action_names,
        )


def _as_mdp(mdp, like: torch.Tensor | None = None) -> TabularMDP:
    """A torch MDP on the dtype and device of ``like`` (or the MDP's own; NumPy MDPs default to float64)."""
    if isinstance(mdp, _ref.TabularMDP):
        mdp = TabularMDP(
            torch.as_tensor(mdp.transitions, dtype=torch.float64),
            torch.as_tensor(mdp.rewards, dtype=torch.float64),
            mdp.gamma,
            terminal=torch.as_tensor(mdp.terminal),
            state_names=mdp.state_names,
            action_names=mdp.action_names,
        )
    elif not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a TabularMDP (torch or NumPy), got {type(mdp).__name__}")
    if like is None:
        return mdp
    return mdp.to(like.dtype, like.device)


def _check_policy(mdp, policy):
    """(torch MDP on the policy's dtype/device, policy tensor)."""
    if policy is None:
        raise TypeError("policy must be an (S, A) array of probabilities, got None")
    like = mdp.transitions if isinstance(mdp, TabularMDP) and not torch.is_tensor(policy) else None
    policy = _as_float_tensor("policy", policy, None if like is None else like.dtype,
                              None if like is None else like.device)
    mdp = _as_mdp(mdp, like=policy)
    want = (mdp.n_states, mdp.n_actions)
    if tuple(policy.shape) != want:
        raise ValueError(f"policy must have shape (S, A) = {want}, got {tuple(policy.shape)}")
    check_probabilities("policy", policy, axis=-1, atol=POLICY_ATOL)
    return mdp, policy


def _check_values(mdp, name, v):
    """(torch MDP on the dtype/device of ``v``, v tensor)."""
    if isinstance(mdp, TabularMDP) and not torch.is_tensor(v):
        v = _as_float_tensor(name, v, mdp.dtype, mdp.device)
    else:
        v = _as_float_tensor(name, v)
    mdp = _as_mdp(mdp, like=v)
    if tuple(v.shape) != (mdp.n_states,):
        raise ValueError(f"{name} must have shape (S,) = ({mdp.n_states},), got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return mdp, v


def _policy_model(mdp, policy):
    """r_pi[s] = sum_a pi(a|s) r(s, a) and P_pi[s, s2] = sum_a pi(a|s) P(s2|s, a)."""
    r_pi = torch.sum(policy * mdp.rewards, dim=1)
    P_pi = torch.einsum("sa,sat->st", policy, mdp.transitions)
    return r_pi, P_pi


def _check_proper(mdp, policy):
    if mdp.gamma < 1.0:
        return
    support = torch.any((policy[:, :, None] > 0) & (mdp.transitions > 0), dim=1)
    reach = _reaches_terminal(support, mdp.terminal)
    if not bool(reach.all()):
        raise ValueError(
            f"policy never reaches a terminal state from state {int(torch.argmin(reach.to(torch.uint8)))}; "
            "with gamma = 1 its values are infinite or undefined (give that state an action that leads "
            "towards a terminal state)"
        )


def _stop_tolerance(tol, v):
    """``tol``, raised to a few units of rounding of v's dtype at v's scale (float32 cannot get below it)."""
    scale = max(1.0, float(v.detach().abs().max())) if v.numel() else 1.0
    return max(tol, 4.0 * torch.finfo(v.dtype).eps * scale)


def _relative_tie_tolerance(dtype):
    """1e-8 in float64 (as the NumPy reference); looser in lower precisions, where rounding is larger."""
    return {torch.float64: 1e-8, torch.float32: 1e-4}.get(dtype, 1e-2)


def _tie_tolerance(q):
    return _relative_tie_tolerance(q.dtype) * torch.clamp(q.detach().abs().max(), min=1.0)


def _zero_terminal(mdp, v):
    return torch.where(mdp.terminal, torch.zeros_like(v), v)


def _q(mdp, v):
    """r + gamma P v without the checks (inside loops whose inputs are already checked)."""
    return mdp.rewards + mdp.gamma * mdp.transitions @ v


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
    dtype=torch.float64,
    device=None,
):
    """A grid world as a torch :class:`TabularMDP` (``dtype``, ``device``) and its ``GridLayout``.

    Same grid as ``rlhf_edu.numpy.mdp.grid_world`` (which builds it; the tensors are then moved).

    >>> mdp, layout = grid_world((1, 2), terminals=[(0, 1)], step_reward=-1.0, gamma=1.0)
    >>> mdp.rewards[0]
    tensor([-1., -1., -1., -1.], dtype=torch.float64)
    """
    mdp, layout = _ref.grid_world(
        shape, walls=walls, terminals=terminals, reward_cells=reward_cells, teleports=teleports,
        step_reward=step_reward, off_grid_reward=off_grid_reward, slip=slip, gamma=gamma, start=start,
        state_names=state_names,
    )
    return _as_mdp(mdp).to(dtype, device), layout


def classic_grid_world(gamma=0.9, *, dtype=torch.float64, device=None):
    """Sutton & Barto's 5x5 grid world of example 3.5 as a torch MDP, with its layout (see the NumPy reference).

    >>> mdp, layout = classic_grid_world()
    >>> mdp.rewards[layout.state_index[0, 1]]
    tensor([10., 10., 10., 10.], dtype=torch.float64)
    """
    mdp, layout = _ref.classic_grid_world(gamma)
    return _as_mdp(mdp).to(dtype, device), layout


def two_by_two_world(step_reward=-1.0, gamma=1.0, slip=0.0, *, dtype=torch.float64, device=None):
    """The lecture notes' 2x2 world as a torch MDP, with its layout (see the NumPy reference).

    >>> mdp, _ = two_by_two_world()
    >>> policy_evaluation(mdp, torch.full((4, 4), 0.25, dtype=torch.float64)).round(decimals=6)
    tensor([-8., -6., -6.,  0.], dtype=torch.float64)
    """
    mdp, layout = _ref.two_by_two_world(step_reward, gamma, slip)
    return _as_mdp(mdp).to(dtype, device), layout


def action_values(mdp, v):
    r"""Q(s, a) = r(s, a) + gamma sum_s2 P(s2|s, a) V(s2), shape (S, A) (see the NumPy reference).

    >>> mdp, _ = two_by_two_world()
    >>> action_values(mdp, torch.tensor([-2.0, -1.0, -1.0, 0.0], dtype=torch.float64))[0]
    tensor([-3., -2., -3., -2.], dtype=torch.float64)
    """
    mdp, v = _check_values(mdp, "v", v)
    return _q(mdp, v)


def _evaluation_sweep(mdp, r_pi, P_pi, v, in_place, terminal_list):
    if not in_place:
        return _zero_terminal(mdp, r_pi + mdp.gamma * P_pi @ v)
    for s in range(mdp.n_states):
        new = torch.zeros_like(v[s]) if terminal_list[s] else r_pi[s] + mdp.gamma * P_pi[s] @ v
        v = v.clone()  # a fresh tensor per update keeps autograd's record of the old one intact
        v[s] = new
    return v


def policy_evaluation(mdp, policy, method="exact", tol=1e-10, in_place=False, max_sweeps=10_000):
    r"""V^pi of ``policy`` (S, A): ``"exact"`` (``torch.linalg.solve`` of (I - gamma P_pi) V = r_pi) or ``"iterative"``.

    See the NumPy reference. The exact solve is differentiable with respect to ``policy`` and
    ``mdp.rewards``. In float32 the iterative stopping tolerance is raised to a few units of rounding.

    >>> mdp, _ = two_by_two_world()
    >>> pi = torch.full((4, 4), 0.25, dtype=torch.float64, requires_grad=True)
    >>> v = policy_evaluation(mdp, pi)
    >>> v.detach().round(decimals=6)
    tensor([-8., -6., -6.,  0.], dtype=torch.float64)
    """
    mdp, policy = _check_policy(mdp, policy)
    check_choice("method", method, EVALUATION_METHODS)
    check_nonnegative("tol", tol)
    max_sweeps = check_integer("max_sweeps", max_sweeps, minimum=1)
    _check_proper(mdp, policy)
    r_pi, P_pi = _policy_model(mdp, policy)
    if method == "exact":
        live = torch.nonzero(~mdp.terminal).squeeze(1)
        A = torch.eye(live.numel(), dtype=policy.dtype, device=policy.device) - mdp.gamma * P_pi[live][:, live]
        solution = torch.linalg.solve(A, r_pi[live])
        return torch.zeros_like(r_pi).index_put((live,), solution)
    terminal_list = mdp.terminal.tolist() if in_place else None
    v = torch.zeros_like(r_pi)
    for _ in range(max_sweeps):
        new = _evaluation_sweep(mdp, r_pi, P_pi, v, in_place, terminal_list)
        delta = float(torch.max(torch.abs(new - v)).detach())
        v = new
        if delta <= _stop_tolerance(tol, v):
            return v
    raise RuntimeError(f"policy_evaluation did not converge to tol={tol} in max_sweeps={max_sweeps} sweeps")


def policy_evaluation_sweeps(mdp, policy, n_sweeps, in_place=False, v0=None):
    """Values after 0..n_sweeps sweeps of iterative policy evaluation, shape (n_sweeps + 1, S).

    >>> mdp, _ = two_by_two_world()
    >>> policy_evaluation_sweeps(mdp, torch.full((4, 4), 0.25, dtype=torch.float64), 1)
    tensor([[ 0.,  0.,  0.,  0.],
            [-1., -1., -1.,  0.]], dtype=torch.float64)
    """
    mdp, policy = _check_policy(mdp, policy)
    n_sweeps = check_integer("n_sweeps", n_sweeps, minimum=0)
    v = torch.zeros_like(policy[:, 0]) if v0 is None else _check_values(mdp, "v0", v0)[1].to(policy.dtype)
    r_pi, P_pi = _policy_model(mdp, policy)
    terminal_list = mdp.terminal.tolist() if in_place else None
    history = [_zero_terminal(mdp, v)]
    for _ in range(n_sweeps):
        history.append(_evaluation_sweep(mdp, r_pi, P_pi, history[-1], in_place, terminal_list))
    return torch.stack(history)


def greedy_policy(q, ties="first", atol=None):
    """The greedy policy of ``q`` (S, A) as an (S, A) tensor; ties "first" (lowest index) or "uniform".

    Default ``atol``: ``1e-8 * max(1, max|q|)`` in float64 as in the NumPy reference, ``1e-4 * ...`` in
    float32 (whose rounding alone can split a true tie).

    >>> greedy_policy(torch.tensor([[1.0, 3.0, 3.0]]), ties="uniform")
    tensor([[0.0000, 0.5000, 0.5000]])
    """
    q = _as_float_tensor("q", q)
    if q.ndim != 2 or 0 in q.shape:
        raise ValueError(f"q must have shape (S, A) with S, A >= 1, got {tuple(q.shape)}")
    if not bool(torch.isfinite(q).all()):
        raise ValueError("q contains NaN or inf")
    check_choice("ties", ties, TIE_RULES)
    atol = _tie_tolerance(q) if atol is None else check_nonnegative("atol", atol)
    q = q.detach()
    tied = q >= q.max(dim=1, keepdim=True).values - atol
    if ties == "uniform":
        return tied.to(q.dtype) / tied.sum(dim=1, keepdim=True).to(q.dtype)
    first = torch.argmax(tied.to(q.dtype), dim=1)  # argmax returns the first of equal maxima
    return torch.nn.functional.one_hot(first, q.shape[1]).to(q.dtype)


def value_iteration(mdp, tol=1e-10, max_iterations=10_000, v0=None, ties="first"):
    """``(v, policy)``: optimal values by value iteration and their greedy policy (see the NumPy reference).

    Works on ``v0``'s dtype/device when given. In float32 the stopping tolerance is raised to a few
    units of rounding.

    >>> v, pi = value_iteration(two_by_two_world()[0])
    >>> v
    tensor([-2., -1., -1.,  0.], dtype=torch.float64)
    """
    check_nonnegative("tol", tol)
    max_iterations = check_integer("max_iterations", max_iterations, minimum=1)
    if v0 is None:
        mdp = _as_mdp(mdp)
        v = torch.zeros(mdp.n_states, dtype=mdp.dtype, device=mdp.device)
    else:
        mdp, v = _check_values(mdp, "v0", v0)
    v = _zero_terminal(mdp, v)
    for _ in range(max_iterations):
        new = _zero_terminal(mdp, _q(mdp, v).max(dim=1).values)
        delta = float(torch.max(torch.abs(new - v)).detach())
        v = new
        if delta <= _stop_tolerance(tol, v):
            return v, greedy_policy(action_values(mdp, v), ties)
    raise RuntimeError(
        f"value_iteration did not converge to tol={tol} in max_iterations={max_iterations} sweeps"
        + (" (with gamma = 1 values can diverge)" if mdp.gamma == 1.0 else "")
    )


def value_iteration_sweeps(mdp, n_sweeps, v0=None):
    """Values after 0..n_sweeps sweeps of value iteration, shape (n_sweeps + 1, S) (see the NumPy reference).

    >>> value_iteration_sweeps(two_by_two_world()[0], 1)
    tensor([[ 0.,  0.,  0.,  0.],
            [-1., -1., -1.,  0.]], dtype=torch.float64)
    """
    n_sweeps = check_integer("n_sweeps", n_sweeps, minimum=0)
    if v0 is None:
        mdp = _as_mdp(mdp)
        v = torch.zeros(mdp.n_states, dtype=mdp.dtype, device=mdp.device)
    else:
        mdp, v = _check_values(mdp, "v0", v0)
    history = [_zero_terminal(mdp, v)]
    for _ in range(n_sweeps):
        history.append(_zero_terminal(mdp, _q(mdp, history[-1]).max(dim=1).values))
    return torch.stack(history)


def policy_iteration(mdp, policy=None, max_iterations=1_000, ties="first"):
    """``(v, policy)``: optimal values and a greedy optimal policy by policy iteration (see the NumPy reference).

    Works on the dtype/device of the starting ``policy`` when given (default: equiprobable random).

    >>> v, pi = policy_iteration(two_by_two_world()[0])
    >>> v.round(decimals=6)
    tensor([-2., -1., -1.,  0.], dtype=torch.float64)
    """
    max_iterations = check_integer("max_iterations", max_iterations, minimum=1)
    if policy is None:
        mdp = _as_mdp(mdp)
        policy = torch.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions, dtype=mdp.dtype, device=mdp.device)
    mdp, policy = _check_policy(mdp, policy)
    for _ in range(max_iterations):
        v = policy_evaluation(mdp, policy, "exact")
        q = action_values(mdp, v)
        if bool(torch.max(q.max(dim=1).values - v) <= _tie_tolerance(q)):
            return v, greedy_policy(q, ties)
        policy = greedy_policy(q, ties)
    raise RuntimeError(f"policy_iteration did not converge in max_iterations={max_iterations} improvements")
