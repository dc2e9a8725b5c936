r"""Slide figures of chapter 9 (reward overoptimisation), and the measurements behind them.

- :func:`goodhart_toy` and :func:`goodhart_toy_figure` (``ch09_goodhart_toy``): best-of-n on a proxy
  = gold + error, computed exactly; with light-tailed (Gaussian) errors the gold reward keeps rising, with
  heavy-tailed errors it rises, then falls;
- :func:`gold_forms_figure` (``ch09_gold_forms``): Gao et al.'s two functional forms and where the
  best-of-n form peaks;
- :func:`gold_proxy_figure` (``ch09_gold_vs_proxy``): the chapter's measured gold and proxy reward against
  :math:`d = \sqrt{\mathrm{KL}}`, best-of-n and RL, with the fitted forms over the data.

``ch09_gold_vs_proxy`` draws the curves the chapter's notebook measures; called without them it runs the
chapter's whole sweep (:func:`overoptimization_sweep`, about a minute on a laptop CPU).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.divergences import kl_divergence
from rlhf_edu.numpy.overoptimization import best_of_n_gold, fit_gold_curve, rl_gold
from rlhf_edu.numpy.sampling import best_of_n_kl_bound, best_of_n_probs

__all__ = [
    "goodhart_toy",
    "goodhart_toy_figure",
    "gold_forms_figure",
    "gold_proxy_figure",
    "sample_pool",
    "gold_labelled_pairs",
    "train_proxy",
    "score_pool",
    "best_of_n_gold_curve",
    "rl_gold_curve",
    "overoptimization_sweep",
    "SFT_SETTINGS",
    "SWEEP",
]

#: The n of the toy's best-of-n curve: 1, 2, 4, ..., 4096.
TOY_NS = tuple(2**k for k in range(13))


def goodhart_toy(errors="gaussian", n_answers=4000, ns=TOY_NS, seed=0, dof=3.0):
    r"""Best-of-n against a proxy that is the gold reward plus an error, computed exactly; a dict of curves.

    ``n_answers`` equally likely answers (the reference policy) have gold rewards :math:`g \sim N(0, 1)` and proxy
    rewards :math:`r = g + e`, with errors of variance 1: ``"gaussian"`` :math:`e \sim N(0, 1)`, or ``"heavy"``
    :math:`e = t_\nu \sqrt{(\nu - 2)/\nu}` (Student's t with :math:`\nu` = ``dof`` > 2 degrees of freedom, 3 by
    default: the same variance, much heavier tails; the larger :math:`\nu`, the closer to Gaussian). The draws
    depend on ``seed`` only (the same gold for every ``errors`` and ``dof``).
    For each n the best of n draws ranked by the proxy has the exact distribution
    ``rlhf_edu.numpy.best_of_n_probs`` (chapter 8), so its mean gold, mean proxy and KL to the reference need
    no sampling. Returns ``{"n", "kl", "kl_bound", "d", "gold", "proxy"}`` (arrays over ``ns``; ``d`` is
    :math:`\sqrt{\mathrm{KL}}` of the exact KL).

    500 answers with distinct proxy rewards: best-of-16's exact KL is just below the bound log 16 - 15/16:

    >>> toy = goodhart_toy("heavy", n_answers=500, ns=(1, 16), seed=0)
    >>> toy["kl"].round(4).tolist(), toy["kl_bound"].round(4).tolist(), bool(toy["gold"][1] > toy["gold"][0])
    ([0.0, 1.835], [0.0, 1.8351], True)
    """
    if errors not in ("gaussian", "heavy"):
        raise ValueError(f"errors must be 'gaussian' or 'heavy', got {errors!r}")
    if not dof > 2:
        raise ValueError(f"dof must be > 2 (a finite variance), got {dof}")
    rng = np.random.default_rng(seed)
    gold = rng.normal(size=n_answers)
    if errors == "gaussian":
        error = rng.normal(size=n_answers)
    else:
        # a Student t draw as a normal over the root of a chi-square/dof: the same numbers for every dof's normal
        z, chi2 = rng.normal(size=n_answers), rng.chisquare(dof, size=n_answers)
        error = z / np.sqrt(chi2 / dof) * np.sqrt((dof - 2.0) / dof)
    proxy = gold + error
    ref = np.full(n_answers, 1.0 / n_answers)
    rows = []
    for n in ns:
        w = best_of_n_probs(ref, proxy, n)
        rows.append((max(0.0, kl_divergence(w, ref)), w @ gold, w @ proxy))
    kl, g, r = (np.array(col) for col in zip(*rows))
    return {"n": np.array(ns), "kl": kl, "kl_bound": np.array([best_of_n_kl_bound(n) for n in ns]),
            "d": np.sqrt(kl), "gold": g, "proxy": r}


@slide_figure("ch09_goodhart_toy")
def goodhart_toy_figure(n_answers=4000, seed=0):
    """Best-of-n on the toy (:func:`goodhart_toy`): proxy and gold against d, light- and heavy-tailed errors."""
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8), layout="constrained", sharey=True)
    toys = [goodhart_toy(errors, n_answers=n_answers, seed=seed) for errors in ("gaussian", "heavy")]
    top = 1.1 * max(float(np.max(toy["proxy"])) for toy in toys)  # both panels share a scale that shows every point
    for ax, toy, title in zip(axes, toys,
                              ("Gaussian errors: gold keeps rising, slower", "heavy-tailed errors: gold rises, then falls")):
        ax.plot(toy["d"], toy["proxy"], "o-", color="C0", ms=4, label="proxy reward (what best-of-n maximises)")
        ax.plot(toy["d"], toy["gold"], "s-", color="C3", ms=4, label="gold reward (what we wanted)")
        for n, d, p in zip(toy["n"], toy["d"], toy["proxy"]):
            if n in (4, 64, 1024):
                ax.annotate(f"n = {n}", (d, p), textcoords="offset points", xytext=(-28, 6), fontsize=8)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel(r"$d = \sqrt{\mathrm{KL}(\pi_{bon} \| \pi_{ref})}$ (nats$^{1/2}$)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-1.0, top)
    axes[0].set_ylabel("mean reward of the kept answer (gold units)")
    axes[0].legend(fontsize=8, loc="upper left")
    return fig


@slide_figure("ch09_gold_forms")
def gold_forms_figure(alpha_bon=0.4, beta_bon=0.1, alpha_rl=0.4, beta_rl=0.2):
    r"""Gao et al.'s forms :math:`d(\alpha - \beta d)` and :math:`d(\alpha - \beta\log d)` over :math:`d \in [0, 6]`."""
    d = np.linspace(0.0, 6.0, 301)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    ax.plot(d, best_of_n_gold(d, alpha_bon, beta_bon), color="C0",
            label=rf"best-of-n: $d(\alpha - \beta d)$, $\alpha$ = {alpha_bon:g}, $\beta$ = {beta_bon:g}")
    ax.plot(d, rl_gold(d, alpha_rl, beta_rl), color="C1",
            label=rf"RL: $d(\alpha - \beta \log d)$, $\alpha$ = {alpha_rl:g}, $\beta$ = {beta_rl:g}")
    d_star = alpha_bon / (2 * beta_bon)
    if 0 < d_star <= 6:
        ax.plot([d_star], [best_of_n_gold(d_star, alpha_bon, beta_bon)], "o", color="C0")
        ax.annotate(r"peak $d^* = \alpha / 2\beta$", (d_star, best_of_n_gold(d_star, alpha_bon, beta_bon)),
                    textcoords="offset points", xytext=(8, 6), fontsize=8)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel(r"$d = \sqrt{\mathrm{KL}(\pi \| \pi_{init})}$ (nats$^{1/2}$)")
    ax.set_ylabel("gold reward gained over the initial policy")
    ax.set_title("Gao et al. (2022): gold reward against distance", fontsize=10)
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------------
# The chapter's measurements on the tiny model: pools of samples, proxies, best-of-n and RL curves
# --------------------------------------------------------------------------------------------------


