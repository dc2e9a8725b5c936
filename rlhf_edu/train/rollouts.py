"""Sampling and scoring for the online trainers (PPO, GRPO, RLOO, ReST, best-of-N).

One step of online RLHF starts the same way for every method: sample completions from the current
policy, score them with the reward, and record the log-probabilities of the sampled tokens under the
policy that sampled them ("old") and under the frozen reference. ``collect_rollouts`` does exactly that,
so the trainers differ only in how they turn the scores into a loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import RewardModel, Rollout, generate, prompt_completion_batch, resolve_device, set_seed, token_logprobs
from rlhf_edu.train.prompts import check_prompts

__all__ = ["ScoredRollout", "OnlineRun", "prepare_online_run", "as_reward_fn", "check_rewards", "frozen_copy", "collect_rollouts",
           "sampled_kl"]


@dataclass
class ScoredRollout:
    """A rollout with what the losses need.

    Attributes:
        rollout: the sampled batch (``rlhf_edu.lm.Rollout``), on the policy's device.
        rewards: ``(B,)`` float tensor, the training reward of each completion (a proxy when it comes from
            a learned reward model).
        logp_old: ``(B, T)`` log-probs of the tokens under the sampling policy (0 off the completion).
        logp_ref: ``(B, T)`` log-probs under the reference model, or None when no reference is given.
        gold_rewards: ``(B,)`` NumPy array of the gold reward, when a gold reward function is given.
    """

    rollout: Rollout
    rewards: torch.Tensor
    logp_old: torch.Tensor
    logp_ref: torch.Tensor | None = None
    gold_rewards: np.ndarray | None = None


def check_rewards(scores, completions, prompts, source: str = "reward_fn") -> np.ndarray:
    """``scores`` as a float64 ``(B,)`` array, after checking it is one finite number per completion.

    Raises ``ValueError`` naming ``source``, the index, the prompt and the completion of the first bad
    score (NaN, +-inf, or a value beyond float32, in which the trainers compute), or the shape, when it
    is not ``(len(completions),)``. Called on every batch a trainer scores, before any update, so a
    broken reward function never reaches the model.

    >>> check_rewards([1.0, float("nan")], ["7", "8"], ["3+4=", "3+4="])
    Traceback (most recent call last):
    ...
    ValueError: reward_fn returned nan for completion 1 (prompt '3+4=', completion '8'): rewards must be finite numbers, one per completion; the model was not updated
    """
    try:
        out = np.asarray(scores, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source} must return one number per completion, got {type(scores).__name__}") from exc
    if out.shape != (len(completions),):
        raise ValueError(f"{source} returned shape {out.shape}, expected ({len(completions)},): one number per "
                         "completion, in the order of the completions")
    bad = ~np.isfinite(out) | (np.abs(np.nan_to_num(out)) > np.finfo(np.float32).max)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{source} returned {float(out[i])} for completion {i} (prompt {prompts[i]!r}, completion "
                         f"{completions[i]!r}): rewards must be finite numbers, one per completion; "
                         "the model was not updated")
    return out


def as_reward_fn(reward, tokenizer=None, name: str = "reward_fn"):
    """A callable ``fn(completions, prompts) -> np.ndarray`` from a callable or a ``RewardModel``.

    A ``RewardModel`` scores ``prompt + completion`` (with EOS, as it was trained) in batches without
    gradient, on its own device. Both kinds are checked on every call (``check_rewards``): one finite
    number per completion, else ``ValueError`` naming the prompt and completion.
    """
    if isinstance(reward, RewardModel):
        if tokenizer is None:
            raise ValueError("a RewardModel needs the tokenizer to score text")
        rm = reward

        @torch.no_grad()
        def score(completions, prompts):
            device = next(rm.parameters()).device
            batch = prompt_completion_batch(tokenizer, list(prompts), list(completions), device=device)
            was_training = rm.training
            rm.eval()
            out = rm(batch.input_ids, batch.attention_mask).float().cpu().numpy()
            rm.train(was_training)
            return check_rewards(out, list(completions), list(prompts), f"the reward model ({name})")

        return score
    if not callable(reward):
        raise TypeError(f"{name} must be callable or a RewardModel, got {type(reward).__name__}")

    def call(completions, prompts):
        return check_rewards(reward(list(completions), list(prompts)), list(completions), list(prompts), name)

    return call


def frozen_copy(model):
    """A deep copy of ``model`` in eval mode with gradients off: the reference policy of RLHF."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


