"""Exercise checkers of chapter 1 (rewards from preferences: Bradley-Terry).

- ``check_bt_prob(fn)``: ``fn(r_a, r_b)`` is :math:`P(a \\succ b) = \\sigma(r_a - r_b)`, elementwise with
  broadcasting, exact (no NaN, no overflow) for reward gaps of +-1e4. Reference:
  ``rlhf_edu.numpy.bradley_terry_prob``.
- ``check_bt_loss(fn)``: ``fn(r_chosen, r_rejected)`` is the per-pair loss
  :math:`-\\log\\sigma(r_{chosen} - r_{rejected})`, finite for margins of +-1e4. Reference:
  ``rlhf_edu.numpy.bradley_terry_loss``.
- ``check_bt_loss_grad(fn)``: ``fn(r_chosen, r_rejected)`` returns ``{"r_chosen": ..., "r_rejected": ...}``,
  the gradient of the summed loss with respect to each reward. Reference:
  ``rlhf_edu.numpy.bradley_terry_loss_grad``.
- ``check_ranking_to_pairs(fn)``: ``fn(ranking)`` turns a best-first ranking of K item ids into
  ``(winners, losers, weights)``: every pair of positions i < j in the order (0, 1), (0, 2), ..., (1, 2), ...,
  each weighted 1 / C(K, 2); a repeated id raises ``ValueError``. Reference:
  ``rlhf_edu.numpy.ranking_to_pairs``.

The four above check functions that chapter 1 prints in its section 4; the chapter's exercises use these
three, whose answers the chapter does not print:

- ``check_ranking_loss(fn)``: ``fn(rewards, rankings)``, the batched K-wise ranking loss (InstructGPT eq. 1):
  the C(K, 2) pairs of each best-first ranking, each weighted 1 / C(K, 2), mean over prompts (a variant);
- ``check_noisy_margin_prediction(fn)``: ``fn(gold_gap, noise)`` predicts where gradient descent on the
  expected loss of a pair with a finite gold gap and flipped labels leaves its margin; the checker runs it
  (predict, then run);
- ``check_last_token_reward(fn)``: ``fn(values, attention_mask)``, the reward read at the last real token of
  each left- or right-padded row, the fix of ``buggy_last_token_reward`` (find the bug).
"""

from __future__ import annotations

import numpy as np

from rlhf_edu.exercises.checker import make_checker
from rlhf_edu.numpy.preferences import (
    bradley_terry_loss,
    bradley_terry_loss_grad,
    bradley_terry_prob,
    ranking_to_pairs,
)

__all__ = ["check_bt_prob", "check_bt_loss", "check_bt_loss_grad", "check_ranking_to_pairs"]

_EXTREME = (np.array([1e4, -1e4, 800.0, -800.0]), np.array([-1e4, 1e4, 0.0, 0.0]))


def _random_rewards(rng):
    n = int(rng.integers(1, 8))
    scale = float(10.0 ** rng.uniform(-1, 1.5))
    return (rng.normal(size=n) * scale, rng.normal(size=n) * scale), {}


def _random_matrix_rewards(rng):
    r = rng.normal(size=int(rng.integers(2, 6))) * 3
    return (r[:, None], r[None, :]), {}  # every pairwise win probability at once (broadcasting)


def _random_prob_case(rng):
    return _random_matrix_rewards(rng) if rng.random() < 0.3 else _random_rewards(rng)


check_bt_prob = make_checker(
    "bt_prob",
    reference=bradley_terry_prob,
    edge_cases=[
        ((np.array(0.0), np.array(0.0)), {}),  # a tie: 1/2
        ((np.array([1.2]), np.array([0.4])), {}),  # the chapter's worked example: sigma(0.8)
        (_EXTREME, {}),
    ],
    random_case=_random_prob_case,
    rtol=1e-9,
    atol=1e-12,
    hint="P(a > b) = 1 / (1 + exp(-(r_a - r_b))); exp(r_a) / (exp(r_a) + exp(r_b)) is the same number on paper "
    "but inf / inf = NaN in floating point for rewards of 1e4; np.logaddexp(0, -d) is -log sigma(d)",
)


