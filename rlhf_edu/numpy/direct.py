"""Direct alignment losses: DPO, IPO, GPO, SLiC-HF, KTO, SimPO, ORPO, REBEL (chapter "Direct alignment").

Every loss here turns per-sequence log-probabilities into a loss without a reward model or RL rollouts.
Inputs are log-probabilities of whole responses (summed over tokens unless a loss says otherwise:
SimPO divides by the length itself, ORPO takes mean per-token log-probs), as arrays of any shape,
usually ``(B,)``; the functions are elementwise. Outputs are PER-PAIR (or per-example) losses, never
averaged, so a trainer chooses the reduction (``.mean()`` is the :math:`\\mathbb{E}` of the papers).

Notation: with the policy :math:`\\pi_\\theta` and the frozen reference :math:`\\pi_{ref}`,

.. math:: h = \\rho = \\log\\frac{\\pi_\\theta(y_w)}{\\pi_{ref}(y_w)} - \\log\\frac{\\pi_\\theta(y_l)}{\\pi_{ref}(y_l)}
          = (pc - rc) - (pr - rr)

(``pc`` = policy_chosen_logps, ``pr`` = policy_rejected_logps, ``rc``/``rr`` the reference ones).
Everything is computed in log space (``np.logaddexp(0, -x)`` is :math:`-\\log\\sigma(x)`), so losses and
gradients stay finite for margins of +-1e4 in float32 and float64.

Input checks (every loss, both trees): NaN or +inf anywhere raises ``ValueError`` naming the argument;
log-probabilities may be ``-inf`` (probability 0) but must be ``<= 0``: a value above
``rlhf_edu.validation.LOGP_TOLERANCE`` (1e-3, room for float rounding; exactly 0, probability 1, is
valid) raises ``ValueError`` naming the argument and the likely mistake (a sign flip, an NLL or logits
passed as log-probs). ``gpo_loss`` takes :math:`\rho`, a log-ratio difference of either sign; its
log-probs are checked where :math:`\rho` is built (``log_ratio_difference``).

NumPy references; the PyTorch twins are in ``rlhf_edu.torch.direct``.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.numpy.divergences import _sum_to_shape
from rlhf_edu.validation import (
    as_float_array,
    check_binary,
    check_broadcastable,
    check_choice,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_same_shape,
    check_logprobs,
    check_values_in_range,
)

__all__ = [
    "log_ratio_difference",
    "dpo_implicit_reward",
    "dpo_loss",
    "dpo_loss_grad",
    "ipo_loss",
    "gpo_loss",
    "gpo_loss_grad",
    "slic_loss",
    "kahneman_tversky_value",
    "kahneman_tversky_value_grad",
    "kto_loss",
    "simpo_loss",
    "orpo_log_odds",
    "orpo_loss",
    "rebel_loss",
]


def _neg_log_sigmoid(x):
    """-log sigma(x) = log(1 + e^{-x}) (softplus(-x)), without overflow for large |x|."""
    return np.logaddexp(0.0, -x)


def _sigmoid(x):
    """sigma(x) = exp(log sigma(x)): no overflow for x = -1e4."""
    return np.exp(-np.logaddexp(0.0, -x))


#: The functions f of GPO (Tang et al. 2024; all convex but the Savage loss), evaluated at x = beta * rho.
#: A chapter can plot them side by side: ``for name, f in GPO_FUNCTIONS.items(): plt.plot(x, f(x), label=name)``.
GPO_FUNCTIONS = {
    "logistic": lambda x: np.logaddexp(0.0, -x),  # log(1 + e^{-x}): DPO
    "hinge": lambda x: np.maximum(0.0, 1.0 - x),  # max(0, 1 - x): SLiC
    "squared": lambda x: (x - 1.0) ** 2,  # (x - 1)^2: IPO
    "exponential": lambda x: np.exp(-x),  # e^{-x}: AdaBoost-like; overflows below x = -709 (float64)
    "truncated_quadratic": lambda x: np.maximum(0.0, 1.0 - x) ** 2,  # max(0, 1 - x)^2
    "savage": lambda x: np.exp(-2.0 * np.logaddexp(0.0, x)),  # 1 / (1 + e^x)^2 = sigma(-x)^2
}

#: The same table as LaTeX, for figure legends.
GPO_FORMULAS = {
    "logistic": r"$\log(1+e^{-x})$",
    "hinge": r"$\max(0, 1-x)$",
    "squared": r"$(x-1)^2$",
    "exponential": r"$e^{-x}$",
    "truncated_quadratic": r"$\max(0, 1-x)^2$",
    "savage": r"$1/(1+e^{x})^2$",
}

GPO_LOSSES = tuple(GPO_FUNCTIONS)

#: f'(x) of each GPO function, for ``gpo_loss_grad``. Where f has a kink (hinge and truncated quadratic at
#: x = 1) the derivative from the right, 0, is used, as autograd's relu does.
GPO_DERIVATIVES = {
    "logistic": lambda x: -_sigmoid(-x),  # -sigma(-x): DPO's weight sigma(r_l - r_w), with a minus sign
    "hinge": lambda x: np.where(x < 1.0, -1.0, 0.0).astype(np.result_type(x, np.float32)),
    "squared": lambda x: 2.0 * (x - 1.0),
    "exponential": lambda x: -np.exp(-x),
    "truncated_quadratic": lambda x: -2.0 * np.maximum(0.0, 1.0 - x),
    "savage": lambda x: -2.0 * np.exp(-2.0 * np.logaddexp(0.0, x)) * _sigmoid(x),  # -2 sigma(-x)^2 sigma(x)
}


def _orpo_clip(mean_logps):
    """ORPO: a mean log-prob closer to 0 than the dtype's machine epsilon is treated as -eps (see orpo_log_odds)."""
    return np.minimum(mean_logps, -np.finfo(mean_logps.dtype).eps)


