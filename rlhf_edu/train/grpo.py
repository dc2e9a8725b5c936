r"""Group Relative Policy Optimization (GRPO): PPO without a value model (Shao et al., 2024, DeepSeekMath).

For each prompt :math:`q` of a batch, GRPO samples a group of :math:`G` completions
:math:`o_1..o_G \sim \pi_{\theta_{old}}(\cdot \mid q)`, scores them, and uses the group itself as the
baseline: every token of completion :math:`i` gets the normalised reward (algorithm 1, lines 10-13)

.. math:: \hat A_{i,t} = \tilde r_i = \frac{r_i - \mathrm{mean}(r_1..r_G)}{\mathrm{std}(r_1..r_G)} .

The policy then takes :math:`\mu` gradient steps on the clipped objective with a KL penalty to the
reference model inside the loss (eq. 3, with the k3 estimator of eq. 4):

.. math:: \mathcal J_{GRPO}(\theta) = \mathbb E\Big[\frac1G\sum_{i=1}^G\frac1{|o_i|}\sum_{t=1}^{|o_i|}
    \min\big(\rho_{i,t}\hat A_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon)\hat A_{i,t}\big)
    - \beta\, \mathbb D_{KL,t}\Big], \qquad \rho_{i,t} = \frac{\pi_\theta(o_{i,t}\mid q, o_{i,<t})}
    {\pi_{\theta_{old}}(o_{i,t}\mid q, o_{i,<t})} .

With :math:`\mu = 1` the ratio is exactly 1 at the only step and the objective's gradient is the lecture
notes' :math:`\frac1G\sum_i\frac1{|o_i|}\sum_t (\hat A_{i,t} + \beta(\frac{\pi_{ref}}{\pi_\theta} - 1))
\nabla\log\pi_\theta`. The loss is ``rlhf_edu.torch.grpo_loss``; the advantages are
``rlhf_edu.torch.group_normalized_advantages``. Chapter 5 (GRPO and RL from verifiable rewards).

The 2025 family is a set of options of the same loop, each one changed line: GSPO's sequence ratio
(``importance_sampling="sequence"``), DAPO's clip-higher (``clip_eps_high``), token-mean aggregation
(``aggregation``), dynamic sampling (``dynamic_sampling``) and overlong handling (``mask_truncated``,
``overlong_buffer``), CISPO's capped weight (``loss="cispo"``), the batch std of REINFORCE++ / Lite PPO
(``scale="batch"``), Dr. GRPO (``std=None``, ``aggregation="dr_grpo"``).
"""

from __future__ import annotations

import numpy as np
import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import check_vocabulary, token_logprobs
from rlhf_edu.numpy.advantages import GROUP_SCALES, GROUP_STDS
from rlhf_edu.numpy.divergences import KL_ESTIMATORS
from rlhf_edu.numpy.policy_gradient import GRPO_AGGREGATIONS, GSPO_CLIP_EPS, GSPO_CLIP_EPS_HIGH, IMPORTANCE_SAMPLING
from rlhf_edu.train.evaluation import evaluator
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_optimizer_settings, run_steps
from rlhf_edu.train.rollouts import (
    concat_rollouts,
    prepare_online_run,
    sampled_kl,
    select_rows,
    truncated_rows,
)
from rlhf_edu.validation import check_choice, check_in_range, check_integer, check_nonnegative, check_positive

__all__ = ["KL_PLACEMENTS", "GRPO_LOSSES", "soft_overlong_penalty", "train_grpo"]

#: Where ``train_grpo`` puts the KL to the reference: in the loss (GRPO) or subtracted from the reward.
KL_PLACEMENTS = ("loss", "reward")

#: The policy losses of ``train_grpo``: the clipped ratio (GRPO, GSPO) or the capped, detached weight (CISPO).
GRPO_LOSSES = ("grpo", "cispo")


