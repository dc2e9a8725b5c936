"""Measuring a policy: reward of its samples, exact KL to a reference, entropy, length.

Every trainer's history and the demo's table come from ``evaluate_policy``, so "gold reward" and "KL to
the SFT model" mean the same thing everywhere in the book. The ``eval_*`` columns of a history are its
numbers (``log_evaluation``), measured on a fixed schedule by the shared training loop (``evaluator``).

The KL is exact per token and summed over the completion:

.. math:: \\mathrm{KL}(\\pi \\| \\pi_{ref})(x) \\approx \\frac{1}{N}\\sum_{i=1}^{N} \\sum_t
          \\sum_v \\pi(v \\mid s_{i,t}) \\log \\frac{\\pi(v \\mid s_{i,t})}{\\pi_{ref}(v \\mid s_{i,t})}

with states :math:`s_{i,t}` visited by completions :math:`y_i \\sim \\pi`: a Monte Carlo estimate over
sequences (the sequence-level KL that appears in the RLHF objective) with the per-token expectation taken
exactly over the vocabulary, so it is never negative (unlike the k1 sample estimate).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from rlhf_edu.lm import generate, position_ids_from_mask
from rlhf_edu.train.rollouts import as_reward_fn

__all__ = ["evaluate_policy", "sequence_kl", "log_evaluation", "evaluator"]


@torch.no_grad()
def sequence_kl(policy, ref_model, input_ids, attention_mask, completion_mask, temperature: float = 1.0):
    """``(B,)`` exact KL(policy || ref) summed over each row's completion tokens (see the module docstring).

    Also returns the ``(B,)`` summed per-token entropy of the policy on the same positions.
    """
    position_ids = position_ids_from_mask(attention_mask)
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    logp = torch.log_softmax(policy(**kwargs).logits[:, :-1].float() / temperature, dim=-1)
    logq = torch.log_softmax(ref_model(**kwargs).logits[:, :-1].float() / temperature, dim=-1)
    p = logp.exp()
    # p log p and p log(p/q) are 0 where p = 0: a -inf logit (a masked token) would otherwise give 0 * inf = NaN
    zero = torch.zeros_like(p)
    kl_tok = torch.where(p > 0, p * (logp - logq), zero).sum(-1)  # position t-1 predicts token t
    ent_tok = -torch.where(p > 0, p * logp, zero).sum(-1)
    m = completion_mask[:, 1:].to(kl_tok.dtype)
    return (kl_tok * m).sum(-1), (ent_tok * m).sum(-1)


@torch.no_grad()
def evaluate_policy(
    policy,
    tokenizer,
    prompts,
    reward_fn=None,
    *,
    ref_model=None,
    gold_reward_fn=None,
    num_samples: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int = 1234,
    batch_size: int = 64,
    n_examples: int = 3,
) -> dict:
    """Sample from ``policy`` on ``prompts`` and measure it; returns a dict of floats and a few samples.

    Keys: ``reward`` (mean of ``reward_fn``; a callable or ``RewardModel``), ``gold_reward`` (mean of
    ``gold_reward_fn``), ``kl`` (mean exact sequence KL to ``ref_model``), ``entropy`` (mean summed token
    entropy), ``length`` (mean completion tokens, EOS included), ``examples`` (the first ``n_examples``
    ``(prompt, completion)`` pairs). Sampling uses its own seeded generator, so evaluating does not
    disturb the training run's random stream, and two policies are compared on the same draws.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: nothing to evaluate")
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    rewards, golds, kls, ents, lengths, examples = [], [], [], [], [], []
    reward_fn = None if reward_fn is None else as_reward_fn(reward_fn, tokenizer)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        r = generate(policy, tokenizer, chunk, max_new_tokens, temperature=temperature, num_samples=num_samples,
                     generator=generator)
        if reward_fn is not None:
            rewards.append(reward_fn(r.completions, r.prompts))
        if gold_reward_fn is not None:
            golds.append(np.asarray(gold_reward_fn(r.completions, r.prompts), dtype=float))
        if ref_model is not None:
            kl, ent = sequence_kl(policy, ref_model, r.input_ids, r.attention_mask, r.completion_mask, temperature)
            kls.append(kl.cpu().numpy())
            ents.append(ent.cpu().numpy())
        lengths.append(r.completion_lengths.float().cpu().numpy())
        examples.extend(zip(r.prompts, r.completions))
    policy.train(was_training)
    out = {"length": float(np.concatenate(lengths).mean()), "examples": examples[:n_examples]}
    if rewards:
        out["reward"] = float(np.concatenate(rewards).mean())
    if golds:
        out["gold_reward"] = float(np.concatenate(golds).mean())
    if kls:
        out["kl"] = float(np.concatenate(kls).mean())
        out["entropy"] = float(np.concatenate(ents).mean())
    return out


def log_evaluation(policy, tokenizer, eval_prompts, *, ref_model=None, gold_reward_fn=None, reward_fn=None,
                   num_samples=4, max_new_tokens=48, temperature=1.0, seed=1234):
    """``{"eval_gold_reward", "eval_reward", "eval_kl", "eval_entropy", "eval_length"}`` of the policy's samples.

    Samples ``num_samples`` completions per prompt of ``eval_prompts`` with ``evaluate_policy`` (its own
    seeded generator: the training stream is untouched and every evaluation of a run sees the same
    random numbers) and renames its keys; keys whose function is not given are left out. ``eval_kl`` is
    the exact sequence KL to ``ref_model`` (the SFT model by default in every trainer).
    """
    res = evaluate_policy(policy, tokenizer, eval_prompts, reward_fn, ref_model=ref_model,
                          gold_reward_fn=gold_reward_fn, num_samples=num_samples, max_new_tokens=max_new_tokens,
                          temperature=temperature, seed=seed)
    return {f"eval_{k}": v for k, v in res.items() if k != "examples"}


def evaluator(policy, tokenizer, eval_prompts, *, ref_model=None, gold_reward_fn=None, reward_fn=None,
              num_samples=4, max_new_tokens=48, temperature=1.0, seed=1234, autocast=None):
    """A no-argument function returning ``log_evaluation`` of ``policy`` as it is when called; None when
    ``eval_prompts`` is None (no evaluation). What every trainer hands to ``rlhf_edu.train.loop.run_steps``.
    ``autocast``: the run's ``rlhf_edu.lm.MixedPrecision``, under which the evaluation samples and scores
    (None: the models' own precision).
    """
    if eval_prompts is None:
        return None
    autocast = contextlib.nullcontext() if autocast is None else autocast

    def evaluate():
        with autocast:
            return log_evaluation(policy, tokenizer, eval_prompts, ref_model=ref_model,
                                  gold_reward_fn=gold_reward_fn, reward_fn=reward_fn, num_samples=num_samples,
                                  max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)

    return evaluate
