"""The exercises of chapters 1 and 2 (second edition): each checker accepts its solution, rejects the classic
mistakes with a message that names the input, the expected and the received output and the likely
misconception, reports a stub as not done, and the given buggy functions really fail."""

import math

import numpy as np
import pytest

import rlhf_edu.exercises as ex
from rlhf_edu.exercises import bradley_terry as bt
from rlhf_edu.exercises import divergences as dv
from rlhf_edu.figures import divergences as figs
from rlhf_edu.numpy import kl_estimate

NEW_CHECKERS = {
    "check_ranking_loss": bt,
    "check_noisy_margin_prediction": bt,
    "check_last_token_reward": bt,
    "check_k2_mean_prediction": dv,
    "check_reverse_kl_estimate": dv,
    "check_k3_std_gaussian": dv,
    "check_sequence_kl": dv,
}


def _stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", sorted(NEW_CHECKERS))
def test_exported_and_paired(name):
    assert name in ex.__all__ and getattr(ex, name) is getattr(NEW_CHECKERS[name], name)
    right, wrong = ex.solutions_for_tests()[name]
    assert getattr(ex, name)(right, verbose=False)
    assert not getattr(ex, name)(wrong, verbose=False)


@pytest.mark.parametrize("name", sorted(NEW_CHECKERS))
def test_stub_is_not_done_and_prints_no_answer(name, capsys):
    result = getattr(ex, name)(_stub)
    out = capsys.readouterr().out
    assert not result and out.startswith("NOT DONE YET") and "PASS" not in out and "expected" not in out


def _message(check, fn):
    result = check(fn, verbose=False)
    assert not result
    return result.message


def test_ranking_loss_messages():
    def unweighted(rewards, rankings):
        return bt.WRONG_SOLUTIONS["check_ranking_loss"](rewards, rankings)

    msg = _message(bt.check_ranking_loss, unweighted)
    assert "expected" in msg and "got" in msg and "arg 0" in msg and "without weighting" in msg

    def adjacent_only(rewards, rankings):
        ordered = np.take_along_axis(np.asarray(rewards, float), np.asarray(rankings), axis=1)
        return float(np.logaddexp(0.0, -(ordered[:, :-1] - ordered[:, 1:])).mean(axis=1).mean())

    assert "neighbouring" in _message(bt.check_ranking_loss, adjacent_only)

    def literal(rewards, rankings):
        ordered = np.take_along_axis(np.asarray(rewards, float), np.asarray(rankings), axis=1)
        i, j = np.triu_indices(ordered.shape[1], 1)
        with np.errstate(over="ignore", divide="ignore"):
            return float((-np.log(1 / (1 + np.exp(-(ordered[:, i] - ordered[:, j]))))).mean(axis=1).mean())

    assert not bt.check_ranking_loss(literal, verbose=False)  # inf at a gap of 1e4


def test_ranking_loss_matches_chapter_example():
    # the earthquake ranking y1 > y3 > y2 of section 5.1
    assert abs(bt._ranking_loss([[1.5, 0.0, 0.7]], [[0, 2, 1]]) - (0.371101 + 0.201413 + 0.403186) / 3) < 1e-5
    # K = 2 reduces to the pairwise loss
    assert abs(bt._ranking_loss([[1.0, 0.0]], [[0, 1]]) - math.log1p(math.exp(-1.0))) < 1e-12


def test_noisy_margin_prediction():
    # the optimum is the logit of q = (1 - eps) sigma(g) + eps sigma(-g), e.g. 0.5694 for g = 1, eps = 0.2
    q = 0.8 / (1 + math.exp(-1.0)) + 0.2 / (1 + math.exp(1.0))
    assert abs(bt.run_noisy_margin(1.0, 0.2) - math.log(q / (1 - q))) < 1e-6
    for g, eps in bt.NOISY_MARGIN_CASES:
        right = bt.RIGHT_SOLUTIONS["check_noisy_margin_prediction"](g, eps)
        assert abs(bt.run_noisy_margin(g, eps) - right) < 1e-6
    assert "section 8" in _message(bt.check_noisy_margin_prediction, lambda g, eps: math.log((1 - eps) / eps))
    assert "gold gap g" in _message(bt.check_noisy_margin_prediction, lambda g, eps: g)
    assert "push at d = 0" in _message(bt.check_noisy_margin_prediction, lambda g, eps: (1 - 2 * eps) * g)
    assert "positive" in _message(bt.check_noisy_margin_prediction, lambda g, eps: -0.5)
    assert "expected (the run): 0.5694" in _message(bt.check_noisy_margin_prediction, lambda g, eps: 0.3)
    assert not bt.check_noisy_margin_prediction(lambda g, eps: "a lot", verbose=False)


