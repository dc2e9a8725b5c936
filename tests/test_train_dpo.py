"""DPO and its relatives (IPO, SLiC-HF, GPO) as a trainer: exact first steps, direction, determinism, errors."""

import copy
import doctest
import math

import numpy as np
import pytest
import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import char_tokenizer, prompt_completion_batch, sequence_logprobs, tiny_causal_lm
from rlhf_edu.numpy.direct import GPO_LOSSES
import rlhf_edu.train.dpo as dpo_module
from rlhf_edu.train.dpo import DPO_LOSSES, train_dpo
from rlhf_edu.train.preference_data import encode_pairs, frozen_logps

TOK = char_tokenizer()
PAIRS = [
    {"prompt": "review: the film was", "chosen": " great fun.", "rejected": " dull."},
    {"prompt": "review: the cafe is", "chosen": " nice and sweet.", "rejected": " bad and the staff was slow."},
    ("review: the song was", " lovely.", " boring."),
    ("review: the app is", " cool.", " weak but fresh."),
] * 2
QUIET = dict(device="cpu", progress=False)
PAPER = dict(sft_weight=0.0)  # the papers' losses, without the default SFT anchor


def tiny(seed=0, arch="gpt2"):
    return tiny_causal_lm(TOK, arch=arch, d_model=32, n_layer=1, seed=seed)


def logps(model, completions, reduction="sum"):
    prompts = [p["prompt"] if isinstance(p, dict) else p[0] for p in PAIRS]
    b = prompt_completion_batch(TOK, prompts, completions)
    with torch.no_grad():
        return sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask, reduction)


def chosen_rejected():
    chosen = [p["chosen"] if isinstance(p, dict) else p[1] for p in PAIRS]
    rejected = [p["rejected"] if isinstance(p, dict) else p[2] for p in PAIRS]
    return chosen, rejected


