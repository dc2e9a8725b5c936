"""Reward-model training: Bradley-Terry on pairs, InstructGPT's K-wise batches, margins, centering, accuracy."""

import doctest
import math

import numpy as np
import pytest
import torch

from rlhf_edu.lm import RewardModel, char_tokenizer, tiny_causal_lm
import rlhf_edu.train.reward_model as rm_module
from rlhf_edu.train.reward_model import pairwise_accuracy, reward_margins, train_reward_model

TOK = char_tokenizer()
PAIRS = [
    ("review: the film was", " great fun.", " dull."),
    ("review: the cafe is", " nice and sweet.", " bad and the staff was slow."),
    ("review: the song was", " lovely.", " boring."),
    ("review: the app is", " cool.", " weak but fresh."),
] * 2
RANKINGS = [
    {"prompt": "review: the film was", "completions": [" great fun.", " nice.", " long.", " dull."]},
    {"prompt": "review: the cafe is", "completions": [" sweet and cool.", " cool.", " slow.", " bad and slow."]},
] * 2
QUIET = dict(device="cpu", progress=False)


def tiny_rm(seed=0, arch="gpt2", init_std=None):
    return RewardModel(tiny_causal_lm(TOK, arch=arch, d_model=32, n_layer=1, seed=seed), init_std=init_std, seed=seed)


