"""Slide figures of chapter 3 (the grid-world MDP and dynamic programming).

Each function takes only keyword arguments with defaults (the chapter's widgets change them; the slide uses
the defaults) and returns a matplotlib ``Figure``:

- :func:`two_by_two_figure` (``ch03_two_by_two_world``): the lecture notes' 2x2 world, random vs optimal;
- :func:`discounting_figure` (``ch03_discounting``): the weight :math:`\\gamma^k` of a reward k steps ahead;
- :func:`evaluation_sweeps_figure` (``ch03_evaluation_sweeps``): iterative policy evaluation on Sutton &
  Barto's 4x4 world (their figure 4.1), with the greedy policy of each sweep;
- :func:`classic_grid_figure` (``ch03_classic_grid_world``): Sutton & Barto's 5x5 world, random policy
  vs optimal values and policy (their figures 3.2 and 3.5);
- :func:`convergence_figure` (``ch03_convergence``): how fast evaluation, value iteration and policy
  iteration reach their fixed points;
- :func:`slippery_world_figure` (``ch03_slippery_world``): a variant of Russell & Norvig's 4x3 world whose
  moves slip, the optimal policy keeping away from the pit.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.mdp import (
    action_values,
    classic_grid_world,
    greedy_policy,
    grid_world,
    policy_evaluation,
    policy_evaluation_sweeps,
    two_by_two_world,
    value_iteration,
    value_iteration_sweeps,
)
from rlhf_edu.plotting.grid_world import plot_evaluation_sweeps, plot_grid_values

__all__ = [
    "two_by_two_figure",
    "discounting_figure",
    "sutton_four_by_four",
    "evaluation_sweeps_figure",
    "classic_grid_figure",
    "convergence_figure",
    "four_by_three_world",
    "slippery_world_figure",
]


def _uniform(mdp):
    return np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)


@slide_figure("ch03_two_by_two_world")
def two_by_two_figure(step_reward=-1.0):
    """The notes' 2x2 world: values of the equiprobable random policy (left) and the optimal ones (right).

    Every move costs ``step_reward`` (-1) and gamma = 1, so a value is minus the expected steps to the end.
    """
    mdp, layout = two_by_two_world(step_reward=step_reward)
    v_random = policy_evaluation(mdp, _uniform(mdp))
    v_star, _ = value_iteration(mdp)
    pi_star = greedy_policy(action_values(mdp, v_star), ties="uniform")
    lo, hi = min(v_random.min(), v_star.min()), max(v_random.max(), v_star.max())
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.3), layout="constrained")
    plot_grid_values(layout, v_random, _uniform(mdp), ax=axes[0], vmin=lo, vmax=hi, colorbar=False,
                     title="random policy: $V^\\pi$")
    plot_grid_values(layout, v_star, pi_star, ax=axes[1], vmin=lo, vmax=hi,
                     title="optimal policy: $V^*$")
    fig.suptitle(f"The 2x2 world of the notes (reward {step_reward:g} per move, $\\gamma$ = 1)")
    return fig


@slide_figure("ch03_discounting")
def discounting_figure(gamma=0.9, horizon=40):
    """Weight :math:`\\gamma^k` of a reward k steps ahead, for ``gamma`` and three reference discounts.

    The dashed line marks the effective horizon :math:`1/(1-\\gamma)`: a constant reward of 1 per step
    is worth :math:`\\sum_k \\gamma^k = 1/(1-\\gamma)`.
    """
    k = np.arange(horizon + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
    for ref, style in zip((0.5, 0.9, 0.99), (":", "--", "-.")):
        ax.plot(k, ref ** k, color="0.6", lw=1, ls=style, label=f"$\\gamma$ = {ref:g}")
    ax.stem(k, gamma ** k, basefmt=" ", linefmt="C0-", markerfmt="C0o", label=f"$\\gamma$ = {gamma:g} (chosen)")
    ax.legend(fontsize=8, loc="upper right")
    if gamma < 1:
        h = 1.0 / (1.0 - gamma)
        if h <= horizon:
            ax.axvline(h, color="C3", ls="--", lw=1)
            ax.text(h, 0.6, f" 1/(1-$\\gamma$) = {h:.3g} steps", color="C3", va="top", fontsize=9)
    ax.set_xlabel("k, steps into the future")
    ax.set_ylabel("weight $\\gamma^k$ of reward $r_{t+k}$ in $G_t$")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Discounting with $\\gamma$ = {gamma:g}: far rewards count less")
    return fig


def sutton_four_by_four():
    """Sutton & Barto's example 4.1: a 4x4 grid, terminal corners, reward -1 per move, gamma = 1."""
    return grid_world((4, 4), terminals=[(0, 0), (3, 3)], step_reward=-1.0, off_grid_reward=-1.0, gamma=1.0)


@slide_figure("ch03_evaluation_sweeps")
def evaluation_sweeps_figure(sweeps=(0, 1, 2, 3, 10, 200), in_place=False):
    """Iterative policy evaluation of the random policy on the 4x4 world, after k sweeps (Sutton & Barto fig. 4.1).

    Arrows: the greedy policy of each sweep's values. It is optimal after 3 sweeps, long before the
    values converge.
    """
    mdp, layout = sutton_four_by_four()
    history = policy_evaluation_sweeps(mdp, _uniform(mdp), max(sweeps), in_place=in_place)
    return plot_evaluation_sweeps(layout, history, sweeps=sweeps, mdp=mdp,
                                  title="Evaluating the random policy on the 4x4 world "
                                  "(arrows: greedy policy of the current values)")