def soft_overlong_penalty(lengths, max_new_tokens: int, buffer: int) -> torch.Tensor:
    r"""DAPO's soft overlong punishment (Yu et al., 2025, eq. 13), added to the reward of each completion.

    .. math:: R_{length}(y) = \begin{cases} 0 & |y| \le L_{max} - L_{cache} \\
        \frac{(L_{max} - L_{cache}) - |y|}{L_{cache}} & L_{max} - L_{cache} < |y| \le L_{max} \\
        -1 & |y| > L_{max} \end{cases}

    with :math:`L_{max}` = ``max_new_tokens`` and :math:`L_{cache}` = ``buffer`` (1 <= buffer <= max_new_tokens):
    nothing for answers that end well inside the budget, a penalty growing linearly to -1 over the last
    ``buffer`` tokens. Lengths count generated tokens, EOS included; a sampler never exceeds
    :math:`L_{max}`, so the last case only guards longer inputs.

    >>> soft_overlong_penalty(torch.tensor([2, 6, 7, 8]), max_new_tokens=8, buffer=4).tolist()
    [0.0, -0.5, -0.75, -1.0]
    """
    max_new_tokens = check_integer("max_new_tokens", max_new_tokens, minimum=1)
    buffer = check_integer("buffer", buffer, minimum=1)
    if buffer > max_new_tokens:
        raise ValueError(f"buffer={buffer} is longer than max_new_tokens={max_new_tokens}: the penalty zone "
                         "is the last `buffer` tokens of the generation budget")
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    start = max_new_tokens - buffer
    return ((start - lengths) / buffer).clamp(min=-1.0, max=0.0)