def sample_pool(policy, tokenizer, prompts, samples_per_prompt, *, max_new_tokens=40, seed=0):
    """``samples_per_prompt`` completions of ``policy`` for each prompt, in one batch, with their gold rewards.

    Returns ``{"prompts": (P,) list, "completions": (P, M) object array, "gold": (P, M)}``: the pool that the
    proxies' preference pairs, best-of-n and the ensembles' standardisation all reuse.
    """
    import torch

    from rlhf_edu.lm import generate
    from rlhf_edu.tasks import gold_reward

    prompts = list(prompts)
    rollout = generate(policy, tokenizer, prompts, max_new_tokens, num_samples=samples_per_prompt,
                       generator=torch.Generator().manual_seed(seed))
    completions = np.array(rollout.completions, dtype=object).reshape(len(prompts), samples_per_prompt)
    gold = gold_reward(list(completions.ravel())).reshape(completions.shape)
    return {"prompts": prompts, "completions": completions, "gold": gold}


def gold_labelled_pairs(task, pool, n_pairs, *, min_gap=0.05, noise=0.0, beta=10.0, offset=0, seed=0):
    r"""Preference pairs from ``pool``, labelled by the task's simulated annotator on the gold reward (Gao et al.'s set-up).

    Samples 2i and 2i + 1 of one prompt form a pair; pairs whose gold rewards differ by less than ``min_gap`` are
    dropped (an annotator who sees no difference); the rest are shuffled once (a fixed order, seed 0) and pairs
    ``offset`` to ``offset + n_pairs`` are labelled by ``task.label_pairs`` (Bradley-Terry on the gold reward with
    rationality ``beta``, 10 by default, ``float("inf")`` for the gold's own order; then flipped with probability
    ``noise``). So proxies built with growing ``n_pairs`` see nested
    data sets, and ``offset`` gives disjoint ones. Raises ``ValueError`` if the pool has too few usable pairs.
    """
    comps, gold = pool["completions"], pool["gold"]
    first, second = comps[:, 0::2].ravel(), comps[:, 1::2].ravel()
    g1, g2 = gold[:, 0::2].ravel(), gold[:, 1::2].ravel()
    prompts = np.repeat(np.array(pool["prompts"], dtype=object), comps.shape[1] // 2)
    usable = np.random.default_rng(0).permutation(np.flatnonzero(np.abs(g1 - g2) >= min_gap))
    if offset + n_pairs > usable.size:
        raise ValueError(f"the pool has {usable.size} pairs whose gold differs by >= {min_gap}; asked for pairs "
                         f"{offset} to {offset + n_pairs}: draw more samples per prompt")
    take = usable[offset:offset + n_pairs]
    return task.label_pairs(list(prompts[take]), list(first[take]), list(second[take]), beta=beta, noise=noise,
                            seed=seed)


def train_proxy(sft_model, tokenizer, pairs, *, epochs=2, lr=1e-3, seed=0):
    """A proxy reward model: ``RewardModel.from_pretrained_lm(sft_model)`` trained on ``pairs`` (Bradley-Terry)."""
    from rlhf_edu.lm import RewardModel
    from rlhf_edu.train import train_reward_model

    rm = RewardModel.from_pretrained_lm(sft_model, seed=seed)
    for p in rm.parameters():
        p.requires_grad_(True)
    rm, _ = train_reward_model(rm, tokenizer, pairs, epochs=epochs, lr=lr, seed=seed, device="cpu", progress=False)
    return rm


def score_pool(reward_fn, pool):
    """``(P, M)`` scores of every completion of ``pool`` by ``reward_fn(completions, prompts)``."""
    comps = pool["completions"]
    prompts = [p for p in pool["prompts"] for _ in range(comps.shape[1])]
    return np.asarray(reward_fn(list(comps.ravel()), prompts), dtype=float).reshape(comps.shape)


def best_of_n_gold_curve(proxy_scores, gold, ns):
    r"""Best-of-n from one pool: mean proxy and gold of the kept sample for each n, against the analytic KL.

    ``proxy_scores``, ``gold``: ``(P, M)``. Uses ``rlhf_edu.train.best_of_n_from_pool`` (the exact distribution of
    the best of n draws from the pool) and reports :math:`d = \sqrt{\log n - (n-1)/n}`, the analytic KL that Gao et
    al. use, beside the plug-in KL of the pool. Returns ``{"n", "d", "kl_bound", "kl_pool", "gold", "proxy"}``.
    """
    from rlhf_edu.train import best_of_n_from_pool

    est = best_of_n_from_pool(proxy_scores, ns, gold_rewards=gold)
    return {"n": est["n"], "d": np.sqrt(est["kl_bound"]), "kl_bound": est["kl_bound"], "kl_pool": est["kl"],
            "gold": est["gold_reward"], "proxy": est["reward"]}


def rl_gold_curve(sft_model, tokenizer, prompts, reward, eval_prompts, *, beta=0.01, lr=4e-3, steps=15,
                  eval_every=3, prompts_per_step=8, group_size=8, max_new_tokens=40, seed=0):
    r"""GRPO from ``sft_model`` against ``reward``; gold, proxy and exact KL measured along the run.

    One run gives a whole curve: every ``eval_every`` steps (and after the last) ``train_grpo`` samples one
    completion for each of ``eval_prompts`` with a fixed seed and logs the proxy reward, the gold reward and the
    exact KL to the SFT model. Returns ``(policy, curve)`` with ``curve`` =
    ``{"step", "d", "kl", "gold", "proxy", "length", "entropy", "history"}`` (:math:`d = \sqrt{\mathrm{KL}}`).
    """
    from rlhf_edu.tasks import gold_reward
    from rlhf_edu.train import frozen_copy, train_grpo

    policy = frozen_copy(sft_model)
    for p in policy.parameters():
        p.requires_grad_(True)
    policy, hist = train_grpo(policy, tokenizer, prompts, reward, ref_model=sft_model, lr=lr, beta=beta, steps=steps,
                              group_size=group_size, prompts_per_step=prompts_per_step, max_new_tokens=max_new_tokens,
                              gold_reward_fn=gold_reward, eval_prompts=eval_prompts, eval_every=eval_every,
                              eval_samples=1, seed=seed, device="cpu", progress=False)
    ok = np.isfinite(hist["eval_gold_reward"])
    kl = np.clip(hist["eval_kl"][ok], 0.0, None)
    curve = {"step": hist["step"][ok].astype(int), "d": np.sqrt(kl), "kl": kl, "gold": hist["eval_gold_reward"][ok],
             "proxy": hist["eval_reward"][ok], "length": hist["eval_length"][ok], "entropy": hist["eval_entropy"][ok],
             "history": hist}
    return policy, curve


def _fitted_line(ax, d_max, fit, color):
    d = np.linspace(0.0, d_max, 200)
    form = best_of_n_gold if fit.form == "best_of_n" else rl_gold
    ax.plot(d, form(d, fit.alpha, fit.beta), color=color, lw=1.2, ls="--")


@slide_figure("ch09_gold_vs_proxy")
def gold_proxy_figure(bon_curves=None, rl_curves=None):
    r"""Measured proxy and gold reward against :math:`d`, best-of-n (top) and RL (bottom), one line per proxy.

    ``bon_curves`` and ``rl_curves``: ``{label: curve}`` with the keys ``"d"``, ``"gold"``, ``"proxy"`` (as
    :func:`best_of_n_gold_curve` and :func:`rl_gold_curve` return them). Both rewards are drawn as gains over
    the initial policy (the first point); the gold panels carry Gao et al.'s form fitted to each curve by
    ``rlhf_edu.numpy.fit_gold_curve`` (dashed). Without arguments the chapter's sweep runs first
    (:func:`overoptimization_sweep`, about a minute).
    """
    if bon_curves is None or rl_curves is None:
        sweep = overoptimization_sweep()
        bon_curves, rl_curves = sweep["bon"], sweep["rl"]
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.0), layout="constrained")
    for row, (curves, form, name) in enumerate(((bon_curves, "best_of_n", "best-of-n"), (rl_curves, "rl", "RL (GRPO)"))):
        for i, (label, c) in enumerate(curves.items()):
            color = f"C{i}"
            d = np.asarray(c["d"])
            axes[row, 0].plot(d, np.asarray(c["proxy"]) - c["proxy"][0], "o-", ms=3, color=color, label=label)
            gain = np.asarray(c["gold"]) - c["gold"][0]
            axes[row, 1].plot(d, gain, "o-", ms=3, color=color, label=label)
            if len(d) >= 3:
                _fitted_line(axes[row, 1], d.max(), fit_gold_curve(d, gain, form=form), color)
        axes[row, 0].set_ylabel(f"{name}: proxy reward gained (proxy units)")
        axes[row, 1].set_ylabel(f"{name}: gold reward gained (0 to 1 scale)")
        for ax in axes[row]:
            ax.axhline(0.0, color="0.6", lw=0.8)
            ax.set_xlabel(r"$d = \sqrt{\mathrm{KL}(\pi \| \pi_{init})}$ (nats$^{1/2}$)")
        axes[row, 0].legend(fontsize=8, title="proxy", title_fontsize=8)
    axes[0, 0].set_title("proxy reward: what is optimised", fontsize=10)
    axes[0, 1].set_title("gold reward: what we wanted (dashed: Gao et al.'s form, fitted)", fontsize=10)
    return fig


