"""Exercise checkers of chapter 4 (policy gradients, PPO and GAE).

- ``reinforce_loss(logp, advantages, mask) -> loss``: :math:`-\\frac1N\\sum_t m_t A_t \\log\\pi_t` (a scalar);
- ``gae_advantages(rewards, values, gamma, lam, dones, last_value) -> advantages``: GAE over the last axis,
  with episode ends (``dones``) and the bootstrap value of a truncated row (``last_value``);
- ``clipped_objective(ratio, advantages, clip_eps) -> objective``: PPO's per-sample
  :math:`\\min(\\rho A, \\mathrm{clip}(\\rho, 1-\\epsilon, 1+\\epsilon) A)`;
- ``clipped_value_loss(values, returns, old_values, clip) -> loss``: PPO2's
  :math:`\\frac12 \\mathrm{mean}\\max((V-R)^2, (V_{old} + \\mathrm{clip}(V-V_{old}, -c, c) - R)^2)`.

The solutions are the library's ``rlhf_edu.numpy`` functions. Chapter 4 prints those four functions in its
section 4, so its exercises (section 11) use the three checkers below instead, whose answers it does not print:

- ``check_gae_truncation(fn)``: a variant, GAE over a stream where an episode can be *cut* (truncated) in the
  middle of a row, with the critic's value of the state after each step given (``next_values``);
- ``check_clip_prediction(prediction)``: predict-then-run, the clipped objective and its derivative in the ratio
  for three samples;
- ``check_masked_whiten(fn)``: find the bug, advantage whitening whose statistics include the padding.
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import ExerciseResult, _not_done, make_checker, prediction_result
from rlhf_edu.numpy.advantages import gae, whiten
from rlhf_edu.numpy.policy_gradient import ppo_clip_objective, ppo_clip_objective_grad, reinforce_loss, value_loss

__all__ = [
    "check_reinforce_loss",
    "check_gae",
    "check_clipped_objective",
    "check_value_loss_clipping",
    "check_gae_truncation",
    "check_clip_prediction",
    "check_masked_whiten",
]


def gae_reference(rewards, values, gamma, lam, dones, last_value):
    """The solution: the advantages of ``rlhf_edu.numpy.advantages.gae`` (its first output)."""
    return gae(rewards, values, gamma, lam, dones=dones, last_value=last_value)[0]


def clipped_objective_reference(ratio, advantages, clip_eps):
    """The solution: ``rlhf_edu.numpy.policy_gradient.ppo_clip_objective``."""
    return ppo_clip_objective(ratio, advantages, clip_eps)


def clipped_value_loss_reference(values, returns, old_values, clip):
    """The solution: ``rlhf_edu.numpy.policy_gradient.value_loss`` with ``old_values`` and ``clip``."""
    return value_loss(values, returns, old_values=old_values, clip=clip)


# ---- REINFORCE ----


def _reinforce_case(rng):
    B, T = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    logp = np.log(rng.uniform(0.05, 1.0, size=(B, T)))
    adv = rng.normal(size=(B, T))
    mask = (rng.random((B, T)) < 0.8).astype(float)
    mask[:, 0] = 1.0  # at least one real token per row
    return (logp, adv, mask), {}


check_reinforce_loss = make_checker(
    "reinforce_loss",
    reference=reinforce_loss,
    edge_cases=[
        ((np.log([[0.5, 0.25]]), np.array([[1.0, -1.0]]), np.ones((1, 2))), {}),  # -0.3466
        ((np.log([[0.5, 0.25, 0.9]]), np.array([[2.0, 1.0, 5.0]]), np.array([[1.0, 1.0, 0.0]])), {}),  # padding
    ],
    random_case=_reinforce_case,
    hint="loss = -sum(mask * advantages * logp) / sum(mask): a MEAN over the real tokens, with a minus sign "
    "(we minimise); padding (mask 0) must not count",
)


# ---- GAE ----


def _gae_case(rng):
    B, T = int(rng.integers(1, 4)), int(rng.integers(1, 8))
    rewards = rng.normal(size=(B, T))
    values = rng.normal(size=(B, T))
    dones = (rng.random((B, T)) < 0.25).astype(float)
    gamma = float(rng.choice([0.9, 0.99, 1.0]))
    lam = float(rng.choice([0.0, 0.5, 0.95, 1.0]))
    return (rewards, values, gamma, lam, dones, rng.normal(size=B)), {}


check_gae = make_checker(
    "gae",
    reference=gae_reference,
    edge_cases=[
        # lam = 0: the TD residuals; lam = 1: G_t - V_t (the docstring examples of rn.gae)
        ((np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), 1.0, 0.0, np.zeros(3), 0.0), {}),
        ((np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), 1.0, 1.0, np.zeros(3), 0.0), {}),
        # the episode ends after step 1: nothing from step 2 leaks back; the row is cut after step 3 (bootstrap 2.0)
        ((np.array([1.0, 1.0, 1.0]), np.array([0.5, 0.5, 0.5]), 0.9, 0.95, np.array([0.0, 1.0, 0.0]), 2.0), {}),
    ],
    random_case=_gae_case,
    hint="go backwards: delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t with V_T = last_value, then "
    "A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}, A_T = 0",
)


# ---- PPO's clipped objective ----


def _clip_case(rng):
    shape = (int(rng.integers(1, 8)),)
    ratio = np.exp(rng.normal(scale=0.6, size=shape))
    adv = rng.normal(size=shape)
    return (ratio, adv, float(rng.choice([0.1, 0.2, 0.3]))), {}


check_clipped_objective = make_checker(
    "clipped_objective",
    reference=clipped_objective_reference,
    edge_cases=[
        ((np.array([3.0, 3.0]), np.array([1.0, -1.0]), 0.2), {}),  # the notes' "unlimited": 1.2 A, but 3 A if A < 0
        ((np.array([0.5, 0.5, 1.0]), np.array([1.0, -1.0, 2.0]), 0.2), {}),
    ],
    random_case=_clip_case,
    hint="np.minimum(ratio * A, np.clip(ratio, 1 - eps, 1 + eps) * A): the MIN of both terms, so a ratio that "
    "moved the wrong way is never clipped (ratio 3 with A = -1 gives -3, not -1.2)",
)


# ---- PPO2's clipped value loss ----


def _value_case(rng):
    n = int(rng.integers(1, 8))
    old = rng.normal(size=n)
    values = old + rng.normal(scale=0.5, size=n)
    returns = rng.normal(size=n)
    return (values, returns, old, float(rng.choice([0.1, 0.2, 0.5]))), {}


check_value_loss_clipping = make_checker(
    "value_loss_clipping",
    reference=clipped_value_loss_reference,
    edge_cases=[
        ((np.array([1.0, 2.0]), np.array([3.0, 3.0]), np.zeros(2), 0.5), {}),  # 3.125 (the docstring example)
        ((np.array([0.5]), np.array([1.0]), np.array([0.0]), 0.2), {}),          # clipped term wins: 0.32
    ],
    random_case=_value_case,
    hint="clipped = old_values + np.clip(values - old_values, -clip, clip); loss = 0.5 * mean(max((values - "
    "returns)**2, (clipped - returns)**2)): the MAX (pessimistic), and the 1/2",
)


# ---- chapter 4's exercises: a variant, a prediction, a bug to find ----


def gae_truncation_reference(rewards, values, next_values, terminated, truncated, gamma, lam):
    """The solution: GAE over the last axis with terminations and truncations anywhere in a row.

    ``next_values[..., t]`` is the critic's value of the state *after* step t (for a truncated step, the state
    where the episode was cut; ignored after a termination). A termination stops both the bootstrap and the
    recursion; a truncation keeps the bootstrap (the episode goes on, unseen) but stops the recursion (the next
    entry of the row belongs to another episode).
    """
    r, v, nv, term, trunc = (np.asarray(x, dtype=float) for x in (rewards, values, next_values, terminated, truncated))
    delta = r + gamma * (1.0 - term) * nv - v
    keep = (1.0 - term) * (1.0 - trunc)
    adv = np.zeros_like(delta)
    running = np.zeros(delta.shape[:-1])
    for t in reversed(range(delta.shape[-1])):
        running = delta[..., t] + gamma * lam * keep[..., t] * running
        adv[..., t] = running
    return adv


def _gae_trunc_case(rng):
    B, T = int(rng.integers(1, 4)), int(rng.integers(1, 8))
    rewards, values, next_values = (rng.normal(size=(B, T)) for _ in range(3))
    terminated = (rng.random((B, T)) < 0.2).astype(float)
    truncated = (rng.random((B, T)) < 0.2).astype(float) * (1 - terminated)
    gamma = float(rng.choice([0.9, 0.99, 1.0]))
    lam = float(rng.choice([0.0, 0.5, 0.95, 1.0]))
    return (rewards, values, next_values, terminated, truncated, gamma, lam), {}


check_gae_truncation = make_checker(
    "gae_truncation",
    reference=gae_truncation_reference,
    edge_cases=[
        # chapter 4's Bug 1 row: the first episode ends after step 1, the second is cut after step 3
        ((np.ones(4), np.array([2.0, 1.0, 2.0, 2.0]), np.array([1.0, 5.0, 2.0, 2.0]), np.array([0.0, 1.0, 0.0, 0.0]),
          np.array([0.0, 0.0, 0.0, 1.0]), 0.9, 1.0), {}),
        # an episode cut after step 1 in the middle of the row: bootstrap with 3.0, then a new episode starts
        ((np.array([0.0, 0.0, 1.0, 0.0]), np.full(4, 0.5), np.array([0.5, 3.0, 0.5, 0.5]), np.zeros(4),
          np.array([0.0, 1.0, 0.0, 0.0]), 1.0, 1.0), {}),
        # lam = 0: the one-step TD residuals
        ((np.array([0.0, 0.0, 1.0]), np.full(3, 0.5), np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.0, 1.0]),
          np.zeros(3), 1.0, 0.0), {}),
    ],
    random_case=_gae_trunc_case,
    hint="likely misconceptions: letting the advantage of the next entry of the row flow back across a cut (after "
    "a truncation the next entry is another episode); treating a truncation like a termination (the state after "
    "a cut still has a value: bootstrap with next_values); bootstrapping after a termination; taking values[t + 1] "
    "as the next state's value where the row has moved on to another episode",
)


_CLIP_SAMPLES = ((0.7, -2.0), (1.5, -2.0), (1.5, 2.0))  # (ratio, advantage); clip_eps = 0.2
_CLIP_EPS = 0.2


def clip_prediction_reference():
    """The run: PPO's clipped objective and its derivative in the ratio for the three samples, eps = 0.2."""
    ratio, adv = np.array(_CLIP_SAMPLES).T
    return (ppo_clip_objective(ratio, adv, _CLIP_EPS), ppo_clip_objective_grad(ratio, adv, _CLIP_EPS)["ratio"])