def test_doctests():
    result = doctest.testmod(dpo_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("loss", DPO_LOSSES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_first_step_is_the_library_loss_on_separate_forward_passes(loss, reduction):
    """One full batch: the logged loss equals rt.<loss> on log-probs computed pair member by pair member,
    so the concatenated forward pass and the up-front reference log-probs change nothing."""
    policy, ref = tiny(0), tiny(1)
    chosen, rejected = chosen_rejected()
    pc, pr = logps(policy, chosen, reduction), logps(policy, rejected, reduction)
    rc, rr = logps(ref, chosen, reduction), logps(ref, rejected, reduction)
    beta = 0.5
    want = {
        "dpo": rt.dpo_loss(pc, pr, rc, rr, beta),
        "ipo": rt.ipo_loss(pc, pr, rc, rr, beta),
        "gpo": rt.gpo_loss(rt.log_ratio_difference(pc, pr, rc, rr), beta, "hinge"),
        "slic": rt.slic_loss(pc, pr, 1.5),
    }[loss].mean()
    _, hist = train_dpo(policy, TOK, PAIRS, ref_model=ref, beta=beta, loss=loss, gpo_f="hinge", slic_delta=1.5,
                  logp_reduction=reduction, epochs=1, batch_size=len(PAIRS), **PAPER, **QUIET)
    # float32 rounding only: the trainer's passes group rows by length (other widths, other summation
    # order); summed log-probs of ~-80 then differ by ~1e-5 on the generic kernels. A wrong term is >= 1e-2.
    close = dict(rel=1e-4, abs=1e-5)
    assert hist.first("loss") == pytest.approx(want.item(), **close)
    margin = (rt.dpo_implicit_reward(pc, rc, beta) - rt.dpo_implicit_reward(pr, rr, beta)).mean()
    assert hist.first("margin") == pytest.approx(margin.item(), **close)
    assert hist.first("chosen_logp") == pytest.approx(pc.mean().item(), **close)


def test_at_the_reference_the_loss_is_log2_and_the_margin_zero():
    _, hist = train_dpo(tiny(), TOK, PAIRS, epochs=1, batch_size=len(PAIRS), **PAPER, **QUIET)
    assert hist.first("loss") == pytest.approx(math.log(2), abs=1e-6)
    # the policy is the reference: 0 up to rounding (two forward passes of the same weights)
    assert hist.first("margin") == pytest.approx(0.0, abs=1e-6)
    assert hist.first("chosen_reward") == pytest.approx(0.0, abs=1e-6)
    # cDPO: at h = 0 both terms are log 2 too; IPO: (0 - 1/(2 beta))^2
    _, h2 = train_dpo(tiny(), TOK, PAIRS, label_smoothing=0.2, epochs=1, batch_size=len(PAIRS), **PAPER, **QUIET)
    assert h2.first("loss") == pytest.approx(math.log(2), abs=1e-6)
    _, h3 = train_dpo(tiny(), TOK, PAIRS, loss="ipo", beta=0.25, epochs=1, batch_size=len(PAIRS), **PAPER, **QUIET)
    assert h3.first("loss") == pytest.approx(4.0, abs=1e-5)


def test_default_is_dpo_plus_the_chosen_nll_and_sft_weight_scales_it():
    policy = tiny()
    chosen, _ = chosen_rejected()
    nll = -logps(policy, chosen, "mean").mean().item()
    _, hist = train_dpo(policy, TOK, PAIRS, batch_size=len(PAIRS), **QUIET)
    assert hist.first("loss") == pytest.approx(math.log(2) + 1.0 * nll, rel=1e-5)
    policy = tiny()
    chosen, _ = chosen_rejected()
    nll = -logps(policy, chosen, "mean").mean().item()
    _, hist = train_dpo(policy, TOK, PAIRS, sft_weight=0.5, epochs=1, batch_size=len(PAIRS), **QUIET)
    assert hist.first("loss") == pytest.approx(math.log(2) + 0.5 * nll, rel=1e-5)
    # slic_lam is SLiC's own regulariser: lam * (summed) NLL of the chosen completion
    policy = tiny()
    pc, pr = logps(policy, chosen), logps(policy, chosen_rejected()[1])
    _, hist = train_dpo(policy, TOK, PAIRS, loss="slic", slic_delta=1.0, slic_lam=0.1, epochs=1, batch_size=len(PAIRS),
                  **PAPER, **QUIET)
    assert hist.first("loss") == pytest.approx(rt.slic_loss(pc, pr, 1.0, -pc, 0.1).mean().item(), rel=1e-5)


def test_gpo_logistic_is_dpo():
    _, h_dpo = train_dpo(tiny(), TOK, PAIRS, epochs=2, batch_size=4, lr=1e-2, seed=3, **QUIET)
    _, h_gpo = train_dpo(tiny(), TOK, PAIRS, loss="gpo", gpo_f="logistic", epochs=2, batch_size=4, lr=1e-2, seed=3,
                   **QUIET)
    np.testing.assert_allclose(h_gpo["loss"], h_dpo["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("f", GPO_LOSSES)
def test_every_gpo_function_trains(f):
    _, hist = train_dpo(tiny(), TOK, PAIRS, loss="gpo", gpo_f=f, epochs=3, batch_size=8, lr=3e-3, **PAPER, **QUIET)
    assert np.all(np.isfinite(hist["loss"]))
    assert hist.last("margin") > 0


def test_deterministic_and_reference_untouched():
    ref = tiny(1)
    before = [p.clone() for p in ref.parameters()]
    runs = [train_dpo(tiny(), TOK, PAIRS, ref_model=ref, epochs=2, batch_size=3, lr=1e-2, seed=5, **QUIET)[1]
            for _ in range(2)]
    for key in ("loss", "margin", "accuracy", "chosen_logp"):
        np.testing.assert_array_equal(runs[0][key], runs[1][key])
    assert all(torch.equal(a, b) for a, b in zip(before, ref.parameters()))
    assert len(runs[0]) == 2 * 3  # ceil(8 / 3) steps per epoch
    _, other = train_dpo(tiny(), TOK, PAIRS, ref_model=ref, epochs=2, batch_size=3, lr=1e-2, seed=6, **QUIET)
    assert not np.array_equal(other["loss"], runs[0]["loss"])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_both_architectures_learn_the_pairs(arch):
    policy, hist = train_dpo(tiny(arch=arch), TOK, PAIRS, epochs=4, batch_size=8, lr=1e-2, **PAPER, **QUIET)
    assert hist.last("margin") > 0.5 and hist.last("accuracy") == 1.0
    assert hist.last("loss") < math.log(2)
    assert not policy.training


def test_extreme_log_ratios_stay_finite():
    """A reference that is far off (its log-probs ~ -1e4 apart from the policy's) gives finite losses."""
    ref = tiny(1)
    with torch.no_grad():
        ref.lm_head.weight.mul_(300.0)  # GPT-2 ties it to the embedding: huge logits, extreme log-probs
    for loss in DPO_LOSSES:
        _, hist = train_dpo(tiny(), TOK, PAIRS, ref_model=ref, loss=loss, epochs=1, batch_size=8, **QUIET)
        assert np.isfinite(hist.first("loss")), loss


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=-0.1), "beta"),
        (dict(beta=0.0), "beta"),
        (dict(loss="kto"), "loss"),
        (dict(gpo_f="cubic"), "gpo_f"),
        (dict(label_smoothing=0.7), "label_smoothing"),
        (dict(logp_reduction="max"), "logp_reduction"),
        (dict(sft_weight=-1.0), "sft_weight"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(slic_delta=-1.0), "slic_delta"),
    ],
)
def test_bad_options_raise_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_dpo(tiny(), TOK, PAIRS, **QUIET, **kwargs)