check_bt_loss = make_checker(
    "bt_loss",
    reference=bradley_terry_loss,
    edge_cases=[
        ((np.array([1.0, 0.0]), np.array([0.0, 0.0])), {}),  # log(1 + e^-1) = 0.3133 and log 2
        ((np.array([1.2]), np.array([0.4])), {}),
        (_EXTREME, {}),  # loss 0 and 2e4, never inf
    ],
    random_case=_random_rewards,
    rtol=1e-9,
    atol=1e-12,
    hint="loss = -log sigma(r_chosen - r_rejected) = log(1 + exp(-(r_chosen - r_rejected))) = "
    "np.logaddexp(0, -(r_chosen - r_rejected)); the CHOSEN reward comes first",
)


check_bt_loss_grad = make_checker(
    "bt_loss_grad",
    reference=bradley_terry_loss_grad,
    edge_cases=[
        ((np.array([0.0]), np.array([0.0])), {}),  # -1/2 and +1/2
        ((np.array([1.2]), np.array([0.4])), {}),
        (_EXTREME, {}),
    ],
    random_case=_random_rewards,
    rtol=1e-9,
    atol=1e-12,
    hint="with d = r_chosen - r_rejected, d loss / d r_chosen = -sigma(-d) = -(1 - sigma(d)) and "
    "d loss / d r_rejected = +sigma(-d); return a dict with the keys 'r_chosen' and 'r_rejected'",
)


def _random_ranking(rng):
    k = int(rng.integers(2, 8))
    return (rng.permutation(20)[:k],), {}


check_ranking_to_pairs = make_checker(
    "ranking_to_pairs",
    reference=ranking_to_pairs,
    edge_cases=[
        ((np.array([0, 2, 1]),), {}),  # the notes' y1 > y3 > y2
        ((np.array([5, 3]),), {}),  # K = 2: one pair of weight 1
        ((np.array([3, 1, 0, 2]),), {}),  # K = 4: six pairs of weight 1/6
    ],
    random_case=_random_ranking,
    rtol=1e-12,
    atol=1e-12,
    hint="for positions i < j (in the order of np.triu_indices(K, 1)) ranking[i] beat ranking[j]; there are "
    "C(K, 2) = K (K - 1) / 2 such pairs and each weighs 1 / C(K, 2); repeated ids raise ValueError",
    expected_errors=[((np.array([1, 2, 1]),), {}, ValueError)],
)


