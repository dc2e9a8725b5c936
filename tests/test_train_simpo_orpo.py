"""SimPO and ORPO as trainers (no reference model in the loss): exact first steps, direction, errors."""

import copy
import doctest

import numpy as np
import pytest
import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import char_tokenizer, prompt_completion_batch, sequence_logprobs, tiny_causal_lm
import rlhf_edu.train.orpo as orpo_module
import rlhf_edu.train.simpo as simpo_module
from rlhf_edu.train.orpo import train_orpo
from rlhf_edu.train.preference_data import encode_pairs, frozen_logps
from rlhf_edu.train.simpo import train_simpo

TOK = char_tokenizer()
PAIRS = [
    ("review: the film was", " great fun.", " dull."),
    ("review: the cafe is", " nice and sweet.", " bad and the staff was slow."),
    ("review: the song was", " lovely.", " boring."),
    ("review: the app is", " cool.", " weak but fresh."),
] * 2
QUIET = dict(device="cpu", progress=False)


def tiny(seed=0, arch="gpt2"):
    return tiny_causal_lm(TOK, arch=arch, d_model=32, n_layer=1, seed=seed)


def scores(model, which, reduction):
    b = prompt_completion_batch(TOK, [p[0] for p in PAIRS], [p[which] for p in PAIRS])
    with torch.no_grad():
        lp = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction)
    return lp, b.completion_mask.sum(1)


@pytest.mark.parametrize("module", [simpo_module, orpo_module])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_simpo_first_step_is_the_library_loss():
    policy = tiny()
    (lc, nc), (lr_, nr) = scores(policy, 1, "sum"), scores(policy, 2, "sum")
    want = rt.simpo_loss(lc, lr_, nc, nr, 2.5, 1.25).mean()
    _, hist = train_simpo(policy, TOK, PAIRS, beta=2.5, gamma=1.25, sft_weight=0.0, epochs=1, batch_size=len(PAIRS),
                    **QUIET)
    assert hist.first("loss") == pytest.approx(want.item(), rel=1e-5)
    assert hist.first("margin") == pytest.approx((2.5 * (lc / nc - lr_ / nr)).mean().item(), rel=1e-4, abs=1e-6)
    assert hist.first("chosen_length") == pytest.approx(nc.float().mean().item())


def test_simpo_sft_weight_adds_the_chosen_nll():
    policy = tiny()
    (lc, nc), (lr_, nr) = scores(policy, 1, "sum"), scores(policy, 2, "sum")
    want = rt.simpo_loss(lc, lr_, nc, nr, 2.0, 1.0).mean() + 0.3 * (-lc / nc).mean()
    _, hist = train_simpo(policy, TOK, PAIRS, sft_weight=0.3, epochs=1, batch_size=len(PAIRS), **QUIET)
    assert hist.first("loss") == pytest.approx(want.item(), rel=1e-5)


def test_orpo_first_step_is_the_library_loss():
    policy = tiny()
    (mc, _), (mr, _) = scores(policy, 1, "mean"), scores(policy, 2, "mean")
    want = rt.orpo_loss(mc, mr, -mc, 0.4).mean()
    _, hist = train_orpo(policy, TOK, PAIRS, lam=0.4, epochs=1, batch_size=len(PAIRS), **QUIET)
    assert hist.first("loss") == pytest.approx(want.item(), rel=1e-5)
    assert hist.first("nll") == pytest.approx(-mc.mean().item(), rel=1e-5)
    ratio = (rt.orpo_log_odds(mc) - rt.orpo_log_odds(mr)).mean()
    assert hist.first("log_odds_ratio") == pytest.approx(ratio.item(), rel=1e-4, abs=1e-6)


def test_orpo_with_lam_zero_is_sft_on_the_chosen():
    _, hist = train_orpo(tiny(), TOK, PAIRS, lam=0.0, epochs=1, batch_size=len(PAIRS), **QUIET)
    assert hist.first("loss") == pytest.approx(hist.first("nll"), rel=1e-6)


@pytest.mark.parametrize("trainer", [train_simpo, train_orpo])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_learns_the_pairs_and_is_deterministic(trainer, arch):
    runs = [trainer(tiny(arch=arch), TOK, PAIRS, epochs=4, batch_size=4, lr=1e-2, seed=1, **QUIET)[1]
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0]["loss"], runs[1]["loss"])
    assert runs[0].last("margin") > runs[0].first("margin")
    assert runs[0].last("accuracy") == 1.0
    assert len(runs[0]) == 8


def test_no_reference_copy_without_evaluation():
    """SimPO and ORPO need no reference model: none is built (or touched) unless evaluation asks for a KL."""
    ref = tiny(1)
    before = [p.clone() for p in ref.parameters()]
    for trainer in (train_simpo, train_orpo):
        _, hist = trainer(tiny(), TOK, PAIRS, ref_model=ref, epochs=1, batch_size=8, lr=1e-2, **QUIET)
        assert "eval_kl" not in hist
    assert all(torch.equal(a, b) for a, b in zip(before, ref.parameters()))


@pytest.mark.parametrize(
    "trainer, kwargs, match",
    [
        (train_simpo, dict(beta=0.0), "beta"),
        (train_simpo, dict(gamma=-1.0), "gamma"),
        (train_simpo, dict(sft_weight=-1.0), "sft_weight"),
        (train_simpo, dict(epochs=0), "epochs"),
        (train_orpo, dict(lam=-0.1), "lam"),
        (train_orpo, dict(lr=-1.0), "lr"),
        (train_orpo, dict(eval_every=0), "eval_every"),
    ],
)
def test_bad_options(trainer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        trainer(tiny(), TOK, PAIRS, **QUIET, **kwargs)


@pytest.mark.parametrize("trainer", [train_simpo, train_orpo])
def test_bad_data(trainer):
    with pytest.raises(ValueError, match="pairs is empty"):
        trainer(tiny(), TOK, [], **QUIET)
    with pytest.raises(ValueError, match="context"):
        trainer(tiny_causal_lm(TOK, d_model=32, n_layer=1, max_length=16), TOK, PAIRS, **QUIET)


@pytest.mark.parametrize("trainer", [train_simpo, train_orpo])
def test_sentiment_preference_margin_rises(sentiment_sft, trainer):
    """On the book's SFT model, with the defaults: the mean per-token log-prob of the chosen completions
    rises relative to the rejected ones (measured on the whole training set before and after)."""
    policy, tok, task, _ = sentiment_sft
    pairs = task.preference_pairs(256, min_gap=0.1, seed=12)
    data = encode_pairs(tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs], [p["rejected"] for p in pairs])

    def margin(model):
        chosen, rejected = frozen_logps(model, data, "mean").chunk(2)
        return (chosen - rejected).mean().item()

    trained, _ = trainer(copy.deepcopy(policy), tok, pairs, **QUIET)
    assert margin(trained) > margin(policy) + 0.08
