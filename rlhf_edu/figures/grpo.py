r"""Slide figures of chapter 5 (GRPO, RLOO and the 2025 family), and the measurements behind them.

Figure functions take only keyword arguments with defaults (the chapter's widgets change them) and return a
matplotlib ``Figure``:

- :func:`group_advantages_figure` (``ch05_group_advantages``): one prompt, a group of eight sampled answers scored
  by the arithmetic task's verifiable reward, and their group-normalised advantages;
- :func:`aggregation_weights_figure` (``ch05_aggregation_weights``): the gradient weight of one token against
  the length of its completion, for sequence-mean (GRPO), token-mean (DAPO) and Dr. GRPO's constant;
- :func:`one_line_changes_figure` (``ch05_one_line_changes``): on one batch after an update, which tokens still
  get a gradient under GRPO, clip-higher, GSPO and CISPO;
- :func:`rloo_variance_figure` (``ch05_rloo_variance``): the spread of the policy-gradient estimate against the
  group size G, for no baseline, a moving-average baseline and the leave-one-out baseline;
- :func:`memory_figure` (``ch05_memory``): the memory of PPO's four models against GRPO's three for a 7B model.

The measurements are public, the chapter prints their numbers: :func:`group_example`,
:func:`aggregation_weights`, :func:`one_line_batch`, :func:`token_gradients`, :func:`rloo_bandit`,
:func:`baseline_estimates`, :func:`rl_memory`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.advantages import group_normalized_advantages, leave_one_out_advantages
from rlhf_edu.tasks.arithmetic import reward as arithmetic_reward
from rlhf_edu.torch.policy_gradient import cispo_loss, grpo_loss

__all__ = [
    "group_example",
    "group_advantages_figure",
    "aggregation_weights",
    "aggregation_weights_figure",
    "one_line_batch",
    "token_gradients",
    "ONE_LINE_VARIANTS",
    "one_line_changes_figure",
    "rloo_bandit",
    "baseline_estimates",
    "rloo_variance_figure",
    "rl_memory",
    "memory_figure",
]


# --------------------------------------------------------------------------------------------------
# The group
# --------------------------------------------------------------------------------------------------


def group_example():
    """``(prompt, completions, rewards)``: eight answers to "23+48=" scored by the arithmetic task's reward.

    Right and well formatted scores 1.1, wrong but well formatted 0.1, anything else 0 (accuracy plus a
    0.1 format bonus, DeepSeek-R1-Zero's two rule-based rewards).
    """
    prompt = "23+48="
    completions = ["71.", "61.", "71.", "71", "81.", "71.", "seven", "17."]
    return prompt, completions, arithmetic_reward(completions, [prompt] * len(completions))


@slide_figure("ch05_group_advantages")
def group_advantages_figure(std="population"):
    """The idea of GRPO: the group is its own baseline. Rewards of eight answers, their mean, their advantages."""
    prompt, completions, rewards = group_example()
    adv = group_normalized_advantages(rewards, std=std)
    x = np.arange(len(rewards))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    ax1.bar(x, rewards, color=["C2" if r > 1 else "C1" if r > 0 else "C3" for r in rewards])
    ax1.axhline(rewards.mean(), color="k", ls="--", lw=1, label=f"group mean {rewards.mean():.3f}")
    ax1.set_xticks(x, [repr(c) for c in completions], rotation=30, fontsize=8)
    ax1.set_ylabel("reward (accuracy + 0.1 format)")
    ax1.set_title(f"G = 8 answers to {prompt!r}, scored by a rule")
    ax1.legend(fontsize=8)
    ax2.bar(x, adv, color=["C2" if a > 0 else "C3" for a in adv])
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks(x, [repr(c) for c in completions], rotation=30, fontsize=8)
    ax2.set_ylabel("advantage $(r_i - \\mu) / \\sigma$")
    ax2.set_title(f"Advantages ({std} std): above the mean pushed up")
    return fig


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------


def aggregation_weights(lengths, max_length=None):
    r"""The gradient weight of every token under each aggregation, measured by autograd on ``grpo_loss``.

    A batch of ``len(lengths)`` completions of the given lengths, all with advantage 1, ratio 1 and no KL:
    :math:`-\partial L/\partial\log\pi_{i,t}` is then the weight the aggregation gives token t of completion i.
    Returns ``{aggregation: (B, T) array}`` for ``"sequence_mean"``, ``"token_mean"``, ``"dr_grpo"`` (with
    ``max_length``, default the longest length), zeros on padding.
    """
    lengths = np.asarray(lengths, dtype=int)
    width = int(max_length or lengths.max())
    mask = torch.tensor((np.arange(width)[None, :] < lengths[:, None]).astype(np.float64))
    out = {}
    for aggregation in ("sequence_mean", "token_mean", "dr_grpo"):
        logp = torch.full(mask.shape, -1.0, dtype=torch.float64, requires_grad=True)
        loss = grpo_loss(logp, logp.detach(), logp.detach(), torch.ones(len(lengths), dtype=torch.float64), mask,
                         beta=0.0, aggregation=aggregation, max_length=width)
        (-loss).backward()
        out[aggregation] = logp.grad.numpy()
    return out


_AGG_STYLE = {"sequence_mean": ("C0", "o", "sequence-mean (GRPO): $1/(G|o_i|)$"),
              "token_mean": ("C1", "s", "token-mean (DAPO): $1/\\sum_j|o_j|$"),
              "dr_grpo": ("C2", "^", "Dr. GRPO: $1/(G L_{max})$")}


@slide_figure("ch05_aggregation_weights")
def aggregation_weights_figure(lengths=(2, 4, 8, 16), max_length=16):
    """Gradient weight of one token against the length of its completion, for the three aggregations."""
    weights = aggregation_weights(lengths, max_length)
    fig, ax = plt.subplots(figsize=(6.6, 3.8), layout="constrained")
    grid = np.arange(1, max_length + 1)
    for name, w in weights.items():
        color, marker, label = _AGG_STYLE[name]
        per_token = w[:, 0]  # every token of a completion weighs the same: its first
        ax.plot(lengths, per_token, marker=marker, color=color, ls="none", ms=8, label=label)
        if name == "sequence_mean":
            ax.plot(grid, 1.0 / (len(lengths) * grid), color=color, lw=1, alpha=0.6)
        else:
            ax.axhline(per_token[0], color=color, lw=1, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(list(lengths), [str(n) for n in lengths])
    ax.set_xlabel("length of the completion $|o_i|$ (tokens)")
    ax.set_ylabel("gradient weight of one of its tokens")
    ax.set_title(f"Sequence-mean gives the tokens of long answers less weight (G = {len(lengths)})", fontsize=10)
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------------
# The one-line changes: GRPO, clip-higher, GSPO, CISPO on one batch
# --------------------------------------------------------------------------------------------------


def one_line_batch():
    r"""A batch of four completions of one prompt, five tokens each, after one update: ``(logp, logp_old, adv, mask)``.

    The token ratios :math:`\pi/\pi_{old}` are chosen to show each variant's point: completion 0 (A > 0) has a
    rare token whose probability went 0.05 -> 0.062 (ratio 1.24: clipped at 1.2, not at 1.28); completion 1
    (A > 0) moved little; completion 2 (A < 0) has a token pushed down to ratio 0.7 (clipped); completion 3
    (A < 0) is one token shorter.
    """
    p_old = np.array([[0.6, 0.05, 0.7, 0.5, 0.9],
                      [0.5, 0.4, 0.6, 0.8, 0.7],
                      [0.3, 0.6, 0.5, 0.4, 0.8],
                      [0.7, 0.5, 0.2, 0.6, 0.9]])
    ratio = np.array([[1.05, 1.24, 1.1, 1.0, 1.02],
                      [1.02, 1.05, 0.98, 1.01, 1.03],
                      [0.95, 0.7, 1.1, 0.9, 1.0],
                      [1.1, 0.85, 1.3, 0.95, 1.0]])
    adv = np.array([1.0, 0.5, -0.5, -1.0])
    mask = np.ones_like(p_old)
    mask[3, 4] = 0.0
    return np.log(p_old * ratio), np.log(p_old), adv, mask


#: The variants of :func:`token_gradients`: (label, the one changed line of the loss call).
ONE_LINE_VARIANTS = {
    "GRPO": "grpo_loss(logp, logp_old, logp_ref, A, mask, clip_eps=0.2)",
    "DAPO clip-higher": "grpo_loss(..., clip_eps=0.2, clip_eps_high=0.28)",
    "GSPO": "grpo_loss(..., importance_sampling=\"sequence\")",
    "CISPO": "cispo_loss(logp, logp_old, A, mask, ratio_max=5.0)",
}


def token_gradients(variant, batch=None, aggregation="token_mean"):
    """``(loss, -dL/dlogp)``: the loss and the per-token gradient (ascent direction) of one variant on ``batch``.

    ``variant`` is a key of :data:`ONE_LINE_VARIANTS`; ``batch`` defaults to :func:`one_line_batch`; no KL term
    (beta 0), the same ``aggregation`` for all, so the only difference is the one changed line.
    """
    logp_np, logp_old_np, adv_np, mask_np = one_line_batch() if batch is None else batch
    logp = torch.tensor(logp_np, requires_grad=True)
    old, adv, mask = torch.tensor(logp_old_np), torch.tensor(adv_np), torch.tensor(mask_np)
    if variant == "GRPO":
        loss = grpo_loss(logp, old, old, adv, mask, clip_eps=0.2, beta=0.0, aggregation=aggregation)
    elif variant == "DAPO clip-higher":
        loss = grpo_loss(logp, old, old, adv, mask, clip_eps=0.2, clip_eps_high=0.28, beta=0.0, aggregation=aggregation)
    elif variant == "GSPO":
        loss = grpo_loss(logp, old, old, adv, mask, beta=0.0, aggregation=aggregation, importance_sampling="sequence")
    elif variant == "CISPO":
        loss = cispo_loss(logp, old, adv, mask, ratio_max=5.0, aggregation=aggregation)
    else:
        raise ValueError(f"variant must be one of {list(ONE_LINE_VARIANTS)}, got {variant!r}")
    (-loss).backward()
    return loss.item(), logp.grad.numpy()


@slide_figure("ch05_one_line_changes")
def one_line_changes_figure(aggregation="token_mean"):
    """Which tokens still push, on one batch after an update: the per-token gradient of four one-line variants."""
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.0), layout="constrained", sharey=True)
    _, _, adv, mask = one_line_batch()
    grads = {v: token_gradients(v, aggregation=aggregation)[1] for v in ONE_LINE_VARIANTS}
    limit = max(np.abs(g).max() for g in grads.values())
    for ax, (name, g) in zip(axes, grads.items()):
        shown = np.where(mask > 0, g, np.nan)
        im = ax.imshow(shown, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for (i, t), value in np.ndenumerate(g):
            if mask[i, t] > 0:
                ax.text(t, i, "0" if value == 0 else f"{value * 100:.1f}", ha="center", va="center", fontsize=7,
                        color="k" if value != 0 else "0.5")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("token t")
        ax.set_xticks(range(mask.shape[1]))
    axes[0].set_yticks(range(len(adv)), [f"o{i}, A = {a:+g}" for i, a in enumerate(adv)])
    axes[0].set_ylabel("completion")
    fig.colorbar(im, ax=axes, label="$-\\partial L / \\partial \\log\\pi_t$ (x100)", shrink=0.9)
    fig.suptitle("One changed line, one batch: 0 marks a token that no longer pushes", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------------
# RLOO: unbiasedness and variance on a bandit with several prompts
# --------------------------------------------------------------------------------------------------


def rloo_bandit():
    r"""``(pi, rewards)``: three prompts (an easy, a medium and a hard one), four answers each.

    ``pi[x]`` is the policy's distribution over the answers of prompt x, ``rewards[x]`` their rewards (1: right,
    0: wrong). The prompts' values :math:`V(x) = \sum_a \pi(a|x) r(x, a)` differ (0.95, 0.5, 0.05), which is
    what a single moving-average baseline over all prompts cannot follow and a per-prompt baseline can.
    """
    pi = np.array([[0.4, 0.3, 0.25, 0.05], [0.25, 0.25, 0.25, 0.25], [0.05, 0.35, 0.3, 0.3]])
    rewards = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    return pi, rewards


def baseline_estimates(group_size, n_batches=20000, seed=0, ema=0.9):
    r"""Policy-gradient estimates of :math:`\nabla_\theta \mathbb E_x\mathbb E_{a\sim\pi}[r]` on :func:`rloo_bandit`.

    The policy is a softmax over a table of logits :math:`\theta_{x,a}` (exact gradient
    :math:`\frac1P\pi(a|x)(r(x,a) - V(x))`). Each batch draws one prompt uniformly and ``group_size`` answers, and
    estimates the gradient (a vector over the whole table, one row per prompt) with

    - ``"no baseline"``: :math:`\frac1G\sum_i r_i\,\nabla\log\pi(a_i|x)`;
    - ``"moving average"``: :math:`\frac1G\sum_i (r_i - b)\nabla\log\pi(a_i|x)`, b an exponential moving average
      (weight ``ema``) of the previous batches' mean rewards, over all prompts (the notes' REINFORCE baseline);
    - ``"leave-one-out"``: RLOO, :math:`\frac1G\sum_i (r_i - \frac1{G-1}\sum_{j\ne i} r_j)\nabla\log\pi(a_i|x)`;
    - ``"group mean"``: the group's own mean, sample i included (GRPO without the std): biased, it equals
      :math:`\frac{G-1}{G}` times the leave-one-out estimate.

    The gradient of the whole table is multiplied by P (the number of prompts) so that the estimates target
    :math:`\pi(a|x)(r(x,a) - V(x))`. Returns ``{"exact": (P, K), name: (n_batches, P, K)}``.
    """
    pi, rewards = rloo_bandit()
    n_prompts, k = pi.shape
    rng = np.random.default_rng(seed)
    x = rng.integers(n_prompts, size=n_batches)
    cdf = np.cumsum(pi, axis=1)
    u = rng.random((n_batches, group_size))
    a = (u[:, :, None] > cdf[x][:, None, :]).sum(-1).clip(max=k - 1)  # inverse-CDF draws, (n_batches, G)
    r = rewards[x[:, None], a]
    grad_log = np.eye(k)[a] - pi[x][:, None, :]  # d log pi(a|x) / d theta_x, (n_batches, G, K)
    batch_means = r.mean(axis=1)
    b = np.zeros(n_batches)
    for i in range(1, n_batches):  # each batch's baseline uses only the batches before it
        b[i] = ema * b[i - 1] + (1 - ema) * batch_means[i - 1]
    weights = {
        "no baseline": r,
        "moving average": r - b[:, None],
        "group mean": r - r.mean(axis=1, keepdims=True),
    }
    if group_size >= 2:
        weights["leave-one-out"] = leave_one_out_advantages(r)
    out = {"exact": pi * (rewards - (pi * rewards).sum(axis=1, keepdims=True))}
    for name, w in weights.items():
        g_x = (w[:, :, None] * grad_log).mean(axis=1)  # (n_batches, K): the row of the drawn prompt
        full = np.zeros((n_batches, n_prompts, k))
        full[np.arange(n_batches), x] = g_x * n_prompts
        out[name] = full
    return out


_BASELINE_STYLE = {"no baseline": "C3", "moving average": "C1", "leave-one-out": "C2", "group mean": "C0"}


@slide_figure("ch05_rloo_variance")
def rloo_variance_figure(group_size=4, group_sizes=(2, 3, 4, 6, 8, 12, 16), n_batches=4000):
    """Variance of the gradient estimate against G (left, the chosen ``group_size`` marked) and, at that G, the mean
    of the estimates against the exact gradient (right: the group mean with the sample included lies below the
    diagonal by (G-1)/G). Uses :func:`baseline_estimates`."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    names = ("no baseline", "moving average", "leave-one-out")
    curves = {n: [] for n in names}
    for g in group_sizes:
        est = baseline_estimates(g, n_batches=n_batches)
        for n in names:
            curves[n].append(est[n].reshape(n_batches, -1).var(axis=0).sum())
    for n in names:
        ax1.plot(group_sizes, curves[n], "o-", color=_BASELINE_STYLE[n], label=n)
    ax1.axvline(group_size, color="0.5", ls="--", lw=1)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xticks(list(group_sizes), [str(g) for g in group_sizes])
    ax1.set_xlabel("group size G (samples per prompt)")
    ax1.set_ylabel("total variance of the estimate")
    ax1.set_title("Variance of one batch's gradient estimate", fontsize=10)
    ax1.legend(fontsize=8)
    est = baseline_estimates(group_size, n_batches=5 * n_batches)
    exact = est["exact"].ravel()
    line = np.array([exact.min(), exact.max()]) * 1.1
    ax2.plot(line, line, color="k", lw=1, label="unbiased: mean = exact")
    for n, marker in zip(("moving average", "leave-one-out", "group mean"), ("s", "o", "^")):
        if n in est:
            ax2.plot(exact, est[n].mean(axis=0).ravel(), marker, color=_BASELINE_STYLE[n], ms=6, mfc="none", label=n)
    ax2.set_xlabel("exact gradient $\\pi(a|x)(r - V(x))$, each logit")
    ax2.set_ylabel("mean of the estimates")
    ax2.set_title(f"G = {group_size}: the group mean (sample included) shrinks it by (G-1)/G", fontsize=10)
    ax2.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------------------------------
