r"""Slide figures and small experiments of chapter 2 (KL divergence and its estimators).

The experiments are written here once, so the notebook, the slides and the exercise checkers run the same
code:

- :func:`gaussian_kl`, :func:`gaussian_logpdf`: :math:`\mathrm{KL}` of two Gaussians in closed form, the
  ground truth the sample estimators are measured against;
- :func:`estimator_samples`, :func:`estimator_bias_std`, :func:`monte_carlo_bias`: k1, k2, k3 on samples
  of one Gaussian against another (Schulman's 2020 experiment);
- :func:`fit_gaussian_on_grid`: the single Gaussian closest to a bimodal target in forward or reverse KL.

Figures (each function takes only keyword arguments with defaults, returns a matplotlib ``Figure``):

- :func:`kl_terms_figure` (``ch02_kl_terms``): the lecture notes' worked example, term by term;
- :func:`forward_reverse_figure` (``ch02_forward_vs_reverse``): mode covering vs mode seeking;
- :func:`estimator_curves_figure` (``ch02_estimators_vs_log_ratio``): k1, k2, k3 as functions of the
  log-ratio;
- :func:`estimator_bias_std_figure` (``ch02_estimator_bias_std``): their bias and spread by Monte Carlo;
- :func:`beta_tradeoff_figure` (``ch02_beta_tradeoff``): how beta trades reward against drift;
- :func:`kl_playground_figure`: the chapter's widget (two Gaussians, both KLs, the estimators' spread, and
  the batch means of k1 and k3, where k3's variance is infinite once :math:`\sigma_Q^2 \ge 2\sigma_P^2`:
  :func:`k3_variance_is_finite`, :func:`batch_means`).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.divergences import KL_ESTIMATORS, kl_divergence, kl_estimate
from rlhf_edu.numpy.optimal import kl_regularized_optimum
from rlhf_edu.validation import (
    as_float_array,
    check_choice,
    check_integer,
    check_min_size,
    check_positive,
    check_same_shape,
)

__all__ = [
    "NOTES_WORDS",
    "NOTES_P",
    "NOTES_Q",
    "TOY_REF_PROBS",
    "TOY_REWARDS",
    "gaussian_kl",
    "gaussian_logpdf",
    "estimator_samples",
    "estimator_bias_std",
    "monte_carlo_bias",
    "bimodal_target",
    "fit_gaussian_on_grid",
    "kl_terms_figure",
    "forward_reverse_figure",
    "estimator_curves_figure",
    "estimator_bias_std_figure",
    "beta_tradeoff_figure",
    "kl_playground_figure",
    "k3_variance_is_finite",
    "batch_means",
]

#: The lecture notes' next-word example: "the cat sat on the ..." from two models.
NOTES_WORDS = ("mat", "floor", "chair")
NOTES_P = (0.7, 0.2, 0.1)  # Model 1
NOTES_Q = (0.5, 0.3, 0.2)  # Model 2

#: A discrete toy for the KL-regularised objective: five answers, the reference model prefers the
#: low-reward ones (as an SFT model that has not yet been aligned).
TOY_REF_PROBS = (0.40, 0.30, 0.15, 0.10, 0.05)
TOY_REWARDS = (0.0, 0.25, 0.5, 0.75, 1.0)

COLORS = {"k1": "tab:blue", "k2": "tab:orange", "k3": "tab:green", "p": "0.3", "fwd": "tab:red", "rev": "tab:purple"}


def gaussian_kl(mu_p, sigma_p, mu_q, sigma_q):
    r"""Closed-form :math:`\mathrm{KL}(\mathcal N(\mu_p, \sigma_p^2) \| \mathcal N(\mu_q, \sigma_q^2))` in nats.

    .. math:: \mathrm{KL} = \log\frac{\sigma_q}{\sigma_p} + \frac{\sigma_p^2 + (\mu_p - \mu_q)^2}{2\sigma_q^2} - \frac12

    (integrate :math:`\log p - \log q` against p; Bishop, PRML 2006, ex. 1.30). Used in chapter 2 as the
    ground truth for the sample estimators. Arguments broadcast.

    >>> round(float(gaussian_kl(0.1, 1.0, 0.0, 1.0)), 6)  # equal widths: (mu_p - mu_q)^2 / 2
    0.005
    """
    mu_p, mu_q = as_float_array("mu_p", mu_p), as_float_array("mu_q", mu_q)
    sigma_p, sigma_q = as_float_array("sigma_p", sigma_p), as_float_array("sigma_q", sigma_q)
    for name, s in (("sigma_p", sigma_p), ("sigma_q", sigma_q)):
        if not np.all(s > 0):
            raise ValueError(f"{name} must be > 0, got {s}")
    return np.log(sigma_q / sigma_p) + (sigma_p**2 + (mu_p - mu_q) ** 2) / (2 * sigma_q**2) - 0.5


def gaussian_logpdf(x, mu, sigma):
    r"""Log density :math:`-\frac{(x-\mu)^2}{2\sigma^2} - \log\sigma - \frac12\log 2\pi` of a Gaussian.

    >>> round(float(gaussian_logpdf(0.0, 0.0, 1.0)), 4)
    -0.9189
    """
    x = as_float_array("x", x)
    sigma = check_positive("sigma", sigma)
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def estimator_samples(mu_p=0.1, sigma_p=1.0, mu_q=0.0, sigma_q=1.0, n=100_000, seed=0):
    r"""Draw ``n`` samples :math:`x \sim p = \mathcal N(\mu_p, \sigma_p^2)` and return every estimator on them.

    Returns ``{"x", "logp", "logp_ref", "k1", "k2", "k3", "true_kl"}``: the samples, their log-densities
    under p and under the reference q = :math:`\mathcal N(\mu_q, \sigma_q^2)`, the per-sample estimates of
    :math:`\mathrm{KL}(p\|q)` from ``rlhf_edu.numpy.kl_estimate(logp, logp_ref, estimator)``, and the
    exact KL. Schulman (2020) uses :math:`\mu_p = 0.1` and 1.

    >>> s = estimator_samples(n=4, seed=0)
    >>> sorted(s), round(s["true_kl"], 4)
    (['k1', 'k2', 'k3', 'logp', 'logp_ref', 'true_kl', 'x'], 0.005)
    """
    n = check_integer("n", n, minimum=1)
    x = mu_p + sigma_p * np.random.default_rng(seed).standard_normal(n)
    logp, logq = gaussian_logpdf(x, mu_p, sigma_p), gaussian_logpdf(x, mu_q, sigma_q)
    out = {"x": x, "logp": logp, "logp_ref": logq}
    out.update({k: kl_estimate(logp, logq, k) for k in KL_ESTIMATORS})
    out["true_kl"] = float(gaussian_kl(mu_p, sigma_p, mu_q, sigma_q))
    return out


def monte_carlo_bias(logp, logp_ref, true_kl, estimator="k1"):
    r"""Monte Carlo bias of a KL estimator and its standard error, from n samples of the policy.

    With :math:`k_i` = ``kl_estimate(logp[i], logp_ref[i], estimator)``:

    .. math:: \widehat{\mathrm{bias}} = \frac1n\sum_i k_i - \mathrm{KL}, \qquad
              \mathrm{se} = \frac{s}{\sqrt n}, \quad s^2 = \frac{1}{n-1}\sum_i (k_i - \bar k)^2

    A bias estimate more than about 3 standard errors from 0 is evidence of a real bias (k2); within 2 it
    is not (k1, k3). Chapter 2 (the Monte Carlo exercise). Returns ``(bias, standard_error)`` as floats.

    >>> bias, se = monte_carlo_bias([0.0, 0.0], [0.0, -1.0], true_kl=0.5, estimator="k1")
    >>> round(bias, 6), round(se, 6)
    (0.0, 0.5)
    """
    check_choice("estimator", estimator, KL_ESTIMATORS)
    logp = as_float_array("logp", logp)
    logp_ref = as_float_array("logp_ref", logp_ref)
    check_same_shape(logp=logp, logp_ref=logp_ref)
    check_min_size("logp", logp.reshape(-1), 2)
    true_kl = float(true_kl)
    k = kl_estimate(logp, logp_ref, estimator).reshape(-1)
    return float(k.mean() - true_kl), float(k.std(ddof=1) / math.sqrt(k.size))


def estimator_bias_std(mus, n=200_000, seed=0):
    r"""Relative bias and relative standard deviation of k1, k2, k3 for :math:`p = \mathcal N(\mu, 1)`,
    :math:`q = \mathcal N(0, 1)`, one row per :math:`\mu` in ``mus`` (true KL :math:`\mu^2/2`).

    Returns ``{"true_kl": (M,), "bias": {k: (M,)}, "se": {k: (M,)}, "std": {k: (M,)}}``: the bias, its
    Monte Carlo standard error and the standard deviation of one sample, all divided by the true KL, as in
    Schulman's (2020) table. Every row uses the same standard normal draws (common random numbers), so
    the curves are smooth in mu.

    >>> stats = estimator_bias_std([0.1], n=1000)
    >>> round(float(stats["true_kl"][0]), 4), sorted(stats["std"])
    (0.005, ['k1', 'k2', 'k3'])
    """
    mus = as_float_array("mus", mus).reshape(-1)
    n = check_integer("n", n, minimum=2)
    out = {"true_kl": mus**2 / 2}
    parts = ("bias", "se", "std")
    for part in parts:
        out[part] = {k: [] for k in KL_ESTIMATORS}
    for mu in mus:
        s = estimator_samples(mu_p=float(mu), n=n, seed=seed)
        for k in KL_ESTIMATORS:
            bias, se = monte_carlo_bias(s["logp"], s["logp_ref"], s["true_kl"], k)
            out["bias"][k].append(bias / s["true_kl"])
            out["se"][k].append(se / s["true_kl"])
            out["std"][k].append(se * math.sqrt(n) / s["true_kl"])
    for part in parts:
        out[part] = {k: np.asarray(v) for k, v in out[part].items()}
    return out


def bimodal_target(grid=None, separation=2.5, width=0.6):
    """A two-bump distribution on a grid (equal mixture of two Gaussians at +-separation), normalised."""
    grid = np.linspace(-6, 6, 241) if grid is None else as_float_array("grid", grid)
    bumps = np.exp(-0.5 * ((grid - separation) / width) ** 2) + np.exp(-0.5 * ((grid + separation) / width) ** 2)
    return grid, bumps / bumps.sum()


def _gaussians_on_grid(grid, mus, sigmas):
    q = np.exp(-0.5 * ((grid - mus[..., None]) / sigmas[..., None]) ** 2)
    return q / q.sum(axis=-1, keepdims=True)


def fit_gaussian_on_grid(target, grid, direction="forward", mus=None, sigmas=None):
    r"""The Gaussian q (discretised on ``grid``) closest to ``target`` in KL, by exhaustive search.

    ``direction="forward"`` minimises :math:`\mathrm{KL}(p\|q)` (what maximum likelihood does: q must cover
    every mode of p), ``"reverse"`` minimises :math:`\mathrm{KL}(q\|p)` (what the RLHF penalty
    :math:`\mathrm{KL}(\pi\|\pi_{ref})` does to :math:`\pi`: q may drop modes but must not put mass where p
    has none). Returns ``(mu, sigma, kl, q)``; ties (the two modes of a symmetric target) go to the
    smaller mu. Chapter 2, after Bishop (PRML 2006, fig. 10.3) and Minka (2005).
    """
    check_choice("direction", direction, ("forward", "reverse"))
    target, grid = as_float_array("target", target), as_float_array("grid", grid)
    mus = np.linspace(-4, 4, 161) if mus is None else as_float_array("mus", mus)
    sigmas = np.linspace(0.3, 4.0, 75) if sigmas is None else as_float_array("sigmas", sigmas)
    m, s = np.meshgrid(mus, sigmas, indexing="ij")
    q = _gaussians_on_grid(grid, m, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = kl_divergence(target, q) if direction == "forward" else kl_divergence(q, target)
    i, j = np.unravel_index(np.argmin(kl), kl.shape)
    return float(mus[i]), float(sigmas[j]), float(kl[i, j]), q[i, j]


@slide_figure("ch02_kl_terms")
def kl_terms_figure(p=NOTES_P, q=NOTES_Q, words=NOTES_WORDS):
    """The notes' example: P and Q side by side, and each term p log(p/q) of KL(P || Q) with their sum."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    terms = kl_divergence(p, q, reduction="none")
    x = np.arange(len(words))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1.1, 1]})
    ax1.bar(x - 0.2, p, width=0.4, label="P (model 1)", color="tab:blue")
    ax1.bar(x + 0.2, q, width=0.4, label="Q (model 2)", color="tab:gray")
    ax1.set_xticks(x, [f'"{w}"' for w in words])
    ax1.set_ylabel("probability of the next word")
    ax1.set_title("two next-word distributions")
    ax1.legend(frameon=False)
    colors = ["tab:red" if t > 0 else "tab:green" for t in terms]
    ax2.bar(x, terms, color=colors, width=0.6)
    for xi, t in zip(x, terms):
        ax2.annotate(f"{t:+.4f}", (xi, t), ha="center", va="bottom" if t > 0 else "top", fontsize=9,
                     xytext=(0, 2 if t > 0 else -2), textcoords="offset points")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks(x, [f'"{w}"' for w in words])
    ax2.set_ylabel(r"term $P(i)\,\log\frac{P(i)}{Q(i)}$ (nats)")
    ax2.set_title(f"KL(P || Q) = sum of the terms = {terms.sum():.4f} nats")
    ax2.set_ylim(min(terms.min(), 0) * 1.5, terms.max() * 1.3)
    fig.tight_layout()
    return fig


