r"""Slide figures and small experiments of chapter 1 (rewards from preferences: Bradley-Terry).

Experiments written once for the notebook, the slides and the exercise checkers:

- :func:`simulate_ratings`: annotators who rate on their own (miscalibrated, noisy) scales, the lecture
  notes' reason to ask for comparisons instead;
- :func:`gumbel_choices`: choices of a random-utility model with extreme-value (Gumbel) noise, whose win
  rate is the Bradley-Terry sigmoid;
- :func:`simulate_comparisons`: Bradley-Terry comparisons among items of known scores, to fit back.

Figures (keyword arguments with defaults only; each returns a matplotlib ``Figure``):

- :func:`ratings_vs_comparisons_figure` (``ch01_ratings_vs_comparisons``);
- :func:`choice_model_figure` (``ch01_choice_model``): simulated win rates on the sigmoid;
- :func:`bt_loss_figure` (``ch01_bt_loss``): the loss and its gradient against the reward margin;
- :func:`bt_recovery_figure` (``ch01_bt_recovery``): maximum-likelihood scores against the true ones;
- :func:`bt_playground_figure`: the chapter's widget (reward gap and label noise).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.preferences import (
    bradley_terry_loss,
    bradley_terry_loss_grad,
    bradley_terry_prob,
    fit_bradley_terry,
)
from rlhf_edu.tasks.sentiment import bradley_terry_choice
from rlhf_edu.validation import as_float_array, check_in_range, check_integer

__all__ = [
    "EARTHQUAKE_ANSWERS",
    "EARTHQUAKE_REWARDS",
    "simulate_ratings",
    "gumbel_choices",
    "simulate_comparisons",
    "noisy_label_loss",
    "ratings_vs_comparisons_figure",
    "choice_model_figure",
    "bt_loss_figure",
    "bt_recovery_figure",
    "bt_playground_figure",
]

#: The lecture notes' three answers to "summarise the news" (ranked y1 > y3 > y2 on the slide).
EARTHQUAKE_ANSWERS = (
    "y1: An earthquake hit San Francisco. There was minor property damage, but no injuries.",
    "y2: The Bay Area has good weather but is prone to earthquakes and wildfires.",
    "y3: A 4.2 magnitude earthquake hit San Francisco, resulting in massive damage.",
)
#: Rewards for them used in the chapter's worked example (illustrative log-odds, not the notes' numbers: the
#: notes' 1.2 is y2's RATING, which their comparison slide repeats beside y1).
EARTHQUAKE_REWARDS = (1.5, 0.0, 0.7)


def simulate_ratings(quality=EARTHQUAKE_REWARDS, n_annotators=6, noise=0.3, seed=0):
    r"""Ratings :math:`a_j + b_j\,q_i + \epsilon_{ij}` of items of quality :math:`q_i` by annotators with their
    own offset :math:`a_j` (lenient or harsh) and scale :math:`b_j > 0` (a narrow or a wide range of marks).

    Returns ``(ratings, offsets, scales)``, ratings of shape ``(n_annotators, n_items)`` on a 1-10-like
    scale. The raw numbers disagree across annotators (miscalibration) while the ORDER they give is
    mostly shared: the lecture notes' case for asking for comparisons. Chapter 1.

    >>> r, a, b = simulate_ratings(n_annotators=2, seed=0)
    >>> r.shape, bool(np.all(b > 0))
    ((2, 3), True)
    """
    quality = as_float_array("quality", quality)
    n_annotators = check_integer("n_annotators", n_annotators, minimum=1)
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(3.0, 7.0, size=n_annotators)
    scales = rng.uniform(0.5, 2.5, size=n_annotators)
    ratings = offsets[:, None] + scales[:, None] * quality[None, :] + noise * rng.standard_normal(
        (n_annotators, quality.size))
    return ratings, offsets, scales


def gumbel_choices(r_a, r_b, n=100_000, seed=0):
    r"""Fraction of ``n`` trials in which a is chosen when the utilities are :math:`U = r + \epsilon`,
    :math:`\epsilon` i.i.d. standard Gumbel (extreme value type I) for each option and trial.

    The random-utility model of the lecture notes (McFadden, 1974): its choice probability is exactly
    :math:`\sigma(r_a - r_b)`. ``r_a``, ``r_b`` broadcast; one win rate per pair. Chapter 1.

    >>> round(float(gumbel_choices(0.0, 0.0, n=200_000)), 2)
    0.5
    """
    r_a, r_b = np.broadcast_arrays(as_float_array("r_a", r_a), as_float_array("r_b", r_b))
    n = check_integer("n", n, minimum=1)
    rng = np.random.default_rng(seed)
    eps_a = rng.gumbel(size=(n,) + r_a.shape)
    eps_b = rng.gumbel(size=(n,) + r_b.shape)
    return np.mean(r_a + eps_a > r_b + eps_b, axis=0)


def simulate_comparisons(scores, n_comparisons=2000, seed=0):
    r"""``n_comparisons`` Bradley-Terry comparisons among items of true ``scores``: ``(winners, losers)``.

    Each comparison draws two distinct items uniformly and lets a win with probability
    :math:`\sigma(s_a - s_b)` (``rlhf_edu.tasks.bradley_terry_choice`` with beta = 1). Chapter 1 fits the
    scores back with ``rlhf_edu.numpy.fit_bradley_terry``.

    >>> w, l = simulate_comparisons([0.0, 1.0, 2.0], n_comparisons=5, seed=0)
    >>> w.shape, bool(np.all(w != l))
    ((5,), True)
    """
    scores = as_float_array("scores", scores)
    n_comparisons = check_integer("n_comparisons", n_comparisons, minimum=1)
    rng = np.random.default_rng(seed)
    a = rng.integers(scores.size, size=n_comparisons)
    b = (a + rng.integers(1, scores.size, size=n_comparisons)) % scores.size  # any item but a
    a_wins = bradley_terry_choice(scores[a], scores[b], beta=1.0, rng=rng)
    return np.where(a_wins, a, b), np.where(a_wins, b, a)


def noisy_label_loss(gap, noise):
    r"""Expected Bradley-Terry loss of a pair with reward margin ``gap`` when its label is flipped with
    probability ``noise``: :math:`-(1-\varepsilon)\log\sigma(d) - \varepsilon\log\sigma(-d)`.

    Its minimum is at :math:`\sigma(d^*) = 1 - \varepsilon`, i.e. :math:`d^* = \log\frac{1-\varepsilon}{\varepsilon}`:
    label noise caps the margin a reward model should learn. Chapter 1 (the widget).

    >>> round(float(noisy_label_loss(0.0, 0.1)), 4)
    0.6931
    """
    noise = check_in_range("noise", noise, 0.0, 1.0)
    gap = as_float_array("gap", gap)
    return (1 - noise) * bradley_terry_loss(gap, 0.0) + noise * bradley_terry_loss(0.0, gap)


@slide_figure("ch01_ratings_vs_comparisons")
def ratings_vs_comparisons_figure(n_annotators=6, seed=0):
    """Left: raw ratings of the notes' three answers by miscalibrated annotators. Right: the comparisons
    they imply, which agree (by construction: they are read off the same simulated ratings, an idealisation;
    real labellers agree on about 73% of comparisons in InstructGPT)."""
    quality = np.asarray(EARTHQUAKE_REWARDS)
    ratings, _, _ = simulate_ratings(quality, n_annotators=n_annotators, seed=seed)
    names = ["y1", "y2", "y3"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [1.3, 1]})
    for j in range(n_annotators):
        ax1.plot(range(3), ratings[j], "o-", alpha=0.8, label=f"annotator {j + 1}")
    ax1.set_xticks(range(3), names)
    ax1.set_ylabel("rating given (points)")
    ax1.set_title("ratings: every annotator has their own scale")
    ax1.legend(frameon=False, fontsize=7.5, ncol=2)
    pairs = [(0, 2), (2, 1), (0, 1)]
    agree = [np.mean(ratings[:, i] > ratings[:, k]) for i, k in pairs]
    ax2.bar(range(3), agree, color="tab:green", width=0.6)
    ax2.set_xticks(range(3), [f"{names[i]} > {names[k]}" for i, k in pairs])
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("fraction of annotators")
    ax2.set_title("comparisons: they agree (idealised)")
    fig.tight_layout()
    return fig


@slide_figure("ch01_choice_model")
def choice_model_figure(n=50_000, seed=0):
    """Win rates of a Gumbel random-utility model (dots) fall on sigma(r_a - r_b); Gaussian noise
    (Thurstone) gives a slightly different curve."""
    gaps = np.linspace(-4, 4, 17)
    wins = gumbel_choices(gaps, 0.0, n=n, seed=seed)
    d = np.linspace(-4.5, 4.5, 300)
    # Thurstone: two N(0, s^2) noises with the logistic's variance pi^2/6 each -> Phi(d / (pi / sqrt 3))
    probit = 0.5 * (1 + np.vectorize(math.erf)(d / (math.pi / math.sqrt(3)) / math.sqrt(2)))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(d, bradley_terry_prob(d, 0.0), color="tab:blue", lw=2, label=r"Bradley-Terry $\sigma(r_a - r_b)$")
    ax.plot(d, probit, color="0.5", lw=1.5, ls="--", label="Gaussian noise (Thurstone), same variance")
    ax.plot(gaps, wins, "o", color="tab:red", ms=5, label=f"Gumbel utilities, {n:,} simulated choices")
    ax.set_xlabel(r"reward gap $r_a - r_b$ (log-odds)")
    ax.set_ylabel("P(a is chosen over b)")
    ax.set_title("extreme-value noise on utilities gives the logistic curve")
    ax.legend(frameon=False, fontsize=8.5, loc="upper left")
    fig.tight_layout()
    return fig


@slide_figure("ch01_bt_loss")
def bt_loss_figure():
    """The pairwise loss -log sigma(d) and the size of its gradient sigma(-d) against the margin d."""
    d = np.linspace(-6, 6, 400)
    loss = bradley_terry_loss(d, 0.0)
    grad = -bradley_terry_loss_grad(d, np.zeros_like(d))["r_chosen"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(d, loss, color="tab:blue", lw=2, label=r"loss $-\log\sigma(d)$ (nats)")
    ax.plot(d, grad, color="tab:red", lw=2, ls="--", label=r"push on each reward $\sigma(-d)$")
    ax.axvline(0, color="k", lw=0.7)
    ax.set_xlabel(r"reward margin $d = r_\phi(x, y_w) - r_\phi(x, y_l)$")
    ax.set_ylabel("loss (nats) / gradient size")
    ax.set_ylim(0, 6)
    ax.set_title("misranked pairs (d < 0) are pushed hard, well-ranked ones barely")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


@slide_figure("ch01_bt_recovery")
def bt_recovery_figure(n_items=10, n_comparisons=3000, seed=0):
    """Maximum-likelihood Bradley-Terry scores from simulated comparisons against the true scores: right
    up to a constant shift, which comparisons cannot see."""
    rng = np.random.default_rng(seed)
    true = np.sort(rng.normal(1.0, 1.2, size=n_items))
    winners, losers = simulate_comparisons(true, n_comparisons=n_comparisons, seed=seed + 1)
    fitted = fit_bradley_terry(winners, losers, n_items=n_items)
    shift = true.mean()
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    lo, hi = min(true.min(), fitted.min()) - 0.4, max(true.max(), fitted.max()) + 0.4
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, label="fitted = true")
    ax.plot([lo, hi], [lo - shift, hi - shift], color="tab:green", lw=1, ls="--",
            label=f"fitted = true - {shift:.2f} (the mean)")
    ax.plot(true, fitted, "o", color="tab:blue", ms=6, label="items")
    ax.set_xlabel("true score (reward, log-odds units)")
    ax.set_ylabel("fitted score (centred to mean 0)")
    ax.set_title(f"{n_comparisons:,} comparisons of {n_items} items: recovered up to a shift", fontsize=10)
    ax.legend(frameon=False, fontsize=8.5)
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def bt_playground_figure(gap=1.0, noise=0.1):
    """The widget's picture: P(a > b) and the expected loss of a pair against the reward gap, for labels
    flipped with probability ``noise``; the chosen gap is marked."""
    d = np.linspace(-6, 6, 400)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(d, bradley_terry_prob(d, 0.0), color="tab:blue", lw=2, label=r"model: $\sigma(d)$")
    observed = (1 - noise) * bradley_terry_prob(d, 0.0) + noise * bradley_terry_prob(0.0, d)
    ax1.plot(d, observed, color="tab:orange", lw=2, ls="--", label=f"labels with {noise:.0%} flipped")
    p_gap = float(bradley_terry_prob(gap, 0.0))
    ax1.plot([gap], [p_gap], "ko")
    ax1.set_xlabel(r"reward gap $d = r_a - r_b$")
    ax1.set_ylabel("P(a labelled preferred)")
    ax1.set_title(f"P(a > b) = sigma({gap:.2f}) = {p_gap:.3f}")
    ax1.legend(frameon=False, fontsize=8.5)
    loss = noisy_label_loss(d, noise)
    ax2.plot(d, loss, color="tab:red", lw=2, label="expected loss of the pair")
    ax2.plot([gap], [float(noisy_label_loss(gap, noise))], "ko")
    if 0 < noise < 0.5:
        best = math.log((1 - noise) / noise)
        ax2.axvline(best, color="0.5", ls=":", label=f"best margin log((1-e)/e) = {best:.2f}")
    ax2.set_ylim(0, 4)
    ax2.set_xlabel(r"reward gap $d = r_a - r_b$")
    ax2.set_ylabel("loss (nats)")
    ax2.set_title(f"loss at d = {gap:.2f}: {float(noisy_label_loss(gap, noise)):.3f} nats")
    ax2.legend(frameon=False, fontsize=8.5)
    fig.tight_layout()
    return fig
