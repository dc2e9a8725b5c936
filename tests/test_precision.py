"""bfloat16 mixed precision (rlhf_edu.lm.precision): every trainer takes ``dtype="bfloat16"``.

On the CPU (CPU autocast runs bfloat16): each trainer takes 1-2 steps of the book's tiny model under
autocast; the weights stay float32 and finite, the losses that reach ``backward`` are float32 and finite.
The CUDA test (a few DPO and GRPO steps on the GPU) is skipped with a reason on a machine without CUDA.
"""

import math

import pytest
import torch

import rlhf_edu.train.distributed as distributed
from rlhf_edu.lm import (MixedPrecision, RewardModel, ValueModel, char_tokenizer, mixed_precision, resolve_dtype,
                         tiny_causal_lm, token_logprobs)
from rlhf_edu.train import (sample_best_of_n, train_dpo, train_grpo, train_kto, train_orpo, train_ppo, train_rest,
                            train_reward_model, train_rloo, train_sft, train_simpo)

PAIRS = [{"prompt": f"{a}+{b}=", "chosen": f"{a + b}.", "rejected": f"{a + b + 1}."} for a, b in
         ((1, 2), (3, 4), (2, 2), (5, 1))]
PROMPTS = [p["prompt"] for p in PAIRS]


def reward(completions, prompts):
    return [float(c.startswith("3")) for c in completions]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def small(tok, seed=0):
    return tiny_causal_lm(tok, d_model=32, n_layer=1, max_length=32, seed=seed)


@pytest.fixture
def loss_dtypes(monkeypatch):
    """The dtypes of the losses the trainers hand to backward (every trainer goes through the single-process
    ``DataParallel``: ``optimizer_step``, or PPO's ``check_finite_loss``)."""
    seen = []
    step, check = distributed.optimizer_step, distributed.check_finite_loss

    def recording_step(optimizer, loss, *args, **kwargs):
        seen.append(loss.dtype)
        return step(optimizer, loss, *args, **kwargs)

    def recording_check(loss, *args, **kwargs):
        seen.append(loss.dtype)
        return check(loss, *args, **kwargs)

    monkeypatch.setattr(distributed, "optimizer_step", recording_step)
    monkeypatch.setattr(distributed, "check_finite_loss", recording_check)
    return seen


def test_resolve_dtype_accepts_float32_and_bfloat16_and_names_dtype_otherwise():
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    for bad in ("float16", torch.float16, "int8", "bf-16"):
        with pytest.raises(ValueError, match="dtype"):
            resolve_dtype(bad, "cpu")
    with pytest.raises(TypeError, match="dtype"):
        resolve_dtype(16, "cpu")


