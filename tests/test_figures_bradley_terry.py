"""The experiments behind chapter 1's figures (rlhf_edu/figures/bradley_terry.py): real checks, not smoke."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu import numpy as rn
from rlhf_edu.figures import bradley_terry as bt


def test_ratings_are_miscalibrated_but_agree_on_the_order():
    ratings, offsets, scales = bt.simulate_ratings(n_annotators=6, noise=0.3, seed=0)
    assert ratings.shape == (6, 3) and np.all(scales > 0)
    # raw ratings of one answer spread over several points across annotators ...
    assert np.ptp(ratings[:, 0]) > 2.0
    # ... while every annotator orders y1 > y3 > y2 (rewards 1.2 > 0.4 > -0.3)
    assert np.all(ratings[:, 0] > ratings[:, 2]) and np.all(ratings[:, 2] > ratings[:, 1])


@pytest.mark.parametrize("d", [-2.0, 0.0, 0.8, 3.0])
def test_gumbel_utilities_give_the_bradley_terry_sigmoid(d):
    n = 200_000
    p = float(rn.bradley_terry_prob(d, 0.0))
    wins = float(bt.gumbel_choices(d, 0.0, n=n, seed=1))
    assert abs(wins - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_gumbel_choices_broadcast_and_are_deterministic():
    a = bt.gumbel_choices(np.array([0.0, 1.0, 2.0]), 0.0, n=1000, seed=3)
    assert a.shape == (3,)
    np.testing.assert_array_equal(a, bt.gumbel_choices(np.array([0.0, 1.0, 2.0]), 0.0, n=1000, seed=3))


def test_simulated_comparisons_are_fitted_back_up_to_a_shift():
    true = np.array([-1.0, 0.0, 0.5, 2.0]) + 7.0  # the +7 is invisible to comparisons
    winners, losers = bt.simulate_comparisons(true, n_comparisons=6000, seed=0)
    assert np.all(winners != losers) and winners.min() >= 0 and winners.max() < 4
    fitted = rn.fit_bradley_terry(winners, losers, n_items=4)
    np.testing.assert_allclose(fitted, true - true.mean(), atol=0.12)


def test_simulated_win_rates_follow_the_scores():
    winners, losers = bt.simulate_comparisons([0.0, 1.0], n_comparisons=20_000, seed=2)
    p = float(rn.bradley_terry_prob(1.0, 0.0))
    assert abs(np.mean(winners == 1) - p) < 4 * math.sqrt(p * (1 - p) / 20_000)


@settings(max_examples=50, deadline=None)
@given(noise=st.floats(0.01, 0.49))
def test_noisy_label_loss_is_smallest_at_log_odds_of_the_clean_label(noise):
    best = math.log((1 - noise) / noise)
    d = np.linspace(best - 3, best + 3, 6001)
    loss = bt.noisy_label_loss(d, noise)
    assert abs(d[np.argmin(loss)] - best) < 2e-3
    assert np.all(np.isfinite(bt.noisy_label_loss(np.array([-1e4, 1e4]), noise)))


def test_noisy_label_loss_without_noise_is_the_bradley_terry_loss():
    d = np.array([-3.0, 0.0, 2.5])
    np.testing.assert_allclose(bt.noisy_label_loss(d, 0.0), rn.bradley_terry_loss(d, 0.0))
    with pytest.raises(ValueError, match="noise"):
        bt.noisy_label_loss(d, 1.5)
