"""PyTorch twins of ``rlhf_edu.numpy.overoptimization`` (chapter 9): Gao et al.'s two gold-reward forms.

Same names, same arguments, any device and float dtype, differentiable in ``d``, ``alpha`` and ``beta``.
``fit_gold_curve`` has no twin (``rlhf_edu.numpy.overoptimization.NUMPY_ONLY`` says why).
"""

from __future__ import annotations

import math

import torch

from rlhf_edu.validation import as_float_tensor, check_broadcastable, check_values_in_range

__all__ = ["best_of_n_gold", "rl_gold"]


def _check_forms(d, alpha, beta):
    d = as_float_tensor("d", d)
    alpha = as_float_tensor("alpha", alpha, like=d)
    beta = as_float_tensor("beta", beta, like=d)
    check_values_in_range("d", d, 0.0, math.inf)  # d is the square root of a KL divergence
    check_broadcastable(d=d, alpha=alpha, beta=beta)
    return d, alpha, beta


def best_of_n_gold(d, alpha, beta):
    """R_bon(d) = d (alpha - beta d), Gao et al. (2022) (see the NumPy reference).

    >>> best_of_n_gold(torch.tensor([0.0, 1.0, 2.0]), 1.0, 0.5)
    tensor([0.0000, 0.5000, 0.0000])
    """
    d, alpha, beta = _check_forms(d, alpha, beta)
    return d * (alpha - beta * d)


def rl_gold(d, alpha, beta):
    """R_RL(d) = d (alpha - beta log d), 0 at d = 0, Gao et al. (2022) (see the NumPy reference).

    ``torch.xlogy(d, d)`` is d log d with its limit 0 at d = 0, also in the gradient's forward pass.

    >>> rl_gold(torch.tensor([0.0, 1.0]), 1.0, 0.5)
    tensor([0., 1.])
    """
    d, alpha, beta = _check_forms(d, alpha, beta)
    return alpha * d - beta * torch.xlogy(d, d)
