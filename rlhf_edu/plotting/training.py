r"""Training-run figures: metric curves of one or several runs, and gold reward against KL.

``plot_history`` draws the columns of ``rlhf_edu.train.History`` objects, one panel per metric, several runs
overlaid (to compare PPO, GRPO, DPO ... on one figure; chapters 4 to 8). ``plot_reward_vs_kl`` draws the
gold reward against the KL to the reference as training goes: the reward-overoptimisation picture of Gao,
Schulman and Hilton (2022), "Scaling Laws for Reward Model Overoptimization", where the gold reward first
rises with KL and then falls while the proxy keeps rising.

Rows of a history may lack a metric (evaluation columns exist every k steps only); those NaN entries are
skipped, so sparse columns are drawn as points joined by lines. Each function returns a matplotlib
``Figure`` (``fig.savefig("x.png")`` for a slide).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.validation import check_choice, check_in_range

__all__ = ["plot_history", "plot_reward_vs_kl", "METRIC_TITLES"]

#: Panel titles (with units) of the metrics the trainers log; other keys are titled by their name.
METRIC_TITLES = {
    "loss": "loss",
    "policy_loss": "policy loss",
    "value_loss": "value loss (squared reward units)",
    "reward": "reward (training score)",
    "reward_std": "reward std within a batch",
    "gold_reward": "gold reward",
    "kl": "KL to reference (nats / sequence)",
    "kl_coef": "KL coefficient beta",
    "entropy": "entropy (nats / token)",
    "clip_fraction": "clip fraction (share of tokens)",
    "approx_kl": "approx. KL old -> new (nats / token)",
    "value_error": "critic squared error",
    "explained_variance": "critic explained variance",
    "length": "completion length (tokens)",
    "margin": "implicit reward margin",
    "accuracy": "preference accuracy",
    "eval_reward": "eval reward (training score)",
    "eval_gold_reward": "eval gold reward",
    "eval_kl": "eval KL to reference (nats / sequence)",
    "eval_entropy": "eval entropy (nats / sequence)",
    "eval_length": "eval completion length (tokens)",
}
X_AXES = ("step", "seconds")
_X_LABELS = {"step": "training step", "seconds": "wall-clock time (s)"}


def _runs(history_or_list, labels):
    """``[(label, history)]`` from a History, a list of them, or a dict ``{label: history}``."""
    if isinstance(history_or_list, dict):
        pairs = list(history_or_list.items())
    elif isinstance(history_or_list, (list, tuple)):
        pairs = [(getattr(h, "name", f"run {i}"), h) for i, h in enumerate(history_or_list)]
    else:
        pairs = [(getattr(history_or_list, "name", "run"), history_or_list)]
    if not pairs:
        raise ValueError("history_or_list is empty: give at least one History")
    for i, (_, h) in enumerate(pairs):
        if not (hasattr(h, "keys") and hasattr(h, "rows") and hasattr(h, "__getitem__")):
            raise TypeError(f"history {i} must be a rlhf_edu.train.History, got {type(h).__name__}")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(pairs):
            raise ValueError(f"labels has {len(labels)} entries for {len(pairs)} histories")
        pairs = [(label, h) for label, (_, h) in zip(labels, pairs)]
    return pairs


def _column(history, key):
    return history[key] if key in history else np.full(len(history), np.nan)


def _x_values(history, x):
    if x in history:
        return _column(history, x)
    if x == "step":  # a history without a step column: its row index
        return np.arange(len(history), dtype=float)
    raise ValueError(f"x={x!r} was never logged by history {history.name!r}")


def _ema(y, weight):
    """TensorBoard-style exponential moving average with bias correction (so the start is not pulled to 0)."""
    out, running, norm = np.empty_like(y), 0.0, 0.0
    for i, v in enumerate(y):
        running = weight * running + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = running / norm
    return out


def _axes_grid(n, axes, ax):
    if ax is not None and axes is not None:
        raise ValueError("give ax or axes, not both")
    if ax is not None:
        axes = [ax]
    if axes is not None:
        axes = list(np.ravel(axes))
        if len(axes) < n:
            raise ValueError(f"axes has {len(axes)} axes for {n} metrics")
        return axes[0].figure, axes[:n]
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    grid = list(grid.ravel())
    for extra in grid[n:]:
        extra.set_visible(False)
    return fig, grid[:n]


def plot_history(history_or_list, keys=("reward", "gold_reward", "kl"), smooth: float = 0.0, *, x: str = "step",
                 ax=None, axes=None, labels=None):
    r"""One panel per metric in ``keys``, each run of ``history_or_list`` a line; returns the ``Figure``.

    Args:
        history_or_list: a ``History``, a list of them (labelled by ``history.name``) or a dict
            ``{label: history}``.
        keys: the columns to draw (``METRIC_TITLES`` gives the titles and units of the usual ones). A key
            logged by none of the runs raises ``ValueError`` (a typo); a run without it, or a column that
            is all NaN, is skipped (a panel with no data says so).
        smooth: exponential-moving-average weight in [0, 1) (TensorBoard's slider; 0: raw curves). With
            ``smooth > 0`` the raw curve stays in the background, faint.
        x: ``"step"`` (the ``step`` column, or the row index) or ``"seconds"`` (wall-clock time).
        ax, axes: draw into these (one per key) instead of a new figure.
        labels: legend labels, one per run (default: the histories' names).

    NaN entries (rows without the metric, such as evaluation columns between evaluations) are dropped,
    so sparse columns are drawn as points joined by lines. Used by every training chapter (4 to 8).

    >>> from rlhf_edu.train import History
    >>> h = History("ppo"); h.log(step=0, reward=0.1, kl=0.0); h.log(step=1, reward=0.3, kl=0.2)
    >>> fig = plot_history(h, keys=("reward", "kl"))
    >>> [a.get_title() for a in fig.axes]
    ['reward (training score)', 'KL to reference (nats / sequence)']
    """
    runs = _runs(history_or_list, labels)
    if isinstance(keys, str):
        keys = (keys,)
    keys = list(keys)
    if not keys:
        raise ValueError("keys is empty: name at least one metric to plot")
    check_in_range("smooth", smooth, 0.0, 1.0, high_open=True)
    check_choice("x", x, X_AXES)
    for key in keys:
        if not any(key in h for _, h in runs):
            logged = sorted({k for _, h in runs for k in h.keys()})
            raise ValueError(f"keys: {key!r} was logged by none of the histories; logged: {logged}")
    fig, panels = _axes_grid(len(keys), axes, ax)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for panel, key in zip(panels, keys):
        drawn = 0
        for i, (label, h) in enumerate(runs):
            xs, ys = _x_values(h, x), _column(h, key)
            keep = np.isfinite(xs) & np.isfinite(ys)
            if not keep.any():
                continue
            xs, ys = xs[keep], ys[keep]
            color = colors[i % len(colors)]
            sparse = keep.sum() < 0.5 * len(keep)  # e.g. evaluation columns: show the points
            marker = "o" if sparse or len(xs) == 1 else None
            if smooth > 0 and len(ys) > 1 and not sparse:  # evaluation points are averages already
                panel.plot(xs, ys, color=color, alpha=0.25, linewidth=1)
                panel.plot(xs, _ema(ys, smooth), color=color, label=label, marker=marker, markersize=3)
            else:
                panel.plot(xs, ys, color=color, label=label, marker=marker, markersize=3)
            drawn += 1
        panel.set_title(METRIC_TITLES.get(key, key))
        panel.set_xlabel(_X_LABELS[x])
        panel.set_ylabel(key)
        if drawn == 0:
            panel.text(0.5, 0.5, "no values logged", ha="center", va="center", transform=panel.transAxes,
                       color="gray")
        elif len(runs) > 1 or labels is not None:
            panel.legend(fontsize="small")
        panel.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _first_logged(history, candidates):
    for key in candidates:
        if key in history and np.isfinite(history[key]).any():
            return key
    return None


def plot_reward_vs_kl(histories, *, reward_key=None, kl_key=None, proxy_key=None, sqrt_kl: bool = False,
                      ax=None, labels=None):
    r"""Gold reward against KL to the reference, one line per run in training order; returns the ``Figure``.

    Each run is drawn as its (KL, gold reward) points in step order, the first point (the starting policy)
    marked with a square and the last with a star: the overoptimisation picture of Gao et al. (2022), in
    which the gold reward rises with the KL budget and then falls. With ``proxy_key`` (e.g.
    ``"eval_reward"``, the learned reward model's score) the proxy is drawn dashed in the same colour: it
    keeps rising where the gold falls. ``sqrt_kl=True`` puts :math:`d = \sqrt{\mathrm{KL}}` on the x axis,
    Gao et al.'s distance, in which their gold curves are simple functional forms.

    Args:
        histories: a ``History``, a list of them or a dict ``{label: history}`` (e.g. one run per beta).
        reward_key, kl_key: the columns; default the evaluation ones (``eval_gold_reward``, ``eval_kl``:
            exact KL on held-out prompts) when a run logged them, else ``gold_reward`` and ``kl``.
        proxy_key: a proxy-reward column drawn dashed (default none).
        sqrt_kl: x axis :math:`\sqrt{\mathrm{KL}}` instead of KL.
        ax: draw into this axes; labels: legend labels, one per run.

    Rows where either value is NaN are skipped; a run with no finite pair is left out of the plot.
    Chapter 8 (reward overoptimisation) and the method comparison of chapter 4.

    >>> from rlhf_edu.train import History
    >>> h = History("ppo"); h.log(step=0, gold_reward=0.4, kl=0.0); h.log(step=1, gold_reward=0.6, kl=1.0)
    >>> plot_reward_vs_kl(h).axes[0].get_xlabel()
    'KL(policy || reference) (nats / sequence)'
    """
    runs = _runs(histories, labels)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.0))
    else:
        fig = ax.figure
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    drawn = 0
    for i, (label, h) in enumerate(runs):
        rk = reward_key or _first_logged(h, ("eval_gold_reward", "gold_reward"))
        kk = kl_key or _first_logged(h, ("eval_kl", "kl"))
        if rk is None or kk is None:
            continue
        for key, name in ((rk, "reward_key"), (kk, "kl_key")):
            if key not in h:
                raise ValueError(f"{name}: {key!r} was never logged by history {label!r}; logged: {h.keys()}")
        kl, gold = h[kk], h[rk]
        keep = np.isfinite(kl) & np.isfinite(gold)
        if not keep.any():
            continue
        kl, gold = kl[keep], gold[keep]
        xs = np.sqrt(np.clip(kl, 0.0, None)) if sqrt_kl else kl
        color = colors[i % len(colors)]
        ax.plot(xs, gold, color=color, marker="o", markersize=3, label=label)
        ax.plot(xs[:1], gold[:1], color=color, marker="s", markersize=7, linestyle="none")
        ax.plot(xs[-1:], gold[-1:], color=color, marker="*", markersize=11, linestyle="none")
        if proxy_key is not None:
            if proxy_key not in h:
                raise ValueError(f"proxy_key: {proxy_key!r} was never logged by history {label!r}")
            proxy = h[proxy_key][keep]
            ok = np.isfinite(proxy)
            ax.plot(xs[ok], proxy[ok], color=color, linestyle="--", alpha=0.8, label=f"{label} (proxy)")
        drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "no (KL, reward) pairs logged", ha="center", va="center", transform=ax.transAxes,
                color="gray")
    else:
        ax.plot([], [], color="gray", marker="s", linestyle="none", label="start")
        ax.plot([], [], color="gray", marker="*", markersize=10, linestyle="none", label="end")
        ax.legend(fontsize="small")
    ax.set_xlabel("sqrt KL(policy || reference) (sqrt nats)" if sqrt_kl
                  else "KL(policy || reference) (nats / sequence)")
    ax.set_ylabel("gold reward")
    ax.set_title("gold reward vs KL to the reference")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
