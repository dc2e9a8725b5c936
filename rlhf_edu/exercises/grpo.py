"""Exercise checkers of chapter 5 (GRPO, RLOO and the 2025 family).

The chapter prints ``group_normalized_advantages``, ``leave_one_out_advantages``, ``grpo_loss`` and ``cispo_loss``,
so its exercises ask for what it does not print:

- ``check_rloo_kl_advantages(fn)``: a variant, RLOO's advantages with the KL folded into the reward, from a flat
  batch of completions (the notes' :math:`R = r - \\beta\\log\\frac{\\pi_\\theta}{\\pi_{ref}}`, then the leave-one-out
  baseline within each group);
- ``check_group_layout(fn)``: find the bug, group-normalised advantages of a flat batch whose groups were cut the
  wrong way;
- ``check_aggregation_prediction(prediction)``: predict-then-run, the total gradient weight of a short right and
  a long wrong completion under the three aggregations.
"""

from __future__ import annotations

import numpy as np
import torch

from rlhf_edu.exercises.checker import ExerciseResult, _not_done, make_checker, prediction_result
from rlhf_edu.numpy.advantages import group_normalized_advantages, leave_one_out_advantages
from rlhf_edu.torch.policy_gradient import grpo_loss

__all__ = ["check_rloo_kl_advantages", "check_group_layout", "check_aggregation_prediction"]


# ---- a variant: RLOO with the KL in the reward ----


def rloo_kl_advantages_reference(rewards, logp, logp_ref, mask, beta, group_size):
    r"""The solution: :math:`R_i = r_i - \beta\sum_t m_{i,t}(\log\pi_{i,t} - \log\pi_{ref,i,t})`, then
    :math:`R_i - \frac1{G-1}\sum_{j\ne i}R_j` within each group of ``group_size`` consecutive completions."""
    logp, logp_ref, mask = (np.asarray(x, dtype=float) for x in (logp, logp_ref, mask))
    penalised = np.asarray(rewards, dtype=float) - beta * np.where(mask > 0, logp - logp_ref, 0.0).sum(axis=-1)
    return leave_one_out_advantages(penalised.reshape(-1, group_size)).reshape(-1)


def _rloo_case(rng):
    g, n_prompts, t = int(rng.choice([2, 3, 4])), int(rng.integers(1, 4)), int(rng.integers(2, 7))
    b = g * n_prompts
    logp = np.log(rng.uniform(0.05, 0.95, size=(b, t)))
    logp_ref = np.log(rng.uniform(0.05, 0.95, size=(b, t)))
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(float)
    logp = np.where(mask > 0, logp, 0.0)  # padding holds 0, as in a rollout
    logp_ref = np.where(mask > 0, logp_ref, rng.normal(size=(b, t)))  # ... or anything: it must not count
    rewards = rng.choice([0.0, 0.1, 1.1], size=b)
    return (rewards, logp, logp_ref, mask, float(rng.choice([0.0, 0.05, 0.5])), g), {}


check_rloo_kl_advantages = make_checker(
    "rloo_kl_advantages",
    reference=rloo_kl_advantages_reference,
    edge_cases=[
        # two prompts of two completions; no KL: plain leave-one-out (+-1 and +-1)
        ((np.array([1.0, 0.0, 0.0, 1.0]), np.zeros((4, 2)), np.zeros((4, 2)), np.ones((4, 2)), 0.1, 2), {}),
        # one group of three, equal rewards: only the KL separates them
        ((np.array([1.0, 1.0, 1.0]), np.log([[0.5, 0.5], [0.9, 0.9], [0.5, 0.1]]), np.log(np.full((3, 2), 0.5)),
          np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]), 0.5, 3), {}),
    ],
    random_case=_rloo_case,
    hint="likely misconceptions: the KL summed over the padding too (mask it: only the completion's tokens count); "
    "the baseline taken as the mean of the whole group, sample i included (that is (G-1)/G times the right "
    "advantage: it is the leave-one-out mean of the OTHER samples); the groups cut as reshape(group_size, -1) "
    "instead of reshape(-1, group_size) (a prompt's samples are consecutive rows); the KL added instead of "
    "subtracted",
)


# ---- find the bug: which rows form a group ----


def group_layout_reference(rewards, group_size):
    """The solution: population-std group advantages (eps 1e-6) of a flat batch whose groups are consecutive."""
    r = np.asarray(rewards, dtype=float)
    return group_normalized_advantages(r.reshape(-1, group_size), std="population", eps=1e-6).reshape(-1)


def buggy_group_advantages(rewards, group_size):
    """The function of the exercise: plausible, and wrong whenever there is more than one prompt."""
    groups = np.asarray(rewards, dtype=float).reshape(group_size, -1)
    mean, std = groups.mean(axis=0), groups.std(axis=0)
    return ((groups - mean) / (std + 1e-6)).reshape(-1)


def _layout_case(rng):
    g, n_prompts = int(rng.choice([2, 4, 8])), int(rng.integers(2, 5))
    rewards = rng.choice([0.0, 0.1, 1.1], size=g * n_prompts)
    return (rewards, g), {}


check_group_layout = make_checker(
    "group_layout",
    reference=group_layout_reference,
    edge_cases=[
        ((np.array([1.1, 0.1, 1.1, 0.1, 0.0, 0.0, 1.1, 0.1]), 4), {}),  # two prompts, four samples each
        ((np.array([1.1, 1.1, 0.1, 1.1, 0.0, 0.0]), 2), {}),             # three prompts of two, one group constant
        ((np.array([0.9, 0.9, 0.9, 0.3, 0.1, 0.2]), 3), {}),              # a constant group must give exactly 0
    ],
    random_case=_layout_case,
    rtol=1e-9,
    atol=1e-9,
    hint="likely misconception: generate() puts prompt i's samples in rows i*G ... (i+1)*G - 1, so a group is "
    "reshape(-1, group_size) and the statistics are taken over the LAST axis; reshape(group_size, -1) with "
    "axis=0 mixes every prompt's k-th sample into one 'group'. A group of equal rewards must give 0.",
)


# ---- predict, then run: the weight of a short right and a long wrong answer ----

_AGG_LENGTHS = (2, 10)  # a right answer of 2 tokens (A = +1), a wrong one of 10 tokens (A = -1), one group
_AGG_ADV = (1.0, -1.0)
AGGREGATIONS = ("sequence_mean", "token_mean", "dr_grpo")


def aggregation_prediction_reference():
    r"""The run: for each aggregation, the total gradient weight :math:`\sum_t -\partial L/\partial\log\pi_{i,t}`
    of each of the two completions, at ratio 1 without KL (``dr_grpo`` with ``max_length`` 10)."""
    width = max(_AGG_LENGTHS)
    mask = torch.tensor((np.arange(width)[None, :] < np.array(_AGG_LENGTHS)[:, None]).astype(np.float64))
    out = {}
    for aggregation in AGGREGATIONS:
        logp = torch.full(mask.shape, -1.0, dtype=torch.float64, requires_grad=True)
        loss = grpo_loss(logp, logp.detach(), logp.detach(), torch.tensor(_AGG_ADV, dtype=torch.float64), mask,
                         beta=0.0, aggregation=aggregation, max_length=width)
        (-loss).backward()
        out[aggregation] = tuple(float(v) for v in logp.grad.sum(dim=1))
    return out


_AGG_WHY = {
    "sequence_mean": "sequence-mean averages each completion over its own tokens first, so every completion has "
                     "total weight A_i / B whatever its length",
    "token_mean": "token-mean divides by the number of tokens in the batch (2 + 10): a completion's total weight "
                  "is A_i * |o_i| / 12, so the long answer weighs five times more",
    "dr_grpo": "Dr. GRPO divides by B * max_length = 2 * 10, a constant: a completion's total weight is "
               "A_i * |o_i| / 20",
}


def check_aggregation_prediction(prediction, seed=0, verbose=True) -> ExerciseResult:
    """Predict-then-run: ``prediction`` is ``{aggregation: (weight of the short right answer, weight of the long
    wrong one)}`` for "sequence_mean", "token_mean" and "dr_grpo" (or a function of no argument returning it).
    Prints PASS or, for the first number you missed, your prediction, the run's value and the likely
    misconception."""
    name = "aggregation_prediction"
    if callable(prediction):
        try:
            prediction = prediction()
        except NotImplementedError:
            return _not_done(name, verbose)
    if not isinstance(prediction, dict) or set(prediction) != set(AGGREGATIONS):
        raise TypeError(f"check_{name} expects a dict with the keys {list(AGGREGATIONS)}, each a pair of numbers")
    want = aggregation_prediction_reference()
    n = 0
    for aggregation in AGGREGATIONS:
        got = np.asarray(prediction[aggregation], dtype=float).reshape(2)
        for i, what in enumerate(("short right answer (2 tokens, A = +1)", "long wrong answer (10 tokens, A = -1)")):
            if abs(got[i] - want[aggregation][i]) > 1e-3:
                miss = (f"{aggregation}, the {what}", got[i], want[aggregation][i], _AGG_WHY[aggregation])
                return prediction_result(name, n, verbose, miss)
            n += 1
    return prediction_result(name, n, verbose)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _rloo_group_mean(rewards, logp, logp_ref, mask, beta, group_size):
    logp, logp_ref, mask = (np.asarray(x, dtype=float) for x in (logp, logp_ref, mask))
    penalised = np.asarray(rewards, dtype=float) - beta * np.where(mask > 0, logp - logp_ref, 0.0).sum(axis=-1)
    groups = penalised.reshape(-1, group_size)
    return (groups - groups.mean(axis=1, keepdims=True)).reshape(-1)  # the sample's own reward in its baseline


def _layout_fixed(rewards, group_size):
    groups = np.asarray(rewards, dtype=float).reshape(-1, group_size)
    centred = groups - groups.mean(axis=1, keepdims=True)
    std = groups.std(axis=1, keepdims=True)
    constant = np.ptp(groups, axis=1, keepdims=True) == 0
    return np.where(constant, 0.0, centred / np.where(constant, 1.0, std + 1e-6)).reshape(-1)


RIGHT_SOLUTIONS = {
    "check_rloo_kl_advantages": rloo_kl_advantages_reference,
    "check_group_layout": _layout_fixed,
    "check_aggregation_prediction": {"sequence_mean": (0.5, -0.5), "token_mean": (2 / 12, -10 / 12),
                                     "dr_grpo": (0.1, -0.5)},
}

WRONG_SOLUTIONS = {
    "check_rloo_kl_advantages": _rloo_group_mean,
    "check_group_layout": buggy_group_advantages,
    # token-mean taken as "every completion weighs the same"
    "check_aggregation_prediction": {"sequence_mean": (0.5, -0.5), "token_mean": (0.5, -0.5), "dr_grpo": (0.1, -0.5)},
}