def _log1mexp(a):
    """log(1 - e^a) for a < 0, accurate everywhere (Maechler 2012, "Accurately computing log(1 - exp(-|a|))").

    Near 0, 1 - e^a cancels, so use log(-expm1(a)); far from 0, e^a is tiny, so use log1p(-e^a).
    Each branch only sees inputs on its side of -log 2, so neither warns nor overflows.
    """
    cut = -float(np.log(2.0))  # a Python float: a NumPy float64 scalar would upcast float32 inputs
    near = np.log(-np.expm1(np.maximum(a, cut)))
    far = np.log1p(-np.exp(np.minimum(a, cut)))
    return np.where(a > cut, near, far)


def _four_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    pc = as_float_array("policy_chosen_logps", policy_chosen_logps)
    pr = as_float_array("policy_rejected_logps", policy_rejected_logps)
    rc = as_float_array("ref_chosen_logps", ref_chosen_logps)
    rr = as_float_array("ref_rejected_logps", ref_rejected_logps)
    check_same_shape(
        policy_chosen_logps=pc, policy_rejected_logps=pr, ref_chosen_logps=rc, ref_rejected_logps=rr
    )
    _check_logprobs(policy_chosen_logps=pc, policy_rejected_logps=pr, ref_chosen_logps=rc, ref_rejected_logps=rr)
    return pc, pr, rc, rr


def _check_logprobs(**named):
    """Every named array must hold log-probabilities: <= 0 up to float rounding (``LOGP_TOLERANCE``).

    A positive "log-probability" is a mistake upstream (a sign flip: an NLL passed as a log-prob; a
    sum of probabilities or logits); the loss would train on it silently. Shared with the torch twin."""
    for name, x in named.items():
        check_logprobs(name, x)


def log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    r"""The log-ratio difference :math:`\rho = h = (pc - rc) - (pr - rr)` shared by DPO, IPO and GPO.

    .. math:: \rho_\theta(y_w, y_l) = \log\frac{\pi_\theta(y_w)}{\pi_{ref}(y_w)} - \log\frac{\pi_\theta(y_l)}{\pi_{ref}(y_l)}

    Source: Tang et al. 2024 (GPO), Azar et al. 2023 (IPO's :math:`h_\pi`); the lecture notes. Used in
    the chapter "Direct alignment" as the x-axis of every direct loss.

    >>> log_ratio_difference(np.array([-1.0]), np.array([-3.0]), np.array([-2.0]), np.array([-2.0]))
    array([2.])
    """
    pc, pr, rc, rr = _four_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (pc - rc) - (pr - rr)


def dpo_implicit_reward(policy_logps, ref_logps, beta):
    r"""DPO's implicit reward :math:`\hat r_\theta(x, y) = \beta \log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}`.

    The reward the policy defines through the KL-regularised optimum, up to the prompt-only term
    :math:`\beta\log Z(x)` that cancels in every difference :math:`\hat r(y_w) - \hat r(y_l)`.
    Source: Rafailov et al. 2023 (DPO), Sec. 5; the lecture notes. Chapter "Direct alignment" (reward
    accuracy and margins logged during DPO training).

    >>> dpo_implicit_reward(np.array([-10.0, -12.0]), np.array([-11.0, -11.0]), beta=0.1).round(6)
    array([ 0.1, -0.1])
    """
    beta = check_positive("beta", beta)
    policy_logps = as_float_array("policy_logps", policy_logps)
    ref_logps = as_float_array("ref_logps", ref_logps)
    check_same_shape(policy_logps=policy_logps, ref_logps=ref_logps)
    _check_logprobs(policy_logps=policy_logps, ref_logps=ref_logps)
    return beta * (policy_logps - ref_logps)