@slide_figure("ch02_forward_vs_reverse")
def forward_reverse_figure(separation=2.5, width=0.6):
    """Best single Gaussian for a two-mode target: forward KL covers both modes, reverse KL picks one."""
    grid, p = bimodal_target(separation=separation, width=width)
    mu_f, s_f, kl_f, q_f = fit_gaussian_on_grid(p, grid, "forward")
    mu_r, s_r, kl_r, q_r = fit_gaussian_on_grid(p, grid, "reverse")
    dx = grid[1] - grid[0]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.fill_between(grid, p / dx, color="0.8", label="target p (two modes)")
    ax.plot(grid, q_f / dx, color=COLORS["fwd"], lw=2,
            label=rf"argmin KL(p || q): $\mu$={mu_f:.2f}, $\sigma$={s_f:.2f} (covers both)")
    ax.plot(grid, q_r / dx, color=COLORS["rev"], lw=2, ls="--",
            label=rf"argmin KL(q || p): $\mu$={mu_r:.2f}, $\sigma$={s_r:.2f} (seeks one)")
    ax.set_xlabel("x (an answer, on a continuous axis)")
    ax.set_ylabel("probability density")
    ax.set_title("forward KL is mode covering, reverse KL is mode seeking")
    ax.legend(frameon=False, fontsize=8.5, loc="upper left")
    ax.set_ylim(0, max(p.max(), q_r.max()) / dx * 1.45)
    fig.tight_layout()
    return fig


