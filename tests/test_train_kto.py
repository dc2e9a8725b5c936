"""KTO as a trainer: the first step is the library loss, the reference point, direction, determinism, errors."""

import copy
import doctest

import numpy as np
import pytest
import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import char_tokenizer, prompt_completion_batch, sequence_logprobs, tiny_causal_lm
import rlhf_edu.train.kto as kto_module
from rlhf_edu.train.kto import train_kto
from rlhf_edu.train.preference_data import frozen_logps

TOK = char_tokenizer()
EXAMPLES = [
    {"prompt": "review: the film was", "completion": " great fun.", "label": True},
    {"prompt": "review: the cafe is", "completion": " bad and the staff was slow.", "label": False},
    ("review: the song was", " lovely.", True),
    ("review: the app is", " weak but fresh.", False),
    ("review: the park is", " dull.", False),
    ("review: the show was", " boring.", False),
]
QUIET = dict(device="cpu", progress=False)


def tiny(seed=0, arch="gpt2"):
    return tiny_causal_lm(TOK, arch=arch, d_model=32, n_layer=1, seed=seed)


def columns():
    prompts = [e["prompt"] if isinstance(e, dict) else e[0] for e in EXAMPLES]
    comps = [e["completion"] if isinstance(e, dict) else e[1] for e in EXAMPLES]
    labels = torch.tensor([e["label"] if isinstance(e, dict) else e[2] for e in EXAMPLES])
    return prompts, comps, labels


def logps(model, prompts, comps):
    b = prompt_completion_batch(TOK, prompts, comps)
    with torch.no_grad():
        return sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_mask)