def _dpo_check(beta, label_smoothing):
    beta = check_positive("beta", beta)
    # cDPO: labels flipped with probability eps; eps > 1/2 would mean trusting the flipped label
    label_smoothing = check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
    return beta, label_smoothing


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta=0.1,
    label_smoothing=0.0,
):
    r"""Per-pair DPO loss (Rafailov et al. 2023), with cDPO label smoothing.

    .. math:: \mathcal{L}_{DPO} = -\log\sigma\big(\beta[(pc - rc) - (pr - rr)]\big)
              = -\log\sigma\big(\hat r_\theta(y_w) - \hat r_\theta(y_l)\big)

    With ``label_smoothing`` :math:`\varepsilon` (conservative DPO, Mitchell 2023, the labels are
    flipped with probability :math:`\varepsilon`), with :math:`z = \beta h`:

    .. math:: \mathcal{L}_{cDPO} = -(1-\varepsilon)\log\sigma(z) - \varepsilon\log\sigma(-z)

    Defaults: ``beta=0.1`` (the paper's), ``label_smoothing=0.0`` (plain DPO; at most 0.5).
    At initialisation (policy == reference) the loss is :math:`\log 2`. The lecture notes write
    :math:`\sigma(\beta\log\frac{\pi_{ref}(y_w)}{\pi^*(y_w)} - \dots)` in one step of the derivation: the
    ratio is upside down there; the paper's (and this) form has :math:`\pi/\pi_{ref}`.
    Chapter "Direct alignment".

    >>> dpo_loss(np.array([-1.0]), np.array([-3.0]), np.array([-2.0]), np.array([-2.0]), beta=0.5).round(4)
    array([0.3133])
    >>> round(float(dpo_loss(np.array([-5.0]), np.array([-7.0]), np.array([-5.0]), np.array([-7.0]))[0]), 6)  # log 2
    0.693147
    """
    beta, eps = _dpo_check(beta, label_smoothing)
    z = beta * log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if eps == 0.0:
        return _neg_log_sigmoid(z)
    return (1.0 - eps) * _neg_log_sigmoid(z) + eps * _neg_log_sigmoid(-z)


def dpo_loss_grad(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta=0.1,
    label_smoothing=0.0,
):
    r"""Analytic gradient of ``sum(dpo_loss(...))`` with respect to the four log-probabilities.

    The lecture notes' gradient (Rafailov et al. 2023, eq. 7) is

    .. math:: \nabla_\theta\mathcal{L}_{DPO} = -\beta\,\mathbb{E}\big[\sigma(\hat r_\theta(y_l) - \hat r_\theta(y_w))
              [\nabla_\theta\log\pi(y_w) - \nabla_\theta\log\pi(y_l)]\big]

    so per pair :math:`\partial/\partial pc = -\beta w`, :math:`\partial/\partial pr = +\beta w`, and the
    reference log-probs get the opposite signs, with the weight
    :math:`w = \sigma(\hat r_l - \hat r_w) = \sigma(-\beta h)`: large when the implicit reward orders the
    pair wrongly. With label smoothing :math:`\varepsilon` the weight becomes
    :math:`(1-\varepsilon)\sigma(-z) - \varepsilon\sigma(z)`, :math:`z = \beta h`.
    Chapter "Direct alignment" (the weight is 1/2 at initialisation).

    >>> g = dpo_loss_grad(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), beta=0.1)
    >>> {k: v.round(3).tolist() for k, v in g.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'policy_chosen_logps': [-0.05], 'policy_rejected_logps': [0.05],
     'ref_chosen_logps': [0.05], 'ref_rejected_logps': [-0.05]}
    """
    beta, eps = _dpo_check(beta, label_smoothing)
    z = beta * log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    weight = (1.0 - eps) * _sigmoid(-z) - eps * _sigmoid(z)  # sigma(r_hat_l - r_hat_w) when eps = 0
    return {
        "policy_chosen_logps": -beta * weight,
        "policy_rejected_logps": beta * weight,
        "ref_chosen_logps": beta * weight,
        "ref_rejected_logps": -beta * weight,
    }


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    r"""Per-pair IPO loss, the lecture notes' empirical IPO loss (Azar et al. 2023, "A General
    Theoretical Paradigm to Understand Learning from Human Preferences", eq. for :math:`\Psi = I`).

    .. math:: \mathcal{L}_{IPO} = \Big(h - \frac{1}{2\beta}\Big)^2,\qquad h = (pc - rc) - (pr - rr)

    A squared loss regresses :math:`h` to the finite target :math:`1/(2\beta)` (the paper's
    :math:`\tau` is this ``beta``), so deterministic preferences cannot push the log-ratios to infinity
    as with DPO. The notes write :math:`h = \log\frac{\pi(y)}{\pi(y')} - \frac{\pi_{ref}(y)}{\pi_{ref}(y')}`:
    a log is missing on the reference ratio; the paper's :math:`h` has it (as here).
    Relation to GPO: ``ipo_loss(beta) == gpo_loss(h, 2 * beta, "squared") / (4 * beta**2)``.
    Common bug: TRL feeds IPO length-averaged log-probs; pass what your trainer means.
    Chapter "Direct alignment".

    >>> ipo_loss(np.array([-1.0]), np.array([-3.0]), np.array([-2.0]), np.array([-2.0]), beta=0.5)
    array([1.])
    """
    beta = check_positive("beta", beta)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h - 1.0 / (2.0 * beta)) ** 2