@slide_figure("ch02_estimators_vs_log_ratio")
def estimator_curves_figure(lim=3.0):
    r"""k1, k2, k3 as functions of the log-ratio :math:`\ell = \log p(x) - \log p_{ref}(x)` of one sample."""
    ell = np.linspace(-lim, lim, 401)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    labels = {"k1": r"k1 = $\ell$ (can be < 0)", "k2": r"k2 = $\ell^2/2$",
              "k3": r"k3 = $(e^{-\ell} - 1) + \ell$"}
    for k in KL_ESTIMATORS:
        ax.plot(ell, kl_estimate(ell, np.zeros_like(ell), k), color=COLORS[k], lw=2, label=labels[k])
    ax.axhline(0, color="k", lw=0.7)
    ax.axvline(0, color="k", lw=0.7)
    ax.set_ylim(-lim, 2 * lim)
    ax.set_xlabel(r"log-ratio of one sample $\ell = \log p(x) - \log p_{ref}(x)$ (nats)")
    ax.set_ylabel("estimate of KL(p || p_ref) (nats)")
    ax.set_title("k1 can be negative; k2 and k3 never are, and both are about $\\ell^2/2$ near 0")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


@slide_figure("ch02_estimator_bias_std")
def estimator_bias_std_figure(n=50_000, seed=0):
    """Relative bias (left) and relative spread (right) of k1, k2, k3 against the true KL, by Monte Carlo."""
    mus = np.geomspace(0.05, 2.0, 12)
    stats = estimator_bias_std(mus, n=n, seed=seed)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for k in KL_ESTIMATORS:
        ax1.errorbar(stats["true_kl"], stats["bias"][k], yerr=2 * stats["se"][k], fmt="o-", color=COLORS[k],
                     label=k, ms=4, capsize=2)
        ax2.plot(stats["true_kl"], stats["std"][k], "o-", color=COLORS[k], label=k, ms=4)
    ax1.axhline(0, color="k", lw=0.7)
    ax1.set_xscale("log")
    ax1.set_xlabel("true KL(p || p_ref) (nats)")
    ax1.set_ylabel("bias / true KL")
    ax1.set_title("bias (bars: 2 standard errors): only k2 is biased")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("true KL(p || p_ref) (nats)")
    ax2.set_ylabel("std of one sample / true KL")
    ax2.set_title("spread: k1 is noisy when p is close to p_ref")
    for ax in (ax1, ax2):
        ax.legend(frameon=False)
    fig.suptitle(rf"p = N($\mu$, 1), p_ref = N(0, 1), {n:,} samples per point", fontsize=10)
    fig.tight_layout()
    return fig