@torch.no_grad()
def collect_rollouts(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    *,
    ref_model=None,
    num_samples: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k=None,
    generator=None,
    gold_reward_fn=None,
) -> ScoredRollout:
    """Sample ``num_samples`` completions per prompt, score them, and record old and reference log-probs.

    ``reward_fn`` and ``gold_reward_fn`` are callables ``(completions, prompts) -> array`` (wrap a
    ``RewardModel`` with ``as_reward_fn`` first). ``logp_old`` is recomputed with a forward pass at the
    sampling temperature rather than taken from the sampler, so it matches what the loss recomputes
    bit for bit (the ratio is exactly 1 before the first update). Raises ``ValueError`` naming the prompt
    and completion when a reward is not one finite number per completion (``check_rewards``).
    """
    rollout = generate(policy, tokenizer, list(prompts), max_new_tokens, temperature=temperature, top_k=top_k,
                       num_samples=num_samples, generator=generator)
    device = rollout.input_ids.device
    was_training = policy.training
    policy.eval()
    logp_old = token_logprobs(policy, rollout.input_ids, rollout.attention_mask, temperature=temperature)
    policy.train(was_training)
    logp_ref = None
    if ref_model is not None:
        logp_ref = token_logprobs(ref_model, rollout.input_ids, rollout.attention_mask, temperature=temperature)
    mask = rollout.completion_mask.to(logp_old.dtype)
    logp_old = logp_old * mask
    logp_ref = None if logp_ref is None else logp_ref * mask
    # every reward is checked here, before any update: one finite number per completion
    scores = check_rewards(reward_fn(rollout.completions, rollout.prompts), rollout.completions, rollout.prompts)
    rewards = torch.as_tensor(scores.astype(np.float32), device=device)
    gold = None
    if gold_reward_fn is not None:
        gold = check_rewards(gold_reward_fn(rollout.completions, rollout.prompts), rollout.completions,
                             rollout.prompts, "gold_reward_fn")
    return ScoredRollout(rollout, rewards, logp_old, logp_ref, gold)


def sampled_kl(batch: ScoredRollout) -> torch.Tensor:
    r"""``(B,)`` estimate of :math:`\mathrm{KL}(\pi_{old}\|\pi_{ref})` per completion: k3 summed over its tokens.

    :math:`\sum_t \big(e^{\delta_t} - 1 - \delta_t\big)` with :math:`\delta_t = \log\pi_{ref}(y_t\mid\cdot)
    - \log\pi_{old}(y_t\mid\cdot)` on the sampled tokens (Schulman's k3, ``rlhf_edu.torch.kl_estimate``):
    unbiased for the sequence KL, never negative, and of lower variance than the plain log-ratio k1. The
    ``kl`` column of PPO, GRPO and RLOO is its batch mean, whatever estimator their penalty uses, so the
    column means the same in every online trainer (ReST logs the exact per-token KL of the same samples,
    and every ``eval_kl`` is exact; ``rlhf_edu.train.evaluation``).
    """
    if batch.logp_ref is None:
        raise ValueError("the rollout has no reference log-probs: collect it with ref_model=...")
    mask = batch.rollout.completion_mask.to(batch.logp_old.dtype)
    return (rt.kl_estimate(batch.logp_old, batch.logp_ref, "k3") * mask).sum(-1)


@dataclass
class OnlineRun:
    """What an online trainer (GRPO, RLOO, ReST) starts from; made by ``prepare_online_run``.

    Attributes:
        prompts, eval_prompts: the checked prompt lists (``eval_prompts`` may be None).
        reward_fn, gold_fn: ``(completions, prompts) -> np.ndarray`` (``gold_fn`` may be None).
        device: the resolved device; the policy is on it, in eval mode (no dropout: the policy that
            samples and the policy the loss sees are the same function).
        ref_model: the frozen reference on the device (a copy of the policy as given, by default).
        prompt_stream: CPU generator of the prompt draws; ``sample_stream``: the sampler's, on the device.
    """

    prompts: list
    eval_prompts: list | None
    reward_fn: object
    gold_fn: object
    device: torch.device
    ref_model: torch.nn.Module
    prompt_stream: torch.Generator
    sample_stream: torch.Generator


def prepare_online_run(policy, tokenizer, prompts, reward_fn, *, gold_reward_fn=None, eval_prompts=None,
                       ref_model=None, max_new_tokens: int, seed: int, device="auto") -> OnlineRun:
    """Check the prompts against the context, wrap the rewards, seed, place the models: an ``OnlineRun``.

    Raises ``ValueError`` for empty prompts, prompts that do not fit the context with ``max_new_tokens``,
    or a tokenizer without a pad token; ``TypeError`` for a reward that is neither callable nor a
    ``RewardModel``.
    """
    prompts = check_prompts(policy, tokenizer, prompts, max_new_tokens)
    if eval_prompts is not None:
        eval_prompts = check_prompts(policy, tokenizer, eval_prompts, max_new_tokens, name="eval_prompts")
    reward_fn = as_reward_fn(reward_fn, tokenizer)
    gold_fn = None if gold_reward_fn is None else as_reward_fn(gold_reward_fn, tokenizer, "gold_reward_fn")
    set_seed(seed)
    device = resolve_device(device)
    policy.to(device)
    ref_model = frozen_copy(policy) if ref_model is None else ref_model.to(device).eval()
    policy.eval()
    return OnlineRun(prompts, eval_prompts, reward_fn, gold_fn, device, ref_model,
                     prompt_stream=torch.Generator().manual_seed(seed),
                     sample_stream=torch.Generator(device=device).manual_seed(seed))
