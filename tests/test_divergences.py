"""Tests of rlhf_edu.{numpy,torch}.divergences: KL, entropy and the KL estimators (chapter 2)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu.numpy import divergences as nd
from rlhf_edu.torch import divergences as td

P = np.array([0.7, 0.2, 0.1])  # the lecture notes: "mat", "floor", "chair" under model 1
Q = np.array([0.5, 0.3, 0.2])  # ... and under model 2


def distributions(min_size=2, max_size=8, zeros=False):
    low = 0.0 if zeros else 1e-3
    weights = st.lists(st.floats(low, 1.0), min_size=min_size, max_size=max_size).filter(lambda w: sum(w) > 0.1)
    return weights.map(lambda w: np.array(w) / np.sum(w))


def pairs_of_distributions(zeros=False):
    return st.integers(2, 8).flatmap(
        lambda k: st.tuples(distributions(k, k, zeros=zeros), distributions(k, k))
    )


# ---------------------------------------------------------------- kl_divergence


def test_lecture_worked_example_every_term_and_the_sum():
    terms = nd.kl_divergence(P, Q, reduction="none")
    # 0.7 log(0.7/0.5) + 0.2 log(0.2/0.3) + 0.1 log(0.1/0.2), natural log
    assert terms[0] == pytest.approx(0.7 * math.log(1.4)) == pytest.approx(0.2355306, abs=1e-7)
    assert terms[1] == pytest.approx(0.2 * math.log(2 / 3)) == pytest.approx(-0.0810930, abs=1e-7)
    assert terms[2] == pytest.approx(0.1 * math.log(0.5)) == pytest.approx(-0.0693147, abs=1e-7)
    kl = nd.kl_divergence(P, Q)
    assert kl == pytest.approx(terms.sum(), rel=1e-15)
    assert kl == pytest.approx(0.0851228, abs=1e-7)  # nats
    # in bits: the same sum with log2, i.e. the nats divided by log 2
    bits = 0.7 * math.log2(1.4) + 0.2 * math.log2(2 / 3) + 0.1 * math.log2(0.5)
    assert kl / math.log(2) == pytest.approx(bits, rel=1e-12) == pytest.approx(0.1228063, abs=1e-7)
    assert float(td.kl_divergence(torch.tensor(P), torch.tensor(Q))) == pytest.approx(kl, rel=1e-14)


def test_kl_is_asymmetric_on_the_lecture_example():
    forward, reverse = nd.kl_divergence(P, Q), nd.kl_divergence(Q, P)
    assert reverse == pytest.approx(0.5 * math.log(5 / 7) + 0.3 * math.log(1.5) + 0.2 * math.log(2.0))
    assert reverse == pytest.approx(0.0920, abs=1e-4) and abs(forward - reverse) > 5e-3


@settings(max_examples=50, deadline=None)
@given(pairs_of_distributions(zeros=True))
def test_gibbs_inequality_kl_nonnegative_and_zero_iff_equal(pq):
    p, q = pq
    kl = nd.kl_divergence(p, q)
    assert kl >= -1e-15
    assert nd.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-15)
    if np.max(np.abs(p - q)) > 1e-2:
        assert kl > 0
    # Pinsker: KL >= 2 TV^2, a quantitative version of "0 only if p = q"
    tv = 0.5 * np.abs(p - q).sum()
    assert kl >= 2 * tv**2 - 1e-12
    assert float(td.kl_divergence(torch.tensor(p), torch.tensor(q))) == pytest.approx(kl, rel=1e-12, abs=1e-15)


def test_zero_log_zero_is_zero_and_missing_support_is_inf():
    assert nd.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(2.0))
    assert nd.kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf
    np.testing.assert_array_equal(nd.kl_divergence([0.0, 1.0], [0.5, 0.5], reduction="none"), [0.0, math.log(2)])
    assert float(td.kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))) == math.inf
    # the twin's gradient stays finite where p = 0 (no 0 * inf = NaN through the unused branch)
    p = torch.tensor([0.0, 0.25, 0.75], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64, requires_grad=True)
    td.kl_divergence(p, q).backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()


def test_batches_and_broadcasting():
    p = np.stack([P, Q, np.full(3, 1 / 3)])
    out = nd.kl_divergence(p, Q)
    assert out.shape == (3,)
    assert out[0] == pytest.approx(nd.kl_divergence(P, Q)) and out[1] == 0.0


def test_kl_grad_matches_finite_differences():
    g = nd.kl_divergence_grad(P, Q)
    np.testing.assert_allclose(g["p"], np.log(P / Q) + 1)
    np.testing.assert_allclose(g["q"], -P / Q)
    eps = 1e-7  # small enough to stay within the sum-to-one tolerance
    for i in range(3):
        e = np.eye(3)[i] * eps
        fd_p = (nd.kl_divergence(P + e, Q) - nd.kl_divergence(P - e, Q)) / (2 * eps)
        fd_q = (nd.kl_divergence(P, Q + e) - nd.kl_divergence(P, Q - e)) / (2 * eps)
        assert g["p"][i] == pytest.approx(fd_p, rel=1e-6)
        assert g["q"][i] == pytest.approx(fd_q, rel=1e-6)


# ---------------------------------------------------------------- kl_divergence_from_logits


@settings(max_examples=50, deadline=None)
@given(
    st.integers(2, 8).flatmap(
        lambda k: st.tuples(*[st.lists(st.floats(-20, 20), min_size=k, max_size=k) for _ in range(2)])
    ),
    st.floats(-100, 100),
)
def test_from_logits_equals_kl_of_softmaxes_and_ignores_shifts(ab, shift):
    a, b = np.array(ab[0]), np.array(ab[1])
    p, q = np.exp(a - a.max()), np.exp(b - b.max())
    p, q = p / p.sum(), q / q.sum()
    kl = nd.kl_divergence_from_logits(a, b)
    assert kl == pytest.approx(nd.kl_divergence(p, q), rel=1e-9, abs=1e-12)
    assert nd.kl_divergence_from_logits(a + shift, b - shift) == pytest.approx(kl, rel=1e-9, abs=1e-9)
    t = td.kl_divergence_from_logits(torch.tensor(a), torch.tensor(b))
    assert float(t) == pytest.approx(kl, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_from_logits_is_stable_for_huge_logits(dtype):
    # softmax then log would give log(0) = -inf here; log_softmax gives the exact answer 1e4
    a, b = np.array([1e4, 0.0]), np.array([0.0, 1e4])
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    assert nd.kl_divergence_from_logits(a.astype(np_dtype), b.astype(np_dtype)) == pytest.approx(1e4)
    ta = torch.tensor(a, dtype=dtype, requires_grad=True)
    tb = torch.tensor(b, dtype=dtype, requires_grad=True)
    kl = td.kl_divergence_from_logits(ta, tb)
    kl.backward()
    assert kl.dtype == dtype and kl.item() == pytest.approx(1e4)
    assert torch.isfinite(ta.grad).all() and torch.isfinite(tb.grad).all()
    g = nd.kl_divergence_from_logits_grad(a, b)
    np.testing.assert_allclose(g["logits_q"], [-1.0, 1.0])  # q - p
    assert np.all(np.isfinite(g["logits_p"]))


def test_from_logits_masked_tokens_are_probability_zero():
    a = np.array([1.0, -np.inf, 0.5, -np.inf])
    b = np.array([0.0, 2.0, -1.0, -np.inf])
    p = np.exp(a - np.log(np.exp(1.0) + np.exp(0.5)))
    q = np.exp(b) / np.exp(b).sum()
    assert nd.kl_divergence_from_logits(a, b) == pytest.approx(nd.kl_divergence(p, q))
    assert float(td.kl_divergence_from_logits(torch.tensor(a), torch.tensor(b))) == pytest.approx(
        nd.kl_divergence(p, q)
    )
    assert nd.kl_divergence_from_logits(np.array([0.0, 0.0]), np.array([0.0, -np.inf])) == math.inf


def test_from_logits_grad_matches_finite_differences():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=5), rng.normal(size=5)
    g = nd.kl_divergence_from_logits_grad(a, b)
    eps = 1e-6
    for i in range(5):
        e = np.eye(5)[i] * eps
        fd_a = (nd.kl_divergence_from_logits(a + e, b) - nd.kl_divergence_from_logits(a - e, b)) / (2 * eps)
        fd_b = (nd.kl_divergence_from_logits(a, b + e) - nd.kl_divergence_from_logits(a, b - e)) / (2 * eps)
        assert g["logits_p"][i] == pytest.approx(fd_a, rel=1e-5, abs=1e-9)
        assert g["logits_q"][i] == pytest.approx(fd_b, rel=1e-5, abs=1e-9)
    # softmax gradients sum to zero: adding a constant to the logits changes nothing
    assert g["logits_p"].sum() == pytest.approx(0.0, abs=1e-12) and g["logits_q"].sum() == pytest.approx(0, abs=1e-12)


# ---------------------------------------------------------------- entropy


@settings(max_examples=50, deadline=None)
@given(distributions(zeros=True))
def test_entropy_bounds_and_identity_with_kl_to_uniform(p):
    k = len(p)
    h = nd.entropy(p)
    assert -1e-15 <= h <= math.log(k) + 1e-12
    assert h == pytest.approx(math.log(k) - nd.kl_divergence(p, np.full(k, 1 / k)), abs=1e-12)
    assert float(td.entropy(torch.tensor(p))) == pytest.approx(h, rel=1e-12, abs=1e-15)


def test_entropy_values():
    assert nd.entropy(np.full(4, 0.25)) == pytest.approx(math.log(4))
    assert nd.entropy([1.0, 0.0, 0.0]) == 0.0
    assert nd.entropy(P) == pytest.approx(-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)))
    np.testing.assert_allclose(nd.entropy_grad(P)["p"], -(np.log(P) + 1))
    p = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    td.entropy(p).backward()
    assert torch.isfinite(p.grad).all()


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("tree", ["numpy", "torch"])
def test_bad_inputs_name_the_argument(tree):
    m = nd if tree == "numpy" else td
    if tree == "numpy":
        arr = lambda x: np.asarray(x, dtype=float)  # noqa: E731
    else:
        arr = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    with pytest.raises(ValueError, match="p must sum to 1"):
        m.kl_divergence(arr([0.5, 0.6]), arr([0.5, 0.5]))
    with pytest.raises(ValueError, match="q has negative"):
        m.kl_divergence(arr([0.5, 0.5]), arr([1.5, -0.5]))
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        m.kl_divergence(arr([0.5, 0.5]), arr([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="reduction"):
        m.kl_divergence(arr([0.5, 0.5]), arr([0.5, 0.5]), reduction="mean")
    with pytest.raises(ValueError, match="p must have at least one axis"):
        m.entropy(arr(1.0))
    with pytest.raises(ValueError, match="p must sum to 1"):
        m.entropy(arr([0.2, 0.2]))
    with pytest.raises(ValueError, match="logits_p"):
        m.kl_divergence_from_logits(arr([0.0, np.nan]), arr([0.0, 0.0]))
    with pytest.raises(ValueError, match="logits_q"):
        m.kl_divergence_from_logits(arr([0.0, 0.0]), arr([np.inf, 0.0]))
    with pytest.raises(ValueError, match="logits_q.*every logit is -inf"):
        m.kl_divergence_from_logits(arr([0.0, 0.0]), arr([-np.inf, -np.inf]))
    with pytest.raises(ValueError, match="estimator"):
        m.kl_estimate(arr([0.0]), arr([0.0]), "k4")
    with pytest.raises(ValueError, match="logp"):
        m.kl_estimate(arr([0.0, 1.0]), arr([0.0]), "k1")


# ---------------------------------------------------------------- kl_estimate


def test_k3_is_grpo_eq2_written_literally():
    rng = np.random.default_rng(1)
    logp, logp_ref = np.log(rng.dirichlet(np.ones(10))), np.log(rng.dirichlet(np.ones(10)))
    ratio = np.exp(logp_ref) / np.exp(logp)  # pi_ref / pi_theta
    literal = ratio - np.log(ratio) - 1  # GRPO (Shao et al., 2024), eq. (2)
    np.testing.assert_allclose(nd.kl_estimate(logp, logp_ref, "k3"), literal, rtol=1e-10, atol=1e-13)
    t = td.kl_estimate(torch.tensor(logp), torch.tensor(logp_ref), "k3")
    np.testing.assert_allclose(t.numpy(), literal, rtol=1e-10, atol=1e-13)


def test_k3_stays_accurate_for_tiny_log_ratios_where_the_literal_form_cancels():
    ell = np.array([1e-9, -1e-9, 2e-10])
    exact = ell**2 / 2 - ell**3 / 6 + ell**4 / 24  # Taylor series of e^-l - 1 + l
    ratio = np.exp(-ell)
    literal = ratio - np.log(ratio) - 1
    k3 = nd.kl_estimate(ell, np.zeros(3), "k3")
    np.testing.assert_allclose(k3, exact, rtol=1e-5)
    assert np.all(np.abs(literal - exact) / exact > 0.5)  # the literal form loses every digit
    t = td.kl_estimate(torch.tensor(ell), torch.zeros(3, dtype=torch.float64), "k3")
    np.testing.assert_allclose(t.numpy(), exact, rtol=1e-5)


def test_monte_carlo_k1_and_k3_unbiased_k2_biased():
    p = np.array([0.6, 0.25, 0.1, 0.05])
    ref = np.array([0.1, 0.2, 0.3, 0.4])
    exact = nd.kl_divergence(p, ref)
    rng = np.random.default_rng(2)
    x = rng.choice(4, size=200_000, p=p)  # samples from p, as PPO/GRPO take them from the policy
    logp, logp_ref = np.log(p[x]), np.log(ref[x])
    for est in ("k1", "k3"):
        values = nd.kl_estimate(logp, logp_ref, est)
        se = values.std() / np.sqrt(values.size)
        assert abs(values.mean() - exact) < 4 * se, est
    k2 = nd.kl_estimate(logp, logp_ref, "k2")
    # the exact expectations: E[k1] = E[k3] = KL, E[k2] = E[l^2]/2 differs
    e_k2 = np.sum(p * 0.5 * np.log(p / ref) ** 2)
    assert abs(k2.mean() - e_k2) < 4 * k2.std() / np.sqrt(k2.size)
    assert e_k2 - exact > 0.2 and k2.mean() - exact > 50 * k2.std() / np.sqrt(k2.size)
    assert np.any(nd.kl_estimate(logp, logp_ref, "k1") < 0)  # k1 can be negative, KL cannot


@settings(max_examples=50, deadline=None)
@given(st.floats(-50, 50), st.floats(-50, 50))
def test_k2_and_k3_are_nonnegative_and_zero_at_equality(a, b):
    for est in ("k2", "k3"):
        assert nd.kl_estimate(np.array([a]), np.array([b]), est)[0] >= 0
        assert nd.kl_estimate(np.array([a]), np.array([a]), est)[0] == 0
