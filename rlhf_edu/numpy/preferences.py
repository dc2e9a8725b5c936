"""Bradley-Terry preference modelling (chapter 1, "Rewards from preferences").

A reward model is trained on comparisons "a is preferred to b". The Bradley-Terry model (1952) says the
probability of that preference is a logistic function of the reward difference,

    P(a > b) = exp(r_a) / (exp(r_a) + exp(r_b)) = sigmoid(r_a - r_b),

and the reward model is fitted by maximum likelihood: minimise -log sigmoid(r_chosen - r_rejected).

NumPy references; the PyTorch twins are in ``rlhf_edu.torch.preferences``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from rlhf_edu.validation import (
    as_float_array,
    check_broadcastable,
    check_integer,
    check_min_size,
    check_nonnegative,
    check_same_shape,
)

__all__ = [
    "bradley_terry_prob",
    "bradley_terry_prob_grad",
    "bradley_terry_loss",
    "bradley_terry_loss_grad",
    "fit_bradley_terry",
    "ranking_to_pairs",
]

NUMPY_ONLY = {
    "fit_bradley_terry": "a SciPy L-BFGS fit of a handful of item scores, used to make data and plots; "
    "the torch side trains reward models with bradley_terry_loss and autograd instead",
}


def _sigmoid(x):
    # sigmoid(x) = exp(-log(1 + e^-x)); logaddexp never overflows, so this is exact for |x| = 1e4
    return np.exp(-np.logaddexp(0.0, -x))


def _sum_to_shape(g, shape):
    """Sum a broadcast gradient back to the shape of the argument it belongs to."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def bradley_terry_prob(r_a, r_b):
    r"""Probability that ``a`` is preferred to ``b`` under Bradley-Terry: :math:`\sigma(r_a - r_b)`.

    .. math:: P(a \succ b) = \frac{e^{r_a}}{e^{r_a} + e^{r_b}} = \frac{1}{1 + e^{-(r_a - r_b)}} = \sigma(r_a - r_b)

    Source: Bradley and Terry (1952); the lecture notes derive the sigmoid form by dividing through by
    :math:`e^{r_a}`. Chapter 1. Written as ``exp(-logaddexp(0, -(r_a - r_b)))``, so differences of
    +-1e4 give exactly 1 and 0 instead of overflowing ``exp``. ``r_a`` and ``r_b`` broadcast, so
    ``bradley_terry_prob(r[:, None], r[None, :])`` is the matrix of all pairwise win probabilities.

    >>> float(bradley_terry_prob(1.0, 0.0).round(4))
    0.7311
    >>> bradley_terry_prob([2.0, 0.0, 1e4], [0.0, 2.0, -1e4]).round(4)
    array([0.8808, 0.1192, 1.    ])
    """
    r_a = as_float_array("r_a", r_a)
    r_b = as_float_array("r_b", r_b)
    check_broadcastable(r_a=r_a, r_b=r_b)
    return _sigmoid(r_a - r_b)


def bradley_terry_prob_grad(r_a, r_b):
    r"""Analytic gradient of ``sum(bradley_terry_prob(r_a, r_b))``: :math:`\pm\sigma(d)\sigma(-d)`, d = r_a - r_b.

    .. math:: \frac{\partial \sigma(d)}{\partial r_a} = \sigma(d)(1 - \sigma(d)) = \sigma(d)\,\sigma(-d)
              = -\frac{\partial \sigma(d)}{\partial r_b}

    Source: the derivative of the logistic function. Chapter 1. Computed in log space,
    ``exp(log sigma(d) + log sigma(-d))``, so it is 0 (not NaN) for d = +-1e4.

    >>> {k: float(v) for k, v in bradley_terry_prob_grad(0.0, 0.0).items()}
    {'r_a': 0.25, 'r_b': -0.25}
    """
    r_a = as_float_array("r_a", r_a)
    r_b = as_float_array("r_b", r_b)
    check_broadcastable(r_a=r_a, r_b=r_b)
    d = r_a - r_b
    slope = np.exp(-np.logaddexp(0.0, -d) - np.logaddexp(0.0, d))
    return {"r_a": _sum_to_shape(slope, r_a.shape), "r_b": _sum_to_shape(-slope, r_b.shape)}


