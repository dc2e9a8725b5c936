r"""Reward-model overoptimisation: Gao, Schulman and Hilton's functional forms, and fitting them (chapter 9).

Optimising a learned (proxy) reward model moves the policy away from its starting point; Gao, Schulman and
Hilton (2022, "Scaling laws for reward model overoptimization") measure the distance by

.. math:: d = \sqrt{\mathrm{KL}(\pi \,\|\, \pi_{init})}

and find that the **gold** reward (the true objective, there a 6B "gold-standard" reward model) gained over
the initial policy follows, for best-of-n sampling and for RL (PPO),

.. math:: R_{bon}(d) = d\,(\alpha_{bon} - \beta_{bon}\, d), \qquad
          R_{RL}(d) = d\,(\alpha_{RL} - \beta_{RL} \log d),

both 0 at :math:`d = 0`: rising at first with slope :math:`\alpha`, then falling, at a rate set by
:math:`\beta`, once the proxy's errors are what the optimiser exploits. Both forms are linear in
:math:`(\alpha, \beta)`, so a measured gold curve is fitted by ordinary least squares
(:func:`fit_gold_curve`).

NumPy references; the PyTorch twins of the two forms are in ``rlhf_edu.torch.overoptimization`` (the fit
has none: see ``NUMPY_ONLY``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlhf_edu.validation import as_float_array, check_broadcastable, check_choice, check_values_in_range

__all__ = ["best_of_n_gold", "rl_gold", "fit_gold_curve"]

#: The functional forms :func:`fit_gold_curve` knows, by name.
GOLD_FORMS = ("best_of_n", "rl")

NUMPY_ONLY = {
    "fit_gold_curve": "a least-squares fit of two coefficients to a handful of measured points, done once after "
    "the runs on NumPy arrays; nothing is trained through it, so a differentiable torch twin would have no user "
    "(the torch twins are the two forms it fits)",
}


def _check_forms(d, alpha, beta):
    d = as_float_array("d", d)
    alpha = as_float_array("alpha", alpha)
    beta = as_float_array("beta", beta)
    check_values_in_range("d", d, 0.0, np.inf)  # d is the square root of a KL divergence
    check_broadcastable(d=d, alpha=alpha, beta=beta)
    return d, alpha, beta


def best_of_n_gold(d, alpha, beta):
    r"""Gao et al.'s gold-reward gain of best-of-n at distance ``d``: :math:`R_{bon}(d) = d\,(\alpha - \beta d)`.

    ``d`` is :math:`\sqrt{\mathrm{KL}(\pi_{bon}\|\pi_{init})}` (nats\ :sup:`1/2`), for best-of-n usually from the
    analytic :math:`\mathrm{KL} = \log n - (n-1)/n` (``rlhf_edu.numpy.best_of_n_kl_bound``). A parabola in
    :math:`d`: 0 at :math:`d = 0`, slope :math:`\alpha` there, largest at :math:`d^* = \alpha / (2\beta)` with the
    value :math:`\alpha^2 / (4\beta)`, and below 0 beyond :math:`d = \alpha / \beta`.

    Args:
        d: distances, any shape, finite and >= 0.
        alpha, beta: the coefficients (:math:`\alpha_{bon}, \beta_{bon}`); numbers or arrays that broadcast
            with ``d``.

    Returns the broadcast array of gains (in the gold reward's units). Raises ``ValueError`` for a negative or
    non-finite ``d``, non-finite coefficients or shapes that do not broadcast; ``TypeError`` for non-numbers.
    Source: Gao, Schulman and Hilton (2022). Chapter 9.

    >>> best_of_n_gold([0.0, 0.5, 1.0, 2.0], alpha=1.0, beta=0.5).round(4)
    array([0.   , 0.375, 0.5  , 0.   ])
    """
    d, alpha, beta = _check_forms(d, alpha, beta)
    return d * (alpha - beta * d)


def _xlogx(d):
    """:math:`d \\log d` with its limit 0 at :math:`d = 0` (no warning, no NaN)."""
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, d * np.log(safe), 0.0)


def rl_gold(d, alpha, beta):
    r"""Gao et al.'s gold-reward gain of RL at distance ``d``: :math:`R_{RL}(d) = d\,(\alpha - \beta \log d)`.

    ``d`` is :math:`\sqrt{\mathrm{KL}(\pi_{RL}\|\pi_{init})}` (nats\ :sup:`1/2`), measured along the run. The value
    at :math:`d = 0` is the limit 0 (:math:`d \log d \to 0`). Unlike the best-of-n parabola it rises with an
    infinite slope at 0 and falls slowly, like :math:`-\beta d\log d`; where it peaks is chapter 9's exercise.

    Args:
        d: distances, any shape, finite and >= 0.
        alpha, beta: the coefficients (:math:`\alpha_{RL}, \beta_{RL}`); numbers or arrays that broadcast with
            ``d``.

    Returns the broadcast array of gains (gold reward units). Raises ``ValueError`` for a negative or non-finite
    ``d``, non-finite coefficients or shapes that do not broadcast; ``TypeError`` for non-numbers. Source: Gao,
    Schulman and Hilton (2022). Chapter 9.

    >>> rl_gold([0.0, 1.0, np.e], alpha=1.0, beta=0.5).round(4)
    array([0.    , 1.    , 1.3591])
    """
    d, alpha, beta = _check_forms(d, alpha, beta)
    return alpha * d - beta * _xlogx(d)


class GoldCurveFit(NamedTuple):
    """What :func:`fit_gold_curve` returns (a result container, so not in ``__all__``: the twin harness pairs
    computations, and this computes nothing).

    Attributes:
        form: ``"best_of_n"`` or ``"rl"``.
        alpha, beta: the least-squares coefficients.
        alpha_se, beta_se: their standard errors, :math:`\\sqrt{\\mathrm{diag}(s^2 (X^\\top X)^{-1})}`.
        covariance: the ``(2, 2)`` estimated covariance of ``(alpha, beta)``.
        residual_std: :math:`s`, the square root of the residual sum of squares over the degrees of freedom.
        dof: degrees of freedom, number of points minus 2.
    """

    form: str
    alpha: float
    beta: float
    alpha_se: float
    beta_se: float
    covariance: np.ndarray
    residual_std: float
    dof: int


def fit_gold_curve(d, gain, form="rl"):
    r"""Fit Gao et al.'s form to measured gold-reward gains by ordinary least squares; coefficients and errors.

    Both forms are linear in the coefficients: :math:`R(d) = \alpha\, x_1(d) - \beta\, x_2(d)` with
    :math:`x_1 = d` and :math:`x_2 = d^2` (``form="best_of_n"``) or :math:`x_2 = d\log d` (``form="rl"``). With
    the design matrix :math:`X = [x_1, -x_2]` (one row per point) and the gains :math:`y`,

    .. math:: (\hat\alpha, \hat\beta) = (X^\top X)^{-1} X^\top y, \qquad
              s^2 = \frac{\lVert y - X(\hat\alpha, \hat\beta)\rVert^2}{N - 2}, \qquad
              \widehat{\mathrm{Cov}} = s^2\, (X^\top X)^{-1},

    the standard errors being the square roots of the covariance's diagonal. They assume independent errors
    of equal variance; points along one RL run share the run's randomness, so there they understate the
    uncertainty (chapter 9 says by how much it matters). The forms have no intercept: pass the **gain** over
    the initial policy, ``gold - gold_at_d0``. A point at :math:`d = 0` has a zero row in :math:`X`: it cannot
    move the coefficients, only the residuals and the degrees of freedom.

    Args:
        d: ``(N,)`` distances :math:`\sqrt{\mathrm{KL}}`, finite, >= 0.
        gain: ``(N,)`` measured gold-reward gains, finite.
        form: ``"rl"`` (default) or ``"best_of_n"``.

    Returns a :class:`GoldCurveFit`. Raises ``ValueError`` for fewer than 3 points, shapes that differ,
    negative or non-finite inputs, an unknown ``form``, or distances that cannot separate the two coefficients
    (fewer than two distinct non-zero ``d``; for ``"rl"``, where :math:`x_2 = x_1\log d`, two distinct ``d``
    other than 0 are enough). Source: the forms of Gao, Schulman and Hilton (2022); the fit is textbook least
    squares. Chapter 9. NumPy only (``NUMPY_ONLY``).

    Noise-free points are recovered exactly, with standard errors 0:

    >>> d = np.array([0.5, 1.0, 1.5, 2.0])
    >>> fit = fit_gold_curve(d, best_of_n_gold(d, 0.4, 0.1), form="best_of_n")
    >>> round(fit.alpha, 6), round(fit.beta, 6), round(fit.alpha_se, 6), fit.dof
    (0.4, 0.1, 0.0, 2)
    """
    check_choice("form", form, GOLD_FORMS)
    d = as_float_array("d", d)
    gain = as_float_array("gain", gain)
    if d.ndim != 1 or gain.shape != d.shape:
        raise ValueError(f"d and gain must be 1-D arrays of one length, got shapes {d.shape} and {gain.shape}")
    check_values_in_range("d", d, 0.0, np.inf)
    if d.size < 3:
        raise ValueError(f"fit_gold_curve needs at least 3 points (2 coefficients and a residual), got {d.size}")
    x2 = d**2 if form == "best_of_n" else _xlogx(d)
    X = np.stack([d, -x2], axis=1)
    coef, _, rank, singular = np.linalg.lstsq(X, gain, rcond=None)
    if rank < 2 or singular[-1] <= 1e-10 * singular[0]:
        raise ValueError(f"the distances d cannot separate alpha from beta for form={form!r} (need at least two "
                         "distinct d > 0, and for 'rl' not only d = 1, where log d = 0)")
    residual = gain - X @ coef
    dof = d.size - 2
    s2 = float(residual @ residual) / dof
    xtx_inv = np.linalg.inv(X.T @ X)
    cov = s2 * xtx_inv
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return GoldCurveFit(form=form, alpha=float(coef[0]), beta=float(coef[1]), alpha_se=float(se[0]),
                        beta_se=float(se[1]), covariance=cov, residual_std=float(np.sqrt(s2)), dof=int(dof))
