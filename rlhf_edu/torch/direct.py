"""PyTorch twins of ``rlhf_edu.numpy.direct`` (chapter "Direct alignment"): same names, same arguments.

DPO, IPO, GPO, SLiC-HF, KTO, SimPO, ORPO and REBEL as per-pair losses on per-sequence log-probabilities
(tensors on any device, any float dtype; no reduction). See the NumPy references for the formulas,
sources and worked examples; these are line-for-line the same math with ``F.logsigmoid``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlhf_edu.numpy.direct import GPO_FORMULAS, GPO_LOSSES, _check_logprobs
from rlhf_edu.validation import (
    as_float_tensor,
    check_binary,
    check_broadcastable,
    check_choice,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_same_shape,
    check_values_in_range,
)

__all__ = [
    "log_ratio_difference",
    "dpo_implicit_reward",
    "dpo_loss",
    "ipo_loss",
    "gpo_loss",
    "slic_loss",
    "kahneman_tversky_value",
    "kto_loss",
    "simpo_loss",
    "orpo_log_odds",
    "orpo_loss",
    "rebel_loss",
]

#: GPO's functions f (Tang et al. 2024; the Savage loss is not convex) in torch; the same table as
#: ``rlhf_edu.numpy.direct``.
GPO_FUNCTIONS = {
    "logistic": lambda x: -F.logsigmoid(x),  # log(1 + e^{-x}): DPO
    "hinge": lambda x: torch.relu(1.0 - x),  # max(0, 1 - x): SLiC
    "squared": lambda x: (x - 1.0) ** 2,  # (x - 1)^2: IPO
    "exponential": lambda x: torch.exp(-x),  # e^{-x}: unbounded, overflows for very negative x
    "truncated_quadratic": lambda x: torch.relu(1.0 - x) ** 2,  # max(0, 1 - x)^2
    "savage": lambda x: torch.sigmoid(-x) ** 2,  # 1 / (1 + e^x)^2
}
assert tuple(GPO_FUNCTIONS) == GPO_LOSSES and set(GPO_FORMULAS) == set(GPO_LOSSES)


def _float_tensors(**named):
    """Convert the main arrays of a loss: non-tensors (lists, NumPy, numbers) take the dtype and device of
    the first float tensor among them (float tensors pass through, keeping their graph)."""
    like = next((v for v in named.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    out = []
    for name, x in named.items():
        t = as_float_tensor(name, x, like)
        like = t if like is None else like
        out.append(t)
    return out


def _four_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    pc, pr, rc, rr = _float_tensors(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    check_same_shape(
        policy_chosen_logps=pc, policy_rejected_logps=pr, ref_chosen_logps=rc, ref_rejected_logps=rr
    )
    _check_logprobs(policy_chosen_logps=pc, policy_rejected_logps=pr, ref_chosen_logps=rc, ref_rejected_logps=rr)
    return pc, pr, rc, rr


def log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    """rho = h = (pc - rc) - (pr - rr), the log-ratio difference of DPO, IPO and GPO.

    >>> log_ratio_difference(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
    tensor([2.])
    """
    pc, pr, rc, rr = _four_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (pc - rc) - (pr - rr)


def dpo_implicit_reward(policy_logps, ref_logps, beta):
    """DPO's implicit reward beta * (log pi - log pi_ref).

    >>> dpo_implicit_reward(torch.tensor([-10.0]), torch.tensor([-11.0]), beta=0.5)
    tensor([0.5000])
    """
    beta = check_positive("beta", beta)
    policy_logps, ref_logps = _float_tensors(policy_logps=policy_logps, ref_logps=ref_logps)
    check_same_shape(policy_logps=policy_logps, ref_logps=ref_logps)
    _check_logprobs(policy_logps=policy_logps, ref_logps=ref_logps)
    return beta * (policy_logps - ref_logps)


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta=0.1,
    label_smoothing=0.0,
):
    """Per-pair DPO loss -log sigma(beta * h), cDPO with ``label_smoothing`` (see the NumPy reference).

    >>> dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1))  # log 2 at init
    tensor([0.6931])
    """
    beta = check_positive("beta", beta)
    eps = check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
    z = beta * log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if eps == 0.0:
        return -F.logsigmoid(z)
    return -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """Per-pair IPO loss (h - 1/(2 beta))^2.

    >>> ipo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), 0.5)
    tensor([1.])
    """
    beta = check_positive("beta", beta)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h - 1.0 / (2.0 * beta)) ** 2


def gpo_loss(rho, beta, f="logistic"):
    """Per-pair GPO loss f(beta * rho), f one of ``GPO_FUNCTIONS``.

    >>> gpo_loss(torch.tensor([-1.0, 0.0, 2.0]), beta=1.0, f="hinge")
    tensor([2., 1., 0.])
    """
    check_choice("f", f, GPO_LOSSES)
    beta = check_positive("beta", beta)
    (rho,) = _float_tensors(rho=rho)
    return GPO_FUNCTIONS[f](beta * rho)


def slic_loss(chosen_logps, rejected_logps, delta, ref_nll=None, lam=0.0):
    """Per-pair SLiC-HF loss max(0, delta - chosen + rejected) + lam * ref_nll.

    >>> slic_loss(torch.tensor([-3.0, -1.0]), torch.tensor([-4.0, -5.0]), delta=2.0)
    tensor([1., 0.])
    """
    delta = check_nonnegative("delta", delta)
    lam = check_nonnegative("lam", lam)
    chosen, rejected = _float_tensors(chosen_logps=chosen_logps, rejected_logps=rejected_logps)
    check_same_shape(chosen_logps=chosen, rejected_logps=rejected)
    _check_logprobs(chosen_logps=chosen, rejected_logps=rejected)
    loss = torch.relu(delta - chosen + rejected)
    if ref_nll is None:
        if lam > 0:
            raise ValueError("ref_nll is required when lam > 0 (the NLL of the reference/SFT target)")
        return loss
    ref_nll = as_float_tensor("ref_nll", ref_nll, like=chosen)
    check_broadcastable(chosen_logps=chosen, ref_nll=ref_nll)
    check_values_in_range("ref_nll", ref_nll, 0.0)
    return loss + lam * ref_nll


def kahneman_tversky_value(z, z0=0.0, alpha=0.88, lam=2.25):
    """Prospect theory's value (z - z0)^alpha for gains, -lam (z0 - z)^alpha for losses (Tversky and Kahneman 1992).

    Autograd gives NaN exactly at z = z0, where the slope is infinite for alpha < 1.

    >>> kahneman_tversky_value(torch.tensor([-1.0, 0.0, 1.0])).tolist()
    [-2.25, 0.0, 1.0]
    """
    alpha = check_in_range("alpha", alpha, 0.0, 1.0, low_open=True)
    lam = check_nonnegative("lam", lam)
    (z,) = _float_tensors(z=z)
    z0 = as_float_tensor("z0", z0, like=z)
    check_broadcastable(z=z, z0=z0)
    d = z - z0
    m = d.abs() ** alpha
    return torch.where(d >= 0, m, -lam * m)


def kto_loss(policy_logps, ref_logps, desirable, kl_reference, beta, lambda_d=1.0, lambda_u=1.0):
    """Per-example KTO loss lambda_y - v(x, y); the KL reference point is clamped at 0 and detached.

    >>> kto_loss(torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -1.0]), torch.tensor([True, False]), 0.0, 0.1,
    ...          lambda_d=2.0)
    tensor([1.0000, 0.5000])
    """
    beta = check_positive("beta", beta)
    lambda_d = check_nonnegative("lambda_d", lambda_d)
    lambda_u = check_nonnegative("lambda_u", lambda_u)
    policy_logps, ref_logps = _float_tensors(policy_logps=policy_logps, ref_logps=ref_logps)
    check_same_shape(policy_logps=policy_logps, ref_logps=ref_logps, desirable=desirable)
    _check_logprobs(policy_logps=policy_logps, ref_logps=ref_logps)
    check_binary("desirable", desirable)
    is_desirable = torch.as_tensor(desirable, device=policy_logps.device).bool()
    kl = as_float_tensor("kl_reference", kl_reference, like=policy_logps)
    check_broadcastable(policy_logps=policy_logps, kl_reference=kl)
    z0 = kl.detach().clamp(min=0.0)  # a constant reference point, as in the paper
    r = policy_logps - ref_logps
    u = torch.where(is_desirable, beta * (r - z0), beta * (z0 - r))
    # lambda_y - lambda_y * sigma(u) = lambda_y * sigma(-u): no cancellation when sigma(u) ~ 1
    return torch.where(is_desirable, lambda_d * torch.sigmoid(-u), lambda_u * torch.sigmoid(-u))


def simpo_loss(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, beta, gamma):
    """Per-pair SimPO loss ``-log sigma(beta * chosen / |y_w| - beta * rejected / |y_l| - gamma)``.

    >>> simpo_loss(torch.tensor([-10.0]), torch.tensor([-30.0]), torch.tensor([10]), torch.tensor([10]), 2.0, 1.0)
    tensor([0.0486])
    """
    beta = check_positive("beta", beta)
    gamma = check_nonnegative("gamma", gamma)
    chosen, rejected = _float_tensors(chosen_logps=chosen_logps, rejected_logps=rejected_logps)
    check_same_shape(chosen_logps=chosen, rejected_logps=rejected)
    _check_logprobs(chosen_logps=chosen, rejected_logps=rejected)
    len_w = as_float_tensor("chosen_lengths", chosen_lengths, like=chosen)
    len_l = as_float_tensor("rejected_lengths", rejected_lengths, like=chosen)
    check_broadcastable(chosen_logps=chosen, chosen_lengths=len_w, rejected_lengths=len_l)
    check_values_in_range("chosen_lengths", len_w, 0.0, low_open=True)
    check_values_in_range("rejected_lengths", len_l, 0.0, low_open=True)
    margin = beta * chosen / len_w - beta * rejected / len_l - gamma
    return -F.logsigmoid(margin)


def _log1mexp(a):
    """log(1 - e^a) for a < 0 (Maechler 2012); each branch sees only its side of -log 2, so its gradient
    is finite where torch.where discards it."""
    cut = -math.log(2.0)
    near = torch.log(-torch.expm1(a.clamp(min=cut)))
    far = torch.log1p(-torch.exp(a.clamp(max=cut)))
    return torch.where(a > cut, near, far)


def orpo_log_odds(mean_logps):
    """ORPO's log-odds log P - log(1 - P) of a mean per-token log-prob (values closer to 0 than eps -> -eps).

    >>> orpo_log_odds(torch.log(torch.tensor([0.8, 0.2])))
    tensor([ 1.3863, -1.3863])
    >>> torch.allclose(orpo_log_odds(torch.log(torch.tensor([0.5]))), torch.zeros(1), atol=1e-6)   # even odds
    True
    """
    (lp,) = _float_tensors(mean_logps=mean_logps)
    check_values_in_range("mean_logps", lp, -math.inf, 0.0, low_open=True)
    lp = lp.clamp(max=-torch.finfo(lp.dtype).eps)
    return lp - _log1mexp(lp)


def orpo_loss(chosen_mean_logps, rejected_mean_logps, chosen_nll, lam):
    """Per-pair ORPO loss chosen_nll + lam * -log sigma(log odds_w - log odds_l).

    >>> orpo_loss(torch.log(torch.tensor([0.8])), torch.log(torch.tensor([0.5])), torch.tensor([0.2231]), 0.1)
    tensor([0.2454])
    """
    lam = check_nonnegative("lam", lam)
    chosen, rejected = _float_tensors(chosen_mean_logps=chosen_mean_logps, rejected_mean_logps=rejected_mean_logps)
    nll = as_float_tensor("chosen_nll", chosen_nll, like=chosen)
    check_same_shape(chosen_mean_logps=chosen, rejected_mean_logps=rejected)
    check_broadcastable(chosen_mean_logps=chosen, chosen_nll=nll)
    check_values_in_range("chosen_mean_logps", chosen, -math.inf, 0.0, low_open=True)
    check_values_in_range("rejected_mean_logps", rejected, -math.inf, 0.0, low_open=True)
    check_values_in_range("chosen_nll", nll, 0.0)
    log_odds_ratio = orpo_log_odds(chosen) - orpo_log_odds(rejected)
    return nll - lam * F.logsigmoid(log_odds_ratio)


def rebel_loss(logp, logp_old, logp_alt, logp_old_alt, reward, reward_alt, eta):
    """Per-pair REBEL loss ((1/eta)((logp - logp_old) - (logp_alt - logp_old_alt)) - (reward - reward_alt))^2.

    >>> rebel_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
    ...            torch.tensor([1.0]), torch.tensor([0.0]), eta=1.0)
    tensor([1.])
    """
    eta = check_positive("eta", eta)
    lp, lp_old, lp_alt, lp_old_alt = _float_tensors(
        logp=logp, logp_old=logp_old, logp_alt=logp_alt, logp_old_alt=logp_old_alt
    )
    check_same_shape(logp=lp, logp_old=lp_old, logp_alt=lp_alt, logp_old_alt=lp_old_alt)
    _check_logprobs(logp=lp, logp_old=lp_old, logp_alt=lp_alt, logp_old_alt=lp_old_alt)
    reward = as_float_tensor("reward", reward, like=lp)
    reward_alt = as_float_tensor("reward_alt", reward_alt, like=lp)
    check_broadcastable(logp=lp, reward=reward, reward_alt=reward_alt)
    log_ratio_diff = (lp - lp_old) - (lp_alt - lp_old_alt)
    return (log_ratio_diff / eta - (reward - reward_alt)) ** 2
