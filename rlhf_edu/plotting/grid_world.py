"""Grid-world figures of chapters 3 and 4: state values as a heat map, the policy as arrows, sweep by sweep.

The layouts come from ``rlhf_edu.numpy.mdp.grid_world`` (or ``classic_grid_world``, ``two_by_two_world``);
values and policies may be NumPy arrays or torch tensors (on any device). Each function returns a
matplotlib ``Figure`` (``fig.savefig("x.png")`` for a slide).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from rlhf_edu.numpy.mdp import GridLayout, action_values, greedy_policy

__all__ = ["plot_grid_values", "plot_evaluation_sweeps"]

VALUE_LABEL = "value (expected discounted return)"


def _to_numpy(name, x):
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().double()
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from exc


def _check_layout(layout):
    if not isinstance(layout, GridLayout):
        raise TypeError(f"layout must be a GridLayout (from grid_world), got {type(layout).__name__}")
    return layout


def _check_policy(layout, policy):
    policy = _to_numpy("policy", policy)
    if policy is not None and (policy.ndim != 2 or policy.shape[0] != layout.n_states
                               or policy.shape[1] != len(layout.action_deltas)):
        raise ValueError(
            f"policy must have shape (S, A) = ({layout.n_states}, {len(layout.action_deltas)}), got {policy.shape}"
        )
    return policy


def _teleport_labels(layout):
    """Letters for teleport cells, as in Sutton & Barto's figure: A -> A', B -> B'."""
    return {cell: chr(ord("A") + i) for i, cell in enumerate(sorted(layout.teleports))}