def bradley_terry_loss(r_chosen, r_rejected, margin=0.0):
    r"""Per-pair reward-model loss :math:`-\log\sigma(r_{chosen} - r_{rejected} - m)`.

    .. math:: \mathcal{L}(r_w, r_l) = -\log \sigma(r_w - r_l - m) = \log\left(1 + e^{-(r_w - r_l - m)}\right)

    The negative log-likelihood of the Bradley-Terry model (the lecture notes' :math:`L_R`, InstructGPT
    2022); the dataset loss is its mean. ``margin`` m (default 0, broadcastable, one value per pair) is
    LLaMA-2's reward-model margin (Touvron et al., 2023): pairs rated "significantly better" must win by
    at least m. Chapter 1. Computed as ``logaddexp(0, -d)``: finite for d = +-1e4 in float32 and float64.

    >>> bradley_terry_loss([1.0, 0.0], [0.0, 0.0]).round(4)
    array([0.3133, 0.6931])
    >>> bradley_terry_loss([1e4], [-1e4]), bradley_terry_loss([-1e4], [1e4])
    (array([0.]), array([20000.]))
    """
    r_chosen = as_float_array("r_chosen", r_chosen)
    r_rejected = as_float_array("r_rejected", r_rejected)
    margin = as_float_array("margin", margin).astype(np.result_type(r_chosen, r_rejected), copy=False)
    check_broadcastable(r_chosen=r_chosen, r_rejected=r_rejected, margin=margin)
    return np.logaddexp(0.0, -(r_chosen - r_rejected - margin))


def bradley_terry_loss_grad(r_chosen, r_rejected, margin=0.0):
    r"""Analytic gradient of ``sum(bradley_terry_loss(...))`` with respect to the two rewards.

    With :math:`d = r_{chosen} - r_{rejected} - m`:

    .. math:: \frac{\partial \mathcal{L}}{\partial r_{chosen}} = -\sigma(-d), \qquad
              \frac{\partial \mathcal{L}}{\partial r_{rejected}} = +\sigma(-d)

    so a pair the model already ranks right by a wide margin (d >> 0) contributes almost nothing, and a
    badly misranked pair contributes a gradient of magnitude almost 1 (never more). Source: the lecture
    notes (chapter 1). Returns ``{"r_chosen": ..., "r_rejected": ...}``.

    >>> {k: v.round(4) for k, v in bradley_terry_loss_grad([1.0], [0.0]).items()}
    {'r_chosen': array([-0.2689]), 'r_rejected': array([0.2689])}
    """
    r_chosen = as_float_array("r_chosen", r_chosen)
    r_rejected = as_float_array("r_rejected", r_rejected)
    margin = as_float_array("margin", margin).astype(np.result_type(r_chosen, r_rejected), copy=False)
    check_broadcastable(r_chosen=r_chosen, r_rejected=r_rejected, margin=margin)
    weight = _sigmoid(-(r_chosen - r_rejected - margin))
    return {"r_chosen": _sum_to_shape(-weight, r_chosen.shape), "r_rejected": _sum_to_shape(weight, r_rejected.shape)}


def _as_index_array(name, x, n_items):
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer item ids, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of item ids, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_items):
        bad = arr[(arr < 0) | (arr >= n_items)][0]
        raise ValueError(f"{name} must hold item ids in [0, n_items={n_items}), found {bad}")
    return arr.astype(np.int64)