def test_doctests():
    result = doctest.testmod(kto_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_first_step_uses_the_mismatched_kl_estimate_and_the_library_loss():
    """Full batch of B examples: z0 = mean over i of log pi/pi_ref of (x_i, y_{i+1 mod B}), then rt.kto_loss."""
    policy, ref = tiny(0), tiny(1)
    prompts, comps, labels = columns()
    B = len(prompts)
    # The order of the single full minibatch is the trainer's shuffle: reproduce it.
    order = torch.randperm(B, generator=torch.Generator().manual_seed(0))
    shifted = torch.roll(order, -1)
    p_mis = [prompts[i] for i in order.tolist()]
    c_mis = [comps[j] for j in shifted.tolist()]
    kl = (logps(policy, p_mis, c_mis) - logps(ref, p_mis, c_mis)).mean()
    want = rt.kto_loss(logps(policy, prompts, comps), logps(ref, prompts, comps), labels, kl, 0.2, 1.5, 0.5).mean()
    _, hist = train_kto(policy, TOK, EXAMPLES, ref_model=ref, beta=0.2, lambda_d=1.5, lambda_u=0.5, sft_weight=0.0,
                  epochs=1, batch_size=B, **QUIET)
    assert hist.first("kl_reference") == pytest.approx(kl.item(), rel=1e-4, abs=1e-5)
    assert hist.first("loss") == pytest.approx(want.item(), rel=1e-5)
    assert hist.first("desirable_fraction") == pytest.approx(2 / 6)


def test_batch_size_one_pairs_each_prompt_with_the_next_examples_completion():
    """A minibatch of one has no other row: z0 comes from (x_i, y_{(i+1) mod n}), never the example's own pair."""
    policy, ref = tiny(0), tiny(1)
    prompts, comps, _ = columns()
    n = len(prompts)
    first = int(torch.randperm(n, generator=torch.Generator().manual_seed(0))[0])
    j = (first + 1) % n
    want = (logps(policy, [prompts[first]], [comps[j]]) - logps(ref, [prompts[first]], [comps[j]])).mean()
    own = (logps(policy, [prompts[first]], [comps[first]]) - logps(ref, [prompts[first]], [comps[first]])).mean()
    _, hist = train_kto(policy, TOK, EXAMPLES, ref_model=ref, sft_weight=0.0, epochs=1, batch_size=1, **QUIET)
    assert len(hist["loss"]) == n
    assert hist.first("kl_reference") == pytest.approx(want.item(), rel=1e-4, abs=1e-5)
    assert abs(want.item() - own.item()) > 1e-3  # the test can tell the two pairings apart


def test_at_the_reference_the_loss_is_half_lambda():
    """pi = pi_ref: r = 0 and the KL estimate is 0, so every example's loss is lambda_y * sigma(0)."""
    _, hist = train_kto(tiny(), TOK, EXAMPLES, lambda_d=2.0, lambda_u=1.0, sft_weight=0.0, epochs=1, batch_size=6,
                  **QUIET)
    assert hist.first("kl_reference") == pytest.approx(0.0, abs=1e-5)
    assert hist.first("loss") == pytest.approx((2 * 2.0 * 0.5 + 4 * 1.0 * 0.5) / 6, abs=1e-5)


def test_default_lambda_d_balances_the_classes():
    """lambda_d=None: lambda_D n_D = lambda_U n_U (the paper's rule); 2 desirable, 4 undesirable -> 2 lambda_U."""
    _, hist = train_kto(tiny(), TOK, EXAMPLES, lambda_u=0.5, sft_weight=0.0, epochs=1, batch_size=6, **QUIET)
    assert hist.config["lambda_d"] == pytest.approx(1.0)
    assert hist.first("loss") == pytest.approx((2 * 1.0 * 0.5 + 4 * 0.5 * 0.5) / 6, abs=1e-5)


def test_zero_reference_point_and_sft_weight():
    policy = tiny()
    prompts, comps, labels = columns()
    b = prompt_completion_batch(TOK, prompts, comps)
    with torch.no_grad():
        mean_lp = sequence_logprobs(policy, b.input_ids, b.attention_mask, b.completion_mask, "mean")
    nll = -mean_lp[labels].mean().item()
    _, hist = train_kto(policy, TOK, EXAMPLES, kl_estimate="zero", sft_weight=0.5, lambda_d=1.0, epochs=2, batch_size=6,
                  lr=1e-2, **QUIET)
    assert np.all(hist["kl_reference"] == 0)
    assert hist.first("loss") == pytest.approx(0.5 + 0.5 * nll, rel=1e-5)


def test_learns_to_separate_good_from_bad_and_is_deterministic():
    runs = [train_kto(tiny(), TOK, EXAMPLES, sft_weight=0.0, epochs=6, batch_size=3, lr=1e-2, seed=2, **QUIET)[1]
            for _ in range(2)]
    for key in ("loss", "kl_reference", "margin"):
        np.testing.assert_array_equal(runs[0][key], runs[1][key])
    assert runs[0].last("margin") > 0.1
    assert len(runs[0]) == 12


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_both_architectures_run(arch):
    _, hist = train_kto(tiny(arch=arch), TOK, EXAMPLES, epochs=4, batch_size=6, lr=1e-2, **QUIET)
    assert np.all(np.isfinite(hist["loss"])) and hist.last("margin") > 0


def test_a_batch_with_one_kind_only_logs_nan_for_the_other():
    good_only = [e for e in EXAMPLES if (e["label"] if isinstance(e, dict) else e[2])]
    _, hist = train_kto(tiny(), TOK, good_only, epochs=1, batch_size=2, **QUIET)
    assert np.all(np.isnan(hist["undesirable_reward"])) and np.isfinite(hist.first("loss"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=-1.0), "beta"),
        (dict(lambda_d=-1.0), "lambda_d"),
        (dict(lambda_u=-0.1), "lambda_u"),
        (dict(kl_estimate="exact"), "kl_estimate"),
        (dict(batch_size=0), "batch_size"),
        (dict(sft_weight=-1.0), "sft_weight"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_kto(tiny(), TOK, EXAMPLES, **QUIET, **kwargs)


def test_bad_data():
    with pytest.raises(ValueError, match="examples is empty"):
        train_kto(tiny(), TOK, [], **QUIET)
    with pytest.raises(ValueError, match="label"):
        train_kto(tiny(), TOK, [("p", " a.", "yes")], **QUIET)
    with pytest.raises(ValueError, match="context"):
        train_kto(tiny_causal_lm(TOK, d_model=32, n_layer=1, max_length=16), TOK, EXAMPLES, **QUIET)


def test_sentiment_desirable_rise_above_undesirable(sentiment_sft):
    """On the book's SFT model, with the defaults: the desirable examples' log-probs rise, the undesirable
    ones' fall (log pi / pi_ref over the whole training set, measured after training)."""
    policy, tok, task, _ = sentiment_sft
    examples = task.kto_examples(256, seed=5)
    batch = prompt_completion_batch(tok, [e["prompt"] for e in examples], [e["completion"] for e in examples])
    good = torch.tensor([e["label"] for e in examples])
    before = frozen_logps(policy, batch)
    trained, hist = train_kto(copy.deepcopy(policy), tok, examples, **QUIET)
    log_ratio = frozen_logps(trained, batch) - before
    assert log_ratio[good].mean() > 0.3 and log_ratio[~good].mean() < -0.3
    assert hist.config["lambda_d"] == pytest.approx((~good).sum().item() / good.sum().item())