def _clip_why(i, what, got, expected):
    ratio, adv = _CLIP_SAMPLES[i]
    clipped = float(np.clip(ratio, 1 - _CLIP_EPS, 1 + _CLIP_EPS) * adv)
    if what == "objective":
        if abs(got - ratio * adv) < 1e-3:
            return ("you kept the unclipped term rho * A; the objective is the MIN of the unclipped and the clipped "
                    "term, the more pessimistic of the two")
        if abs(got - clipped) < 1e-3:
            return ("you clipped a ratio that moved the wrong way for this sign of A; the min keeps the unclipped "
                    "term there, so the full penalty stays")
        return "compute both terms, unclipped and clipped, and keep the smaller"
    if expected == 0.0:
        return "where the clipped term is the smaller one it is constant in rho: the sample stops pushing"
    return "where the unclipped term rho * A is the smaller one, its derivative in rho is A: the sample still pushes"


def check_clip_prediction(prediction, seed=0, verbose=True) -> ExerciseResult:
    """Predict-then-run: ``prediction`` is ``(objectives, gradients)`` for the samples (ratio, A) = (0.7, -2),
    (1.5, -2), (1.5, 2) with eps = 0.2, or a function of no argument returning them. Prints PASS or, for the
    first sample you missed, the input, your prediction, the run's value and the likely misconception."""
    name = "clip_prediction"
    if callable(prediction):
        try:
            prediction = prediction()
        except NotImplementedError:
            return _not_done(name, verbose)
    try:
        objectives, gradients = (np.asarray(x, dtype=float).reshape(len(_CLIP_SAMPLES)) for x in prediction)
    except (TypeError, ValueError):
        raise TypeError(f"check_{name} expects (objectives, gradients), two lists of {len(_CLIP_SAMPLES)} numbers")
    want_obj, want_grad = clip_prediction_reference()
    n = 0
    for what, got_all, want_all in (("objective", objectives, want_obj), ("gradient", gradients, want_grad)):
        for i, (got, want) in enumerate(zip(got_all, want_all)):
            if abs(got - want) > 1e-3:
                ratio, adv = _CLIP_SAMPLES[i]
                where = f"the {what} of sample {i} (ratio {ratio:g}, A = {adv:g}, eps = {_CLIP_EPS:g})"
                return prediction_result(name, n, verbose, (where, got, float(want), _clip_why(i, what, got, float(want))))
            n += 1
    return prediction_result(name, n, verbose)