def gpo_loss(rho, beta, f="logistic"):
    r"""Per-pair Generalized Preference Optimization loss :math:`f(\beta\rho)` (Tang et al. 2024).

    .. math:: \mathcal{L}_{GPO} = f(\beta\rho),\qquad \rho = (pc - rc) - (pr - rr)
              \ (\text{see } \texttt{log\_ratio\_difference})

    ``f`` (default ``"logistic"``) is one of ``GPO_FUNCTIONS``, with the exact correspondences:

    - ``"logistic"`` :math:`\log(1+e^{-x})`: DPO, ``gpo_loss(rho, beta) == dpo_loss(..., beta)``;
    - ``"hinge"`` :math:`\max(0, 1-x)`: SLiC. :math:`\max(0, 1-\beta\rho) = \beta\max(0, 1/\beta - \rho)`,
      i.e. ``gpo_loss(rho, beta, "hinge") == beta * slic_loss(rho, 0 * rho, delta=1/beta)``: SLiC's calibration
      loss with margin :math:`\delta = 1/\beta` applied to :math:`\rho` (SLiC-HF itself uses no reference:
      :math:`\rho = pc - pr` when ``ref_chosen == ref_rejected``), scaled by :math:`\beta`;
    - ``"squared"`` :math:`(x-1)^2`: IPO. :math:`(2\beta\rho - 1)^2 = 4\beta^2(\rho - \frac{1}{2\beta})^2`,
      i.e. ``gpo_loss(rho, 2 * beta, "squared") == 4 * beta**2 * ipo_loss(..., beta)``;
    - ``"exponential"`` :math:`e^{-x}`, ``"truncated_quadratic"`` :math:`\max(0,1-x)^2`, ``"savage"``
      :math:`1/(1+e^x)^2`: the paper's new variants. The exponential loss is unbounded: it overflows to
      inf for :math:`\beta\rho < -709` (float64), -88 (float32); that is the function, not a bug.

    Chapter "Direct alignment" (the table as a figure; regularisation strength
    :math:`\propto |f''(0)/f'(0)|\beta`).

    >>> gpo_loss(np.array([-1.0, 0.0, 2.0]), beta=1.0, f="hinge")
    array([2., 1., 0.])
    """
    check_choice("f", f, GPO_LOSSES)
    beta = check_positive("beta", beta)
    rho = as_float_array("rho", rho)
    return GPO_FUNCTIONS[f](beta * rho)