def train_grpo(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    *,
    group_size: int = 8,
    prompts_per_step: int = 4,
    steps: int = 25,
    lr: float = 5e-4,
    beta: float = 0.04,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    num_iterations: int = 1,
    std: str | None = "population",
    scale: str = "group",
    aggregation: str = "sequence_mean",
    estimator: str = "k3",
    kl_in: str = "loss",
    loss: str = "grpo",
    importance_sampling: str = "token",
    sequence_clip_eps: float = GSPO_CLIP_EPS,
    sequence_clip_eps_high: float = GSPO_CLIP_EPS_HIGH,
    ratio_max: float = 5.0,
    dynamic_sampling: bool = False,
    max_redraws: int = 4,
    mask_truncated: bool = False,
    overlong_buffer: int | None = None,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    max_grad_norm: float | None = 1.0,
    ref_model=None,
    gold_reward_fn=None,
    eval_prompts=None,
    eval_every: int = 10,
    eval_samples: int = 4,
    disable_dropout: bool = True,
    seed: int = 0,
    device="auto",
    dtype="float32",
    progress: bool = True,
):
    r"""Train ``policy`` with GRPO on ``prompts`` scored by ``reward_fn``; returns ``(policy, history)``.

    One step (DeepSeekMath, algorithm 1, one pass of the inner loop): draw ``prompts_per_step`` prompts,
    sample ``group_size`` completions each from the current policy (:math:`\pi_{\theta_{old}}`), score
    them, compute the group-normalised advantages, then take ``num_iterations`` (:math:`\mu`) AdamW steps
    on ``rlhf_edu.torch.grpo_loss`` over the whole batch. The reference model stays fixed (the paper's
    outer loop, which resets it, is one iteration here).

    Args:
        policy: any Hugging Face causal LM (trained in place and returned; updated in train mode,
            sampled in eval mode).
        tokenizer: its tokenizer (needs a pad token).
        prompts: the prompt set (strings or token-id lists); each step draws from it with replacement.
        reward_fn: ``fn(completions, prompts) -> (B,)`` or a ``RewardModel``: the training reward.
        group_size: :math:`G` >= 2 completions per prompt (a group of one has no baseline).
        prompts_per_step: prompts per step; a step trains on ``prompts_per_step * group_size`` samples.
            Under ``torchrun --nproc_per_node N`` it is per process: each step draws ``N *
            prompts_per_step`` prompts alike on every process, process ``r`` samples the groups of its slice
            with its own stream (seed + r) and the gradients are averaged (``rlhf_edu.train.distributed``;
            each process's loss is weighted by its share of the global rows, or of the global tokens for
            ``"token_mean"``, so every ``aggregation`` is that of the global batch; per process stay
            ``scale="batch"`` (each process's own batch std) and ``dynamic_sampling`` (each process redraws
            for its own slice).
        steps: rollout batches (each followed by ``num_iterations`` optimiser steps).
        lr, max_grad_norm: AdamW learning rate; gradient-norm clip (None: no clip).
        beta: :math:`\beta \ge 0`, weight of the KL to the reference (0.04, as DeepSeekMath).
        clip_eps: :math:`\epsilon` of the clipped ratio.
        clip_eps_high: the upper :math:`\epsilon_{high}` of the clip (DAPO's clip-higher, 0.28 with
            ``clip_eps=0.2``); None: ``clip_eps``, a symmetric range.
        num_iterations: :math:`\mu`, policy updates per rollout batch. With 1 (the default, and what
            most GRPO runs use) the old log-probs are the current ones and nothing is ever clipped; they are
            then the loss's own log-probs, detached, instead of a second forward pass (as TRL), unless
            ``kl_in="reward"``, ``mask_truncated`` or kept dropout needs that pass.
        std: the denominator of the group normalisation: ``"population"`` (default, the notes'),
            ``"sample"`` (Bessel-corrected, as ``torch.std`` and TRL) or ``None`` (Dr. GRPO, Liu et al.
            2025: no division, the advantage is the reward minus the group mean).
        scale: ``"group"`` (default: each group's std) or ``"batch"`` (one std over the batch of
            group-centred rewards: REINFORCE++ with baseline, Lite PPO; see
            ``rlhf_edu.torch.group_normalized_advantages``).
        aggregation: ``"sequence_mean"`` (default, GRPO: mean over tokens, then over completions),
            ``"token_mean"`` (DAPO: every token weighs the same) or ``"dr_grpo"`` (sum over tokens divided
            by ``B * max_new_tokens``, a constant; Dr. GRPO).
        estimator: the per-token KL estimate: ``"k3"`` (default, GRPO's eq. 4), ``"k2"`` or ``"k1"``.
        kl_in: ``"loss"`` (default, GRPO: :math:`\beta\,\mathbb D_{KL}` per token in the loss) or
            ``"reward"`` (the PPO way: :math:`r_i - \beta \sum_t \mathbb D_{KL,t}` before normalising,
            with the same ``estimator`` on the sampled tokens). Never both.
        loss: ``"grpo"`` (default, ``rlhf_edu.torch.grpo_loss``) or ``"cispo"`` (MiniMax-M1, 2025:
            ``rlhf_edu.torch.cispo_loss``, REINFORCE weighted by the detached ratio capped at ``ratio_max``;
            the KL term, ``clip_fraction`` and ``aggregation`` as for GRPO; the clip options are ignored).
        importance_sampling: ``"token"`` (default, GRPO) or ``"sequence"`` (GSPO, Zheng et al. 2025: one
            length-normalised ratio per completion, clipped to ``[1 - sequence_clip_eps, 1 +
            sequence_clip_eps_high]``, GSPO's 3e-4 and 4e-4 by default). Only with ``loss="grpo"``. With
            ``num_iterations=1`` every ratio is 1 and GSPO's gradient equals GRPO's (sequence_mean).
        ratio_max: CISPO's cap on the weight (5.0; with ``loss="cispo"`` only).
        dynamic_sampling: DAPO's dynamic sampling: drop the groups whose rewards (as the advantages see
            them) are all equal, which would teach nothing but the KL, and draw ``prompts_per_step`` more
            prompts, up to ``max_redraws`` extra rounds, until ``prompts_per_step`` groups vary (extra varied
            groups of the last round are left out). If the cap is hit first, the step trains on the varied
            groups it has, or, with none at all, on the first batch (zero advantages) as plain GRPO would.
        max_redraws: the cap on extra sampling rounds per step (4).
        mask_truncated: DAPO's overlong filtering: completions that hit ``max_new_tokens`` without their end
            token (``rlhf_edu.train.rollouts.truncated_rows``) stay in their group's baseline but are left out
            of the loss (a cut answer is not a wrong answer). A step whose every completion was cut trains
            nothing.
        overlong_buffer: DAPO's soft overlong punishment: with an integer :math:`L_{cache}` the reward gets
            ``soft_overlong_penalty(length, max_new_tokens, overlong_buffer)``, 0 to -1 over the last
            ``overlong_buffer`` tokens of the budget (None: no penalty).
        max_new_tokens, temperature: sampling; the log-probs of the loss use the same temperature.
        ref_model: the frozen reference :math:`\pi_{ref}`; default a frozen deep copy of ``policy`` as given.
        gold_reward_fn: ``fn(completions, prompts) -> (B,)`` logged as ``gold_reward`` (never trained on).
        eval_prompts: prompts to evaluate on every ``eval_every`` steps (``eval_samples`` completions
            each, ``evaluate_policy`` with its own fixed seed); None: no evaluation.
        disable_dropout: set every dropout rate of the policy and the reference to 0 first (default;
            ``rlhf_edu.train.rollouts.policy_and_reference``, as in ``train_dpo``): the policy is updated in
            train mode and sampled (with its ``logp_old``) in eval mode, and only without dropout are the two
            the same function, so the ratio is exactly 1 at the first iteration. ``False`` keeps the dropout.
        seed: seeds the run (prompt draws, sampling and torch); the same seed gives the same history on CPU.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        dtype: ``"float32"`` (default) or ``"bfloat16"``: the precision of the forward passes, sampling
            included; as in ``train_dpo``.
        progress: show a progress bar.

    Returns:
        ``(policy, history)``, one history row per rollout batch (``step``): ``loss`` (mean over the
        ``num_iterations`` updates), ``reward`` (mean training reward of the batch), ``gold_reward``
        (with ``gold_reward_fn``), ``kl`` (mean over completions of :math:`\sum_t` k3 estimate of
        :math:`\mathrm{KL}(\pi_{\theta_{old}}\|\pi_{ref})` on the sampled tokens, nats per completion;
        ``rlhf_edu.train.rollouts.sampled_kl``, the same column in every online trainer),
        ``entropy`` (mean summed token entropy per completion, as ``evaluate_policy``), ``clip_fraction``
        (share of completion tokens whose ratio was clipped, mean over the updates), ``frac_zero_std_groups``
        (share of groups whose rewards are all equal, ``rlhf_edu.torch.constant_groups``: the same decision
        that gives them an advantage of exactly 0 in every dtype, so they teach nothing but the KL; with
        ``dynamic_sampling``, of every group drawn in the step), ``length`` (mean completion tokens of the
        training batch), ``frac_truncated`` (share of its completions cut by ``max_new_tokens``), ``seconds``;
        with ``dynamic_sampling`` also ``dropped_groups`` (constant groups left out) and ``redraws`` (extra
        rounds drawn); ``reward`` and ``gold_reward`` then average every completion drawn in the step. With
        ``eval_prompts`` the rows of steps 0,
        ``eval_every``, ... also hold ``eval_reward``, ``eval_gold_reward``, ``eval_kl`` (exact KL to
        ``ref_model``), ``eval_entropy``, ``eval_length``, measured BEFORE that step's update, and one last
        row (``step`` = ``steps``) holds the evaluation after training.

    Raises ``ValueError`` for ``group_size < 2``, ``beta < 0``, empty ``prompts``, a tokenizer without a pad
    token, prompts that do not fit the context with ``max_new_tokens``, an unknown option, an
    ``overlong_buffer`` outside [1, max_new_tokens], or ``importance_sampling="sequence"`` with ``loss="cispo"``.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> reward = lambda completions, prompts: [float(c.startswith("7")) for c in completions]
    >>> model, hist = train_grpo(model, tok, ["3+4="], reward, group_size=4, prompts_per_step=2, steps=2,
    ...                    max_new_tokens=3, device="cpu", progress=False)
    >>> len(hist), hist.first("clip_fraction"), abs(hist.first("kl")) < 1e-6   # step 0: policy = reference
    (2, 0.0, True)
    """
    group_size = check_integer("group_size", group_size, minimum=1)
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2: GRPO's baseline is the mean reward of a prompt's group, "
                         f"the sample itself included, so a group of one has advantage 0 "
                         f"(got group_size={group_size})")
    prompts_per_step = check_integer("prompts_per_step", prompts_per_step, minimum=1)
    steps = check_integer("steps", steps, minimum=1)
    lr, max_grad_norm, _ = check_optimizer_settings(lr, max_grad_norm)
    check_vocabulary(policy, tokenizer)
    beta = check_nonnegative("beta", beta)
    clip_eps = check_in_range("clip_eps", clip_eps, 0.0, 1.0, high_open=True)
    if clip_eps_high is not None:
        clip_eps_high = check_nonnegative("clip_eps_high", clip_eps_high)
    sequence_clip_eps = check_in_range("sequence_clip_eps", sequence_clip_eps, 0.0, 1.0, high_open=True)
    sequence_clip_eps_high = check_nonnegative("sequence_clip_eps_high", sequence_clip_eps_high)
    num_iterations = check_integer("num_iterations", num_iterations, minimum=1)
    check_choice("std", std, GROUP_STDS)
    check_choice("scale", scale, GROUP_SCALES)
    check_choice("aggregation", aggregation, GRPO_AGGREGATIONS)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_choice("kl_in", kl_in, KL_PLACEMENTS)
    check_choice("loss", loss, GRPO_LOSSES)
    check_choice("importance_sampling", importance_sampling, IMPORTANCE_SAMPLING)
    if loss == "cispo" and importance_sampling == "sequence":
        raise ValueError("importance_sampling='sequence' (GSPO's clipped sequence ratio) is an option of "
                         "loss='grpo'; CISPO weighs each token by its own capped ratio")
    ratio_max = check_positive("ratio_max", ratio_max)
    max_redraws = check_integer("max_redraws", max_redraws, minimum=0)
    max_new_tokens = check_integer("max_new_tokens", max_new_tokens, minimum=1)
    if overlong_buffer is not None:
        overlong_buffer = check_integer("overlong_buffer", overlong_buffer, minimum=1)
        if overlong_buffer > max_new_tokens:
            raise ValueError(f"overlong_buffer={overlong_buffer} is longer than max_new_tokens={max_new_tokens}: "
                             "the penalty zone is the last overlong_buffer tokens of the generation budget")
    temperature = check_positive("temperature", temperature)
    eval_every = check_integer("eval_every", eval_every, minimum=1)
    eval_samples = check_integer("eval_samples", eval_samples, minimum=1)
    run = prepare_online_run(policy, tokenizer, prompts, reward_fn, gold_reward_fn=gold_reward_fn,
                             eval_prompts=eval_prompts, ref_model=ref_model, max_new_tokens=max_new_tokens, seed=seed,
                             device=device, disable_dropout=disable_dropout, dtype=dtype)
    eval_prompts, reward_fn, gold_fn = run.eval_prompts, run.reward_fn, run.gold_fn
    ref_model, parallel = run.ref_model, run.parallel
    autocast = run.autocast  # bfloat16: the forward passes under torch.autocast
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)  # only the reward moves it
    model, optimizer = parallel.prepare(policy, optimizer)  # what the gradients flow through
    history = History("grpo", dict(group_size=group_size, prompts_per_step=prompts_per_step, steps=steps, lr=lr,
                                   beta=beta, clip_eps=clip_eps, clip_eps_high=clip_eps_high,
                                   num_iterations=num_iterations, std=std, scale=scale, aggregation=aggregation,
                                   estimator=estimator, kl_in=kl_in, loss=loss, importance_sampling=importance_sampling,
                                   sequence_clip_eps=sequence_clip_eps, sequence_clip_eps_high=sequence_clip_eps_high,
                                   ratio_max=ratio_max, dynamic_sampling=dynamic_sampling, max_redraws=max_redraws,
                                   mask_truncated=mask_truncated, overlong_buffer=overlong_buffer,
                                   max_new_tokens=max_new_tokens, temperature=temperature,
                                   disable_dropout=disable_dropout, seed=seed))
    # One update per batch: pi_old is the policy of that update, so its log-probs are the loss's own,
    # detached (the ratio is exactly 1); the rollout skips the forward pass that would recompute them.
    old_from_loss = num_iterations == 1 and kl_in == "loss" and not mask_truncated and disable_dropout

    def draw():
        """Algorithm 1, lines 5-9: a batch of prompts, G samples each from pi_old, and their scores."""
        batch = run.collect(policy, tokenizer, prompts_per_step, num_samples=group_size,
                            max_new_tokens=max_new_tokens, temperature=temperature, old_logprobs=not old_from_loss)
        scores = batch.rewards  # what the advantages see: the reward, shaped
        if overlong_buffer is not None:  # DAPO's soft overlong punishment
            scores = scores + soft_overlong_penalty(batch.rollout.completion_lengths, max_new_tokens,
                                                    overlong_buffer).to(scores.device)
        if kl_in == "reward":  # the KL leash as a per-sequence reward penalty instead of a loss term
            mask = batch.rollout.completion_mask
            scores = scores - beta * (rt.kl_estimate(batch.logp_old, batch.logp_ref, estimator) * mask).sum(-1)
        return batch, scores

    def train_step(step):
        batch, scores = draw()
        drawn = [batch]
        if dynamic_sampling:  # DAPO: keep the groups that vary, draw again until prompts_per_step of them
            batch, scores, drawn, dropped, redraws = _keep_varied_groups(
                batch, scores, draw, group_size, prompts_per_step, max_redraws, tokenizer.pad_token_id)
        rollout, mask = batch.rollout, batch.rollout.completion_mask

        # Lines 10-13: normalise within each group; every token of o_i gets A_i.
        groups = scores.view(-1, group_size)
        advantages = rt.group_normalized_advantages(groups, std=std, scale=scale).reshape(-1)
        constant = [rt.constant_groups(s.view(-1, group_size)) for s in
                    ([scores] if not dynamic_sampling else [b_scores for _, b_scores in drawn])]
        zero_std = torch.cat(constant).float().mean()  # the same decision that zeroes their advantages
        truncated = truncated_rows(rollout, max_new_tokens, tokenizer.eos_token_id)

        # DAPO's overlong filtering: a cut completion keeps its place in its group's baseline, not in the loss.
        train = select_rows(batch, ~truncated) if mask_truncated else batch
        train_adv = advantages[~truncated] if mask_truncated else advantages
        train_mask = train.rollout.completion_mask
        # Under torchrun each process's loss weighs as its share of the global batch's rows (of its tokens
        # for "token_mean"); a process with nothing to train on joins every backward with weight 0.
        weight, total = parallel.count_weight(train_mask.sum() if aggregation == "token_mean" else len(train_adv))
        if total and not len(train_adv):
            train, train_adv, train_mask = batch, advantages, mask

        # Lines 15-19: mu gradient steps on the GRPO objective (eq. 3) over the whole batch.
        losses, clipped = [], []
        for iteration in range(num_iterations if total else 0):
            with autocast:  # the forward pass only: backward runs outside autocast
                logp, token_entropy = token_logprobs(model, train.rollout.input_ids, train.rollout.attention_mask,
                                                     temperature=temperature, return_entropy=True,
                                                     prompt_length=train.rollout.prompt_length)
            if train.logp_old is None:  # old_from_loss: train is the whole batch
                train.logp_old = logp.detach() * train_mask
            kl_beta = beta if kl_in == "loss" else 0.0
            if loss == "grpo":
                value, stats = rt.grpo_loss(logp, train.logp_old, train.logp_ref, train_adv, train_mask,
                                            clip_eps=clip_eps, beta=kl_beta, aggregation=aggregation,
                                            max_length=max_new_tokens, estimator=estimator,
                                            clip_eps_high=clip_eps_high, importance_sampling=importance_sampling,
                                            sequence_clip_eps=sequence_clip_eps,
                                            sequence_clip_eps_high=sequence_clip_eps_high, return_stats=True)
            else:  # CISPO: the capped ratio is a detached weight, every token keeps its gradient
                value, stats = rt.cispo_loss(logp, train.logp_old, train_adv, train_mask, ratio_max=ratio_max,
                                             aggregation=aggregation, max_length=max_new_tokens,
                                             logp_ref=train.logp_ref, beta=kl_beta, estimator=estimator,
                                             return_stats=True)
            parallel.optimizer_step(optimizer, value, model.parameters(), max_grad_norm, weight=weight)
            if iteration == 0:  # the entropy of pi_old, the policy that sampled the batch
                entropy = (token_entropy.detach() * train_mask).sum(-1).mean()
            losses.append(value.item() * weight)
            clipped.append(stats["clip_fraction"].item() * weight)
        if not losses:  # every completion was cut and mask_truncated left nothing to train on
            with torch.no_grad(), autocast:
                _, token_entropy = token_logprobs(policy, rollout.input_ids, rollout.attention_mask,
                                                  temperature=temperature, return_entropy=True,
                                                  prompt_length=rollout.prompt_length)
            entropy = (token_entropy * mask).sum(-1).mean()
            losses, clipped = [0.0], [0.0]

        rewards = torch.cat([b.rewards for b, _ in drawn]) if dynamic_sampling else batch.rewards
        golds = [b.gold_rewards for b, _ in drawn] if dynamic_sampling else [batch.gold_rewards]
        gold = {} if golds[0] is None else {"gold_reward": float(np.concatenate(golds).mean())}
        extra = dict(dropped_groups=dropped, redraws=redraws) if dynamic_sampling else {}
        return dict(loss=sum(losses) / len(losses), reward=rewards.mean(), **gold,
                    kl=sampled_kl(batch).mean(), entropy=entropy, clip_fraction=sum(clipped) / len(clipped),
                    frac_zero_std_groups=zero_std, length=rollout.completion_lengths.float().mean(),
                    frac_truncated=truncated.float().mean(), **extra)

    policy.train()  # updated in train mode; generate() samples in eval mode
    run_steps(range(steps), train_step, history=history, total=steps, description="grpo", parallel=parallel,
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_fn,
                                 reward_fn=reward_fn, num_samples=eval_samples, max_new_tokens=max_new_tokens,
                                 autocast=autocast),
              eval_every=eval_every, progress=progress, postfix=("reward", "loss"))
    policy.eval()
    return policy, history