@slide_figure("ch02_beta_tradeoff")
def beta_tradeoff_figure(ref_probs=TOY_REF_PROBS, rewards=TOY_REWARDS):
    r"""Expected reward and KL of the optimum :math:`\pi^*_\beta` of E[r] - beta KL, as beta varies."""
    ref_probs, rewards = np.asarray(ref_probs, dtype=float), np.asarray(rewards, dtype=float)
    betas = np.geomspace(0.01, 10, 200)
    pis = np.stack([kl_regularized_optimum(ref_probs, rewards, float(b)) for b in betas])
    exp_r, kl = pis @ rewards, kl_divergence(pis, ref_probs)
    fig, ax1 = plt.subplots(figsize=(6.8, 3.8))
    ax1.plot(betas, exp_r, color="tab:blue", lw=2, label=r"expected reward $E_{\pi^*}[r]$")
    ax1.axhline(rewards.max(), color="tab:blue", ls=":", lw=1)
    ax1.axhline(ref_probs @ rewards, color="tab:blue", ls=":", lw=1)
    ax1.set_xscale("log")
    ax1.set_xlabel(r"$\beta$ (KL coefficient, log scale)")
    ax1.set_ylabel("expected reward", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(betas, kl, color="tab:red", lw=2, label=r"KL($\pi^*$ || $\pi_{ref}$)")
    ax2.set_ylabel("KL to the reference (nats)", color="tab:red")
    lines = ax1.get_lines()[:1] + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], frameon=False, loc="center right")
    ax1.set_title(r"small $\beta$: more reward, more drift; large $\beta$: stay at $\pi_{ref}$")
    fig.tight_layout()
    return fig