def gpo_loss_grad(rho, beta, f="logistic"):
    r"""Analytic gradient of ``sum(gpo_loss(rho, beta, f))`` with respect to :math:`\rho`:
    :math:`\beta f'(\beta\rho)`.

    Minus this is the weight with which a pair pushes its log-ratio margin up: for DPO (``"logistic"``)
    :math:`\beta\sigma(-\beta\rho)`, which never reaches 0 (DPO keeps pushing however large the margin);
    for IPO (``"squared"``) :math:`-2\beta(\beta\rho - 1)`, which changes sign past the target
    :math:`\rho = 1/\beta` (it pulls back); for SLiC (``"hinge"``) :math:`\beta` up to the margin and 0
    after it. Values of :math:`f'` (``GPO_DERIVATIVES``):

    ======================  ===================================  ==========
    f                       :math:`f'(x)`                        :math:`f'(0)`
    ======================  ===================================  ==========
    logistic                :math:`-\sigma(-x)`                  -1/2
    hinge                   :math:`-1` for :math:`x<1`, else 0     -1
    squared                 :math:`2(x-1)`                       -2
    exponential             :math:`-e^{-x}`                      -1
    truncated_quadratic     :math:`-2\max(0, 1-x)`               -2
    savage                  :math:`-2\sigma(-x)^2\sigma(x)`       -1/4
    ======================  ===================================  ==========

    At a kink (x = 1 for the hinge and the truncated quadratic) the right derivative, 0, is returned (as
    autograd's ``relu`` does). Source: Tang et al. 2024 (GPO), whose regularisation analysis uses
    :math:`f'(0)` and :math:`f''(0)`. Chapter 7.

    >>> {k: v.round(4).tolist() for k, v in gpo_loss_grad(np.array([0.0, 2.0]), 1.0).items()}
    {'rho': [-0.5, -0.1192]}
    >>> gpo_loss_grad(np.array([0.0, 2.0]), 0.5, "squared")["rho"]
    array([-1.,  0.])
    """
    check_choice("f", f, GPO_LOSSES)
    beta = check_positive("beta", beta)
    rho = as_float_array("rho", rho)
    return {"rho": beta * GPO_DERIVATIVES[f](beta * rho)}


def slic_loss(chosen_logps, rejected_logps, delta, ref_nll=None, lam=0.0):
    r"""Per-pair SLiC-HF loss (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human
    Feedback").

    .. math:: \mathcal{L}_{SLiC} = \max(0, \delta - \log P_\theta(y^+|x) + \log P_\theta(y^-|x))
              + \lambda\,(-\log P_\theta(y_{ref}|x))

    The hinge (calibration) term asks the chosen sequence to beat the rejected one by a margin
    :math:`\delta` in log-likelihood; the regulariser is the NLL of a reference/SFT target
    :math:`y_{ref}` under the policy (``ref_nll`` :math:`= -\log P_\theta(y_{ref}|x) \ge 0`), weighted by
    ``lam`` (default 0: calibration only; ``ref_nll`` is required when ``lam > 0``). No reference model.
    Chapter "Direct alignment".

    >>> slic_loss(np.array([-3.0, -1.0]), np.array([-4.0, -5.0]), delta=2.0)
    array([1., 0.])
    >>> slic_loss(np.array([-3.0]), np.array([-4.0]), delta=2.0, ref_nll=np.array([10.0]), lam=0.5)
    array([6.])
    """
    delta = check_nonnegative("delta", delta)
    lam = check_nonnegative("lam", lam)
    chosen = as_float_array("chosen_logps", chosen_logps)
    rejected = as_float_array("rejected_logps", rejected_logps)
    check_same_shape(chosen_logps=chosen, rejected_logps=rejected)
    _check_logprobs(chosen_logps=chosen, rejected_logps=rejected)
    loss = np.maximum(0.0, delta - chosen + rejected)
    if ref_nll is None:
        if lam > 0:
            raise ValueError("ref_nll is required when lam > 0 (the NLL of the reference/SFT target)")
        return loss
    ref_nll = as_float_array("ref_nll", ref_nll).astype(chosen.dtype)
    check_broadcastable(chosen_logps=chosen, ref_nll=ref_nll)
    check_values_in_range("ref_nll", ref_nll, 0.0)
    return loss + lam * ref_nll


def _kt_checked(z, z0, alpha, lam):
    alpha = check_in_range("alpha", alpha, 0.0, 1.0, low_open=True)
    lam = check_nonnegative("lam", lam)
    z = as_float_array("z", z)
    z0 = as_float_array("z0", z0).astype(z.dtype)  # a Python float keeps float32
    check_broadcastable(z=z, z0=z0)
    return z, z0, alpha, lam