def masked_whiten_reference(advantages, mask):
    """The solution: ``rlhf_edu.numpy.advantages.whiten(advantages, mask)``."""
    return whiten(np.asarray(advantages, dtype=float), mask=np.asarray(mask))


def _whiten_case(rng):
    B, T = int(rng.integers(1, 4)), int(rng.integers(2, 8))
    adv = rng.normal(loc=rng.normal(), scale=2.0, size=(B, T))
    lengths = rng.integers(1, T + 1, size=B)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(float)
    mask[0, :2] = 1.0  # at least two real tokens: a variance
    adv = np.where(mask > 0, adv, 0.0)  # padding holds zeros, as in a padded batch
    return (adv, mask), {}


check_masked_whiten = make_checker(
    "masked_whiten",
    reference=masked_whiten_reference,
    edge_cases=[
        ((np.array([[1.0, 2.0, 3.0, 0.0]]), np.array([[1.0, 1.0, 1.0, 0.0]])), {}),
        ((np.array([[2.0, 4.0, 0.0, 0.0], [6.0, 0.0, 0.0, 0.0]]), np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])), {}),
    ],
    random_case=_whiten_case,
    hint="likely misconceptions: the padding's zeros counted in the mean and the variance (they drag the mean to 0 "
    "and shrink the spread more in batches with more padding); statistics per row instead of over the whole batch; "
    "the sample (n - 1) variance instead of the population one; padding left non-zero in the output",
)


