"""Tests of rlhf_edu.{numpy,torch}.preferences: Bradley-Terry (chapter 1)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu.numpy import preferences as npref
from rlhf_edu.torch import preferences as tpref

reward = st.floats(-30.0, 30.0, allow_nan=False)
any_reward = st.floats(-1e6, 1e6, allow_nan=False)


# ---------------------------------------------------------------- bradley_terry_prob


def test_prob_worked_example_sigmoid_of_difference():
    # the lecture notes: exp(x) / (exp(x) + exp(y)) = 1 / (1 + exp(y - x)) = sigmoid(x - y)
    assert npref.bradley_terry_prob(1.0, 0.0) == pytest.approx(math.e / (math.e + 1.0), rel=1e-15)
    assert npref.bradley_terry_prob(2.0, 0.0) == pytest.approx(0.8807970779778823, rel=1e-15)
    assert npref.bradley_terry_prob(3.0, 3.0) == 0.5


@settings(max_examples=50, deadline=None)
@given(reward, reward)
def test_prob_equals_exp_ratio_form(r_a, r_b):
    expected = math.exp(r_a) / (math.exp(r_a) + math.exp(r_b))
    assert npref.bradley_terry_prob(r_a, r_b) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    got = tpref.bradley_terry_prob(torch.tensor(r_a, dtype=torch.float64), torch.tensor(r_b, dtype=torch.float64))
    assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-300)


@settings(max_examples=50, deadline=None)
@given(any_reward, any_reward)
def test_prob_of_a_over_b_plus_b_over_a_is_one(r_a, r_b):
    total = npref.bradley_terry_prob(r_a, r_b) + npref.bradley_terry_prob(r_b, r_a)
    assert total == pytest.approx(1.0, abs=1e-15)
    # only the difference matters: shifting both rewards changes nothing
    assert npref.bradley_terry_prob(r_a + 5.0, r_b + 5.0) == pytest.approx(
        float(npref.bradley_terry_prob(r_a, r_b)), abs=1e-9
    )


def test_prob_broadcasts_to_the_matrix_of_all_pairs():
    r = np.array([0.0, 1.0, 3.0])
    m = npref.bradley_terry_prob(r[:, None], r[None, :])
    assert m.shape == (3, 3)
    np.testing.assert_allclose(np.diag(m), 0.5)
    np.testing.assert_allclose(m + m.T, 1.0)
    assert m[2, 0] == pytest.approx(1 / (1 + math.exp(-3.0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prob_and_its_gradient_are_exact_at_differences_of_1e4(dtype):
    r_a = np.array([1e4, -1e4, 0.5e4], dtype=dtype)
    r_b = np.array([-1e4, 1e4, -0.5e4], dtype=dtype)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow, no NaN
        p = npref.bradley_terry_prob(r_a, r_b)
        g = npref.bradley_terry_prob_grad(r_a, r_b)
    np.testing.assert_array_equal(p, [1.0, 0.0, 1.0])
    assert all(np.all(np.isfinite(v)) for v in g.values())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    ta = torch.tensor(r_a, dtype=tdtype, requires_grad=True)
    tp = tpref.bradley_terry_prob(ta, torch.tensor(r_b, dtype=tdtype))
    tp.sum().backward()
    assert tp.dtype == tdtype and torch.equal(tp, torch.tensor([1.0, 0.0, 1.0], dtype=tdtype))
    assert torch.isfinite(ta.grad).all()


def test_prob_grad_matches_finite_differences():
    r_a, r_b = np.array([0.3, -2.0, 4.0]), np.array([1.0, 0.5, -1.0])
    g = npref.bradley_terry_prob_grad(r_a, r_b)
    eps = 1e-6
    fd = (npref.bradley_terry_prob(r_a + eps, r_b) - npref.bradley_terry_prob(r_a - eps, r_b)) / (2 * eps)
    np.testing.assert_allclose(g["r_a"], fd, rtol=1e-7)
    np.testing.assert_allclose(g["r_b"], -fd, rtol=1e-7)
    assert np.all(g["r_a"] <= 0.25)  # sigma' peaks at 1/4


# ---------------------------------------------------------------- bradley_terry_loss


def test_loss_is_minus_log_prob_and_log2_at_a_tie():
    r_c, r_r = np.array([1.0, 0.0, -2.0]), np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(
        npref.bradley_terry_loss(r_c, r_r), -np.log(npref.bradley_terry_prob(r_c, r_r)), rtol=1e-14
    )
    assert npref.bradley_terry_loss(0.0, 0.0) == pytest.approx(math.log(2.0))
    assert npref.bradley_terry_loss(1.0, 0.0) == pytest.approx(math.log1p(math.exp(-1.0)))


def test_margin_shifts_the_difference_as_in_llama2():
    r_c, r_r = np.array([2.0, 0.5]), np.array([1.0, 0.0])
    margin = np.array([1.0, 0.25])  # "significantly better" pairs get the larger margin
    np.testing.assert_allclose(
        npref.bradley_terry_loss(r_c, r_r, margin=margin), npref.bradley_terry_loss(r_c - margin, r_r), rtol=1e-14
    )
    # with margin 1 a pair that wins by exactly 1 costs log 2: it is "at the boundary"
    assert npref.bradley_terry_loss(2.0, 1.0, margin=1.0) == pytest.approx(math.log(2.0))
    assert np.all(npref.bradley_terry_loss(r_c, r_r, margin=margin) > npref.bradley_terry_loss(r_c, r_r))


@settings(max_examples=50, deadline=None)
@given(any_reward, any_reward, st.floats(0.0, 5.0))
def test_loss_is_positive_finite_and_its_gradient_bounded(r_c, r_r, m):
    loss = npref.bradley_terry_loss(r_c, r_r, margin=m)
    g = npref.bradley_terry_loss_grad(r_c, r_r, margin=m)
    assert np.isfinite(loss) and loss >= 0
    assert -1.0 <= g["r_chosen"] <= 0.0 and g["r_chosen"] + g["r_rejected"] == 0.0
    # for a large misranking the loss grows linearly: -log sigma(d) ~ -d
    d = r_c - r_r - m
    if d < -40:
        assert loss == pytest.approx(-d, rel=1e-12)


def test_loss_grad_is_minus_and_plus_sigmoid_of_minus_d_and_matches_finite_differences():
    r_c, r_r, m = np.array([0.2, -1.0, 3.0]), np.array([0.0, 2.0, 1.0]), 0.5
    g = npref.bradley_terry_loss_grad(r_c, r_r, margin=m)
    d = r_c - r_r - m
    np.testing.assert_allclose(g["r_chosen"], -1 / (1 + np.exp(d)), rtol=1e-14)
    np.testing.assert_allclose(g["r_rejected"], 1 / (1 + np.exp(d)), rtol=1e-14)
    eps = 1e-6
    fd = (npref.bradley_terry_loss(r_c + eps, r_r, m) - npref.bradley_terry_loss(r_c - eps, r_r, m)) / (2 * eps)
    np.testing.assert_allclose(g["r_chosen"], fd, rtol=1e-7)


def test_loss_grad_sums_over_broadcast_axes():
    # one rejected reward shared by three chosen ones: its gradient is the sum of the three
    r_c, r_r = np.array([0.0, 1.0, 2.0]), np.array(0.5)
    g = npref.bradley_terry_loss_grad(r_c, r_r)
    assert g["r_rejected"].shape == ()
    assert g["r_rejected"] == pytest.approx(-g["r_chosen"].sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_and_gradient_finite_at_differences_of_1e4_numpy_and_torch(dtype):
    big = np.array([1e4, -1e4, 3e3, -3e3])
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss = npref.bradley_terry_loss(big.astype(np_dtype), (-big).astype(np_dtype))
        g = npref.bradley_terry_loss_grad(big.astype(np_dtype), (-big).astype(np_dtype))
    np.testing.assert_allclose(loss, [0.0, 2e4, 0.0, 6e3], rtol=1e-6)
    assert all(np.all(np.isfinite(v)) for v in g.values())
    r_c = torch.tensor(big, dtype=dtype, requires_grad=True)
    r_r = torch.tensor(-big, dtype=dtype, requires_grad=True)
    t_loss = tpref.bradley_terry_loss(r_c, r_r, margin=0.5)
    t_loss.sum().backward()
    assert t_loss.dtype == dtype and torch.isfinite(t_loss).all()
    assert torch.isfinite(r_c.grad).all() and torch.isfinite(r_r.grad).all()
    torch.testing.assert_close(r_c.grad, torch.tensor([-0.0, -1.0, -0.0, -1.0], dtype=dtype))


def test_torch_margin_follows_dtype_and_device_of_rewards():
    r = torch.zeros(3, dtype=torch.float32)
    out = tpref.bradley_terry_loss(r, r, margin=np.array([0.0, 1.0, 2.0]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.nn.functional.softplus(torch.tensor([0.0, 1.0, 2.0])))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="r_a"):
        npref.bradley_terry_prob(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="r_chosen"):
        npref.bradley_terry_loss(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="margin"):
        tpref.bradley_terry_loss(torch.zeros(3), torch.zeros(3), margin=torch.zeros(2))
    with pytest.raises(TypeError, match="r_chosen"):
        npref.bradley_terry_loss(["a", "b"], [0.0, 1.0])
    with pytest.raises(TypeError, match="margin"):
        tpref.bradley_terry_loss(torch.zeros(2), torch.zeros(2), margin="big")


# ---------------------------------------------------------------- fit_bradley_terry


def test_fit_two_items_closed_form_log_odds():
    # item 0 beat item 1 in 7 of 10 comparisons: the MLE gap is log(7/3)
    winners = np.array([0] * 7 + [1] * 3)
    losers = 1 - winners
    s = npref.fit_bradley_terry(winners, losers, n_items=2)
    assert s[0] - s[1] == pytest.approx(math.log(7 / 3), abs=1e-7)
    assert s.sum() == pytest.approx(0.0, abs=1e-12)


def _simulate(scores, n, rng):
    k = len(scores)
    pairs = np.array([rng.choice(k, 2, replace=False) for _ in range(n)])
    i, j = pairs[:, 0], pairs[:, 1]
    i_wins = rng.random(n) < npref.bradley_terry_prob(scores[i], scores[j])
    return np.where(i_wins, i, j), np.where(i_wins, j, i)


def test_fit_solves_the_score_equations_observed_wins_equal_expected_wins():
    rng = np.random.default_rng(0)
    winners, losers = _simulate(rng.normal(size=6), 400, rng)
    s = npref.fit_bradley_terry(winners, losers, n_items=6)
    expected_wins = np.zeros(6)
    p = npref.bradley_terry_prob(s[winners], s[losers])
    # each comparison {w, l}: expected wins sigma(s_w - s_l) for w and 1 - that for l
    np.add.at(expected_wins, winners, p)
    np.add.at(expected_wins, losers, 1 - p)
    observed = np.bincount(winners, minlength=6)
    np.testing.assert_allclose(expected_wins, observed, atol=1e-6)


def test_fit_with_l2_balances_the_prior_and_shrinks():
    rng = np.random.default_rng(1)
    winners, losers = _simulate(rng.normal(size=5) * 2, 300, rng)
    s0 = npref.fit_bradley_terry(winners, losers, n_items=5)
    s1 = npref.fit_bradley_terry(winners, losers, n_items=5, l2=5.0)
    assert np.linalg.norm(s1) < np.linalg.norm(s0)
    # stationarity: sum of loss gradients + l2 * s = 0 (the returned s is the minimiser, already centred)
    g = npref.bradley_terry_loss_grad(s1[winners], s1[losers])
    grad = np.bincount(winners, g["r_chosen"], 5) + np.bincount(losers, g["r_rejected"], 5) + 5.0 * s1
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_fit_recovers_true_scores_from_many_comparisons():
    rng = np.random.default_rng(2)
    true = rng.normal(size=8)
    winners, losers = _simulate(true, 20_000, rng)
    s = npref.fit_bradley_terry(winners, losers, n_items=8)
    np.testing.assert_allclose(s, true - true.mean(), atol=0.15)


def test_fit_is_equivariant_to_relabelling_the_items():
    rng = np.random.default_rng(3)
    winners, losers = _simulate(rng.normal(size=5), 200, rng)
    perm = rng.permutation(5)
    s = npref.fit_bradley_terry(winners, losers, 5)
    s_perm = npref.fit_bradley_terry(perm[winners], perm[losers], 5)
    np.testing.assert_allclose(s_perm[perm], s, atol=1e-6)


def test_fit_weights_equal_repeated_comparisons():
    winners, losers = np.array([0, 1, 1, 2, 2, 0]), np.array([1, 0, 2, 1, 0, 2])
    weights = np.array([3.0, 1.0, 2.0, 1.0, 1.0, 2.0])
    s_w = npref.fit_bradley_terry(winners, losers, 3, weights=weights)
    reps = weights.astype(int)
    s_rep = npref.fit_bradley_terry(np.repeat(winners, reps), np.repeat(losers, reps), 3)
    np.testing.assert_allclose(s_w, s_rep, atol=1e-6)


def test_fit_refuses_a_graph_that_is_not_strongly_connected_unless_regularised():
    winners, losers = np.array([0, 0, 1]), np.array([1, 2, 2])  # 0 never loses, 2 never wins
    with pytest.raises(ValueError, match="strongly connected"):
        npref.fit_bradley_terry(winners, losers, 3)
    with pytest.raises(ValueError, match="strongly connected"):  # item 3 is never compared
        npref.fit_bradley_terry(np.array([0, 1]), np.array([1, 0]), 4)
    s = npref.fit_bradley_terry(winners, losers, 3, l2=1.0)
    assert np.all(np.isfinite(s)) and s[0] > s[1] > s[2]


def test_fit_bad_inputs_name_the_argument():
    w, l = np.array([0, 1]), np.array([1, 0])
    with pytest.raises(ValueError, match="winners"):
        npref.fit_bradley_terry(np.array([0, 5]), l, 3)
    with pytest.raises(ValueError, match="losers"):
        npref.fit_bradley_terry(w, np.array([-1, 0]), 3)
    with pytest.raises(TypeError, match="winners"):
        npref.fit_bradley_terry(np.array([0.0, 1.0]), l, 2)
    with pytest.raises(ValueError, match="shapes"):
        npref.fit_bradley_terry(w, np.array([1, 0, 1]), 2)
    with pytest.raises(ValueError, match="itself"):
        npref.fit_bradley_terry(np.array([0, 1]), np.array([0, 0]), 2)
    with pytest.raises(ValueError, match="l2"):
        npref.fit_bradley_terry(w, l, 2, l2=-1.0)
    with pytest.raises(ValueError, match="n_items"):
        npref.fit_bradley_terry(w, l, 1)
    with pytest.raises(ValueError, match="winners"):
        npref.fit_bradley_terry(np.array([], dtype=int), np.array([], dtype=int), 2)
    with pytest.raises(ValueError, match="weights"):
        npref.fit_bradley_terry(w, l, 2, weights=np.array([1.0, -1.0]))


# ---------------------------------------------------------------- ranking_to_pairs


def test_ranking_to_pairs_worked_example():
    winners, losers, weights = npref.ranking_to_pairs([2, 0, 1])  # 2 best, then 0, then 1
    pairs = set(zip(winners.tolist(), losers.tolist()))
    assert pairs == {(2, 0), (2, 1), (0, 1)}
    np.testing.assert_allclose(weights, 1 / 3)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_ranking_to_pairs_has_all_c_k_2_pairs_in_rank_order(k, seed):
    ranking = np.random.default_rng(seed).permutation(20)[:k]
    winners, losers, weights = npref.ranking_to_pairs(ranking)
    assert len(winners) == math.comb(k, 2) == len(set(zip(winners.tolist(), losers.tolist())))
    position = {item: i for i, item in enumerate(ranking.tolist())}
    assert all(position[w] < position[l] for w, l in zip(winners.tolist(), losers.tolist()))
    assert weights.sum() == pytest.approx(1.0)
    tw, tl, twt = tpref.ranking_to_pairs(torch.as_tensor(ranking))
    assert tw.tolist() == winners.tolist() and tl.tolist() == losers.tolist()
    assert twt.dtype == torch.get_default_dtype()


def test_ranking_to_pairs_batch_and_instructgpt_loss():
    rankings = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    winners, losers, weights = npref.ranking_to_pairs(rankings)
    assert winners.shape == losers.shape == weights.shape == (2, 6)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0)
    # InstructGPT eq. 1: -(1 / C(K,2)) sum over pairs of log sigma(r_w - r_l), per prompt
    r = np.array([2.0, 1.0, 0.0, -1.0])
    per_prompt = np.sum(weights * npref.bradley_terry_loss(r[winners], r[losers]), axis=-1)
    assert per_prompt[0] == pytest.approx(np.mean(npref.bradley_terry_loss(r[winners[0]], r[losers[0]])))
    assert per_prompt[0] < math.log(2) < per_prompt[1]  # the reward agrees with ranking 0, not ranking 1
    tw, tl, twt = tpref.ranking_to_pairs(torch.as_tensor(rankings), dtype=torch.float64)
    assert torch.equal(tw, torch.as_tensor(winners)) and torch.equal(tl, torch.as_tensor(losers))
    torch.testing.assert_close(twt, torch.as_tensor(weights))


def test_ranking_pairs_feed_fit_bradley_terry():
    rankings = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [2, 0, 1]])
    w, l, wt = npref.ranking_to_pairs(rankings)
    s = npref.fit_bradley_terry(w.ravel(), l.ravel(), 3, weights=wt.ravel())
    assert np.argmax(s) == 0  # ranked first or second in every ranking


@pytest.mark.parametrize("fn", [npref.ranking_to_pairs, tpref.ranking_to_pairs], ids=["numpy", "torch"])
def test_ranking_to_pairs_bad_inputs(fn):
    as_input = (lambda x: x) if fn is npref.ranking_to_pairs else torch.as_tensor
    with pytest.raises(ValueError, match="ranking"):
        fn(as_input(np.array([3])))
    with pytest.raises(ValueError, match="ranking"):
        fn(as_input(np.array([1, 2, 1])))
    with pytest.raises(TypeError, match="ranking"):
        fn(as_input(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match="ranking"):
        fn(as_input(np.array(3)))
