"""PPO for language models (rlhf_edu.train.ppo): direction of the effect, determinism, details, bad input."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu.lm import RewardModel, ValueModel, char_tokenizer, generate, tiny_causal_lm
from rlhf_edu.tasks import gold_reward
from rlhf_edu.train.ppo import AdaptiveKLController, RunningMoments, _completion_values, train_ppo
from rlhf_edu.train.reward_model import train_reward_model

PROMPTS = ["review:", "the film:", "x:"]


def _a_share(completions, prompts):
    """A toy reward: the share of the letter 'a' in the completion."""
    return np.array([c.count("a") / max(len(c), 1) for c in completions])


def _tiny(tok, arch="gpt2", seed=0):
    return tiny_causal_lm(tok, arch=arch, d_model=32, n_layer=1, seed=seed)


FAST = dict(steps=2, batch_size=8, minibatch_size=4, max_new_tokens=8, device="cpu", progress=False)


@pytest.fixture(autouse=True)
def _one_thread():
    # these models are tiny: one thread is faster than two fighting over a shared, busy CPU
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rows_without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history.rows]


# ----- the small-model runs the book relies on ---------------------------------------------------------
@pytest.mark.slow
def test_ppo_with_gold_reward_raises_gold_and_moves_away_from_reference(sentiment_sft):
    policy, tok, task, _ = sentiment_sft
    eval_prompts = task.all_prompts("test") * 2
    trained, hist = train_ppo(copy.deepcopy(policy), tok, task.all_prompts("train"), gold_reward,
                        gold_reward_fn=gold_reward, eval_prompts=eval_prompts, eval_every=100, steps=6,
                        device="cpu", progress=False)
    gold = hist["gold_reward"][:6]
    assert gold[-2:].mean() > gold[:2].mean() + 0.08  # measured: 0.38 -> 0.56
    # held-out gold: +0.045 measured with generic kernels and one thread (0.539 -> 0.583), more as is
    assert hist.last("eval_gold_reward") > hist.first("eval_gold_reward") + 0.02
    assert hist.first("eval_kl") == pytest.approx(0.0, abs=1e-6)  # the reference is the starting policy
    assert hist.last("eval_kl") > 0.1 and hist["kl"][-2] > 0.1
    assert np.isfinite(hist["loss"][:6]).all() and (hist["clip_fraction"][:6] >= 0).all()
    assert len(hist) == 7 and hist.rows[-1]["step"] == 6  # one row per rollout batch, plus the final eval
    # the policy passed in is trained in place and returned; the critic comes back on the history
    assert isinstance(hist.value_model, ValueModel)
    assert trained.training is False


@pytest.mark.slow
def test_ppo_with_a_learned_reward_model_raises_the_proxy_and_keeps_the_reward_model_frozen(sentiment_sft):
    policy, tok, task, _ = sentiment_sft
    rm = RewardModel.from_pretrained_lm(policy, seed=0)
    rm, _ = train_reward_model(rm, tok, task.preference_pairs(512), epochs=1, batch_size=32, lr=5e-4, device="cpu",
                         progress=False)
    frozen = copy.deepcopy(rm.state_dict())
    _, hist = train_ppo(copy.deepcopy(policy), tok, task.all_prompts("train"), rm, gold_reward_fn=gold_reward, steps=5,
                  device="cpu", progress=False)
    assert hist.config["critic_init"] == "reward_model"
    proxy = hist["reward"]
    assert proxy[-2:].mean() > proxy[:2].mean()
    assert np.isfinite(hist["gold_reward"]).all()
    for name, value in rm.state_dict().items():
        assert torch.equal(value, frozen[name]), f"the reward model changed: {name}"
    # the critic started as a copy of the reward model, then learned: a different object
    assert hist.value_model.backbone is not rm.backbone


# ----- fast runs on a tiny model -----------------------------------------------------------------------
def test_same_seed_same_history_and_different_seed_differs(tokenizer):
    runs = [train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, seed=s, **FAST)[1] for s in (0, 0, 1)]
    assert _rows_without_time(runs[0]) == _rows_without_time(runs[1])
    assert _rows_without_time(runs[0]) != _rows_without_time(runs[2])


def test_history_columns_and_value_model(tokenizer):
    policy, hist = train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, gold_reward_fn=_a_share,
                       eval_prompts=PROMPTS, eval_every=1, **FAST)
    for key in ("loss", "policy_loss", "value_loss", "reward", "reward_std", "gold_reward", "kl", "kl_coef",
                "entropy", "clip_fraction", "approx_kl", "value_error", "explained_variance", "length",
                "truncated", "seconds", "eval_reward", "eval_gold_reward", "eval_kl"):
        assert key in hist, key
    assert len(hist) == FAST["steps"] + 1
    np.testing.assert_allclose(hist["reward"][:2], hist["gold_reward"][:2])  # same function, same samples
    assert (np.diff(hist["seconds"]) >= 0).all()
    assert hist.first("kl") == pytest.approx(0.0, abs=1e-6)  # first batch: policy == reference
    assert isinstance(hist.value_model, ValueModel) and hist.kl_controller is None


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_runs_on_both_architectures(tokenizer, arch):
    _, hist = train_ppo(_tiny(tokenizer, arch), tokenizer, PROMPTS, _a_share, **FAST)
    assert np.isfinite(hist["loss"]).all()


def test_policy_learns_a_toy_reward(tokenizer):
    # reward the letter 'a'; a tiny model from scratch learns it within a few batches
    _, hist = train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, steps=12, batch_size=32, minibatch_size=16,
                  max_new_tokens=6, lr=3e-3, kl_coef=0.0, device="cpu", progress=False)
    r = hist["reward"]
    assert r[-3:].mean() > r[:3].mean() + 0.05


def test_ratio_is_one_before_the_first_update(tokenizer):
    # one epoch, one minibatch: the update sees exactly the policy that sampled (dropout off, same temperature)
    model = tiny_causal_lm(tokenizer, d_model=32, n_layer=1, dropout=0.1)  # PPO must switch dropout off
    _, hist = train_ppo(model, tokenizer, PROMPTS, _a_share, steps=1, batch_size=8, minibatch_size=8,
                  ppo_epochs=1, temperature=0.7, max_new_tokens=8, device="cpu", progress=False)
    assert hist.first("clip_fraction") == 0.0
    assert hist.first("approx_kl") == pytest.approx(0.0, abs=1e-7)


def test_kl_coef_zero_makes_kl_placement_irrelevant(tokenizer):
    runs = [train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, kl_coef=0.0, kl_in=where, **FAST)[1]
            for where in ("reward", "loss")]
    assert runs[1].config["kl_estimator"] == "k3" and runs[0].config["kl_estimator"] == "k1"
    np.testing.assert_allclose(runs[0]["loss"], runs[1]["loss"], rtol=1e-5, atol=1e-7)


def test_kl_in_the_loss_changes_the_update(tokenizer):
    a = train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, kl_coef=1.0, kl_in="loss", steps=3,
            **{k: v for k, v in FAST.items() if k != "steps"})[1]
    b = train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, kl_coef=0.0, kl_in="loss", steps=3,
            **{k: v for k, v in FAST.items() if k != "steps"})[1]
    assert not np.allclose(a["loss"][1:], b["loss"][1:])


def test_critic_warmup_freezes_the_actor_only(tokenizer):
    start = _tiny(tokenizer)
    policy, hist = train_ppo(copy.deepcopy(start), tokenizer, PROMPTS, _a_share, critic_warmup_steps=2, **FAST)
    for p, q in zip(policy.parameters(), start.parameters()):
        assert torch.equal(p, q)
    fresh = ValueModel(copy.deepcopy(start), seed=0)
    assert any(not torch.equal(p, q) for p, q in zip(hist.value_model.parameters(), fresh.parameters()))
    moved, _ = train_ppo(copy.deepcopy(start), tokenizer, PROMPTS, _a_share, critic_warmup_steps=1, **FAST)
    assert any(not torch.equal(p, q) for p, q in zip(moved.parameters(), start.parameters()))


@pytest.mark.parametrize("normalization", [None, "batch", "running"])
def test_reward_normalizations_and_options_run(tokenizer, normalization):
    _, hist = train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, reward_normalization=normalization,
                  whiten_advantages=normalization is None, value_clip=None if normalization else 0.2,
                  entropy_coef=0.01, gamma=0.99, lam=1.0, kl_estimator="k2", **FAST)
    assert np.isfinite(hist["loss"]).all() and np.isfinite(hist["value_loss"]).all()


def test_missing_eos_penalty_and_truncation_column(tokenizer):
    _, hist = train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, missing_eos_penalty=1.0,
                  **{**FAST, "max_new_tokens": 1})
    # one new token: a row ends only if that token is EOS
    assert ((hist["truncated"] >= 0) & (hist["truncated"] <= 1)).all()
    assert np.all(hist["length"] == 1.0)


def test_adaptive_kl_updates_the_logged_coefficient(tokenizer):
    # any drift exceeds the target: beta goes up (the KL after one update is ~1e-3, ten times the target)
    target = 1e-4
    ctl = AdaptiveKLController(0.1, target=target, horizon=10)
    _, hist = train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, adaptive_kl=ctl, steps=3,
                  **{k: v for k, v in FAST.items() if k != "steps"})
    assert hist.kl_controller is ctl
    assert hist["kl_coef"][0] == pytest.approx(0.1)
    # Ziegler et al.'s rule on the logged KL of each batch of 8: beta *= 1 + clip(KL / target - 1, +-0.2) * 8 / 10
    for t in range(2):
        error = np.clip(hist["kl"][t] / target - 1.0, -0.2, 0.2)
        assert hist["kl_coef"][t + 1] == pytest.approx(hist["kl_coef"][t] * (1.0 + error * 8 / 10), rel=1e-9)
    assert abs(hist["kl"][0]) < 1e-6 and hist["kl_coef"][1] < hist["kl_coef"][0]  # on the reference: no KL, beta falls
    assert hist["kl"][1] > target and hist["kl_coef"][2] > hist["kl_coef"][1]  # drift beyond the target: beta rises
    _, hist = train_ppo(_tiny(tokenizer), tokenizer, PROMPTS, _a_share, adaptive_kl=True, **FAST)
    assert hist.kl_controller.target == 6.0


def test_critic_from_reward_model_and_given_value_model(tokenizer):
    base = _tiny(tokenizer)
    rm = RewardModel.from_pretrained_lm(base, seed=3)
    _, hist = train_ppo(copy.deepcopy(base), tokenizer, PROMPTS, rm, critic_lr=1e-12, lr=1e-12, **FAST)
    assert hist.config["critic_init"] == "reward_model"
    # with a vanishing critic lr the critic is still (almost) the reward model's head and backbone
    torch.testing.assert_close(hist.value_model.head.weight, rm.head.weight)
    critic = ValueModel(copy.deepcopy(base), seed=1)
    _, hist = train_ppo(copy.deepcopy(base), tokenizer, PROMPTS, _a_share, value_model=critic, **FAST)
    assert hist.value_model is critic and hist.config["critic_init"] == "given"


# ----- pieces ------------------------------------------------------------------------------------------
def test_completion_values_are_the_values_of_the_state_before_each_token(tokenizer):
    model = _tiny(tokenizer)
    critic = ValueModel(copy.deepcopy(model), seed=0)
    r = generate(model, tokenizer, ["ab:", "review: x"], max_new_tokens=5, generator=0)
    P = r.prompt_length
    with torch.no_grad():
        v = _completion_values(critic, r.input_ids, r.attention_mask, P)
        assert v.shape == (2, r.input_ids.shape[1] - P)
        for t in range(v.shape[1]):  # the critic sees the prompt and completion tokens before t only
            prefix = critic(r.input_ids[:, : P + t], r.attention_mask[:, : P + t])[:, -1]
            torch.testing.assert_close(v[:, t], prefix)


def test_adaptive_kl_controller_follows_ziegler():
    ctl = AdaptiveKLController(0.2, target=4.0, horizon=1000)
    assert ctl.update(5.0, n_steps=100) == pytest.approx(0.2 * 1.02)  # error 0.25 clipped to 0.2
    ctl = AdaptiveKLController(0.2, target=4.0, horizon=1000)
    assert ctl.update(4.4, n_steps=100) == pytest.approx(0.2 * (1 + 0.1 * 0.1))
    assert ctl.update(0.0, n_steps=100) == pytest.approx(0.2 * 1.01 * (1 - 0.2 * 0.1))
    for _ in range(50):
        ctl.update(100.0, n_steps=1000)
    assert ctl.value == pytest.approx(0.2 * 1.01 * 0.98 * 1.2**50)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0)
    with pytest.raises(ValueError, match="init_kl_coef"):
        AdaptiveKLController(-0.1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(-100, 100), min_size=1, max_size=20), min_size=1, max_size=6))
def test_running_moments_equal_the_moments_of_everything_seen(batches):
    m = RunningMoments()
    for b in batches:
        m.update(torch.tensor(b, dtype=torch.float64))
    flat = np.concatenate([np.asarray(b, float) for b in batches])
    assert m.count == flat.size
    assert m.mean == pytest.approx(flat.mean(), abs=1e-9)
    assert m.std == pytest.approx(flat.std(), rel=1e-6, abs=1e-7)
    x = torch.tensor([flat.mean() + 1.0], dtype=torch.float64)
    if flat.std() > 1e-3:
        assert float(m.normalize(x)[0]) == pytest.approx(1.0 / flat.std(), rel=1e-5)


def test_bad_inputs_are_named(tokenizer):
    model = _tiny(tokenizer)
    kw = dict(FAST)
    with pytest.raises(ValueError, match="prompts"):
        train_ppo(model, tokenizer, [], _a_share, **kw)
    with pytest.raises(TypeError, match="prompts"):
        train_ppo(model, tokenizer, "review:", _a_share, **kw)
    with pytest.raises(ValueError, match="prompts"):
        train_ppo(model, tokenizer, ["x" * 125], _a_share, **kw)  # 126 tokens + 8 new > 128
    with pytest.raises(ValueError, match="kl_coef"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, kl_coef=-0.1, **kw)
    with pytest.raises(ValueError, match="minibatch_size"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, **{**kw, "minibatch_size": 16})
    with pytest.raises(ValueError, match="kl_in"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, kl_in="advantage", **kw)
    with pytest.raises(ValueError, match="kl_estimator"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, kl_estimator="k4", **kw)
    with pytest.raises(ValueError, match="critic_init"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, critic_init="reward_model", **kw)
    with pytest.raises(ValueError, match="reward_normalization"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, reward_normalization="global", **kw)
    with pytest.raises(ValueError, match="clip_eps"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, clip_eps=0.0, **kw)
    with pytest.raises(ValueError, match="lam"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, lam=1.5, **kw)
    with pytest.raises(ValueError, match="temperature"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, temperature=0.0, **kw)
    with pytest.raises(ValueError, match="eval_prompts"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, eval_prompts=[], **kw)
    with pytest.raises(TypeError, match="adaptive_kl"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, adaptive_kl=0.1, **kw)
    with pytest.raises(TypeError, match="reward_fn"):
        train_ppo(model, tokenizer, PROMPTS, "gold", **kw)
    with pytest.raises(TypeError, match="value_model"):
        train_ppo(model, tokenizer, PROMPTS, _a_share, value_model=model, **kw)
    no_pad = char_tokenizer()
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        train_ppo(model, no_pad, PROMPTS, _a_share, **kw)
    with pytest.raises(ValueError, match="reward_fn returned shape"):
        train_ppo(model, tokenizer, PROMPTS, lambda c, p: np.zeros(len(c) + 1), **kw)