def test_mixed_precision_is_autocast_for_bfloat16_and_nothing_for_float32():
    with mixed_precision("float32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    autocast = mixed_precision("bfloat16", "cpu")
    assert isinstance(autocast, MixedPrecision) and autocast.enabled
    with autocast:
        with autocast:  # one object, nested and reused
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")


def test_log_probs_rewards_and_values_leave_the_models_in_float32(tok):
    model = small(tok)
    ids = torch.tensor([[1, 31, 32, 33]])
    with mixed_precision("bfloat16", "cpu"):
        assert model(ids).logits.dtype == torch.bfloat16  # the matmuls do run in bfloat16
        outputs = [token_logprobs(model, ids), RewardModel(small(tok), seed=0)(ids),
                   ValueModel(small(tok), seed=0)(ids)]
    assert all(x.dtype == torch.float32 for x in outputs)


CPU = dict(device="cpu", dtype="bfloat16", progress=False, seed=0)
OFFLINE = dict(batch_size=2, lr=1e-2, **CPU)  # 4 records: 2 steps
ONLINE = dict(steps=1, max_new_tokens=3, lr=1e-2, **CPU)
TRAINERS = {
    "sft": lambda tok: train_sft(small(tok), tok, [(p["prompt"], p["chosen"]) for p in PAIRS], **OFFLINE),
    "reward_model": lambda tok: train_reward_model(RewardModel(small(tok), seed=0), tok, PAIRS, **OFFLINE),
    "dpo": lambda tok: train_dpo(small(tok), tok, PAIRS, **OFFLINE),
    "kto": lambda tok: train_kto(small(tok), tok, [{"prompt": p["prompt"], "completion": p[k], "label": k == "chosen"}
                                                   for p in PAIRS[:2] for k in ("chosen", "rejected")], **OFFLINE),
    "simpo": lambda tok: train_simpo(small(tok), tok, PAIRS, **OFFLINE),
    "orpo": lambda tok: train_orpo(small(tok), tok, PAIRS, **OFFLINE),
    "grpo": lambda tok: train_grpo(small(tok), tok, PROMPTS, reward, group_size=2, prompts_per_step=2, **ONLINE),
    "rloo": lambda tok: train_rloo(small(tok), tok, PROMPTS, reward, group_size=2, prompts_per_step=2, **ONLINE),
    "ppo": lambda tok: train_ppo(small(tok), tok, PROMPTS, RewardModel(small(tok, 1), seed=0), batch_size=4,
                                 minibatch_size=4, ppo_epochs=1, **ONLINE),
    "rest": lambda tok: train_rest(small(tok), tok, PROMPTS, lambda c, p: [1.0] * len(c), grow_steps=1,
                                   improve_steps=1, thresholds=(0.5,), samples_per_prompt=2, batch_size=4, max_new_tokens=3, lr=1e-2,
                                   **CPU),
}


@pytest.mark.parametrize("name", list(TRAINERS))
def test_every_trainer_takes_bfloat16_steps_with_float32_weights_and_losses(name, tok, loss_dtypes):
    model, history = TRAINERS[name](tok)
    assert all(p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in model.parameters())
    assert loss_dtypes and set(loss_dtypes) == {torch.float32}, loss_dtypes
    losses = [x for x in history["loss"] if not math.isnan(x)]  # ReST logs NaN when it keeps nothing
    assert len(losses) >= 1 and all(math.isfinite(x) for x in losses)


def test_best_of_n_samples_in_bfloat16(tok):
    out = sample_best_of_n(small(tok), tok, PROMPTS[:2], reward, n=2, max_new_tokens=3, device="cpu",
                           dtype="bfloat16")
    assert out.all_rewards.shape == (2, 2)


def test_dpo_starts_at_log_2_and_near_the_float32_run(tok):
    # step 0: policy == reference, computed by the same bfloat16 arithmetic, so the loss is log 2
    # (tolerance 1e-3: a bfloat16 log-prob sum differing between the two passes would show as ~1e-2)
    runs = {dtype: train_dpo(small(tok), tok, PAIRS, sft_weight=0.0, **{**OFFLINE, "dtype": dtype})[1]
            for dtype in ("float32", "bfloat16")}
    assert runs["bfloat16"].first("loss") == pytest.approx(math.log(2), abs=1e-3)
    assert runs["float32"].first("loss") == pytest.approx(math.log(2), abs=1e-6)


def test_sft_first_loss_in_bfloat16_is_close_to_float32(tok):
    # bfloat16 keeps 8 bits of mantissa: each logit is off by up to ~2^-9 relative, a per-token NLL of
    # ~log(vocab) = 4 nats by ~0.01-0.02; the mean over the batch's tokens stays within 0.05 (measured: 2e-4).
    examples = [(p["prompt"], p["chosen"]) for p in PAIRS]
    first = {dtype: train_sft(small(tok), tok, examples, **{**OFFLINE, "dtype": dtype})[1]["loss"][0]
             for dtype in ("float32", "bfloat16")}
    assert abs(first["bfloat16"] - first["float32"]) < 0.05, first


def test_a_bad_dtype_is_a_value_error_naming_dtype(tok):
    with pytest.raises(ValueError, match="dtype"):
        train_dpo(small(tok), tok, PAIRS, **{**OFFLINE, "dtype": "float16"})
    with pytest.raises(ValueError, match="dtype"):
        train_grpo(small(tok), tok, PROMPTS, reward, **{**ONLINE, "dtype": "half-ish"})


def test_a_model_loaded_in_bfloat16_trains_with_float32_log_probs(tok, loss_dtypes):
    model, history = train_dpo(small(tok).to(torch.bfloat16), tok, PAIRS, sft_weight=0.0,
                               **{**OFFLINE, "dtype": "float32"})
    assert next(model.parameters()).dtype == torch.bfloat16  # trained as given: weights and AdamW state bf16
    assert set(loss_dtypes) == {torch.float32}
    assert history.first("loss") == pytest.approx(math.log(2), abs=1e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_short_bfloat16_run_on_the_gpu(tok, loss_dtypes):
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bfloat16 (older than Ampere)")
    gpu = dict(device="cuda", dtype="bfloat16", progress=False, seed=0, lr=1e-2)
    policy, history = train_dpo(small(tok), tok, PAIRS * 4, sft_weight=0.0, batch_size=4, **gpu)
    assert next(policy.parameters()).device.type == "cuda"
    assert history.first("loss") == pytest.approx(math.log(2), abs=1e-3)
    assert history.last("margin") > 0, "4 DPO steps at lr 1e-2 did not separate chosen from rejected"
    policy, history = train_grpo(small(tok), tok, PROMPTS, reward, group_size=4, prompts_per_step=2, steps=3,
                                 max_new_tokens=3, **gpu)
    assert all(p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in policy.parameters())
    assert len(history) == 3 and all(math.isfinite(x) for x in history["loss"])
    assert set(loss_dtypes) == {torch.float32}
