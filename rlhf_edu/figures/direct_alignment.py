r"""Slide figures of chapter 7 (the direct-alignment family), and the toys behind them.

Figure functions take only keyword arguments with defaults (the chapter's widgets change them) and return
a matplotlib ``Figure``:

- :func:`gpo_functions_figure` (``ch07_gpo_functions``): the six functions f of GPO's :math:`f(\beta\rho)`
  and the weight :math:`-f'` with which each pushes a pair's margin up;
- :func:`target_margin_figure` (``ch07_target_margin``): the log-ratio margin DPO and IPO aim at for a
  pair preferred with probability p: DPO's goes to infinity as p -> 1, IPO's stops at :math:`1/(2\beta)`;
- :func:`dpo_vs_ipo_figure` (``ch07_dpo_vs_ipo``): DPO and IPO trained on the one-prompt toy with
  deterministic labels: DPO's margins keep growing, IPO's stop at the closed-form optimum;
- :func:`prospect_value_figure` (``ch07_prospect_value``): Kahneman and Tversky's value function and KTO's
  logistic version;
- :func:`length_bias_figure` (``ch07_length_bias``): summed log-probabilities fall with length, their
  per-token mean does not (SimPO's normalisation).

The toy (:func:`ranking_toy`, :func:`preference_matrix`, :func:`ipo_scores`) and the trainer on it
(:func:`fit_offline`) are public: the chapter prints and checks their numbers. Everything here is exact
(enumerated pairs, no sampling) and built on ``rlhf_edu.numpy.optimal`` and ``rlhf_edu.torch.direct``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.direct import GPO_FORMULAS, GPO_LOSSES, gpo_loss, gpo_loss_grad, kahneman_tversky_value
from rlhf_edu.numpy.optimal import kl_regularized_optimum
from rlhf_edu.torch import direct as td

__all__ = [
    "gpo_functions_figure",
    "target_margin_figure",
    "ranking_toy",
    "preference_matrix",
    "ipo_scores",
    "fit_offline",
    "dpo_vs_ipo_figure",
    "prospect_value_figure",
    "length_bias_figure",
]

#: colour, line style, width: the truncated quadratic equals the squared loss for x < 1, so it is drawn wide and
#: dotted over it
_STYLE = {"logistic": ("C0", "-", 1.5), "hinge": ("C1", "-", 1.5), "squared": ("C2", "-", 1.5),
          "exponential": ("C3", "--", 1.5), "truncated_quadratic": ("C4", ":", 3.0), "savage": ("C5", "--", 1.5)}
_ALGORITHM = {"logistic": "DPO", "hinge": "SLiC", "squared": "IPO", "exponential": "new",
              "truncated_quadratic": "new", "savage": "new"}


@slide_figure("ch07_gpo_functions")
def gpo_functions_figure(x_min=-3.0, x_max=3.0):
    r"""GPO's six functions :math:`f(x)`, :math:`x = \beta\rho`, and the push :math:`-f'(x)` on the margin.

    Left: the losses (all decreasing near 0, so every one rewards a larger margin at first). Right: minus the
    derivative, the weight with which a pair's gradient raises its margin: the logistic (DPO) and the
    exponential never reach 0; the hinge (SLiC) and the truncated quadratic stop at x = 1; the squared loss
    (IPO) turns negative past x = 1 and pulls the margin back; the Savage loss fades for large |x| on both
    sides (it bends the wrong way for x < -log 2: not convex).
    """
    x = np.linspace(x_min, x_max, 601)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for f in GPO_LOSSES:
        color, ls, lw = _STYLE[f]
        label = f"{f} {GPO_FORMULAS[f]} ({_ALGORITHM[f]})"
        ax1.plot(x, gpo_loss(x, 1.0, f), color=color, ls=ls, lw=lw, label=label)
        ax2.plot(x, -gpo_loss_grad(x, 1.0, f)["rho"], color=color, ls=ls, lw=lw, label=f)
    ax1.set_ylim(-0.2, 4.5)
    ax1.set_xlabel(r"$x = \beta\rho$ (scaled log-ratio margin, nats)")
    ax1.set_ylabel("loss $f(x)$")
    ax1.set_title("GPO: one margin, six losses")
    ax1.legend(fontsize=7)
    ax2.axhline(0, color="0.5", lw=0.8)
    ax2.axvline(1.0, color="0.5", lw=0.8, ls=":")
    ax2.axvline(-math.log(2), color="C5", lw=0.8, ls=":")
    ax2.text(1.05, 2.6, "x = 1", fontsize=8, color="0.4")
    ax2.text(-math.log(2) - 0.05, 2.6, "savage's\ninflection\n-log 2 ", fontsize=7, color="C5", ha="right", va="top")
    ax2.set_ylim(-2.2, 3.0)
    ax2.set_xlabel(r"$x = \beta\rho$ (nats)")
    ax2.set_ylabel(r"$-f'(x)$: push on the margin")
    ax2.set_title("Who keeps pushing, who stops, who pulls back")
    return fig


@slide_figure("ch07_target_margin")
def target_margin_figure(beta=0.1):
    r"""The log-ratio margin :math:`h^*` each loss settles at for one pair preferred with probability p.

    DPO (Bradley-Terry): :math:`\beta h^* = \log\frac{p}{1-p}`, infinite at p = 1. IPO (the squared loss on
    labelled pairs): :math:`h^* = \frac{2p-1}{2\beta}`, at most :math:`\frac{1}{2\beta}`.
    """
    p = np.linspace(0.5, 0.9999, 800)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    ax.plot(p, np.log(p / (1 - p)) / beta, color="C0", label=r"DPO: $\log\frac{p}{1-p}\,/\,\beta$")
    ax.plot(p, (2 * p - 1) / (2 * beta), color="C2", label=r"IPO: $(2p-1)\,/\,(2\beta)$")
    ax.axhline(1 / (2 * beta), color="C2", ls=":", lw=1)
    ax.text(0.52, 1 / (2 * beta) * 1.08, r"IPO's target $1/(2\beta)$" + f" = {1 / (2 * beta):g} nats", color="C2",
            fontsize=8)
    ax.set_ylim(0, max(8 / (2 * beta), 1.0))
    ax.set_xlabel("preference probability p of the pair")
    ax.set_ylabel(r"optimal margin $h^*$ (nats)")
    ax.set_title(rf"Deterministic labels (p $\to$ 1): DPO's margin has no end ($\beta$ = {beta:g})")
    ax.legend(fontsize=8, loc="upper left")
    return fig


# --------------------------------------------------------------------------------------------------
# The one-prompt toy: a ranking of a few answers, deterministic labels
# --------------------------------------------------------------------------------------------------


def ranking_toy():
    r"""One prompt, four answers ranked best first, and the reference policy (which prefers the worse ones).

    Returns ``(answers, ref_probs)``: ``answers`` are four completions of "review: the film was" ranked by the
    sentiment task's gold reward (best first; the chapter checks the order), ``ref_probs`` the reference
    (SFT) policy over them. The chapter's annotators compare every pair of different answers equally often
    (:math:`\mu` uniform).
    """
    answers = (" great fun.", " good but slow.", " dull.", " awful and boring.")
    ref_probs = np.array([0.1, 0.2, 0.3, 0.4])
    return answers, ref_probs


def preference_matrix(n, p=1.0):
    r"""``P[i, j]`` = probability that answer i is preferred to answer j when answers are ranked 0 (best) to n-1.

    Every better answer wins with probability ``p`` (1: deterministic labels), :math:`P_{ii} = 1/2`, and
    :math:`P_{ji} = 1 - P_{ij}`.

    >>> preference_matrix(3).tolist()
    [[0.5, 1.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.0, 0.5]]
    """
    upper = np.triu(np.full((n, n), float(p)), k=1)
    return upper + np.tril(1.0 - upper.T, k=-1) + 0.5 * np.eye(n)


def ipo_scores(pref, mu):
    r"""IPO's score :math:`g(y) = \mathbb{E}_{y'\sim\mu}[p(y \succ y')] = \sum_{y'} \mu(y') P_{y y'}`.

    The IPO optimum is :math:`\pi^* \propto \pi_{ref}\, e^{g/\beta}`: ``kl_regularized_optimum(ref, g, beta)``.

    >>> ipo_scores(preference_matrix(2), np.array([0.5, 0.5])).tolist()
    [0.75, 0.25]
    """
    return np.asarray(pref, dtype=float) @ np.asarray(mu, dtype=float)


def fit_offline(loss, ref_probs, pref, mu, beta, *, steps=300, lr=0.5):
    r"""Train a softmax policy over the toy's answers on the EXACT expected offline loss, by gradient descent.

    A pair is drawn as :math:`y, y' \sim \mu` (independent, conditioned on :math:`y \ne y'`), labelled with
    :math:`p(y \succ y') = P_{yy'}` and written (winner, loser), so the expected loss is
    :math:`\sum_{w \ne l} \mu_w \mu_l P_{wl}\, \ell(h(w, l)) / \sum_{w \ne l} \mu_w \mu_l P_{wl}`, with
    :math:`\ell` the per-pair loss of
    ``rlhf_edu.torch.direct``: ``"dpo"`` (``dpo_loss``), ``"ipo"`` (``ipo_loss``) or a GPO function name
    (``gpo_loss`` of the log-ratio difference). The logits start at :math:`\log\pi_{ref}`; plain gradient
    descent with step ``lr`` in float64.

    Returns a dict: ``probs`` (steps + 1, n), the policy after each step; ``margins`` (steps + 1, n - 1), the
    log-ratio margins :math:`h(y_k, y_{k+1})` between neighbours in the ranking; ``loss`` (steps + 1,).
    """
    ref = torch.tensor(np.asarray(ref_probs, dtype=float), dtype=torch.float64)
    n = ref.numel()
    weights = np.asarray(mu, dtype=float)[:, None] * np.asarray(mu, dtype=float)[None, :] * np.asarray(pref, dtype=float)
    np.fill_diagonal(weights, 0.0)
    weights /= weights.sum()  # the probability of the record (w, l): every pair y != y' gives one record
    win, lose = np.nonzero(weights)
    w = torch.tensor(weights[win, lose])
    win, lose = torch.as_tensor(win), torch.as_tensor(lose)
    log_ref = torch.log(ref)
    theta = log_ref.clone().requires_grad_(True)

    def expected_loss(logp):
        pc, pr, rc, rr = logp[win], logp[lose], log_ref[win], log_ref[lose]
        if loss == "dpo":
            per_pair = td.dpo_loss(pc, pr, rc, rr, beta)
        elif loss == "ipo":
            per_pair = td.ipo_loss(pc, pr, rc, rr, beta)
        else:
            per_pair = td.gpo_loss(td.log_ratio_difference(pc, pr, rc, rr), beta, loss)
        return (w * per_pair).sum()

    probs, margins, losses = [], [], []
    for step in range(steps + 1):
        logp = torch.log_softmax(theta, dim=-1)
        value = expected_loss(logp)
        u = (logp - log_ref).detach()
        probs.append(logp.detach().exp().numpy())
        margins.append((u[:-1] - u[1:]).numpy())
        losses.append(value.item())
        if step == steps:
            break
        (grad,) = torch.autograd.grad(value, theta)
        theta = (theta - lr * grad).detach().requires_grad_(True)
    return {"probs": np.array(probs), "margins": np.array(margins), "loss": np.array(losses)}


@slide_figure("ch07_dpo_vs_ipo")
def dpo_vs_ipo_figure(beta=0.5, steps=300, lr=0.5, runs=None):
    r"""DPO and IPO on the toy with deterministic labels: margins over training, and the final policies.

    Left: the margin :math:`h` between the best and the second answer (and the closed-form IPO margin
    :math:`(g_1 - g_2)/\beta`, dotted): DPO's keeps growing (log-like), IPO's stops. Right: the reference, the
    IPO optimum :math:`\pi_{ref}e^{g/\beta}/Z` and both trained policies. Pairs are drawn uniformly
    (:math:`\mu` uniform). ``runs``: ``{"dpo": ..., "ipo": ...}`` from ``fit_offline`` with this ``beta``, to draw
    runs already made instead of training again.
    """
    answers, ref = ranking_toy()
    pref = preference_matrix(len(answers))
    mu = np.full(len(answers), 1.0 / len(answers))
    g = ipo_scores(pref, mu)
    ipo_star = kl_regularized_optimum(ref, g, beta)
    if runs is None:
        runs = {name: fit_offline(name, ref, pref, mu, beta, steps=steps, lr=lr) for name in ("dpo", "ipo")}
    steps = len(runs["dpo"]["loss"]) - 1
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.8), layout="constrained")
    for name, color in (("dpo", "C0"), ("ipo", "C2")):
        ax1.plot(runs[name]["margins"][:, 0], color=color, label=name.upper())
    ax1.axhline((g[0] - g[1]) / beta, color="C2", ls=":", label=r"IPO closed form $(g_1 - g_2)/\beta$")
    ax1.set_xlabel("gradient step")
    ax1.set_ylabel("margin h(best, second) (nats)")
    ax1.set_title(rf"Deterministic labels, $\beta$ = {beta:g}: DPO never stops")
    ax1.legend(fontsize=8)
    idx = np.arange(len(answers))
    width = 0.2
    for k, (label, probs, color) in enumerate((("reference", ref, "0.6"), ("IPO closed form", ipo_star, "C2"),
                                              ("IPO trained", runs["ipo"]["probs"][-1], "C8"),
                                              ("DPO trained", runs["dpo"]["probs"][-1], "C0"))):
        ax2.bar(idx + (k - 1.5) * width, probs, width, color=color, label=label)
    ax2.set_xticks(idx)
    ax2.set_xticklabels([a.strip() for a in answers], fontsize=8)
    ax2.set_xlabel("answer (best to worst by gold reward)")
    ax2.set_ylabel("probability")
    ax2.set_title(f"after {steps} steps")
    ax2.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------------
# KTO and SimPO
# --------------------------------------------------------------------------------------------------


@slide_figure("ch07_prospect_value")
def prospect_value_figure(alpha=0.88, lam=2.25, beta=1.0, lambda_d=1.0, lambda_u=1.0):
    r"""Prospect theory's value function and KTO's logistic stand-in for it.

    Left: :math:`v(z) = z^\alpha` for gains, :math:`-\lambda(-z)^\alpha` for losses (``kahneman_tversky_value``,
    reference point 0), beside the risk-neutral :math:`v(z) = z`. Right: KTO's value of an example against
    its implied reward relative to the reference point, :math:`\lambda_D\sigma(\beta(r - z_0))` for a
    desirable example and :math:`\lambda_U\sigma(\beta(z_0 - r))` for an undesirable one (the loss is
    :math:`\lambda_y - v`).
    """
    z = np.linspace(-3, 3, 601)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    ax1.plot(z, kahneman_tversky_value(z, 0.0, alpha, lam), color="C3",
             label=rf"Kahneman-Tversky, $\alpha$ = {alpha:g}, $\lambda$ = {lam:g}")
    ax1.plot(z, z, color="0.5", ls="--", label="risk neutral, v(z) = z")
    ax1.axhline(0, color="0.7", lw=0.7)
    ax1.axvline(0, color="0.7", lw=0.7)
    ax1.set_xlabel(r"outcome relative to the reference point, $z - z_0$")
    ax1.set_ylabel("value v")
    ax1.set_title("Losses loom larger than gains")
    ax1.legend(fontsize=8)
    sig = lambda t: 1.0 / (1.0 + np.exp(-t))  # noqa: E731
    ax2.plot(z, lambda_d * sig(beta * z), color="C2", label=rf"desirable: $\lambda_D\sigma(\beta(r - z_0))$")
    ax2.plot(z, lambda_u * sig(-beta * z), color="C3", label=rf"undesirable: $\lambda_U\sigma(\beta(z_0 - r))$")
    ax2.axvline(0, color="0.7", lw=0.7)
    ax2.set_xlabel(r"implied reward relative to the reference point, $r_\theta - z_0$ (nats)")
    ax2.set_ylabel("KTO value v(x, y)")
    ax2.set_title(rf"KTO: a bounded S-curve ($\beta$ = {beta:g}); loss = $\lambda_y$ - v")
    ax2.legend(fontsize=8)
    return fig


@slide_figure("ch07_length_bias")
def length_bias_figure(lengths=None, sum_logps=None, chosen=None):
    r"""Summed log-probability against length (it falls about linearly), and the per-token mean (it does not).

    ``lengths`` (tokens) and ``sum_logps`` (summed log-probs of those completions) default to a synthetic set
    (per-token log-probs drawn around -0.9 nats, seed 0); the chapter passes the tiny SFT model's numbers for
    the preference data's completions, with ``chosen`` (booleans) to colour chosen and rejected completions.
    """
    synthetic = lengths is None or sum_logps is None
    if synthetic:
        rng = np.random.default_rng(0)
        lengths = rng.integers(5, 40, size=200)
        sum_logps = np.array([rng.normal(-0.9, 0.3, size=n).sum() for n in lengths])
    lengths, sum_logps = np.asarray(lengths, dtype=float), np.asarray(sum_logps, dtype=float)
    groups = [(np.ones(lengths.size, dtype=bool), "completions", "C0")] if chosen is None else [
        (np.asarray(chosen, dtype=bool), "chosen", "C2"), (~np.asarray(chosen, dtype=bool), "rejected", "C3")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for mask, label, color in groups:
        ax1.scatter(lengths[mask], sum_logps[mask], s=8, alpha=0.5, color=color, label=label)
        ax2.scatter(lengths[mask], sum_logps[mask] / lengths[mask], s=8, alpha=0.5, color=color, label=label)
    slope = np.polyfit(lengths, sum_logps, 1)[0]
    ax1.set_xlabel("completion length |y| (tokens)")
    ax1.set_ylabel(r"$\log\pi(y|x)$, summed (nats)")
    ax1.set_title(f"Sum: longer is less likely ({slope:.2f} nats per token)")
    ax2.set_xlabel("completion length |y| (tokens)")
    ax2.set_ylabel(r"$\frac{1}{|y|}\log\pi(y|x)$ (nats per token)")
    ax2.set_title("Mean per token (SimPO's reward / beta): no trend")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
    if synthetic:
        fig.suptitle("synthetic completions: per-token log-probabilities drawn around -0.9 nats", fontsize=9)
    return fig