# Memory: PPO's four models against GRPO's three
# --------------------------------------------------------------------------------------------------


def rl_memory(n_params=7e9, precision="mixed", reward_model=True):
    r"""Bytes of model state (no activations, no KV cache) of PPO and GRPO for a policy of ``n_params`` parameters.

    A model that is trained holds its weights, their gradients and Adam's two moments; a frozen one only its
    weights. ``precision="mixed"`` (bf16 weights and gradients, an fp32 master copy and fp32 Adam moments, the
    usual recipe; Rajbhandari et al., 2020, "ZeRO": 2 + 2 + 4 + 4 + 4 = 16 bytes per trained parameter, 2 per
    frozen one) or ``"fp32"`` (4 + 4 + 4 + 4 = 16 and 4). PPO trains the actor and the critic (the same size as
    the policy) and keeps the reward model and the reference frozen; GRPO drops the critic (and, with a rule as
    the reward, ``reward_model=False``, the reward model too). Returns ``{"ppo": {part: bytes}, "grpo": {...}}``
    with parts "weights", "gradients", "master weights", "Adam moments" and one entry per frozen model.

    >>> m = rl_memory(7e9)
    >>> round(sum(m["ppo"].values()) / 1e9), round(sum(m["grpo"].values()) / 1e9)
    (252, 140)
    """
    if precision not in ("mixed", "fp32"):
        raise ValueError(f"precision must be 'mixed' or 'fp32', got {precision!r}")
    w, g, master, adam, frozen = (2, 2, 4, 8, 2) if precision == "mixed" else (4, 4, 0, 8, 4)

    def trained(n_models):
        parts = {"weights": w * n_params * n_models, "gradients": g * n_params * n_models}
        if master:
            parts["master weights"] = master * n_params * n_models
        parts["Adam moments"] = adam * n_params * n_models
        return parts

    ppo = trained(2)  # actor and critic
    ppo.update({"reward model (frozen)": frozen * n_params, "reference (frozen)": frozen * n_params})
    grpo = trained(1)
    if reward_model:
        grpo["reward model (frozen)"] = frozen * n_params
    grpo["reference (frozen)"] = frozen * n_params
    return {"ppo": ppo, "grpo": grpo}


@slide_figure("ch05_memory")
def memory_figure(n_params=7e9, precision="mixed"):
    """Stacked memory of model state for PPO and GRPO (and GRPO with a rule as reward) for one model size."""
    rows = {"PPO": rl_memory(n_params, precision)["ppo"], "GRPO": rl_memory(n_params, precision)["grpo"],
            "GRPO, rule reward": rl_memory(n_params, precision, reward_model=False)["grpo"]}
    parts = ["weights", "gradients", "master weights", "Adam moments", "reward model (frozen)", "reference (frozen)"]
    fig, ax = plt.subplots(figsize=(7.2, 3.4), layout="constrained")
    left = np.zeros(len(rows))
    for j, part in enumerate(parts):
        widths = np.array([row.get(part, 0.0) for row in rows.values()]) / 1e9
        if widths.any():
            ax.barh(list(rows), widths, left=left, color=f"C{j}", label=part)
            left += widths
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:.0f} GB", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(f"GB of model state, {n_params / 1e9:g}B parameters, {precision} precision")
    ax.set_xlim(0, left.max() * 1.18)
    ax.set_title("Dropping the critic removes a trained model, not half of everything", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig
