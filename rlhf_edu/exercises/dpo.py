"""Exercise checkers of chapter 6 (the DPO derivation).

Chapter 6 prints the library's ``kl_regularized_optimum``, ``log_partition``, ``implied_reward``, ``dpo_loss``,
``dpo_loss_grad`` and ``dpo_implicit_reward`` in its section 4, so its exercises ask for what it does not print:

- ``check_plackett_luce_dpo(fn)`` (a variant): DPO for rankings of K answers, ``fn(policy_logps, ref_logps,
  beta)`` with ``(B, K)`` sequence log-probs ranked best first, returning the ``(B,)`` Plackett-Luce loss of the
  implicit rewards (the DPO paper's appendix A.3);
- ``check_kl_budget_beta(fn)`` (a derivation with a number): the constrained form of the RLHF objective with its
  bound, "maximise E[r] subject to KL(pi || pi_ref) <= epsilon", ``fn(ref_probs, rewards, epsilon)`` returns the
  beta whose optimum pi*_beta spends exactly the budget;
- ``check_completion_logps(fn)`` (find the bug): sequence log-probs of the completion tokens from a causal LM's
  logits, the fix of ``buggy_completion_logps``;
- ``check_mean_logp_limit(fn)`` (a derivation with a number): where DPO trained on exact Bradley-Terry preferences
  converges when it is fed per-token MEAN log-probs (the chapter's bug 1), ``fn(ref_probs, rewards, lengths,
  beta)``.

The solutions are the ``*_reference`` functions here, never printed by the chapter.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.divergences import kl_divergence
from rlhf_edu.numpy.optimal import kl_regularized_optimum

__all__ = [
    "plackett_luce_dpo_reference",
    "check_plackett_luce_dpo",
    "kl_budget_beta_reference",
    "check_kl_budget_beta",
    "buggy_completion_logps",
    "completion_logps_reference",
    "check_completion_logps",
    "mean_logp_limit_reference",
    "check_mean_logp_limit",
]


# ---- exercise 1 (a variant): DPO for rankings, the Plackett-Luce loss ----


def plackett_luce_dpo_reference(policy_logps, ref_logps, beta):
    r"""The solution: :math:`-\log\prod_{k=1}^{K-1} \frac{e^{z_k}}{\sum_{j\ge k} e^{z_j}}` per row, with the
    implicit rewards :math:`z_k = \beta(\log\pi_\theta(y_k|x) - \log\pi_{ref}(y_k|x))` ranked best first.

    Each factor is "the k-th answer is picked first among those still left" (Plackett 1975, Luce 1959); the
    partition function :math:`\beta\log Z(x)` cancels in every factor as in the pairwise case. For K = 2 it is
    ``dpo_loss``. Computed with suffix log-sum-exps, so implicit rewards of -1e3 do not underflow to log 0.
    """
    z = beta * (np.asarray(policy_logps, dtype=float) - np.asarray(ref_logps, dtype=float))
    tail = np.logaddexp.accumulate(z[..., ::-1], axis=-1)[..., ::-1]  # log sum_{j >= k} e^{z_j}
    return np.sum(tail[..., :-1] - z[..., :-1], axis=-1)


def _plackett_luce_case(rng):
    b, k = int(rng.integers(1, 4)), int(rng.integers(2, 6))
    policy = np.log(rng.dirichlet(np.ones(8), size=(b, k))[..., 0]) * rng.uniform(1, 20)
    ref = np.log(rng.dirichlet(np.ones(8), size=(b, k))[..., 0]) * rng.uniform(1, 20)
    return (policy, ref, float(rng.choice([0.1, 0.5, 1.0, 2.0]))), {}


check_plackett_luce_dpo = make_checker(
    "plackett_luce_dpo",
    reference=plackett_luce_dpo_reference,
    edge_cases=[
        # K = 2: the pairwise DPO loss (0.3133 for the dpo_loss docstring's pair)
        ((np.array([[-1.0, -3.0]]), np.array([[-2.0, -2.0]]), 0.5), {}),
        # the policy is the reference: every ranking equally likely, loss log K! = log 6
        ((np.array([[-5.0, -7.0, -9.0]]), np.array([[-5.0, -7.0, -9.0]]), 0.1), {}),
        # implicit rewards of -1500 and -3000: a sum of exponentials underflows to 0
        ((np.array([[-1.0, -1500.0, -3000.0]]), np.array([[-2.0, -2.0, -2.0]]), 1.0), {}),
    ],
    random_case=_plackett_luce_case,
    hint="likely misconceptions: dividing by the sum over ALL K answers at every position (the k-th answer "
    "competes only with those ranked below it, j >= k); counting the last factor, which is always 1 (harmless) "
    "or skipping the first; leaving out beta or putting pi_ref over pi; exp then log instead of a log-sum-exp "
    "(np.logaddexp), which gives log 0 = -inf for implicit rewards of -1500",
)


# ---- exercise 2 (a derivation with a number): the beta of a KL budget ----


def _optimum(ref_probs, rewards, beta):
    logits = np.log(ref_probs) + rewards / beta  # kl_regularized_optimum without its input checks (a bisection)
    return np.exp(logits - np.logaddexp.reduce(logits))


def _kl_of_optimum(ref_probs, rewards, beta):
    pi = _optimum(ref_probs, rewards, beta)
    return float(np.sum(pi * (np.log(np.maximum(pi, 1e-300)) - np.log(ref_probs))))


def _bisect_kl_budget(ref_probs, rewards, epsilon, kl_fn=_kl_of_optimum):
    """Bisection on log beta for KL(beta) = epsilon, with KL(beta) decreasing (shared by the reference and tests)."""
    ref_probs, rewards = np.asarray(ref_probs, dtype=float), np.asarray(rewards, dtype=float)
    kl_max = -float(np.log(ref_probs[rewards == rewards.max()].sum()))  # beta -> 0: pi* -> the argmax
    if not 0.0 < epsilon < kl_max:
        raise ValueError(f"epsilon must be in (0, {kl_max:.6g}), the KL of the best answers alone; got {epsilon}")
    span = float(rewards.max() - rewards.min())
    lo, hi = np.log(span * 1e-6), np.log(span * 1e6)
    while kl_fn(ref_probs, rewards, float(np.exp(lo))) < epsilon:  # very tight budgets near kl_max
        lo -= 10.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if kl_fn(ref_probs, rewards, float(np.exp(mid))) > epsilon:
            lo = mid  # still too far from pi_ref: a larger beta
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def kl_budget_beta_reference(ref_probs, rewards, epsilon):
    r"""The solution: the :math:`\beta > 0` with :math:`\mathrm{KL}(\pi^*_\beta\|\pi_{ref}) = \epsilon`.

    Maximising :math:`\mathbb E_\pi[r]` subject to :math:`\mathrm{KL}(\pi\|\pi_{ref}) \le \epsilon` (and
    :math:`\sum_y\pi(y) = 1`): the Lagrangian with multiplier :math:`\beta \ge 0` for the KL bound is the
    penalised objective plus :math:`\beta\epsilon`, so its maximiser is :math:`\pi^*_\beta`, and the bound is
    active (complementary slackness) unless the argmax already fits in the budget.
    :math:`\mathrm{KL}(\pi^*_\beta\|\pi_{ref})` falls from :math:`-\log\pi_{ref}(\arg\max r)` at
    :math:`\beta\to 0` to 0 at :math:`\beta\to\infty` (its derivative is :math:`-\mathrm{Var}_{\pi^*}(r)/\beta^3`),
    so one bisection finds it; an :math:`\epsilon` outside that range raises ``ValueError``.
    """
    return _bisect_kl_budget(ref_probs, rewards, epsilon)


def _kl_budget_case(rng):
    k = int(rng.integers(3, 7))
    ref = rng.dirichlet(np.ones(k) * 2)
    rewards = rng.normal(scale=rng.uniform(0.5, 5), size=k)
    kl_max = -np.log(ref[np.argmax(rewards)])
    return (ref, rewards, float(rng.uniform(0.05, 0.9) * kl_max)), {}


_TOY_REF = np.array([0.10, 0.25, 0.30, 0.20, 0.15])  # chapter 6's review toy (rlhf_edu.figures.dpo)
_TOY_REWARDS = np.array([8.80797078, 7.31058579, 5.0, 2.68941421, 1.19202922])

check_kl_budget_beta = make_checker(
    "kl_budget_beta",
    reference=kl_budget_beta_reference,
    edge_cases=[
        ((_TOY_REF, _TOY_REWARDS, 0.5), {}),
        ((_TOY_REF, _TOY_REWARDS, 0.01), {}),   # a tight leash: a large beta
        ((_TOY_REF, _TOY_REWARDS, 2.2), {}),    # close to -log 0.1 = 2.303: a small beta
    ],
    random_case=_kl_budget_case,
    n_random=10,
    rtol=1e-4,
    atol=0.0,
    hint="likely misconceptions: the reverse KL(pi_ref || pi*) instead of KL(pi* || pi_ref); thinking KL grows with "
    "beta (it falls: beta is the price of a nat); a bisection in beta that cannot reach the small betas of a "
    "loose budget (bisect in log beta); a budget of -log pi_ref(best) or more is reached by no finite beta "
    "(the argmax itself fits: raise ValueError), and so is epsilon <= 0",
    expected_errors=[
        ((_TOY_REF, _TOY_REWARDS, 0.0), {}, ValueError),
        ((_TOY_REF, _TOY_REWARDS, 2.5), {}, ValueError),  # more than -log 0.1
    ],
)


# ---- exercise 3 (find the bug): the log-probability of a completion ----


def _log_softmax(logits):
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def buggy_completion_logps(logits, input_ids, completion_mask):
    """A first version of "log pi(y | x) from the model's logits", as the chapter's exercise 3 prints it."""
    logp = _log_softmax(np.asarray(logits, dtype=float))  # (B, T, V)
    token_logp = np.take_along_axis(logp, np.asarray(input_ids)[..., None], axis=-1)[..., 0]  # (B, T)
    return (token_logp * completion_mask).sum(axis=-1)