def _draw_grid(ax, layout, v, policy, *, vmin, vmax, cmap, decimals, show_values):
    """Draw one grid on ``ax``; return the image (for a colorbar)."""
    grid = np.ma.masked_invalid(layout.to_grid(v))
    cmap = plt.get_cmap(cmap).with_extremes(bad="0.25")  # walls: dark grey
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper")
    rows, cols = layout.shape
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xticks(np.arange(-0.5, cols), minor=True)
    ax.set_yticks(np.arange(-0.5, rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    text_y = -0.22 if policy is not None else 0.0
    for s, (r, c) in enumerate(layout.cells):
        if show_values:
            ax.text(c, r + text_y, f"{v[s]:.{decimals}f}", ha="center", va="center", fontsize=9)
        if layout.terminals[r, c]:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.35", lw=1.5))
            ax.text(c, r + 0.3, "end", ha="center", va="center", fontsize=7, style="italic")
        elif policy is not None:
            top = policy[s].max()
            for a, (dr, dc) in enumerate(layout.action_deltas):
                if policy[s, a] > 1e-9 and top > 0:
                    length = 0.28 * policy[s, a] / top
                    ax.annotate("", xy=(c + dc * length, r + 0.12 + dr * length), xytext=(c, r + 0.12),
                                arrowprops=dict(arrowstyle="->", color="black", lw=1.2))
    for cell, (r, c) in ((cell, cell) for cell in layout.reward_cells):
        ax.text(c + 0.45, r - 0.45, f"{layout.reward_cells[cell]:+g}", ha="right", va="top", fontsize=7,
                color="darkblue")
    for cell, letter in _teleport_labels(layout).items():
        (target, reward) = layout.teleports[cell]
        ax.text(cell[1] - 0.45, cell[0] - 0.45, letter, ha="left", va="top", fontsize=8, weight="bold")
        ax.text(target[1] - 0.45, target[0] - 0.45, letter + "'", ha="left", va="top", fontsize=8, weight="bold")
        ax.annotate("", xy=(target[1] + 0.3, target[0]), xytext=(cell[1] + 0.3, cell[0]),
                    arrowprops=dict(arrowstyle="->", color="purple", lw=1, alpha=0.6,
                                    connectionstyle="arc3,rad=-0.3"))
        ax.text(cell[1] + 0.45, cell[0] - 0.45, f"{reward:+g}", ha="right", va="top", fontsize=7, color="purple")
    if layout.start is not None:
        ax.text(layout.start[1] - 0.45, layout.start[0] + 0.45, "start", ha="left", va="bottom", fontsize=7,
                style="italic")
    return image


def plot_grid_values(layout, v, policy=None, ax=None, title="State values and greedy policy", *,
                     cmap="RdYlGn", decimals=1, show_values=True, vmin=None, vmax=None, colorbar=True):
    """Heat map of the state values ``v`` (S,) on the grid, with the policy's actions as arrows.

    ``policy`` (S, A), e.g. ``greedy_policy(action_values(mdp, v))``: every action with probability > 0
    gets an arrow, its length proportional to the probability (ties drawn as equal arrows). Walls are dark
    grey, terminal cells hatched ("end"), teleport cells lettered A -> A' as in Sutton & Barto's figure
    3.2 with their reward, reward cells marked with theirs. ``ax=None`` makes a new figure. Returns the
    Figure. Chapters 3 and 4.
    """
    layout = _check_layout(layout)
    v = _to_numpy("v", v)
    if v.shape != (layout.n_states,):
        raise ValueError(f"v must have shape ({layout.n_states},) for this layout, got {v.shape}")
    policy = _check_policy(layout, policy)
    if ax is None:
        rows, cols = layout.shape
        fig, ax = plt.subplots(figsize=(1.1 * cols + 1.6, 1.1 * rows + 0.8), layout="constrained")
    else:
        fig = ax.figure
    image = _draw_grid(ax, layout, v, policy, vmin=vmin, vmax=vmax, cmap=cmap, decimals=decimals,
                       show_values=show_values)
    if colorbar:
        fig.colorbar(image, ax=ax, label=VALUE_LABEL, shrink=0.85)
    if title:
        ax.set_title(title)
    return fig


def plot_evaluation_sweeps(layout, history, sweeps=(0, 1, 2, 10), mdp=None, *,
                           title="Iterative policy evaluation: values after k sweeps",
                           cmap="RdYlGn", decimals=1):
    """The values after selected sweeps of an iteration, side by side on one colour scale.

    ``history`` (K, S) comes from ``policy_evaluation_sweeps`` or ``value_iteration_sweeps``; ``sweeps``
    picks rows (negative indices count from the end). With ``mdp`` given, each panel also shows the greedy
    policy of its values (ties drawn as equal arrows), as in Sutton & Barto's figure 4.1: the greedy
    policy often becomes optimal long before the values converge. Returns a Figure with one axes per
    sweep plus one for the shared colorbar. Chapters 3 and 4.
    """
    layout = _check_layout(layout)
    history = _to_numpy("history", history)
    if history.ndim != 2 or history.shape[1] != layout.n_states:
        raise ValueError(f"history must have shape (K, {layout.n_states}), got {history.shape}")
    K = history.shape[0]
    sweeps = list(sweeps)
    if not sweeps:
        raise ValueError("sweeps must name at least one sweep")
    picked = []
    for k in sweeps:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -K <= k < K:
            raise ValueError(f"sweeps must hold integers in [-{K}, {K - 1}] (history has {K} rows), got {k!r}")
        picked.append(int(k) % K)
    if mdp is not None and hasattr(mdp, "numpy") and not isinstance(getattr(mdp, "transitions", None), np.ndarray):
        mdp = mdp.numpy()  # a torch MDP
    shown = history[picked]
    vmin, vmax = float(shown.min()), float(shown.max())
    if vmin == vmax:
        vmin, vmax = vmin - 1.0, vmax + 1.0
    rows, cols = layout.shape
    fig, axes = plt.subplots(1, len(picked), figsize=(len(picked) * (0.6 * cols + 0.6) + 1.2, 0.6 * rows + 1.3),
                             squeeze=False, layout="constrained")
    image = None
    for ax, k in zip(axes[0], picked):
        policy = greedy_policy(action_values(mdp, history[k]), ties="uniform") if mdp is not None else None
        image = _draw_grid(ax, layout, history[k], policy, vmin=vmin, vmax=vmax, cmap=cmap, decimals=decimals,
                           show_values=True)
        ax.set_title(f"sweep {k}" + (" (last)" if k == K - 1 and K > 1 else ""))
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    fig.colorbar(image, ax=list(axes[0]), label=VALUE_LABEL, shrink=0.85)
    fig.suptitle(title)
    return fig