def k3_variance_is_finite(sigma_p, sigma_q):
    r"""Whether k3 (and r = q/p) has a finite variance on samples of P = N(., sigma_p^2) against Q = N(., sigma_q^2).

    :math:`\mathbb E_P[r^2] = \int q^2/p\,dx` converges only if :math:`\sigma_Q^2 < 2\sigma_P^2`: a reference
    much wider than the policy puts weight where the policy almost never samples, and the rare samples there
    carry huge ratios. The chapter's widget default (sigma_P = 1, sigma_Q = 1.5) is on the infinite side.

    >>> k3_variance_is_finite(1.0, 1.0), k3_variance_is_finite(1.0, 1.5)
    (True, False)
    """
    return bool(float(sigma_q) ** 2 < 2 * float(sigma_p) ** 2)


def batch_means(mu_p=1.0, sigma_p=1.0, mu_q=0.0, sigma_q=1.5, batch=64, n_batches=1000, seed=1):
    """Means of k1 and k3 over ``n_batches`` independent batches of ``batch`` samples of P: what one training
    step would see. Returns ``{"k1": array, "k3": array, "true_kl": float}``."""
    rng = np.random.default_rng(seed)
    x = mu_p + sigma_p * rng.standard_normal((int(n_batches), int(batch)))
    logp, logp_ref = gaussian_logpdf(x, mu_p, sigma_p), gaussian_logpdf(x, mu_q, sigma_q)
    out = {k: kl_estimate(logp, logp_ref, k).mean(axis=1) for k in ("k1", "k3")}
    out["true_kl"] = float(gaussian_kl(mu_p, sigma_p, mu_q, sigma_q))
    return out