#: The chapter's settings: the SFT model (``rlhf_edu.train.sentiment_sft_policy``), the pools, the proxies' data
#: sizes (gold-labelled pairs), the best-of-n values of n and the GRPO runs. Chosen to fit the notebook's two
#: minutes on two CPU cores.
SFT_SETTINGS = dict(arch="llama", steps=250, batch_size=32, lr=1e-2, d_model=32, n_layer=2, seed=0)
SWEEP = dict(pool_per_prompt=80, bon_per_prompt=128, sizes=(75, 225, 675), ns=(1, 2, 4, 8, 16, 32),
             rl=dict(lr=4e-3, steps=15, eval_every=3, prompts_per_step=8, group_size=8), beta_small=0.01,
             beta_large=2.0, eval_copies=8)


def overoptimization_sweep(seed=0):
    """The chapter's whole measurement in one call (what ``ch09_gold_vs_proxy`` draws): ``{"bon", "rl"}`` curves.

    SFT model, pools, one proxy per data size of ``SWEEP["sizes"]``, best-of-n from one pool against each, and
    GRPO with a small KL coefficient against each; the notebook runs the same steps one cell at a time.
    """
    from rlhf_edu.train import as_reward_fn, frozen_copy, sentiment_sft_policy

    sft, tok, task, _ = sentiment_sft_policy(**{**SFT_SETTINGS, "seed": seed}, device="cpu", progress=False)
    sft = frozen_copy(sft)
    train_prompts, test_prompts = task.all_prompts("train"), task.all_prompts("test")
    rm_pool = sample_pool(sft, tok, train_prompts, SWEEP["pool_per_prompt"], seed=seed)
    bon_pool = sample_pool(sft, tok, test_prompts, SWEEP["bon_per_prompt"], seed=seed + 1)
    bon, rl = {}, {}
    for n in SWEEP["sizes"]:
        proxy = as_reward_fn(train_proxy(sft, tok, gold_labelled_pairs(task, rm_pool, n), seed=seed), tok)
        bon[f"{n} pairs"] = best_of_n_gold_curve(score_pool(proxy, bon_pool), bon_pool["gold"], SWEEP["ns"])
        _, rl[f"{n} pairs"] = rl_gold_curve(sft, tok, train_prompts, proxy, test_prompts * SWEEP["eval_copies"],
                                            beta=SWEEP["beta_small"], seed=seed, **SWEEP["rl"])
    return {"bon": bon, "rl": rl}