# ---- a right and a typical wrong solution per checker, for tests/test_exercises.py ----


def _gae_by_hand(rewards, values, gamma, lam, dones, last_value):
    rewards, values, dones = (np.asarray(x, dtype=float) for x in (rewards, values, dones))
    adv = np.zeros_like(rewards)
    next_value = np.broadcast_to(np.asarray(last_value, dtype=float), rewards.shape[:-1])
    running = np.zeros(rewards.shape[:-1])
    for t in reversed(range(rewards.shape[-1])):
        not_done = 1.0 - dones[..., t]
        delta = rewards[..., t] + gamma * next_value * not_done - values[..., t]
        running = delta + gamma * lam * not_done * running
        adv[..., t] = running
        next_value = values[..., t]
    return adv


def _gae_ignoring_dones(rewards, values, gamma, lam, dones, last_value):
    return _gae_by_hand(rewards, values, gamma, lam, np.zeros_like(np.asarray(dones, dtype=float)), last_value)


def _gae_trunc_leaking(rewards, values, next_values, terminated, truncated, gamma, lam):
    # bootstraps at the cut, but lets the next episode's advantages leak back across it
    no_cuts = np.zeros_like(np.asarray(truncated, dtype=float))
    return gae_truncation_reference(rewards, values, next_values, terminated, no_cuts, gamma, lam)


def _whiten_fixed(advantages, mask):
    a, m = np.asarray(advantages, dtype=float), np.asarray(mask, dtype=float)
    mean = (a * m).sum() / m.sum()
    var = (((a - mean) * m) ** 2).sum() / m.sum()
    return (a - mean) / np.sqrt(var + 1e-8) * m


def _whiten_with_padding(advantages, mask):
    a, m = np.asarray(advantages, dtype=float), np.asarray(mask, dtype=float)
    return (a - a.mean()) / (a.std() + 1e-8) * m  # the bug: statistics over the padding too


RIGHT_SOLUTIONS = {
    "check_gae_truncation": gae_truncation_reference,
    "check_clip_prediction": ([-1.6, -3.0, 2.4], [0.0, -2.0, 0.0]),
    "check_masked_whiten": _whiten_fixed,
    "check_reinforce_loss": lambda logp, adv, mask: -np.sum(mask * adv * logp) / np.sum(mask),
    "check_gae": _gae_by_hand,
    "check_clipped_objective": lambda r, a, eps: np.minimum(r * a, np.clip(r, 1 - eps, 1 + eps) * a),
    "check_value_loss_clipping": lambda v, ret, old, c: 0.5 * np.mean(
        np.maximum((v - ret) ** 2, (old + np.clip(v - old, -c, c) - ret) ** 2)),
}

WRONG_SOLUTIONS = {
    "check_gae_truncation": _gae_trunc_leaking,
    "check_clip_prediction": ([-1.4, -3.0, 2.4], [-2.0, -2.0, 0.0]),  # kept the unclipped term for A < 0
    "check_masked_whiten": _whiten_with_padding,
    # sums instead of averaging over the real tokens
    "check_reinforce_loss": lambda logp, adv, mask: -np.sum(mask * adv * logp),
    # bootstraps across episode ends
    "check_gae": _gae_ignoring_dones,
    # forgets the min: clips the ratio whatever the sign of A
    "check_clipped_objective": lambda r, a, eps: np.clip(r, 1 - eps, 1 + eps) * a,
    # takes the optimistic min instead of the max
    "check_value_loss_clipping": lambda v, ret, old, c: 0.5 * np.mean(
        np.minimum((v - ret) ** 2, (old + np.clip(v - old, -c, c) - ret) ** 2)),
}