@slide_figure("ch03_classic_grid_world")
def classic_grid_figure(gamma=0.9):
    """Sutton & Barto's 5x5 world: the random policy's values (fig. 3.2) and the optimal values and policy (fig. 3.5)."""
    mdp, layout = classic_grid_world(gamma)
    v_random = policy_evaluation(mdp, _uniform(mdp))
    v_star, _ = value_iteration(mdp)
    pi_star = greedy_policy(action_values(mdp, v_star), ties="uniform")
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.4), layout="constrained")
    plot_grid_values(layout, v_random, None, ax=axes[0], title="random policy: $V^\\pi$")
    plot_grid_values(layout, v_star, pi_star, ax=axes[1], title="optimal: $V^*$ and $\\pi^*$")
    fig.suptitle(f"The classic grid world ($\\gamma$ = {gamma:g}): A -> A' pays +10, B -> B' pays +5, "
                 "off the grid -1")
    return fig


@slide_figure("ch03_convergence")
def convergence_figure(gamma=0.9, n_sweeps=60):
    """Max-norm error of each sweep on the classic grid: evaluation (synchronous, in place), value iteration,
    policy iteration; the dotted and dashed lines are the contraction bounds :math:`\\gamma^k \\|V_0 - V\\|_\\infty` of
    evaluation (:math:`V = V^\\pi`) and of value iteration (:math:`V = V^*`), each from its own initial error."""
    mdp, _ = classic_grid_world(gamma)
    pi = _uniform(mdp)
    v_pi = policy_evaluation(mdp, pi)
    v_star, _ = value_iteration(mdp)
    k = np.arange(n_sweeps + 1)
    err = lambda hist, target: np.abs(hist - target).max(axis=1)  # noqa: E731
    sync = err(policy_evaluation_sweeps(mdp, pi, n_sweeps), v_pi)
    gauss = err(policy_evaluation_sweeps(mdp, pi, n_sweeps, in_place=True), v_pi)
    vi = err(value_iteration_sweeps(mdp, n_sweeps), v_star)
    # policy iteration: the error of V^{pi_k} after k improvements (each one a full evaluation)
    pi_errors, policy = [], pi
    for _ in range(20):
        v = policy_evaluation(mdp, policy)
        pi_errors.append(np.abs(v - v_star).max())
        if pi_errors[-1] < 1e-9:
            break
        policy = greedy_policy(action_values(mdp, v))
    fig, ax = plt.subplots(figsize=(6.8, 3.8), layout="constrained")
    floor = 1e-12
    ax.semilogy(k, np.maximum(sync, floor), label="policy evaluation (synchronous)")
    ax.semilogy(k, np.maximum(gauss, floor), label="policy evaluation (in place)")
    ax.semilogy(k, np.maximum(vi, floor), color="C2", lw=4, alpha=0.45, label="value iteration (under its bound)")
    ax.semilogy(np.arange(len(pi_errors)), np.maximum(pi_errors, floor), "o-", color="C3",
                label="policy iteration (x = improvements)")
    # the contraction bound of each method starts from that method's own initial error: ||V_0 - V^pi|| for
    # evaluation, ||V_0 - V*|| for value iteration (larger here, so value iteration's curve sits above the first)
    ax.semilogy(k, sync[0] * gamma ** k, color="C0", ls=":", lw=1.2,
                label="bound for evaluation: $\\gamma^k \\|V_0 - V^\\pi\\|_\\infty$")
    # value iteration from V_0 = 0 sits exactly on its bound: draw the bound on top, thin and dark
    ax.semilogy(k, vi[0] * gamma ** k, color="k", ls="--", lw=1.2, zorder=5,
                label="bound for value iteration: $\\gamma^k \\|V_0 - V^*\\|_\\infty$")
    ax.set_xlabel("sweep k (each state backed up k times)")
    ax.set_ylabel("$\\max_s |V_k(s) - V(s)|$ (return units)")
    ax.set_title(f"Dynamic programming converges like $\\gamma^k$ ($\\gamma$ = {gamma:g}, classic grid)")
    ax.legend(fontsize=8)
    return fig


def four_by_three_world(slip=0.2, step_reward=-0.04, gamma=1.0):
    """A variant of Russell & Norvig's 4x3 world: a wall at (1, 1), +1 at the top right, -1 just below it.

    Both coloured cells end the episode (the reward is paid on entering them). With probability ``slip``
    a move goes in one of the three other directions instead (uniformly; Russell & Norvig slip only
    sideways). Returns ``(mdp, layout)``.
    """
    return grid_world((3, 4), walls=[(1, 1)], terminals=[(0, 3), (1, 3)],
                      reward_cells={(0, 3): 1.0, (1, 3): -1.0}, step_reward=step_reward,
                      off_grid_reward=step_reward, slip=slip, gamma=gamma, start=(2, 0))


@slide_figure("ch03_slippery_world")
def slippery_world_figure(slip=0.2, step_reward=-0.04):
    """Optimal values and policy of the 4x3 world for one slip probability: the Markov transitions P at work."""
    mdp, layout = four_by_three_world(slip=slip, step_reward=step_reward)
    v_star, _ = value_iteration(mdp)
    pi_star = greedy_policy(action_values(mdp, v_star), ties="uniform")
    fig = plot_grid_values(layout, v_star, pi_star, decimals=2, vmin=-1.0, vmax=1.0,
                           title=f"4x3 world, slip = {slip:g}, reward {step_reward:g} per move: $V^*$ and $\\pi^*$")
    return fig