def fit_bradley_terry(winners, losers, n_items, l2=0.0, *, weights=None, gtol=1e-10, max_iter=10_000):
    r"""Maximum-likelihood Bradley-Terry scores of ``n_items`` items from comparisons, centred to mean 0.

    Comparison k says item ``winners[k]`` beat item ``losers[k]``. The scores minimise

    .. math:: \sum_k w_k \left(-\log\sigma(s_{winners_k} - s_{losers_k})\right) + \frac{\lambda}{2}\lVert s\rVert^2

    (:math:`w_k` = ``weights``, default 1; :math:`\lambda` = ``l2``, a Gaussian prior of variance
    :math:`1/\lambda` on each score), found with SciPy's L-BFGS and the analytic gradient of
    ``bradley_terry_loss``. The likelihood only sees differences, so the scores are defined up to a
    constant: they are returned centred, ``scores.mean() == 0``.

    With ``l2 = 0`` the maximum exists (Zermelo, 1929; Ford, 1957) only if the comparison graph is
    strongly connected: for every split of the items into two groups, each group beat the other at
    least once. Otherwise some group's scores can be pushed to infinity and a ``ValueError`` says so;
    pass ``l2 > 0`` to regularise. Source: Bradley and Terry (1952), the lecture notes' maximum-likelihood
    slide. Chapter 1 (fits the "true" scores behind a synthetic preference data set).

    Two items, item 0 wins 3 of 4 comparisons: the MLE gap is log(3/1), so the centred scores are
    +-log(3)/2 = +-0.5493.

    >>> fit_bradley_terry([0, 0, 0, 1], [1, 1, 1, 0], n_items=2).round(4)
    array([ 0.5493, -0.5493])
    """
    n_items = check_integer("n_items", n_items, minimum=2)
    l2 = check_nonnegative("l2", l2)
    winners = _as_index_array("winners", winners, n_items)
    losers = _as_index_array("losers", losers, n_items)
    check_same_shape(winners=winners, losers=losers)
    check_min_size("winners", winners, 1)
    if np.any(winners == losers):
        k = int(np.argmax(winners == losers))
        raise ValueError(f"comparison {k} has winners == losers == {winners[k]}: an item cannot beat itself")
    if weights is None:
        weights = np.ones(winners.shape)
    weights = as_float_array("weights", weights).astype(np.float64)
    check_same_shape(winners=winners, weights=weights)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
        raise ValueError("weights must be finite, non-negative and not all zero")

    if l2 == 0.0:
        used = weights > 0
        # an edge loser -> winner for every comparison: every item must reach every other item
        graph = coo_matrix((np.ones(used.sum()), (losers[used], winners[used])), shape=(n_items, n_items))
        n_groups, _ = connected_components(graph, directed=True, connection="strong")
        if n_groups > 1:
            raise ValueError(
                f"the comparison graph of winners and losers is not strongly connected ({n_groups} groups): "
                "some group of items never lost (or never won, or was never compared) against the others, "
                "so the maximum-likelihood scores diverge; pass l2 > 0 to regularise"
            )

    def objective(scores):
        r_w, r_l = scores[winners], scores[losers]
        nll = np.sum(weights * bradley_terry_loss(r_w, r_l)) + 0.5 * l2 * np.sum(scores**2)
        g = bradley_terry_loss_grad(r_w, r_l)
        grad = np.bincount(winners, weights * g["r_chosen"], minlength=n_items)
        grad += np.bincount(losers, weights * g["r_rejected"], minlength=n_items)
        return nll, grad + l2 * scores

    result = minimize(
        objective,
        np.zeros(n_items),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": gtol, "ftol": 0.0, "maxiter": max_iter, "maxcor": 30},
    )
    scores = result.x - result.x.mean()
    grad_norm = np.max(np.abs(objective(scores)[1]))
    if not np.isfinite(grad_norm) or grad_norm > max(1e-5, 1e-8 * weights.sum()):
        raise RuntimeError(f"fit_bradley_terry did not converge (largest gradient {grad_norm:.3g}): {result.message}")
    return scores


def ranking_to_pairs(ranking):
    r"""All :math:`\binom{K}{2}` (winner, loser) pairs of a K-wise ranking, each weighted :math:`1/\binom{K}{2}`.

    ``ranking`` lists K distinct item ids best first (or a batch, shape (..., K)). Pair (i, j) with
    i < j says ``ranking[i]`` beat ``ranking[j]``. InstructGPT (Ouyang et al., 2022, eq. 1) trains its
    reward model on all pairs of each K-wise ranking at once,

    .. math:: \mathcal{L} = -\frac{1}{\binom{K}{2}} \mathbb{E}\left[\log\sigma(r(y_w) - r(y_l))\right],

    so each prompt counts once however many pairs it yields. Returns ``(winners, losers, weights)``,
    each of shape (..., K(K-1)/2): integer ids and float weights. Chapter 1.

    >>> w, l, wt = ranking_to_pairs([2, 0, 1])
    >>> w, l, wt.round(4)
    (array([2, 2, 0]), array([0, 1, 1]), array([0.3333, 0.3333, 0.3333]))
    """
    ranking = np.asarray(ranking)
    if ranking.dtype == bool or not np.issubdtype(ranking.dtype, np.integer):
        raise TypeError(f"ranking must hold integer item ids, got dtype {ranking.dtype}")
    check_min_size("ranking", ranking, 2)
    ordered = np.sort(ranking, axis=-1)
    if np.any(ordered[..., 1:] == ordered[..., :-1]):
        raise ValueError("ranking must list distinct item ids along its last axis (a repeated id cannot beat itself)")
    k = ranking.shape[-1]
    i, j = np.triu_indices(k, 1)  # every pair i < j: the better-ranked item first
    weights = np.full(ranking.shape[:-1] + (i.size,), 1.0 / math.comb(k, 2))
    return ranking[..., i], ranking[..., j], weights