def kahneman_tversky_value(z, z0=0.0, alpha=0.88, lam=2.25):
    r"""The value function of prospect theory (Tversky and Kahneman 1992), the one KTO starts from.

    .. math:: v(z; z_0) = \begin{cases} (z - z_0)^\alpha & z \ge z_0 \\
              -\lambda\,(z_0 - z)^\alpha & z < z_0 \end{cases}

    Outcomes are valued relative to a reference point :math:`z_0`, concave for gains, convex for losses
    (diminishing sensitivity, :math:`0 < \alpha \le 1`), and a loss weighs :math:`\lambda` times a
    gain of the same size (loss aversion). Defaults: the median estimates :math:`\alpha = 0.88`,
    :math:`\lambda = 2.25` of "Advances in prospect theory: cumulative representation of uncertainty"
    (1992), quoted by the KTO paper (Ethayarajh et al. 2024, eq. 5) and the lecture notes. The slope at
    the reference point is infinite for :math:`\alpha < 1` (see ``kahneman_tversky_value_grad``), one
    reason KTO replaces this curve by a logistic one (``kto_loss``). ``z0`` is subtracted here, once: the
    notes subtract it twice (in :math:`u(Z) = \sum_z \omega_z v(z - z_0)` and again inside :math:`v`).
    ``z`` and ``z0`` broadcast. Chapter 7.

    >>> kahneman_tversky_value(np.array([-1.0, 0.0, 1.0, 2.0])).round(4)
    array([-2.25  ,  0.    ,  1.    ,  1.8404])
    """
    z, z0, alpha, lam = _kt_checked(z, z0, alpha, lam)
    d = z - z0
    m = np.abs(d) ** alpha
    return np.where(d >= 0, m, -lam * m)


def kahneman_tversky_value_grad(z, z0=0.0, alpha=0.88, lam=2.25):
    r"""Analytic gradient of ``sum(kahneman_tversky_value(...))``: with :math:`d = z - z_0`,

    .. math:: \frac{\partial v}{\partial z} = -\frac{\partial v}{\partial z_0}
              = \alpha |d|^{\alpha - 1} \cdot (1 \text{ if } d > 0,\ \lambda \text{ if } d < 0)

    (summed over broadcast axes for ``z0``); :math:`+\infty` at :math:`d = 0` when :math:`\alpha < 1`: an
    infinitely steep step at the reference point. Chapter 7.

    >>> {k: np.round(v, 4).tolist() for k, v in kahneman_tversky_value_grad(np.array([-1.0, 1.0])).items()}
    {'z': [1.98, 0.88], 'z0': -2.86}
    """
    z, z0, alpha, lam = _kt_checked(z, z0, alpha, lam)
    d = z - z0
    with np.errstate(divide="ignore"):
        slope = alpha * np.abs(d) ** (alpha - 1.0)
    dz = np.where(d >= 0, slope, lam * slope)
    return {"z": _sum_to_shape(dz, z.shape), "z0": _sum_to_shape(-dz, z0.shape)}


def kto_loss(policy_logps, ref_logps, desirable, kl_reference, beta, lambda_d=1.0, lambda_u=1.0):
    r"""Per-example KTO loss (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic
    Optimization").

    With :math:`r_\theta = \log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}` and the reference point
    :math:`z_0 = \max(0, \mathrm{KL}(\pi_\theta\|\pi_{ref}))`,

    .. math:: v(x,y) = \begin{cases}\lambda_D\,\sigma(\beta(r_\theta - z_0)) & y \text{ desirable}\\
              \lambda_U\,\sigma(\beta(z_0 - r_\theta)) & y \text{ undesirable}\end{cases},\qquad
              \mathcal{L}_{KTO} = \lambda_y - v(x, y)

    ``kl_reference`` is a scalar or per-example estimate of the KL (the paper uses the batch mean of
    :math:`\log\pi_\theta(y'|x) - \log\pi_{ref}(y'|x)` over mismatched pairs); as in the paper it is
    clamped at 0 and treated as a constant (the torch twin detaches it: no gradient flows into
    :math:`z_0`). ``desirable`` holds booleans (or 0/1). Defaults :math:`\lambda_D = \lambda_U = 1`.
    :math:`\lambda_y - \lambda_y\sigma(u)` is computed as :math:`\lambda_y\sigma(-u)`, which does not
    cancel to 0 when :math:`\sigma(u) \approx 1`. Chapter "Direct alignment".

    >>> kto_loss(np.array([-1.0, -1.0]), np.array([-1.0, -1.0]), np.array([True, False]), 0.0, beta=0.1,
    ...          lambda_d=2.0, lambda_u=1.0)
    array([1. , 0.5])
    """
    beta = check_positive("beta", beta)
    lambda_d = check_nonnegative("lambda_d", lambda_d)
    lambda_u = check_nonnegative("lambda_u", lambda_u)
    policy_logps = as_float_array("policy_logps", policy_logps)
    ref_logps = as_float_array("ref_logps", ref_logps)
    kl = as_float_array("kl_reference", kl_reference).astype(policy_logps.dtype)  # a float scalar keeps float32
    check_same_shape(policy_logps=policy_logps, ref_logps=ref_logps, desirable=desirable)
    _check_logprobs(policy_logps=policy_logps, ref_logps=ref_logps)
    check_binary("desirable", desirable)
    check_broadcastable(policy_logps=policy_logps, kl_reference=kl)
    desirable = np.asarray(desirable).astype(bool)
    z0 = np.maximum(kl, 0.0)  # the paper clamps the KL estimate at 0
    r = policy_logps - ref_logps
    u = np.where(desirable, beta * (r - z0), beta * (z0 - r))
    lambda_y = np.where(desirable, lambda_d, lambda_u).astype(u.dtype)
    return lambda_y * _sigmoid(-u)