def test_bad_data_raises():
    with pytest.raises(ValueError, match="pairs is empty"):
        train_dpo(tiny(), TOK, [], **QUIET)
    with pytest.raises(ValueError, match="context"):
        train_dpo(tiny_causal_lm(TOK, d_model=32, n_layer=1, max_length=16), TOK, PAIRS, **QUIET)
    tok = char_tokenizer()
    tok.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        train_dpo(tiny(), tok, PAIRS, **QUIET)


def test_sentiment_margin_rises_and_evaluation_rows(sentiment_sft):
    """On the book's SFT model, with the defaults: the implicit-reward margin beta * (log-ratio of chosen -
    log-ratio of rejected), measured on the whole training set after training, is positive; evaluation
    rows carry the exact KL to the SFT model (0 before the first update) and the gold reward."""
    policy, tok, task, _ = sentiment_sft
    pairs = task.preference_pairs(192, min_gap=0.1, seed=11)
    data = encode_pairs(tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs], [p["rejected"] for p in pairs])
    trained, hist = train_dpo(copy.deepcopy(policy), tok, pairs, gold_reward_fn=task.reward,
                        eval_prompts=task.all_prompts("test")[:2], eval_every=4, eval_samples=2,
                        eval_max_new_tokens=24, **QUIET)
    log_ratio = frozen_logps(trained, data) - frozen_logps(policy, data)
    chosen, rejected = log_ratio.chunk(2)
    assert hist.config["beta"] * (chosen - rejected).mean() > 0.1
    assert len(hist) == 6 + 1  # 6 steps and the final evaluation
    assert hist.first("margin") == pytest.approx(0.0, abs=1e-5)  # policy = reference (up to batch rounding)
    evals = hist["eval_kl"]
    assert evals[0] == pytest.approx(0.0, abs=1e-5)
    assert np.isnan(evals[1]) and not np.isnan(evals[4])  # rows 0, 4 and the last one
    assert hist.last("eval_kl") > 0
    assert 0 <= hist.last("eval_gold_reward") <= 1