def test_last_token_reward_bug_and_messages():
    # the chapter's given function fails (off by one), with the misconception named
    msg = _message(bt.check_last_token_reward, bt.buggy_last_token_reward)
    assert "off by one" in msg
    assert "last COLUMN" in _message(bt.check_last_token_reward, lambda v, m: np.asarray(v, float)[:, -1])

    def right_padding_only(values, mask):
        values, mask = np.asarray(values, float), np.asarray(mask)
        return values[np.arange(len(values)), mask.sum(axis=1) - 1]

    assert "left padding" in _message(bt.check_last_token_reward, right_padding_only)


def test_k2_mean_prediction():
    mean, se = dv.run_k2_mean()
    assert abs(mean - 4.0) < 4 * se  # E[k2] = KL + mu^4 / 8 = 2 + 2
    assert "the KL itself" in _message(dv.check_k2_mean_prediction, lambda: 2.0)
    assert "not negative" in _message(dv.check_k2_mean_prediction, lambda: 1.0)
    assert "wrong size" in _message(dv.check_k2_mean_prediction, lambda: 3.0)


def test_reverse_kl_estimate_is_unbiased_and_nonnegative():
    s = figs.estimator_samples(mu_p=0.7, sigma_p=1.0, mu_q=0.0, sigma_q=1.1, n=400_000, seed=3)
    est = dv._reverse_kl_estimate(s["logp"], s["logp_ref"])
    truth = float(figs.gaussian_kl(0.0, 1.1, 0.7, 1.0))
    assert est.min() >= 0
    assert abs(est.mean() - truth) < 4 * est.std() / math.sqrt(est.size)
    msg = _message(dv.check_reverse_kl_estimate, lambda lp, lr: np.exp(lr - lp) * (lr - lp))
    assert "negative" in msg and "expected" in msg
    assert "arguments swapped" in _message(dv.check_reverse_kl_estimate,
                                           lambda lp, lr: kl_estimate(np.asarray(lr), np.asarray(lp), "k3"))
    assert "already estimates" in _message(dv.check_reverse_kl_estimate,
                                           lambda lp, lr: kl_estimate(np.asarray(lp), np.asarray(lr), "k3"))


def test_k3_std_gaussian_matches_monte_carlo_and_names_mistakes():
    for mu in (0.1, 1.0):  # the chapter's table: 1.417 and 1.698 times the KL
        s = figs.estimator_samples(mu_p=mu, n=1_000_000, seed=1)
        assert abs(dv._k3_std_gaussian(mu) - s["k3"].std()) / s["k3"].std() < 0.03
    assert "spread of k1" in _message(dv.check_k3_std_gaussian, abs)
    assert "Var(r) only" in _message(dv.check_k3_std_gaussian, lambda mu: math.sqrt(math.expm1(mu**2)))
    assert "independent" in _message(dv.check_k3_std_gaussian, lambda mu: math.sqrt(math.expm1(mu**2) + mu**2))
    # the crossing with k1 (std mu) lies between KL 0.5 and 0.8, as section 7 brackets it
    crossing = next(m / 1000 for m in range(1000, 1300) if dv._k3_std_gaussian(m / 1000) > m / 1000)
    assert 0.5 < crossing**2 / 2 < 0.8


def test_sequence_kl_bug_and_messages():
    msg = _message(dv.check_sequence_kl, dv.buggy_sequence_kl)
    assert "flipped" in msg and "padded width" in msg
    assert "per-token average" in _message(
        dv.check_sequence_kl,
        lambda a, b, m: np.sum((np.asarray(a) - b) * m, axis=-1) / np.sum(m, axis=-1),
    )
    assert "multiply by the mask" in _message(dv.check_sequence_kl, lambda a, b, m: np.sum(np.asarray(a) - b, axis=-1))


def test_playground_shows_infinite_k3_variance():
    assert not figs.k3_variance_is_finite(1.0, 1.5) and figs.k3_variance_is_finite(1.0, 1.4)
    bm = figs.batch_means(1.0, 1.0, 0.0, 1.5, batch=64, n_batches=1000, seed=1)
    assert np.mean(bm["k3"] < bm["true_kl"]) > 0.7  # most batch means below the truth ...
    assert bm["k3"].max() > 5 * bm["true_kl"]  # ... paid for by rare huge ones
    finite = figs.batch_means(1.0, 1.0, 0.0, 1.0, batch=64, n_batches=1000, seed=1)
    assert abs(np.mean(finite["k3"] < finite["true_kl"]) - 0.5) < 0.15