def simpo_loss(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, beta, gamma):
    r"""Per-pair SimPO loss (Meng et al. 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward").

    .. math:: \mathcal{L}_{SimPO} = -\log\sigma\Big(\frac{\beta}{|y_w|}\log\pi_\theta(y_w|x)
              - \frac{\beta}{|y_l|}\log\pi_\theta(y_l|x) - \gamma\Big)

    The reward is the length-normalised log-likelihood :math:`\frac{\beta}{|y|}\log\pi_\theta(y|x)` (what
    generation maximises, no reference model), and :math:`\gamma \ge 0` is a target reward margin.
    ``chosen_logps``/``rejected_logps`` are SUMMED token log-probs, the lengths (> 0, token counts) divide
    them here. With equal lengths L and gamma = 0 it is DPO's logistic loss on
    :math:`(pc - pr)/L` with no reference. Chapter "Direct alignment".

    >>> simpo_loss(np.array([-10.0]), np.array([-30.0]), np.array([10]), np.array([10]), 2.0, 1.0).round(4)
    array([0.0486])
    """
    beta = check_positive("beta", beta)
    gamma = check_nonnegative("gamma", gamma)
    chosen = as_float_array("chosen_logps", chosen_logps)
    rejected = as_float_array("rejected_logps", rejected_logps)
    check_same_shape(chosen_logps=chosen, rejected_logps=rejected)
    _check_logprobs(chosen_logps=chosen, rejected_logps=rejected)
    len_w = as_float_array("chosen_lengths", chosen_lengths)
    len_l = as_float_array("rejected_lengths", rejected_lengths)
    check_broadcastable(chosen_logps=chosen, chosen_lengths=len_w, rejected_lengths=len_l)
    check_values_in_range("chosen_lengths", len_w, 0.0, low_open=True)
    check_values_in_range("rejected_lengths", len_l, 0.0, low_open=True)
    len_w, len_l = len_w.astype(chosen.dtype), len_l.astype(chosen.dtype)  # int lengths keep float32
    margin = beta * chosen / len_w - beta * rejected / len_l - gamma
    return _neg_log_sigmoid(margin)


def orpo_log_odds(mean_logps):
    r"""ORPO's log-odds :math:`\log\mathrm{odds}_\theta(y|x) = \log\frac{P}{1-P} = \log P - \log(1 - P)`.

    ``mean_logps`` :math:`= \log P_\theta(y|x) = \frac{1}{m}\sum_t \log P_\theta(y_t|x, y_{<t})` is the
    MEAN per-token log-prob (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference
    Model", eq. 4: P is the length-normalised likelihood), so it must be <= 0. :math:`\log(1-P)` is
    computed as ``log1mexp(log P)``, accurate both near :math:`P = 1` and for tiny P.
    Choice at the edge: P = 1 exactly (a log-prob of 0, which float32 log-softmax does return for a very
    confident model) has infinite odds and would make the loss NaN when both answers are certain; a
    log-prob closer to 0 than the dtype's machine epsilon is therefore treated as :math:`-\epsilon`
    (odds of about :math:`1/\epsilon`; its gradient is then 0). Chapter "Direct alignment".

    >>> orpo_log_odds(np.log(np.array([0.8, 0.2]))).round(4)   # odds 4 and 1/4
    array([ 1.3863, -1.3863])
    >>> bool(np.allclose(orpo_log_odds(np.log(np.array([0.5]))), 0.0))   # even odds: log 1 = 0
    True
    """
    lp = as_float_array("mean_logps", mean_logps)
    check_values_in_range("mean_logps", lp, -np.inf, 0.0, low_open=True)
    lp = _orpo_clip(lp)
    return lp - _log1mexp(lp)