def _keep_varied_groups(batch, scores, draw, group_size, prompts_per_step, max_redraws, pad_token_id):
    """DAPO's dynamic sampling: ``(batch, scores, drawn, dropped, redraws)`` with up to ``prompts_per_step``
    groups whose scores vary, drawn over at most ``1 + max_redraws`` rounds (``draw() -> (batch, scores)``).

    ``drawn`` lists every ``(batch, scores)`` drawn (for the logs); ``dropped`` counts the constant groups
    left out. With no varied group at all the first batch is returned as it is (zero advantages; its groups
    are not counted as dropped).
    """
    drawn, kept, n_kept, dropped, redraws = [(batch, scores)], [], 0, 0, 0
    while True:
        constant = rt.constant_groups(scores.view(-1, group_size))
        dropped += int(constant.sum())
        varied = (~constant).nonzero().flatten()[: prompts_per_step - n_kept]
        if len(varied):
            rows = (varied[:, None] * group_size + torch.arange(group_size, device=varied.device)).reshape(-1)
            kept.append((select_rows(batch, rows), scores[rows]))
            n_kept += len(varied)
        if n_kept >= prompts_per_step or redraws >= max_redraws:
            break
        redraws += 1
        batch, scores = draw()
        drawn.append((batch, scores))
    if not kept:
        return drawn[0][0], drawn[0][1], drawn, dropped - prompts_per_step, redraws
    merged = concat_rollouts([b for b, _ in kept], pad_token_id)
    return merged, torch.cat([s for _, s in kept]), drawn, dropped, redraws