def completion_logps_reference(logits, input_ids, completion_mask):
    r"""The solution: :math:`\log\pi(y|x) = \sum_{t:\,m_t = 1} \log\mathrm{softmax}(\ell_{t-1})[x_t]`, per row.

    The logits at position t are the model's prediction of token t + 1 (it has seen tokens 0..t), so token t is
    scored by the logits of position t - 1; the sum runs over the completion tokens only (``completion_mask``
    is 1 there and 0 on the prompt and the padding; it is never 1 at position 0). What
    ``rlhf_edu.lm.sequence_logprobs`` computes from a model.
    """
    logp = _log_softmax(np.asarray(logits, dtype=float))
    ids, mask = np.asarray(input_ids), np.asarray(completion_mask, dtype=float)
    token_logp = np.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
    return (token_logp * mask[:, 1:]).sum(axis=-1)


def _completion_case(rng):
    b, t, v = int(rng.integers(1, 4)), int(rng.integers(4, 10)), int(rng.integers(5, 9))
    logits = rng.normal(scale=2.0, size=(b, t, v))
    ids = rng.integers(1, v, size=(b, t))
    mask = np.zeros((b, t))
    for row in range(b):
        prompt = int(rng.integers(1, t - 1))
        end = int(rng.integers(prompt + 1, t + 1))
        mask[row, prompt:end] = 1.0
        ids[row, end:] = 0  # padding
    return (logits, ids, mask), {}


check_completion_logps = make_checker(
    "completion_logps",
    reference=completion_logps_reference,
    edge_cases=[
        # two positions of prompt, two of completion, one of padding; vocabulary of 3
        ((np.array([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]),
          np.array([[1, 2, 1, 2, 0]]), np.array([[0.0, 0.0, 1.0, 1.0, 0.0]])), {}),
    ],
    random_case=_completion_case,
    rtol=1e-9,
    atol=1e-12,
    hint="likely misconceptions: scoring token t with the logits of position t, which are the prediction of token "
    "t + 1 (shift by one: logits[:, :-1] score input_ids[:, 1:], with completion_mask[:, 1:]); averaging over the "
    "tokens instead of summing (the derivation needs log pi(y|x), a sum); counting the prompt's tokens",
)


# ---- exercise 4 (a derivation with a number): where DPO with mean log-probs converges ----


def mean_logp_limit_reference(ref_probs, rewards, lengths, beta):
    r"""The solution: the policy that DPO reaches on exact Bradley-Terry preferences over all pairs when every
    log-probability (policy and reference) is divided by the answer's length :math:`L_y`.

    The expected loss is minimal where every pair's predicted probability equals its label's,
    :math:`\beta(a_i - a_j) = r_i - r_j` with :math:`a_y = \log\frac{\pi(y)}{\pi_{ref}(y)} / L_y`, i.e.
    :math:`a_y = r_y/\beta + c`, so :math:`\pi(y) = \pi_{ref}(y)\,e^{L_y (r_y/\beta + c)}` with the one c that
    makes it sum to 1 (the sum grows with c: bisection). Equal lengths L give :math:`\pi^*` at :math:`\beta/L`.
    """
    ref, r, lengths = (np.asarray(x, dtype=float) for x in (ref_probs, rewards, lengths))
    log_ref = np.log(ref)

    def log_total(c):
        return np.logaddexp.reduce(log_ref + lengths * (r / beta + c))

    lo, hi = -r.max() / beta - 1.0, -r.min() / beta + 1.0
    while log_total(lo) > 0:
        lo -= 10.0
    while log_total(hi) < 0:
        hi += 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if log_total(mid) < 0 else (lo, mid)
    logp = log_ref + lengths * (r / beta + 0.5 * (lo + hi))
    return np.exp(logp - np.logaddexp.reduce(logp))