def test_doctests():
    result = doctest.testmod(rm_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 3 and result.failed == 0


def test_zero_head_gives_log2_and_chance_accuracy():
    """A head of zeros scores every text 0: the BT loss is log 2 and every pair a tie (accuracy 1/2)."""
    rm = tiny_rm(init_std=0.0)
    m = reward_margins(rm, TOK, PAIRS)
    assert np.all(m == 0) and pairwise_accuracy(rm, TOK, PAIRS) == 0.5
    _, hist = train_reward_model(rm, TOK, PAIRS, epochs=1, batch_size=8, **QUIET)
    assert hist.first("bt_loss") == pytest.approx(math.log(2), abs=1e-6)
    assert hist.first("accuracy") == 0.5


@pytest.mark.parametrize("margin", [1.5, [0.0, 2.0, 1.0, 3.0, 0.5, 0.0, 1.0, 2.0]])
def test_margin_enters_the_first_loss(margin):
    """With zero rewards the per-pair loss is -log sigma(-m) = log(1 + e^m) (LLaMA-2's margin)."""
    m = np.broadcast_to(np.asarray(margin, float), (8,))
    _, hist = train_reward_model(tiny_rm(init_std=0.0), TOK, PAIRS, margin=margin, epochs=1, batch_size=8, **QUIET)
    assert hist.first("bt_loss") == pytest.approx(np.mean(np.log1p(np.exp(m))), rel=1e-5)


def test_k_wise_first_loss_weights_pairs_by_one_over_c_k_2():
    _, hist = train_reward_model(tiny_rm(init_std=0.0), TOK, RANKINGS, epochs=1, batch_size=4, **QUIET)
    assert hist.config["k_wise"] and hist.config["K"] == 4
    assert hist.first("bt_loss") == pytest.approx(math.log(2), abs=1e-6)  # 6 pairs x 1/6 x log 2


def test_k_equal_2_rankings_are_the_pairwise_loss():
    """A ranking of two is a pair: K-wise training on [chosen, rejected] follows the pairwise run."""
    rankings = [(p, [c, r]) for p, c, r in PAIRS]
    _, h_pairs = train_reward_model(tiny_rm(), TOK, PAIRS, epochs=2, batch_size=4, lr=3e-3, **QUIET)
    _, h_rank = train_reward_model(tiny_rm(), TOK, rankings, epochs=2, batch_size=4, lr=3e-3, **QUIET)
    assert h_rank.config["k_wise"] and not h_pairs.config["k_wise"]
    np.testing.assert_allclose(h_rank["loss"], h_pairs["loss"], rtol=1e-4, atol=1e-6)


def test_k_wise_equals_the_mean_over_its_pairs():
    """One ranking of K: the loss equals the mean BT loss of its C(K,2) pairs scored by the same model."""
    rm = tiny_rm()
    ranking = RANKINGS[:1]
    comps = ranking[0]["completions"]
    pairs = [(ranking[0]["prompt"], comps[i], comps[j]) for i in range(4) for j in range(i + 1, 4)]
    m = reward_margins(rm, TOK, pairs)
    want = np.mean(np.logaddexp(0.0, -m))
    _, hist = train_reward_model(rm, TOK, ranking, epochs=1, batch_size=1, **QUIET)
    assert hist.first("bt_loss") == pytest.approx(want, rel=1e-5)
    assert hist.first("margin") == pytest.approx(m.mean(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_learns_pairs_on_both_architectures_and_is_deterministic(arch):
    runs = [train_reward_model(tiny_rm(arch=arch), TOK, PAIRS, epochs=4, batch_size=4, lr=3e-3, seed=2, **QUIET)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0][1]["loss"], runs[1][1]["loss"])
    rm, hist = runs[0]
    assert hist.last("bt_loss") < hist.first("bt_loss")
    assert pairwise_accuracy(rm, TOK, PAIRS) == 1.0
    assert np.all(reward_margins(rm, TOK, PAIRS) > 0)
    assert not rm.training


def test_centering_keeps_rewards_near_zero():
    """Rewards are defined up to a constant; the centering term removes the drift of their mean."""
    rankings = [(p, [c, r]) for p, c, r in PAIRS]
    runs = {}
    for l2 in (0.0, 1.0):
        rm = tiny_rm(seed=4)
        with torch.no_grad():
            rm.head.bias.fill_(3.0)  # start far from 0
        runs[l2] = train_reward_model(rm, TOK, rankings, l2_reward=l2, epochs=6, batch_size=8, lr=3e-3, **QUIET)[1]
    assert abs(runs[1.0].last("reward_mean")) < 0.5 * abs(runs[0.0].last("reward_mean"))
    assert runs[1.0].first("loss") > runs[1.0].first("bt_loss")  # the penalty is in the loss
    assert runs[0.0].first("loss") == runs[0.0].first("bt_loss")


def test_eval_pairs_rows():
    rm, hist = train_reward_model(tiny_rm(), TOK, PAIRS, eval_pairs=PAIRS[:4], eval_every=2, epochs=2, batch_size=4,
                            lr=3e-3, **QUIET)
    acc = hist["eval_accuracy"]
    assert len(hist) == 4 + 1 and np.isfinite(acc[[0, 2, 4]]).all() and np.isnan(acc[[1, 3]]).all()
    assert hist.last("eval_accuracy") == pytest.approx(pairwise_accuracy(rm, TOK, PAIRS[:4]))


def test_errors():
    with pytest.raises(TypeError, match="RewardModel"):
        train_reward_model(tiny_causal_lm(TOK, d_model=32, n_layer=1), TOK, PAIRS, **QUIET)
    with pytest.raises(ValueError, match="pairs is empty"):
        train_reward_model(tiny_rm(), TOK, [], **QUIET)
    with pytest.raises(ValueError, match="margin"):
        train_reward_model(tiny_rm(), TOK, PAIRS, margin=[1.0, 2.0], **QUIET)
    with pytest.raises(ValueError, match="l2_reward"):
        train_reward_model(tiny_rm(), TOK, PAIRS, l2_reward=-1.0, **QUIET)
    with pytest.raises(ValueError, match="same K"):
        train_reward_model(tiny_rm(), TOK, [("p", ["a", "b", "c"]), ("q", ["a", "b"])], **QUIET)
    with pytest.raises(ValueError, match="rejected"):
        train_reward_model(tiny_rm(), TOK, [{"prompt": "p", "chosen": "a"}], **QUIET)
    with pytest.raises(ValueError, match="eval_pairs"):
        train_reward_model(tiny_rm(), TOK, PAIRS, eval_pairs=[{"prompt": "p"}], **QUIET)
    with pytest.raises(ValueError, match="context"):
        rm = RewardModel(tiny_causal_lm(TOK, d_model=32, n_layer=1, max_length=16), seed=0)
        train_reward_model(rm, TOK, PAIRS, **QUIET)


@pytest.mark.slow
def test_sentiment_reward_model_generalises_and_label_noise_hurts(sentiment_sft):
    """From the book's SFT model, a short run (12 steps) ranks held-out test pairs (new prompts) well above
    chance; the same run on labels flipped 45% of the time stays near chance (full measurement: the
    table in rlhf_edu.train.reward_model)."""
    policy, tok, task, _ = sentiment_sft
    test_pairs = task.preference_pairs(128, split="test", seed=0, min_gap=0.1)
    accs = {}
    for noise in (0.0, 0.45):
        rm = RewardModel.from_pretrained_lm(policy, seed=0)
        train = task.preference_pairs(384, noise=noise, min_gap=0.1, seed=3)
        rm, hist = train_reward_model(rm, tok, train, epochs=1, batch_size=32, lr=1e-3, **QUIET)
        accs[noise] = pairwise_accuracy(rm, tok, test_pairs)
    assert accs[0.0] > 0.68
    assert accs[0.45] < accs[0.0] - 0.1
