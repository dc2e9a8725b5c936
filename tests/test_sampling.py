"""Tests of rlhf_edu.{numpy,torch}.sampling: the exact best-of-n distribution and its KL bound (chapter 8)."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu.numpy import divergences as nd
from rlhf_edu.numpy import sampling as ns
from rlhf_edu.torch import sampling as ts


def _brute_force(ref, rewards, n):
    """Enumerate every n-tuple of draws; keep the first draw with the highest reward."""
    out = np.zeros(len(ref))
    for draws in itertools.product(range(len(ref)), repeat=n):
        prob = np.prod(ref[list(draws)])
        best = draws[int(np.argmax(rewards[list(draws)]))]  # argmax returns the first maximum
        out[best] += prob
    return out


def test_worked_example_three_answers_n_2():
    # F = 1/3, 2/3, 1: P = (1/3)^2, (2/3)^2 - (1/3)^2, 1 - (2/3)^2
    np.testing.assert_allclose(ns.best_of_n_probs(np.full(3, 1 / 3), [0.0, 1.0, 2.0], 2), [1 / 9, 3 / 9, 5 / 9])


@pytest.mark.parametrize(
    "ref,rewards,n",
    [
        ([0.1, 0.2, 0.3, 0.4], [3.0, 1.0, 2.0, 0.0], 3),
        ([0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 2.0, 0.0], 4),  # a tie in the middle
        ([0.25, 0.25, 0.4, 0.1], [2.0, 0.0, 2.0, 2.0], 3),  # a three-way tie at the top
        ([0.0, 0.5, 0.5, 0.0], [5.0, 1.0, 0.0, 1.0], 4),  # zero probabilities, tied with a positive one
        ([0.3, 0.3, 0.4], [1.0, 1.0, 1.0], 5),  # everything tied: best-of-n is the reference
    ],
)
def test_equals_brute_force_enumeration_of_all_n_tuples(ref, rewards, n):
    ref, rewards = np.array(ref), np.array(rewards)
    expected = _brute_force(ref, rewards, n)
    np.testing.assert_allclose(ns.best_of_n_probs(ref, rewards, n), expected, atol=1e-14)
    got = ts.best_of_n_probs(torch.tensor(ref), torch.tensor(rewards), n)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-14)


def test_monte_carlo_best_of_n_matches():
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(6))
    rewards = np.array([0.3, -1.0, 2.0, 0.3, 1.5, -0.2])  # one tie
    n, trials = 5, 100_000
    draws = rng.choice(6, size=(trials, n), p=ref)
    best = draws[np.arange(trials), np.argmax(rewards[draws], axis=1)]
    freq = np.bincount(best, minlength=6) / trials
    exact = ns.best_of_n_probs(ref, rewards, n)
    se = np.sqrt(exact * (1 - exact) / trials)
    assert np.all(np.abs(freq - exact) < 5 * se + 1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12), st.integers(1, 64), st.booleans(), st.integers(0, 2**31 - 1))
def test_is_a_distribution_and_kl_stays_below_the_bound(k, n, ties, seed):
    rng = np.random.default_rng(seed)
    ref = rng.dirichlet(np.ones(k) * rng.uniform(0.2, 3))
    rewards = rng.normal(size=k)
    if ties:
        rewards = np.round(rewards)
    p = ns.best_of_n_probs(ref, rewards, n)
    assert np.all(p >= 0) and p.sum() == pytest.approx(1.0, abs=1e-12)
    kl = nd.kl_divergence(p, ref)
    assert kl <= ns.best_of_n_kl_bound(n) + 1e-12  # Beirami et al. (2024)
    # best-of-n moves mass up: its expected reward is at least the reference's, more with larger n
    assert p @ rewards >= ref @ rewards - 1e-12
    assert ns.best_of_n_probs(ref, rewards, n + 1) @ rewards >= p @ rewards - 1e-12
    np.testing.assert_allclose(ts.best_of_n_probs(torch.tensor(ref), torch.tensor(rewards), n).numpy(), p, atol=1e-13)


def test_n_1_is_the_reference_and_the_bound_is_0():
    ref = np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(ns.best_of_n_probs(ref, [2.0, 0.0, 1.0], 1), ref, rtol=1e-15)
    assert ns.best_of_n_kl_bound(1) == 0.0 == ts.best_of_n_kl_bound(1)


def test_bound_formula_values():
    for n in (2, 4, 16, 1000):
        assert ns.best_of_n_kl_bound(n) == pytest.approx(math.log(n) - (n - 1) / n, rel=1e-15)
        assert ts.best_of_n_kl_bound(n) == ns.best_of_n_kl_bound(n)
    assert ns.best_of_n_kl_bound(2) == pytest.approx(0.1931472, abs=1e-7)
    bounds = [ns.best_of_n_kl_bound(n) for n in range(1, 50)]
    assert all(a < b for a, b in zip(bounds, bounds[1:]))


@pytest.mark.parametrize("n", [2, 4, 16])
def test_bound_is_approached_by_uniform_distributions_with_distinct_rewards(n):
    gaps = []
    for k in (10, 100, 1000, 10000):
        p = ns.best_of_n_probs(np.full(k, 1 / k), np.arange(k, dtype=float), n)
        gaps.append(ns.best_of_n_kl_bound(n) - nd.kl_divergence(p, np.full(k, 1 / k)))
    assert all(g >= -1e-12 for g in gaps)
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # the gap shrinks as every answer gets rarer
    assert gaps[-1] < 1e-5
    # but a few likely answers are far from the bound: with 2 answers KL <= log 2 whatever n is
    p = ns.best_of_n_probs(np.array([0.5, 0.5]), np.array([0.0, 1.0]), 64)
    assert nd.kl_divergence(p, np.array([0.5, 0.5])) <= math.log(2) < ns.best_of_n_kl_bound(64) - 2.4


def test_ties_are_equivalent_to_one_merged_answer():
    ref = np.array([0.1, 0.2, 0.3, 0.4])
    rewards = np.array([1.0, 2.0, 1.0, 0.0])  # answers 0 and 2 are tied
    p = ns.best_of_n_probs(ref, rewards, 3)
    merged = ns.best_of_n_probs(np.array([0.4, 0.2, 0.4]), np.array([1.0, 2.0, 0.0]), 3)
    assert p[0] + p[2] == pytest.approx(merged[0])
    assert p[0] / p[2] == pytest.approx(0.1 / 0.3)  # split in proportion to ref_probs
    np.testing.assert_allclose(p[[1, 3]], merged[[1, 2]])


def test_batches_broadcast_row_by_row():
    rng = np.random.default_rng(1)
    ref = rng.dirichlet(np.ones(5), size=(2, 3))
    rewards = rng.normal(size=(2, 3, 5))
    out = ns.best_of_n_probs(ref, rewards, 4)
    assert out.shape == (2, 3, 5)
    for i, j in itertools.product(range(2), range(3)):
        np.testing.assert_allclose(out[i, j], ns.best_of_n_probs(ref[i, j], rewards[i, j], 4), rtol=1e-15)
    shared = ns.best_of_n_probs(ref[0, 0], rewards, 4)  # one reference, many reward models
    np.testing.assert_allclose(shared[1, 2], ns.best_of_n_probs(ref[0, 0], rewards[1, 2], 4), rtol=1e-15)


def test_long_tail_of_rare_answers_is_accurate_in_float32():
    # 20000 equally likely answers: the exact probability of the answer of rank i is
    # (i/K)^n - ((i-1)/K)^n, each tiny; the float32 twin must not lose them to cancellation
    k, n = 20_000, 8
    i = np.arange(1, k + 1, dtype=np.float64)
    exact = (i / k) ** n - ((i - 1) / k) ** n
    ref32 = torch.full((k,), 1.0 / k, dtype=torch.float32)
    got = ts.best_of_n_probs(ref32, torch.arange(k, dtype=torch.float32), n).double().numpy()
    big = exact > 1e-12
    assert np.max(np.abs(got[big] - exact[big]) / exact[big]) < 1e-2
    np.testing.assert_allclose(ns.best_of_n_probs(np.full(k, 1.0 / k), np.arange(k, dtype=float), n), exact,
                               rtol=1e-8, atol=1e-300)


def test_torch_gradient_in_ref_probs_matches_finite_differences_along_the_simplex():
    rng = np.random.default_rng(2)
    ref = rng.dirichlet(np.ones(5))
    rewards = np.array([0.0, 1.0, 1.0, 3.0, -2.0])
    weights = rng.normal(size=5)
    n = 3
    t_ref = torch.tensor(ref, requires_grad=True)
    (ts.best_of_n_probs(t_ref, torch.tensor(rewards), n) * torch.tensor(weights)).sum().backward()
    eps = 1e-6
    for _ in range(4):
        v = rng.normal(size=5)
        v -= v.mean()  # a direction that keeps the sum at one
        f = lambda x: ns.best_of_n_probs(x, rewards, n) @ weights  # noqa: E731
        fd = (f(ref + eps * v) - f(ref - eps * v)) / (2 * eps)
        assert float(t_ref.grad @ torch.tensor(v)) == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("tree", ["numpy", "torch"])
def test_bad_inputs_name_the_argument(tree):
    m = ns if tree == "numpy" else ts
    if tree == "numpy":
        arr = lambda x: np.asarray(x, dtype=float)  # noqa: E731
    else:
        arr = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    ref, r = arr([0.5, 0.5]), arr([1.0, 0.0])
    with pytest.raises(ValueError, match="n must be >= 1"):
        m.best_of_n_probs(ref, r, 0)
    with pytest.raises(TypeError, match="n must be an integer"):
        m.best_of_n_probs(ref, r, 2.5)
    with pytest.raises(ValueError, match="n must be >= 1"):
        m.best_of_n_kl_bound(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        m.best_of_n_kl_bound(True)
    with pytest.raises(ValueError, match="ref_probs"):
        m.best_of_n_probs(arr([0.5, 0.6]), r, 2)
    with pytest.raises(ValueError, match="ref_probs"):
        m.best_of_n_probs(arr([1.5, -0.5]), r, 2)
    with pytest.raises(ValueError, match="rewards"):
        m.best_of_n_probs(ref, arr([np.nan, 1.0]), 2)
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        m.best_of_n_probs(ref, arr([1.0, 0.0, 2.0]), 2)