def _mean_limit_case(rng):
    k = int(rng.integers(2, 6))
    ref = rng.dirichlet(np.ones(k) * 2)
    rewards = rng.normal(scale=2.0, size=k)
    lengths = rng.integers(1, 20, size=k).astype(float)
    return (ref, rewards, lengths, float(rng.choice([0.5, 1.0, 2.0, 5.0]))), {}


check_mean_logp_limit = make_checker(
    "mean_logp_limit",
    reference=mean_logp_limit_reference,
    edge_cases=[
        ((_TOY_REF, _TOY_REWARDS, np.array([12.0, 7.0, 8.0, 7.0, 18.0]), 2.0), {}),   # chapter 6's toy
        ((_TOY_REF, _TOY_REWARDS, np.full(5, 4.0), 2.0), {}),                         # equal lengths
    ],
    random_case=_mean_limit_case,
    rtol=1e-6,
    atol=1e-9,
    hint="likely misconceptions: the answer pi* (the mean changes the fixed point, not only the speed); pi* with "
    "beta / L_y per answer, normalised (forgets that the constant c of the implied reward is multiplied by L_y "
    "too); dividing only the policy's log-probs by the length (the reference's are divided as well). Write the "
    "optimum of each pair's loss, sigma(beta (a_i - a_j)) = sigma(r_i - r_j), solve for a_y, then normalise",
)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _plackett_luce_all_k(policy_logps, ref_logps, beta):
    z = beta * (np.asarray(policy_logps, dtype=float) - np.asarray(ref_logps, dtype=float))
    every = np.logaddexp.reduce(z, axis=-1, keepdims=True) - z  # each answer against all K, not those below it
    return np.sum(every[..., :-1], axis=-1)


def _kl_of_optimum_reverse(ref_probs, rewards, beta):
    return float(kl_divergence(ref_probs, _optimum(ref_probs, rewards, beta)))


def _kl_budget_reverse(ref_probs, rewards, epsilon):
    return _bisect_kl_budget(ref_probs, rewards, epsilon, kl_fn=_kl_of_optimum_reverse)


def _completion_logps_fixed(logits, input_ids, completion_mask):
    logp = _log_softmax(np.asarray(logits, dtype=float))
    ids = np.asarray(input_ids)
    token_logp = np.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
    return (token_logp * np.asarray(completion_mask, dtype=float)[:, 1:]).sum(axis=-1)


RIGHT_SOLUTIONS = {
    "check_plackett_luce_dpo": plackett_luce_dpo_reference,
    "check_kl_budget_beta": kl_budget_beta_reference,
    "check_completion_logps": _completion_logps_fixed,
    "check_mean_logp_limit": mean_logp_limit_reference,
}

WRONG_SOLUTIONS = {
    # every position's answer against all K answers, not only those ranked below it
    "check_plackett_luce_dpo": _plackett_luce_all_k,
    # the reverse KL(pi_ref || pi*)
    "check_kl_budget_beta": _kl_budget_reverse,
    # the bug of the chapter's exercise: no shift
    "check_completion_logps": buggy_completion_logps,
    # mean log-probs still reach pi*
    "check_mean_logp_limit": lambda ref, r, lengths, beta: kl_regularized_optimum(ref, r, beta),
}