def _literal_bt_prob(r_a, r_b):
    r_a, r_b = np.asarray(r_a, dtype=float), np.asarray(r_b, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(r_a) / (np.exp(r_a) + np.exp(r_b))  # inf / inf at 1e4


def _swapped_loss(r_chosen, r_rejected):
    return np.logaddexp(0.0, -(np.asarray(r_rejected, float) - np.asarray(r_chosen, float)))


def _sigma_not_one_minus_sigma_grad(r_chosen, r_rejected):
    d = np.asarray(r_chosen, float) - np.asarray(r_rejected, float)
    s = np.exp(-np.logaddexp(0.0, -d))  # sigma(d), where the gradient needs sigma(-d)
    return {"r_chosen": -s, "r_rejected": s}


def _ordered_pairs_weights(ranking):
    ranking = np.asarray(ranking)
    if len(set(ranking.tolist())) != ranking.size:
        raise ValueError("ranking must not repeat an id")
    k = ranking.size
    i, j = np.triu_indices(k, 1)
    return ranking[i], ranking[j], np.full(i.size, 1.0 / (k * (k - 1)))  # counted ordered pairs: half the weight


RIGHT_SOLUTIONS = {
    "check_bt_prob": bradley_terry_prob,
    "check_bt_loss": bradley_terry_loss,
    "check_bt_loss_grad": bradley_terry_loss_grad,
    "check_ranking_to_pairs": ranking_to_pairs,
}
WRONG_SOLUTIONS = {
    "check_bt_prob": _literal_bt_prob,
    "check_bt_loss": _swapped_loss,
    "check_bt_loss_grad": _sigma_not_one_minus_sigma_grad,
    "check_ranking_to_pairs": _ordered_pairs_weights,
}


# ---------------------------------------------------------------------------------------------------------
# The chapter's exercises (second edition): none of them is answered by the code that the chapter prints.
# - check_ranking_loss: a variant (the batched K-wise loss of InstructGPT), reference below, not in the book;
# - check_noisy_margin_prediction: predict-then-run (where gradient descent leaves a margin: finite gold gap + noise);
# - check_last_token_reward: find the bug (a reward read at the wrong token of a padded batch).
# Failure messages name the input, the expected and the received output, and the likely misconception.
# ---------------------------------------------------------------------------------------------------------

import math  # noqa: E402

from rlhf_edu.exercises.checker import ExerciseResult, _not_done, compare_outputs  # noqa: E402

__all__ += ["check_ranking_loss", "check_noisy_margin_prediction", "check_last_token_reward"]




def _with_diagnosis(name, base_check, diagnose):
    """Wrap a ``make_checker`` checker: on a failure, add the likely misconception that ``diagnose`` names."""

    def check(student_fn, seed=0, verbose=True):
        result = base_check(student_fn, seed=seed, verbose=False)
        if not result.passed and not result.message.startswith("NOT DONE YET"):
            try:
                why = diagnose(student_fn)
            except Exception:  # noqa: BLE001 - a diagnosis is a courtesy; the failure itself was reported
                why = None
            if why:
                result.message += f"\n  likely misconception: {why}"
        if verbose:
            print(result.message)
        return result

    check.__name__ = f"check_{name}"
    check.__doc__ = base_check.__doc__
    return check


def _ranking_loss(rewards, rankings):
    """Mean over prompts of the InstructGPT K-wise loss: each of the C(K, 2) pairs of a ranking weighs 1 / C(K, 2)."""
    rewards = np.asarray(rewards, dtype=float)
    rankings = np.asarray(rankings)
    if rewards.ndim != 2 or rankings.shape != rewards.shape:
        raise ValueError("rewards and rankings must both have shape [B, K]")
    ordered = np.take_along_axis(rewards, rankings, axis=1)  # best first
    i, j = np.triu_indices(rewards.shape[1], 1)
    per_pair = np.logaddexp(0.0, -(ordered[:, i] - ordered[:, j]))
    return float(per_pair.mean(axis=1).mean())


def _random_rankings(rng):
    b, k = int(rng.integers(1, 5)), int(rng.integers(2, 7))
    rewards = rng.normal(size=(b, k)) * float(10.0 ** rng.uniform(-0.5, 1.0))
    rankings = np.stack([rng.permutation(k) for _ in range(b)])
    return (rewards, rankings), {}


_ranking_loss_base = make_checker(
    "ranking_loss",
    reference=_ranking_loss,
    edge_cases=[
        ((np.array([[1.5, 0.0, 0.7]]), np.array([[0, 2, 1]])), {}),  # the earthquake answers, y1 > y3 > y2
        ((np.array([[0.0, 0.0, 0.0, 0.0]]), np.array([[3, 1, 0, 2]])), {}),  # all rewards equal: every pair log 2
        ((np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([[0, 1], [0, 1]])), {}),  # K = 2, second prompt misranked
        ((np.array([[1e4, -1e4, 0.0]]), np.array([[1, 2, 0]])), {}),  # huge margins: finite, never inf or NaN
    ],
    random_case=_random_rankings,
    rtol=1e-9,
    atol=1e-12,
    hint="each prompt must count once whatever its K, every pair of positions i < j of a ranking is one "
    "comparison (not only neighbours), rankings[b] lists indices into rewards[b] best first, and the loss "
    "has to stay finite for reward gaps of 1e4",
)


def _diagnose_ranking_loss(fn):
    rewards, rankings = np.array([[1.0, 0.0, -1.0, 0.5]]), np.array([[0, 3, 1, 2]])
    got = float(np.asarray(fn(rewards, rankings)))
    ordered = rewards[0, rankings[0]]
    i, j = np.triu_indices(4, 1)
    per_pair = np.logaddexp(0.0, -(ordered[i] - ordered[j]))
    adjacent = np.logaddexp(0.0, -(ordered[:-1] - ordered[1:]))
    reversed_pairs = np.logaddexp(0.0, -(ordered[j] - ordered[i]))
    if math.isclose(got, per_pair.sum(), rel_tol=1e-6):
        return "you summed the C(K, 2) pairs without weighting them: a prompt with more answers would count more"
    if math.isclose(got, adjacent.mean(), rel_tol=1e-6) or math.isclose(got, adjacent.sum(), rel_tol=1e-6):
        return "you used only neighbouring positions; a ranking of K answers implies a comparison for every pair"
    if math.isclose(got, reversed_pairs.mean(), rel_tol=1e-6):
        return "the ranking is best FIRST: rankings[b][0] is the winner of all its pairs"
    if not np.isfinite(got) or not np.isfinite(float(np.asarray(fn(np.array([[1e4, -1e4]]), np.array([[1, 0]]))))):
        return "log(sigmoid(d)) overflows to -inf for very negative margins: compute the loss in log space"
    return None


check_ranking_loss = _with_diagnosis("ranking_loss", _ranking_loss_base, _diagnose_ranking_loss)


# predict-then-run: a pair whose gold rewards differ by a finite gap g, labelled by a Bradley-Terry draw
# on g and then flipped with probability eps, so that it is labelled "a won" with probability
# q = (1 - eps) sigma(g) + eps sigma(-g); gradient descent from margin 0 on the expected loss
# -q log sigma(d) - (1 - q) log sigma(-d). Section 8 solves only g = infinity (q = 1 - eps).
NOISY_MARGIN_CASES = ((1.0, 0.2), (2.0, 0.1), (0.5, 0.3), (3.0, 0.25))
NOISY_MARGIN_SETUP = dict(start=0.0, lr=0.5, steps=4000)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def run_noisy_margin(gold_gap=1.0, noise=0.2, start=0.0, lr=0.5, steps=4000):
    """Gradient descent on the expected loss of one pair with gold gap ``gold_gap`` whose label is flipped
    with probability ``noise``; returns the margin it ends at."""
    q = (1.0 - noise) * _sigmoid(gold_gap) + noise * _sigmoid(-gold_gap)  # P(labelled "a won")
    d = float(start)
    for _ in range(int(steps)):
        d -= lr * (_sigmoid(d) - q)  # d/dd of -q log sigma(d) - (1 - q) log sigma(-d)
    return d


def check_noisy_margin_prediction(student_fn, seed=0, verbose=True):
    """Run the experiment of the exercise for several (gold gap, noise) and compare each final margin with
    ``student_fn(gold_gap, noise)``."""
    name = "noisy_margin_prediction"
    if not callable(student_fn):
        raise TypeError(f"check_{name} expects your function, got {type(student_fn).__name__}")
    s = NOISY_MARGIN_SETUP
    for gap, noise in NOISY_MARGIN_CASES:
        setup = (f"input: gold gap g = {gap}, label noise {noise}; {s['steps']} steps of gradient descent "
                 f"(lr {s['lr']}) from margin {s['start']} on the expected loss")
        try:
            predicted = student_fn(gap, noise)
        except NotImplementedError:
            return _not_done(name, verbose)
        except Exception as exc:  # noqa: BLE001
            message = f"FAIL {name}: your function raised {type(exc).__name__}: {exc}\n  {setup}"
            if verbose:
                print(message)
            return ExerciseResult(name, False, 0, message)
        try:
            predicted = float(predicted)
        except (TypeError, ValueError):
            message = (f"FAIL {name}: return one number (the final margin), got {type(predicted).__name__}"
                       f"\n  {setup}")
            if verbose:
                print(message)
            return ExerciseResult(name, False, 0, message)
        ran = run_noisy_margin(gap, noise, **s)
        if abs(predicted - ran) < 0.02:
            continue
        cap = math.log((1 - noise) / noise)
        if abs(predicted - cap) < 0.02:
            why = ("log((1 - eps)/eps) is the optimum of section 8, for a pair that a noise-free annotator always "
                   "decides the same way (g = infinity); here the annotator's own draw sigma(g) is noisy too")
        elif abs(predicted - gap) < 0.02:
            why = ("without the flips the optimum would be the gold gap g; the flipped labels move the labelled "
                   "win rate toward 1/2, and the margin with it")
        elif abs(predicted - (1 - 2 * noise) * gap) < 0.02:
            why = ("1 - 2 eps scales the push at d = 0 (section 8), not the end point: find the margin where the "
                   "expected gradient sigma(d) - P(labelled a) is exactly zero")
        elif predicted <= 0 < gap:
            why = "most labels still say 'a won': the loss is smallest at a positive margin"
        else:
            why = ("find the probability q that the pair is labelled 'a won', then the margin where the expected "
                   "gradient sigma(d) - q vanishes")
        message = (f"FAIL {name}: the prediction is off by more than 0.02\n  {setup}\n"
                   f"  expected (the run): {ran:.4f}\n  got (your prediction): {predicted:.4f}\n"
                   f"  likely misconception: {why}")
        if verbose:
            print(message)
        return ExerciseResult(name, False, 0, message)
    message = (f"PASS {name}: your predictions match the runs for {len(NOISY_MARGIN_CASES)} (gold gap, noise) "
               f"pairs, each within 0.02")
    if verbose:
        print(message)
    return ExerciseResult(name, True, 1, message)


def _last_token_reward(values, attention_mask):
    """The head's output at the last real token of each row (left or right padding)."""
    values = np.asarray(values, dtype=float)
    mask = np.asarray(attention_mask)
    t = mask.shape[1]
    last = t - 1 - np.argmax(mask[:, ::-1] > 0, axis=1)
    return values[np.arange(values.shape[0]), last]


def _random_padded_batch(rng):
    b, t = int(rng.integers(1, 6)), int(rng.integers(2, 9))
    mask = np.zeros((b, t), dtype=int)
    for row in range(b):
        n = int(rng.integers(1, t + 1))
        if rng.random() < 0.5:
            mask[row, :n] = 1  # right padding
        else:
            mask[row, t - n:] = 1  # left padding
    values = np.round(rng.normal(size=(b, t)), 3)
    return (values, mask), {}


_last_token_base = make_checker(
    "last_token_reward",
    reference=_last_token_reward,
    edge_cases=[
        ((np.array([[0.1, 0.2, 0.3, 9.0]]), np.array([[1, 1, 1, 0]])), {}),  # right padding: 0.3, not the pad's 9.0
        ((np.array([[9.0, 0.1, 0.2, 0.3]]), np.array([[0, 1, 1, 1]])), {}),  # left padding: 0.3
        ((np.array([[0.1, 0.2, 0.3]]), np.array([[1, 1, 1]])), {}),  # no padding at all
    ],
    random_case=_random_padded_batch,
    rtol=1e-12,
    atol=1e-12,
    hint="a padded position is not part of the answer; a row may be padded on the right, on the left, or not "
    "at all, and every row must give the value at ITS last real token",
)


def _diagnose_last_token(fn):
    values = np.array([[0.1, 0.2, 9.0, 8.0]])
    right_padded = np.array([[1, 1, 0, 0]])
    got = np.asarray(fn(values, right_padded))
    if np.allclose(got, 8.0):
        return "the last COLUMN is a pad token when the row is right-padded: the reward was read at padding"
    if np.allclose(got, 9.0):
        return ("off by one: n real tokens occupy positions 0 .. n - 1, so position n is the first PAD (and does "
                "not exist in a row without padding)")
    got_left = np.asarray(fn(np.array([[9.0, 0.1, 0.2, 0.3]]), np.array([[0, 1, 1, 1]])))
    if np.allclose(got_left, 0.2) or np.allclose(got_left, 0.1):
        return ("counting the real tokens gives the last position only for right padding; with left padding the "
                "real tokens end at the last column")
    return None


check_last_token_reward = _with_diagnosis("last_token_reward", _last_token_base, _diagnose_last_token)


def buggy_last_token_reward(values, attention_mask):
    """The exercise's given function (a classic bug): read the head at the number of real tokens."""
    values, mask = np.asarray(values, dtype=float), np.asarray(attention_mask)
    n_real = mask.sum(axis=1)
    return values[np.arange(values.shape[0]), n_real]


def _ranking_loss_unweighted(rewards, rankings):
    rewards, rankings = np.asarray(rewards, float), np.asarray(rankings)
    ordered = np.take_along_axis(rewards, rankings, axis=1)
    i, j = np.triu_indices(rewards.shape[1], 1)
    return float(np.logaddexp(0.0, -(ordered[:, i] - ordered[:, j])).sum(axis=1).mean())


def _last_column_reward(values, attention_mask):
    return np.asarray(values, dtype=float)[:, -1]


RIGHT_SOLUTIONS.update({
    "check_ranking_loss": _ranking_loss,
    "check_noisy_margin_prediction": lambda g, eps: math.log(
        ((1 - eps) * _sigmoid(g) + eps * _sigmoid(-g)) / ((1 - eps) * _sigmoid(-g) + eps * _sigmoid(g))),
    "check_last_token_reward": _last_token_reward,
})
WRONG_SOLUTIONS.update({
    "check_ranking_loss": _ranking_loss_unweighted,
    "check_noisy_margin_prediction": lambda g, eps: math.log((1 - eps) / eps),  # section 8's g = infinity
    "check_last_token_reward": _last_column_reward,
})
