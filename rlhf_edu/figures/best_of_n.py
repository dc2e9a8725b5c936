r"""Slide figures of chapter 8 (ReST and best-of-N), and the exact measurements behind them.

The toy of the chapter is one prompt, ``"review: the film was"``, with eight answers that an SFT model might
write, their reference probabilities, their gold reward (the review task's ``gold_reward``, which has TIES:
" good." and " fun." both score 0.7311) and the score of an imagined reward model, the proxy, which has no
ties and which learned the sentiment but not the defects: it ranks the repetition " great great." first.

Measurements (exact, no sampling):

- :func:`toy_answers`: the toy;
- :func:`best_of_n_win_rate`: :math:`P(r(y_{BoN}) > r(y))` and :math:`P(r(y_{BoN}) = r(y))` for a fresh
  reference sample y, whose "win + half the ties" is at most :math:`n/(n+1)`;
- :func:`filtered_distribution`: the target of a ReST Improve step (rejection sampling),
  :math:`\pi_{ref}(y \mid R(y) > \tau)`, and the kept fraction q (its KL to the reference is :math:`-\log q`);
- :func:`small_model_runs`: the chapter's tiny-model runs (the same calls and settings as its section 9), for
  the two figures of that section when they are built on their own (about a minute on one core).

Figures (keyword arguments with defaults; each returns a matplotlib ``Figure``):

- :func:`best_of_n_distribution_figure` (``ch08_best_of_n_distribution``): the reference and the best-of-n
  distribution on the toy, for one n (the chapter's widget);
- :func:`kl_bound_figure` (``ch08_kl_bound``): the exact KL of best-of-n against n and the bound
  :math:`\log n - (n-1)/n`;
- :func:`win_rate_figure` (``ch08_win_rate``): the win rate against a reference sample and :math:`n/(n+1)`;
- :func:`proxy_toy_figure` (``ch08_proxy_vs_gold_toy``): best-of-n on the proxy: the proxy climbs, the gold
  reward rises then falls;
- :func:`rest_filter_figure` (``ch08_rest_filter``): what each rising threshold of ReST's Improve steps keeps;
- :func:`best_of_n_tiny_model_figure` (``ch08_best_of_n_tiny_model``): best-of-n on the tiny language model,
  proxy and gold reward against n and against KL;
- :func:`rest_vs_rl_figure` (``ch08_rest_vs_rl``): ReST against GRPO at equal numbers of sampled completions.
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.divergences import kl_divergence
from rlhf_edu.numpy.sampling import best_of_n_kl_bound, best_of_n_probs
from rlhf_edu.validation import as_float_array, check_integer, check_probabilities

__all__ = [
    "TOY_PROMPT",
    "toy_answers",
    "best_of_n_win_rate",
    "filtered_distribution",
    "small_model_runs",
    "best_of_n_distribution_figure",
    "kl_bound_figure",
    "win_rate_figure",
    "proxy_toy_figure",
    "rest_filter_figure",
    "best_of_n_tiny_model_figure",
    "rest_vs_rl_figure",
]

TOY_PROMPT = "review: the film was"
# worst to best by gold reward; the reference probabilities are those of a middling SFT model
_TOY = (
    # completion, pi_ref, proxy score (an imagined reward model: sentiment yes, defects no)
    (" grreat.", 0.15, 1.0),
    (" dull.", 0.20, -0.9),
    (" great great.", 0.05, 2.0),
    (" long.", 0.20, 0.1),
    (" great but dull.", 0.10, 0.4),
    (" good.", 0.15, 1.3),
    (" fun.", 0.10, 1.2),
    (" great fun.", 0.05, 1.8),
)


def toy_answers():
    """The chapter's toy: ``(completions, ref_probs, gold, proxy)`` for the prompt :data:`TOY_PROMPT`.

    ``gold`` is ``rlhf_edu.tasks.gold_reward`` of the completions (levels 0, 0.2689, 0.3655, 0.5, 0.5, 0.7311,
    0.7311, 0.8808: two ties); ``proxy`` is an imagined reward model's score, all distinct, highest for the
    repetition " great great." (gold 0.3655: one defect).

    >>> completions, ref, gold, proxy = toy_answers()
    >>> len(completions), float(ref.sum()), gold.round(4).tolist()[4:7]
    (8, 1.0, [0.5, 0.7311, 0.7311])
    """
    from rlhf_edu.tasks import gold_reward

    completions = [c for c, _, _ in _TOY]
    ref = np.array([p for _, p, _ in _TOY])
    proxy = np.array([s for _, _, s in _TOY])
    return completions, ref, gold_reward(completions), proxy


def best_of_n_win_rate(ref_probs, rewards, n):
    r"""``(win, tie)``: how often the best of n beats, or ties with, one fresh sample of the reference.

    .. math:: \text{win} = \sum_y \pi_{BoN}(y)\,F(r(y)^-), \qquad \text{tie} = \sum_y \pi_{BoN}(y)\,m(r(y)),

    with :math:`F(t^-) = P_{ref}(r < t)` and :math:`m(t) = P_{ref}(r = t)`. For a continuous reward
    ``win = n / (n + 1)`` and ``tie = 0`` (the best of n + 1 i.i.d. draws is one of the first n with probability
    n / (n + 1)); with atoms, ``win + tie / 2`` is below it (chapter 8, section 3.3).

    >>> win, tie = best_of_n_win_rate([0.5, 0.5], [0.0, 1.0], 1)   # a coin against a coin
    >>> float(win), float(tie)
    (0.25, 0.5)
    """
    ref = as_float_array("ref_probs", ref_probs)
    rewards = as_float_array("rewards", rewards)
    check_probabilities("ref_probs", ref)
    bon = best_of_n_probs(ref, rewards, n)
    below = (rewards[None, :] < rewards[:, None]) @ ref  # F(r(y)-) for every y
    equal = (rewards[None, :] == rewards[:, None]) @ ref  # m(r(y))
    return float(bon @ below), float(bon @ equal)


def filtered_distribution(ref_probs, rewards, tau, strict=True):
    r"""``(probs, kept)``: :math:`\pi_{ref}(y \mid R(y) > \tau)` and :math:`q = P_{ref}(R > \tau)`.

    The distribution an Improve step of ReST (or rejection-sampling fine-tuning) imitates when it fine-tunes
    on the samples that pass the filter :math:`F = \mathbb 1[R > \tau]` (``strict=False``: :math:`R \ge \tau`,
    as ``rlhf_edu.train.train_rest`` keeps), in the limit of many samples and a model that fits them:
    the minimiser of :math:`-\mathbb E_{y\sim\pi_{ref}}[F(y)\log\pi(y)]` over distributions. Its KL to the
    reference is :math:`-\log q`. Raises ``ValueError`` when nothing passes.

    >>> probs, kept = filtered_distribution([0.5, 0.3, 0.2], [0.0, 1.0, 2.0], 0.5)
    >>> probs.round(4).tolist(), kept
    ([0.0, 0.6, 0.4], 0.5)
    """
    ref = as_float_array("ref_probs", ref_probs)
    rewards = as_float_array("rewards", rewards)
    check_probabilities("ref_probs", ref)
    keep = rewards > tau if strict else rewards >= tau
    kept = float(ref[keep].sum())
    if kept <= 0:
        raise ValueError(f"no answer with positive probability passes the threshold {tau}")
    return np.where(keep, ref, 0.0) / kept, kept


def _fine_answers(k=1000):
    """k equally likely answers with distinct rewards: the discrete case closest to a continuous reward."""
    return np.full(k, 1.0 / k), np.arange(k, dtype=float)


def _n_grid(max_n):
    max_n = check_integer("max_n", max_n, minimum=2)
    return np.unique(np.round(np.geomspace(1, max_n, 40)).astype(int))


def _short(text, width=14):
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"


@slide_figure("ch08_best_of_n_distribution")
def best_of_n_distribution_figure(n=4, ranking="gold"):
    """The toy's reference distribution and its best-of-n distribution, answers ordered by the ranking reward.

    ``ranking`` is ``"gold"`` (two ties: tied answers share their level's mass in proportion to the reference)
    or ``"proxy"`` (no ties). The title gives the expected gold reward, the exact KL and the bound.
    """
    n = check_integer("n", n, minimum=1)
    completions, ref, gold, proxy = toy_answers()
    if ranking not in ("gold", "proxy"):
        raise ValueError(f"ranking must be 'gold' or 'proxy', got {ranking!r}")
    rewards = gold if ranking == "gold" else proxy
    order = np.argsort(rewards, kind="stable")
    bon = best_of_n_probs(ref, rewards, n)
    fig, ax = plt.subplots(figsize=(9.0, 3.8), layout="constrained")
    x = np.arange(len(ref))
    ax.bar(x - 0.2, ref[order], width=0.4, color="0.6", label="reference $\\pi_{ref}$ (n = 1)")
    ax.bar(x + 0.2, bon[order], width=0.4, color="C0", label=f"best of n = {n}")
    labels = [f"{_short(completions[i])}\n{rewards[i]:.2f}" for i in order]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel(f"answer, and its {ranking} reward (ranked worst to best)")
    ax.set_ylabel("probability")
    kl = kl_divergence(bon, ref)
    ax.set_title(f"best of {n} by the {ranking} reward: E[gold] {ref @ gold:.3f} -> {bon @ gold:.3f}, "
                 f"KL {kl:.3f} nats (bound log n - (n-1)/n = {best_of_n_kl_bound(n):.3f})", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return fig


@slide_figure("ch08_kl_bound")
def kl_bound_figure(max_n=256):
    """Exact KL(best-of-n || reference) against n: the toy ranked by gold (ties) and by the proxy (no ties),
    1000 equally likely answers with distinct rewards, and the bound log n - (n-1)/n."""
    ns = _n_grid(max_n)
    _, ref, gold, proxy = toy_answers()
    fine_ref, fine_r = _fine_answers()
    curves = {
        "1000 equally likely answers, distinct rewards": (fine_ref, fine_r, "C2"),
        "toy, proxy ranking (8 answers, no ties)": (ref, proxy, "C1"),
        "toy, gold ranking (8 answers, two ties)": (ref, gold, "C0"),
    }
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    ax.plot(ns, [best_of_n_kl_bound(int(n)) for n in ns], "k--", lw=2, label="bound $\\log n - (n-1)/n$")
    for label, (p, r, color) in curves.items():
        ax.plot(ns, [kl_divergence(best_of_n_probs(p, r, int(n)), p) for n in ns], "o-", ms=3, color=color,
                label=label)
    ax.axhline(-np.log(ref[-1]), color="C0", ls=":", lw=1,
               label="toy's ceiling $-\\log \\pi_{ref}$(best answer)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (samples per prompt)")
    ax.set_ylabel("KL(best-of-n || reference), nats")
    ax.set_title("The bound is the continuous limit: atoms and ties keep the exact KL below it", fontsize=10)
    ax.legend(fontsize=8)
    return fig


@slide_figure("ch08_win_rate")
def win_rate_figure(max_n=64):
    """Win rate of best-of-n against one reference sample (ties counted half) against n, and n/(n+1)."""
    ns = _n_grid(max_n)
    _, ref, gold, proxy = toy_answers()
    fine_ref, fine_r = _fine_answers()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    ax.plot(ns, ns / (ns + 1), "k--", lw=2, label="$n/(n+1)$ (continuous reward)")
    for label, (p, r, color) in {"1000 equally likely answers": (fine_ref, fine_r, "C2"),
                                 "toy, proxy ranking": (ref, proxy, "C1"),
                                 "toy, gold ranking (ties)": (ref, gold, "C0")}.items():
        rates = [best_of_n_win_rate(p, r, int(n)) for n in ns]
        ax.plot(ns, [w + t / 2 for w, t in rates], "o-", ms=3, color=color, label=f"{label}: win + tie / 2")
        if label.startswith("toy, gold"):
            ax.plot(ns, [w for w, _ in rates], "s:", ms=3, color=color, label=f"{label}: strict wins only")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (samples per prompt)")
    ax.set_ylabel("P(best-of-n beats a reference sample)")
    ax.set_ylim(0.2, 1.0)
    ax.set_title("Win rate of best-of-n against the reference", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


@slide_figure("ch08_proxy_vs_gold_toy")
def proxy_toy_figure(max_n=256):
    """Best-of-n on the toy ranked by the proxy: proxy and gold reward against the exact KL, with best-of-n
    ranked by the gold reward for comparison."""
    ns = _n_grid(max_n)
    _, ref, gold, proxy = toy_answers()
    by_proxy = [best_of_n_probs(ref, proxy, int(n)) for n in ns]
    by_gold = [best_of_n_probs(ref, gold, int(n)) for n in ns]
    kl_p = [kl_divergence(p, ref) for p in by_proxy]
    kl_g = [kl_divergence(p, ref) for p in by_gold]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.0, 3.8), layout="constrained")
    ax1.plot(kl_p, [p @ proxy for p in by_proxy], "o-", ms=3, color="C1")
    ax1.set_xlabel("KL(best-of-n || reference), nats")
    ax1.set_ylabel("proxy score (reward-model units)")
    ax1.set_title("what the selection sees: the proxy climbs", fontsize=10)
    ax2.plot(kl_p, [p @ gold for p in by_proxy], "o-", ms=3, color="C1", label="best of n by the proxy")
    ax2.plot(kl_g, [p @ gold for p in by_gold], "s-", ms=3, color="C0", label="best of n by the gold reward")
    ax2.axhline(ref @ gold, color="0.5", ls=":", label="reference (n = 1)")
    ax2.set_xlabel("KL(best-of-n || reference), nats")
    ax2.set_ylabel("expected gold reward (0 to 1)")
    ax2.set_title("what we wanted: the gold reward rises, then falls", fontsize=10)
    ax2.legend(fontsize=8, loc="center right")
    return fig


@slide_figure("ch08_rest_filter")
def rest_filter_figure(thresholds=(0.45, 0.6, 0.8)):
    """The toy's reference and what ReST's Improve steps imitate under rising thresholds of the gold reward:
    :math:`\\pi_{ref}(y \\mid R > \\tau_i)`, with the kept fraction q and the KL :math:`-\\log q`. The default
    thresholds start above the toy's mean gold reward 0.449 (ReST's :math:`\\tau_1 > V`)."""
    completions, ref, gold, _ = toy_answers()
    fig, ax = plt.subplots(figsize=(9.0, 3.8), layout="constrained")
    x = np.arange(len(ref))
    width = 0.8 / (len(thresholds) + 1)
    ax.bar(x - 0.4 + width / 2, ref, width=width, color="0.6", label="Grow: samples of $\\pi_{ref}$")
    for i, tau in enumerate(thresholds):
        probs, kept = filtered_distribution(ref, gold, tau)
        ax.bar(x - 0.4 + (i + 1.5) * width, probs, width=width, color=f"C{i}",
               label=f"Improve {i + 1}: R > {tau:g} keeps q = {kept:.2f}, KL = -log q = {-np.log(kept):.2f}")
    ax.set_xticks(x, [f"{_short(c)}\n{g:.2f}" for c, g in zip(completions, gold)], fontsize=8)
    ax.set_xlabel("answer, and its gold reward")
    ax.set_ylabel("probability")
    ax.set_title("One Grow, several Improve steps: each imitates a better slice of the same samples", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return fig


# --------------------------------------------------------------------------------------------------
# The tiny language model (chapter 8, section 9)
# --------------------------------------------------------------------------------------------------

BEST_OF_N_NS = (1, 2, 4, 8, 16, 32)


@functools.lru_cache(maxsize=1)
def small_model_runs(seed=0):
    """The chapter's section 9 on its own: SFT model, reward model (the proxy), best-of-n pool, ReST and GRPO.

    Returns a dict with ``curve`` (``best_of_n_curve`` ranked by the proxy), ``gold_curve`` (the same pool
    ranked by the gold reward), ``rest`` and ``grpo`` (their histories) and ``samples_per_grow``. The calls and
    settings are the chapter's; about a minute on one CPU core (cached for the session).
    """
    import torch

    from rlhf_edu.lm import RewardModel
    from rlhf_edu.tasks import gold_reward
    from rlhf_edu.train import (
        best_of_n_curve,
        best_of_n_from_pool,
        frozen_copy,
        sentiment_sft_policy,
        train_grpo,
        train_rest,
    )
    from rlhf_edu.train.reward_model import train_reward_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sft, tok, task, _ = sentiment_sft_policy(steps=500, batch_size=16, lr=5e-3, d_model=64, n_layer=1, seed=seed,
                                                 device="cpu", progress=False)
        sft = frozen_copy(sft)
        rm = RewardModel.from_pretrained_lm(sft, seed=seed)
        for p in rm.parameters():
            p.requires_grad_(True)
        pairs = task.preference_pairs(1024, split="train", seed=seed, min_gap=0.1)
        rm, _ = train_reward_model(rm, tok, pairs, epochs=1, lr=1e-3, seed=seed, device="cpu", progress=False)
        rm.eval()
        curve = best_of_n_curve(sft, tok, task.prompts(32, split="test"), rm, ns=BEST_OF_N_NS, samples_per_prompt=64,
                                gold_reward_fn=gold_reward, max_new_tokens=24, seed=seed, device="cpu")
        pool = curve["samples"]
        gold_curve = best_of_n_from_pool(pool.all_gold_rewards, BEST_OF_N_NS, gold_rewards=pool.all_gold_rewards)

        def trainable():
            policy = frozen_copy(sft)
            for p in policy.parameters():
                p.requires_grad_(True)
            return policy.train()

        train_prompts, eval_prompts = task.all_prompts("train"), task.prompts(64, split="test", seed=5)
        common = dict(max_new_tokens=24, ref_model=sft, gold_reward_fn=gold_reward, eval_prompts=eval_prompts,
                      eval_samples=2, seed=seed, device="cpu", progress=False)
        _, rest = train_rest(trainable(), tok, train_prompts, gold_reward, grow_steps=3, improve_steps=3,
                             samples_per_prompt=16, thresholds=(0.5, 0.7, 0.85), epochs=2, batch_size=16, lr=1e-3,
                             **common)
        _, grpo = train_grpo(trainable(), tok, train_prompts, gold_reward, steps=36, eval_every=12, **common)
    finally:
        torch.set_num_threads(threads)
    return dict(curve=curve, gold_curve=gold_curve, rest=rest, grpo=grpo, samples_per_grow=16 * len(train_prompts))


@slide_figure("ch08_best_of_n_tiny_model")
def best_of_n_tiny_model_figure(curve=None, gold_curve=None):
    """Best-of-n on the tiny model: the proxy (a reward model) against n; the gold reward against the KL.

    ``curve``: ``rlhf_edu.train.best_of_n_curve`` ranked by the proxy, with gold rewards; ``gold_curve``:
    ``best_of_n_from_pool`` of the same pool ranked by the gold reward (default: :func:`small_model_runs`).
    The KL is the pool's plug-in estimate (``best_of_n_from_pool``); the bound is marked on the same axis.
    """
    if curve is None or gold_curve is None:
        runs = small_model_runs()
        curve, gold_curve = runs["curve"], runs["gold_curve"]
    ns = np.asarray(curve["n"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.9), layout="constrained")
    ax1.plot(ns, curve["reward"], "o-", color="C1", label="proxy score of the best of n by the proxy")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("n (samples per prompt)")
    ax1.set_ylabel("proxy score (reward-model logits)")
    ax1.set_title("what the selection sees", fontsize=10)
    ax1.legend(fontsize=8, loc="lower right")
    ax2.plot(curve["kl"], curve["gold_reward"], "o-", color="C1", label="best of n by the proxy")
    ax2.plot(gold_curve["kl"], gold_curve["reward"], "s-", color="C0", label="best of n by the gold reward")
    for n, x in zip(ns, curve["kl_bound"]):
        ax2.axvline(x, color="0.85", lw=0.8, zorder=0)
        ax2.annotate(f"n={n}", (x, 1.0), xycoords=("data", "axes fraction"), fontsize=7, ha="center",
                     va="bottom", color="0.4")
    ax2.set_xlabel("KL(best-of-n || SFT model), plug-in estimate from the pool, nats (grey: the bound)")
    ax2.set_ylabel("gold reward (0 to 1)")
    ax2.set_title("what we wanted", fontsize=10, pad=14)
    ax2.legend(fontsize=8, loc="upper left")
    return fig


def _eval_points(history):
    keep = np.isfinite(history["eval_gold_reward"])
    return history["step"][keep].astype(int), history["eval_gold_reward"][keep], history["eval_kl"][keep]


@slide_figure("ch08_rest_vs_rl")
def rest_vs_rl_figure(rest_history=None, rl_history=None, samples_per_grow=None, rl_label="GRPO"):
    """Held-out gold reward of ReST (after each Improve step) and of an online RL run, against the number of
    sampled completions and against the exact KL to the SFT model (default: :func:`small_model_runs`)."""
    if rest_history is None or rl_history is None or samples_per_grow is None:
        runs = small_model_runs()
        rest_history, rl_history, samples_per_grow = runs["rest"], runs["grpo"], runs["samples_per_grow"]
    improve_steps = int(rest_history.config["improve_steps"])
    step, gold, kl = _eval_points(rest_history)
    # the evaluation of row k comes before Improve step k; the Grow of a Grow step comes before its first Improve
    grows_done = np.where(step % improve_steps == 0, step // improve_steps, step // improve_steps + 1)
    rest_samples = grows_done * samples_per_grow
    rl_step, rl_gold, rl_kl = _eval_points(rl_history)
    per_step = int(rl_history.config["group_size"]) * int(rl_history.config["prompts_per_step"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.9), layout="constrained")
    for ax, xs, rl_xs in ((ax1, rest_samples, rl_step * per_step), (ax2, kl, rl_kl)):
        ax.plot(xs, gold, "o-", color="C2", label="ReST (one point per Improve step)")
        ax.plot(rl_xs, rl_gold, "s-", color="C3", label=rl_label)
        ax.set_ylabel("held-out gold reward (0 to 1)")
        ax.grid(alpha=0.3)
    ax1.set_xlabel("completions sampled for training")
    ax1.set_title("per sampled completion, ReST gets further ...", fontsize=10)
    ax2.set_xlabel("KL(policy || SFT model), nats per completion")
    ax2.set_title("... by moving further from the SFT model", fontsize=10)
    ax1.legend(fontsize=8, loc="lower right")
    return fig