def kl_playground_figure(mu_p=1.0, sigma_p=1.0, mu_q=0.0, sigma_q=1.5, n=2000, seed=0, batch=64, n_batches=1000):
    """The widget's picture: two Gaussians with KL(P||Q) and KL(Q||P) (left); the spread of k1, k2, k3 on ``n``
    samples of P (middle, box = middle half, whiskers = 5% to 95%); and the means of k1 and k3 over
    ``n_batches`` batches of ``batch`` samples (right), where an infinite variance of k3 shows up: most batch
    means fall below the true KL, a rare few far above it."""
    x = np.linspace(-6, 6, 400)
    fwd = float(gaussian_kl(mu_p, sigma_p, mu_q, sigma_q))
    rev = float(gaussian_kl(mu_q, sigma_q, mu_p, sigma_p))
    s = estimator_samples(mu_p, sigma_p, mu_q, sigma_q, n=n, seed=seed)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.8))
    ax1.plot(x, np.exp(gaussian_logpdf(x, mu_p, sigma_p)), color="tab:blue", lw=2, label="P (policy)")
    ax1.plot(x, np.exp(gaussian_logpdf(x, mu_q, sigma_q)), color="0.4", lw=2, ls="--", label="Q (reference)")
    ax1.set_xlabel("x")
    ax1.set_ylabel("probability density")
    ax1.set_title(f"KL(P || Q) = {fwd:.3f}   KL(Q || P) = {rev:.3f} nats", fontsize=10)
    ax1.legend(frameon=False)
    data = [s[k] for k in KL_ESTIMATORS]
    box = ax2.boxplot(data, whis=(5, 95), showfliers=False, patch_artist=True)
    ax2.set_xticks([1, 2, 3], list(KL_ESTIMATORS))
    for patch, k in zip(box["boxes"], KL_ESTIMATORS):
        patch.set_facecolor(COLORS[k])
        patch.set_alpha(0.5)
    ax2.axhline(fwd, color="k", lw=1.2, ls=":", label=f"true KL(P || Q) = {fwd:.3f}")
    ax2.plot([1, 2, 3], [d.mean() for d in data], "kD", ms=5, label=f"mean of {n} samples")
    ax2.set_ylabel("per-sample estimate (nats)")
    ax2.set_title("spread of the three estimators", fontsize=10)
    ax2.legend(frameon=False, fontsize=8.5)
    bm = batch_means(mu_p, sigma_p, mu_q, sigma_q, batch=batch, n_batches=n_batches, seed=seed + 1)
    finite = k3_variance_is_finite(sigma_p, sigma_q)
    lo, hi = np.percentile(np.concatenate([bm["k1"], bm["k3"]]), [0.5, 99.5])
    bins = np.linspace(min(lo, fwd), max(hi, fwd), 50)
    for k in ("k1", "k3"):
        below = np.mean(bm[k] < fwd)
        ax3.hist(np.clip(bm[k], bins[0], bins[-1]), bins=bins, histtype="step", lw=2, color=COLORS[k],
                 label=f"{k}: std {bm[k].std():.3f}, {below:.0%} below, max {bm[k].max():.2f}")
    ax3.axvline(fwd, color="k", lw=1.2, ls=":")
    ax3.set_xlabel(f"mean of a batch of {batch} samples (nats; clipped at the edges)")
    ax3.set_ylabel(f"number of batches (of {n_batches})")
    variance = "finite" if finite else "INFINITE"
    ax3.set_title(rf"Var(k3) {variance}: $\sigma_Q^2$ {'<' if finite else '>='} 2 $\sigma_P^2$", fontsize=10)
    ax3.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