def orpo_loss(chosen_mean_logps, rejected_mean_logps, chosen_nll, lam):
    r"""Per-pair ORPO loss (Hong et al. 2024): SFT on the chosen answer plus an odds-ratio penalty.

    .. math:: \mathcal{L}_{ORPO} = \mathcal{L}_{SFT} + \lambda\,\mathcal{L}_{OR},\qquad
              \mathcal{L}_{OR} = -\log\sigma\Big(\log\frac{\mathrm{odds}_\theta(y_w|x)}{\mathrm{odds}_\theta(y_l|x)}\Big)

    ``chosen_mean_logps``/``rejected_mean_logps`` are MEAN per-token log-probs (see ``orpo_log_odds``);
    ``chosen_nll`` is the SFT loss of the chosen answer, :math:`\ge 0` (usually ``-chosen_mean_logps``;
    kept separate so a trainer can pass its own, e.g. with the prompt masked differently). ``lam`` is
    the paper's :math:`\lambda` (0.1 there). No reference model. Chapter "Direct alignment".

    >>> orpo_loss(np.log(np.array([0.8])), np.log(np.array([0.5])), np.array([0.2231]), 0.1).round(4)
    array([0.2454])
    """
    lam = check_nonnegative("lam", lam)
    chosen = as_float_array("chosen_mean_logps", chosen_mean_logps)
    rejected = as_float_array("rejected_mean_logps", rejected_mean_logps)
    nll = as_float_array("chosen_nll", chosen_nll).astype(chosen.dtype)
    check_same_shape(chosen_mean_logps=chosen, rejected_mean_logps=rejected)
    check_broadcastable(chosen_mean_logps=chosen, chosen_nll=nll)
    check_values_in_range("chosen_mean_logps", chosen, -np.inf, 0.0, low_open=True)
    check_values_in_range("rejected_mean_logps", rejected, -np.inf, 0.0, low_open=True)
    check_values_in_range("chosen_nll", nll, 0.0)
    log_odds_ratio = orpo_log_odds(chosen) - orpo_log_odds(rejected)
    return nll + lam * _neg_log_sigmoid(log_odds_ratio)


def rebel_loss(logp, logp_old, logp_alt, logp_old_alt, reward, reward_alt, eta):
    r"""Per-pair REBEL loss (Gao et al. 2024, "REBEL: Reinforcement Learning via Regressing Relative
    Rewards"), eq. (1):

    .. math:: \mathcal{L} = \Big(\frac{1}{\eta}\Big(\log\frac{\pi_\theta(y|x)}{\pi_{\theta_t}(y|x)}
              - \log\frac{\pi_\theta(y'|x)}{\pi_{\theta_t}(y'|x)}\Big) - \big(r(x,y) - r(x,y')\big)\Big)^2

    Regress the difference of the two responses' log-ratios (scaled by :math:`1/\eta`) onto the
    difference of their rewards; :math:`\log Z(x)` cancels in the difference. ``logp``/``logp_old``: the
    response y under the policy being trained and under the policy of iteration t; ``*_alt`` the same
    for y'. ``eta`` > 0 is the notes' :math:`\beta` of the mirror-descent step
    :math:`\pi_{t+1}\propto\pi_t e^{\eta r}` (the notes write 1/beta in one display and 1/eta in the
    algorithm: they are the same). Chapter "Direct alignment".

    >>> rebel_loss(np.array([-1.0]), np.array([-2.0]), np.array([-3.0]), np.array([-2.0]),
    ...            np.array([1.0]), np.array([0.0]), eta=1.0)
    array([1.])
    """
    eta = check_positive("eta", eta)
    names = ("logp", "logp_old", "logp_alt", "logp_old_alt")
    values = (logp, logp_old, logp_alt, logp_old_alt)
    lp, lp_old, lp_alt, lp_old_alt = (as_float_array(n, v) for n, v in zip(names, values))
    check_same_shape(logp=lp, logp_old=lp_old, logp_alt=lp_alt, logp_old_alt=lp_old_alt)
    _check_logprobs(logp=lp, logp_old=lp_old, logp_alt=lp_alt, logp_old_alt=lp_old_alt)
    reward = as_float_array("reward", reward).astype(lp.dtype)  # extras follow the log-probs' dtype
    reward_alt = as_float_array("reward_alt", reward_alt).astype(lp.dtype)
    check_broadcastable(logp=lp, reward=reward, reward_alt=reward_alt)
    log_ratio_diff = (lp - lp_old) - (lp_alt - lp_old_alt)
    return (log_ratio_diff / eta - (reward - reward_alt)) ** 2
