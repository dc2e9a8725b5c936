r"""Reinforced Self-Training (ReST): grow a dataset from the policy, keep the best, fine-tune (Gulcehre et al., 2023).

"Reinforced Self-Training (ReST) for Language Modeling" (Gulcehre et al., 2023) decouples data generation
from learning, as in offline RL (the lecture notes, "Grow and Improve steps"):

- **Grow**: sample N completions per prompt from the current policy and annotate them with the reward:
  :math:`\mathcal D_g = \{(x^i, y^i)\}`, :math:`y^i \sim \pi_\theta(\cdot\mid x^i)` (optionally
  :math:`\cup\ \mathcal D`, the original data);
- **Improve** (I times per Grow): keep what scores at least a threshold,
  :math:`F(x, y; \tau) = \mathbb 1_{R(x, y) \ge \tau}`, and fine-tune on it with the SFT loss,

  .. math:: J(\theta) = \mathbb E_{(x, y)\sim\mathcal D_g}\big[F(x, y; \tau_i)\,\mathcal L_{SFT}(x, y; \theta)\big],

  with rising thresholds :math:`\tau_1 < \tau_2 < \dots` (the paper asks :math:`\tau_1` to exceed the
  mean reward of :math:`\mathcal D_g`), so each Improve step imitates a better slice of the same data.

One Grow feeds several Improve steps: the expensive sampling is reused. With one Grow, one Improve step and
a threshold it is rejection-sampling fine-tuning (Llama 2); with the best of n kept it is best-of-n
distillation. The Improve step is ``rlhf_edu.train.sft``, unchanged. Chapter 8 ("ReST and best-of-N").
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rlhf_edu.lm import check_vocabulary, context_length, encode_prompts, generate
from rlhf_edu.train.data import prompt_completion_pairs
from rlhf_edu.train.evaluation import evaluator, sequence_kl
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_optimizer_settings, run_steps
from rlhf_edu.train.rollouts import prepare_online_run
from rlhf_edu.train.sft import train_sft
from rlhf_edu.validation import check_integer, check_positive

__all__ = ["train_rest"]


def _check_thresholds(thresholds, improve_steps):
    try:
        values = [float(t) for t in thresholds]
    except TypeError:
        raise TypeError(f"thresholds must be a sequence of numbers, got {type(thresholds).__name__}") from None
    if len(values) != improve_steps:
        raise ValueError(f"thresholds must hold one threshold per improve step ({improve_steps}), got {len(values)}")
    if any(not math.isfinite(t) for t in values):
        raise ValueError(f"thresholds must be finite numbers, got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"thresholds must rise strictly from one improve step to the next (ReST's "
                         f"tau_(i+1) > tau_i), got {values}")
    return values


def train_rest(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    *,
    grow_steps: int = 2,
    improve_steps: int = 3,
    samples_per_prompt: int = 8,
    thresholds=(0.5, 0.6, 0.7),
    examples=None,
    epochs: int = 2,
    batch_size: int = 16,
    lr: float = 1e-3,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    ref_model=None,
    gold_reward_fn=None,
    eval_prompts=None,
    eval_every: int = 1,
    eval_samples: int = 4,
    disable_dropout: bool = True,
    seed: int = 0,
    device="auto",
    dtype="float32",
    progress: bool = True,
):
    r"""Train ``policy`` with ReST on ``prompts`` scored by ``reward_fn``; returns ``(policy, history)``.

    For each of ``grow_steps`` Grow steps: sample ``samples_per_prompt`` completions for EVERY prompt of
    ``prompts`` (plus the given ``examples``, if any), score them; then for each of ``improve_steps``
    Improve steps ``i``: keep the pairs with reward ``>= thresholds[i]`` and fine-tune on them with
    ``rlhf_edu.train.sft`` (``epochs`` passes, minibatches of ``batch_size``, AdamW at ``lr``, loss on the
    completion tokens). An Improve step whose filter keeps nothing trains on nothing (``loss`` NaN).

    Args:
        policy, tokenizer, reward_fn: as ``rlhf_edu.train.grpo``.
        prompts: the contexts :math:`x \sim \mathcal D` of the Grow step (each is used every Grow).
        grow_steps: G >= 1 Grow steps.
        improve_steps: I >= 1 Improve steps per Grow.
        samples_per_prompt: N completions per prompt and Grow step.
        thresholds: one reward threshold per Improve step, rising strictly (the same thresholds in every
            Grow). The defaults suit the sentiment task's gold reward, whose levels from one half up
            are 0.5 (neutral), 0.73, 0.88, 0.95 (one, two, three more positive than negative words, no
            defect; so 0.6 and 0.7 keep the same pairs there); choose them for your reward's scale.
        examples: optional original data :math:`\mathcal D` (``(prompt, completion)`` tuples or records)
            added to every :math:`\mathcal D_g` before filtering, as in the paper (None: only samples).
        epochs, batch_size, lr: the SFT of each Improve step. Under ``torchrun --nproc_per_node N``
            ``batch_size`` is per process; each process samples the Grow step for its slice of ``prompts``
            with its own stream (seed + rank), :math:`\mathcal D_g` is gathered on every process, and each
            Improve step's SFT runs data-parallel (``rlhf_edu.train.distributed``).
        max_new_tokens, temperature: sampling of the Grow step (and of the evaluation).
        ref_model: the reference for the logged KL; default a frozen deep copy of ``policy`` as given.
        gold_reward_fn: ``fn(completions, prompts) -> (B,)`` logged as ``gold_reward`` (never trained on).
        eval_prompts, eval_samples: evaluate before every ``eval_every``-th Improve step and at the end.
        disable_dropout: dropout off in the policy and the reference (default), as ``rlhf_edu.train.grpo``,
            and in the SFT of the Improve steps (``train_sft``'s option of the same name).
        seed, device, dtype, progress: as ``rlhf_edu.train.grpo`` (``dtype`` also for the Improve steps' SFT).

    Returns:
        ``(policy, history)``, one row per Improve step (``step`` counts them over the run): ``grow``,
        ``improve``, ``threshold``, ``kept`` (pairs that pass the filter), ``kept_fraction``, ``loss`` (mean
        SFT loss of the step), ``kept_reward`` (mean reward of the kept pairs); and, about the policy
        that sampled :math:`\mathcal D_g` (the same in every row of a Grow): ``reward`` and ``gold_reward``
        (means over the samples), ``kl`` (exact KL to ``ref_model`` summed over each sample's tokens,
        mean; see ``evaluate_policy``), ``entropy`` (mean summed token entropy), ``length``; ``seconds``,
        and ``eval_*`` columns as in ``train_grpo`` (measured BEFORE the Improve step's fine-tuning; the last
        row, ``step`` = ``grow_steps * improve_steps``, after training).

    Raises ``ValueError`` for thresholds that do not rise or do not match ``improve_steps``, empty
    ``prompts``, a tokenizer without a pad token, or prompts that do not fit the context.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> reward = lambda completions, prompts: [float(len(c)) for c in completions]
    >>> model, hist = train_rest(model, tok, ["3+4="], reward, grow_steps=1, improve_steps=2, thresholds=(1, 3),
    ...                    max_new_tokens=3, device="cpu", progress=False)
    >>> kept = hist["kept"]   # of the 8 samples of the one Grow step: a higher bar keeps no more
    >>> hist["threshold"].tolist(), bool(8 >= kept[0] >= kept[1] >= 0)
    ([1.0, 3.0], True)
    """
    grow_steps = check_integer("grow_steps", grow_steps, minimum=1)
    improve_steps = check_integer("improve_steps", improve_steps, minimum=1)
    samples_per_prompt = check_integer("samples_per_prompt", samples_per_prompt, minimum=1)
    thresholds = _check_thresholds(thresholds, improve_steps)
    epochs = check_integer("epochs", epochs, minimum=1)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    lr, _, _ = check_optimizer_settings(lr)
    check_vocabulary(policy, tokenizer)
    temperature = check_positive("temperature", temperature)
    eval_every = check_integer("eval_every", eval_every, minimum=1)
    eval_samples = check_integer("eval_samples", eval_samples, minimum=1)
    data_prompts, data_completions = ([], []) if examples is None else prompt_completion_pairs(examples)
    run = prepare_online_run(policy, tokenizer, prompts, reward_fn, gold_reward_fn=gold_reward_fn,
                             eval_prompts=eval_prompts, ref_model=ref_model, max_new_tokens=max_new_tokens, seed=seed,
                             device=device, disable_dropout=disable_dropout, dtype=dtype)
    prompts, eval_prompts, reward_fn, gold_fn = run.prompts, run.eval_prompts, run.reward_fn, run.gold_fn
    context = context_length(policy)
    longest = max(len(ids) for ids in encode_prompts(tokenizer, prompts))
    if context is not None and longest + max_new_tokens + 1 > context:  # Improve's SFT appends <eos> to each sample
        raise ValueError(
            f"ReST trains on its own samples with an <eos> after each: the longest prompt ({longest} tokens) + "
            f"max_new_tokens={max_new_tokens} + <eos> need {longest + max_new_tokens + 1} positions, but the "
            f"policy's context is {context}; use max_new_tokens <= {context - longest - 1} or shorter prompts")
    device, ref_model, parallel = run.device, run.ref_model, run.parallel
    autocast = run.autocast  # bfloat16: the forward passes under torch.autocast
    history = History("rest", dict(grow_steps=grow_steps, improve_steps=improve_steps,
                                   samples_per_prompt=samples_per_prompt, thresholds=thresholds, epochs=epochs,
                                   batch_size=batch_size, lr=lr, max_new_tokens=max_new_tokens,
                                   temperature=temperature, n_examples=len(data_prompts),
                                   disable_dropout=disable_dropout, seed=seed))
    sample_stream = run.sample_stream

    chunk = max(1, 256 // samples_per_prompt)  # prompts per generate call: at most ~256 rows at once
    grown = {}  # this Grow step's D_g, reused by its Improve steps

    def grow_dataset():
        # Grow: N samples per context from the current policy, annotated with the reward.
        sampled_prompts, sampled, kls, entropies, lengths = [], [], [], [], []
        mine = parallel.share_items(prompts)  # under torchrun: this process's slice, with its own stream
        for first in range(0, len(mine), chunk):
            rollout = generate(policy, tokenizer, mine[first:first + chunk], max_new_tokens,
                               temperature=temperature, num_samples=samples_per_prompt, generator=sample_stream)
            kl, entropy = sequence_kl(policy, ref_model, rollout.input_ids, rollout.attention_mask,
                                      rollout.completion_mask, temperature)
            sampled_prompts += rollout.prompts
            sampled += rollout.completions
            kls.append(kl.cpu())
            entropies.append(entropy.cpu())
            lengths.append(rollout.completion_lengths.float().cpu())
        if parallel.distributed:  # every process then holds the whole D_g, in rank order
            sampled_prompts, sampled = parallel.gather_items(sampled_prompts), parallel.gather_items(sampled)
            kls, entropies, lengths = ([torch.tensor(parallel.gather_items(torch.cat(x).tolist() if x else []))]
                                       for x in (kls, entropies, lengths))
        rewards = reward_fn(sampled, sampled_prompts)
        about_policy = dict(reward=float(rewards.mean()), kl=torch.cat(kls).mean(),
                            entropy=torch.cat(entropies).mean(), length=torch.cat(lengths).mean())
        if gold_fn is not None:
            about_policy["gold_reward"] = float(gold_fn(sampled, sampled_prompts).mean())
        # D_g U D: the original data is scored and filtered like the samples.
        if data_prompts:
            rewards = np.concatenate([rewards, reward_fn(list(data_completions), list(data_prompts))])
        return dict(prompts=sampled_prompts + list(data_prompts), completions=sampled + list(data_completions),
                    rewards=rewards, about_policy=about_policy)

    def train_step(grow_improve):
        nonlocal policy
        grow, improve, tau = grow_improve
        if improve == 0:
            with autocast:  # sampling and scoring: no backward
                grown.update(grow_dataset())
        rewards = grown["rewards"]
        # Improve: F(x, y; tau) = 1[R(x, y) >= tau], then the SFT loss on what passes.
        keep = np.flatnonzero(rewards >= tau)
        loss = math.nan
        if keep.size:
            kept = [(grown["prompts"][i], grown["completions"][i]) for i in keep]
            step = grow * improve_steps + improve
            policy, sft_history = train_sft(policy, tokenizer, kept, epochs=epochs, batch_size=batch_size, lr=lr,
                                      disable_dropout=disable_dropout, seed=seed + step, device=device,
                                      dtype=dtype, progress=False)
            loss = float(np.mean(sft_history["loss"]))
            policy.eval()
        return dict(grow=grow, improve=improve, threshold=tau, kept=keep.size, kept_fraction=keep.size / len(rewards),
                    loss=loss, kept_reward=float(rewards[keep].mean()) if keep.size else math.nan,
                    **grown["about_policy"])

    schedule = [(g, i, tau) for g in range(grow_steps) for i, tau in enumerate(thresholds)]
    run_steps(schedule, train_step, history=history, total=len(schedule), description="rest", parallel=parallel,
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_fn,
                                 reward_fn=reward_fn, num_samples=eval_samples, max_new_tokens=max_new_tokens,
                                 autocast=autocast),
              eval_every=eval_every, progress=progress, postfix=("loss", "kept"))
    policy.eval()
    return policy, history
