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
"""

from __future__ import annotations

import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import token_logprobs
from rlhf_edu.numpy.advantages import GROUP_STDS
from rlhf_edu.numpy.divergences import KL_ESTIMATORS
from rlhf_edu.numpy.policy_gradient import GRPO_AGGREGATIONS
from rlhf_edu.train.evaluation import evaluator
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import optimizer_step, run_steps
from rlhf_edu.train.prompts import draw_prompts
from rlhf_edu.train.rollouts import collect_rollouts, prepare_online_run, sampled_kl
from rlhf_edu.validation import check_choice, check_in_range, check_integer, check_nonnegative, check_positive

__all__ = ["KL_PLACEMENTS", "train_grpo"]

#: Where ``train_grpo`` puts the KL to the reference: in the loss (GRPO) or subtracted from the reward.
KL_PLACEMENTS = ("loss", "reward")


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
    num_iterations: int = 1,
    std: str | None = "population",
    aggregation: str = "sequence_mean",
    estimator: str = "k3",
    kl_in: str = "loss",
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    max_grad_norm: float | None = 1.0,
    ref_model=None,
    gold_reward_fn=None,
    eval_prompts=None,
    eval_every: int = 10,
    eval_samples: int = 4,
    seed: int = 0,
    device="auto",
    progress: bool = True,
):
    r"""Train ``policy`` with GRPO on ``prompts`` scored by ``reward_fn``; returns ``(policy, history)``.

    One step (DeepSeekMath, algorithm 1, one pass of the inner loop): draw ``prompts_per_step`` prompts,
    sample ``group_size`` completions each from the current policy (:math:`\pi_{\theta_{old}}`), score
    them, compute the group-normalised advantages, then take ``num_iterations`` (:math:`\mu`) AdamW steps
    on ``rlhf_edu.torch.grpo_loss`` over the whole batch. The reference model stays fixed (the paper's
    outer loop, which resets it, is one iteration here).

    Args:
        policy: any Hugging Face causal LM (trained in place and returned). Kept in eval mode (no
            dropout), so the ratio is exactly 1 at the first iteration.
        tokenizer: its tokenizer (needs a pad token).
        prompts: the prompt set (strings or token-id lists); each step draws from it with replacement.
        reward_fn: ``fn(completions, prompts) -> (B,)`` or a ``RewardModel``: the training reward.
        group_size: :math:`G` >= 2 completions per prompt (a group of one has no baseline).
        prompts_per_step: prompts per step; a step trains on ``prompts_per_step * group_size`` samples.
        steps: rollout batches (each followed by ``num_iterations`` optimiser steps).
        lr, max_grad_norm: AdamW learning rate; gradient-norm clip (None: no clip).
        beta: :math:`\beta \ge 0`, weight of the KL to the reference (0.04, as DeepSeekMath).
        clip_eps: :math:`\epsilon` of the clipped ratio.
        num_iterations: :math:`\mu`, policy updates per rollout batch. With 1 (the default, and what
            most GRPO runs use) the old log-probs are the current ones and nothing is ever clipped.
        std: the denominator of the group normalisation: ``"population"`` (default, the notes'),
            ``"sample"`` (Bessel-corrected, as ``torch.std`` and TRL) or ``None`` (Dr. GRPO, Liu et al.
            2025: no division, the advantage is the reward minus the group mean).
        aggregation: ``"sequence_mean"`` (default, GRPO: mean over tokens, then over completions),
            ``"token_mean"`` (DAPO: every token weighs the same) or ``"dr_grpo"`` (sum over tokens divided
            by ``B * max_new_tokens``, a constant; Dr. GRPO).
        estimator: the per-token KL estimate: ``"k3"`` (default, GRPO's eq. 4), ``"k2"`` or ``"k1"``.
        kl_in: ``"loss"`` (default, GRPO: :math:`\beta\,\mathbb D_{KL}` per token in the loss) or
            ``"reward"`` (the PPO way: :math:`r_i - \beta \sum_t \mathbb D_{KL,t}` before normalising,
            with the same ``estimator`` on the sampled tokens). Never both.
        max_new_tokens, temperature: sampling; the log-probs of the loss use the same temperature.
        ref_model: the frozen reference :math:`\pi_{ref}`; default a frozen deep copy of ``policy`` as given.
        gold_reward_fn: ``fn(completions, prompts) -> (B,)`` logged as ``gold_reward`` (never trained on).
        eval_prompts: prompts to evaluate on every ``eval_every`` steps (``eval_samples`` completions
            each, ``evaluate_policy`` with its own fixed seed); None: no evaluation.
        seed: seeds the run (prompt draws, sampling and torch); the same seed gives the same history on CPU.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
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
        that gives them an advantage of exactly 0 in every dtype, so they teach nothing but the KL), ``length`` (mean completion tokens), ``seconds``. With ``eval_prompts`` the rows of steps 0,
        ``eval_every``, ... also hold ``eval_reward``, ``eval_gold_reward``, ``eval_kl`` (exact KL to
        ``ref_model``), ``eval_entropy``, ``eval_length``, measured BEFORE that step's update, and one last
        row (``step`` = ``steps``) holds the evaluation after training.

    Raises ``ValueError`` for ``group_size < 2``, ``beta < 0``, empty ``prompts``, a tokenizer without a pad
    token, prompts that do not fit the context with ``max_new_tokens``, or an unknown option.

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
        raise ValueError(f"group_size must be >= 2: GRPO's baseline is the mean of the OTHER samples of a "
                         f"prompt, and a group of one has advantage 0 (got group_size={group_size})")
    prompts_per_step = check_integer("prompts_per_step", prompts_per_step, minimum=1)
    steps = check_integer("steps", steps, minimum=1)
    lr = check_positive("lr", lr)
    beta = check_nonnegative("beta", beta)
    clip_eps = check_in_range("clip_eps", clip_eps, 0.0, 1.0, high_open=True)
    num_iterations = check_integer("num_iterations", num_iterations, minimum=1)
    check_choice("std", std, GROUP_STDS)
    check_choice("aggregation", aggregation, GRPO_AGGREGATIONS)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_choice("kl_in", kl_in, KL_PLACEMENTS)
    temperature = check_positive("temperature", temperature)
    eval_every = check_integer("eval_every", eval_every, minimum=1)
    eval_samples = check_integer("eval_samples", eval_samples, minimum=1)
    run = prepare_online_run(policy, tokenizer, prompts, reward_fn, gold_reward_fn=gold_reward_fn,
                             eval_prompts=eval_prompts, ref_model=ref_model, max_new_tokens=max_new_tokens, seed=seed,
                             device=device)
    prompts, eval_prompts, reward_fn, gold_fn = run.prompts, run.eval_prompts, run.reward_fn, run.gold_fn
    device, ref_model = run.device, run.ref_model
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)  # only the reward moves it
    history = History("grpo", dict(group_size=group_size, prompts_per_step=prompts_per_step, steps=steps, lr=lr,
                                   beta=beta, clip_eps=clip_eps, num_iterations=num_iterations, std=std,
                                   aggregation=aggregation, estimator=estimator, kl_in=kl_in,
                                   max_new_tokens=max_new_tokens, temperature=temperature, seed=seed))
    prompt_stream, sample_stream = run.prompt_stream, run.sample_stream

    def train_step(step):
        # Algorithm 1, lines 5-9: a batch of prompts, G samples each from pi_old, their rewards.
        batch = collect_rollouts(policy, tokenizer, draw_prompts(prompts, prompts_per_step, prompt_stream),
                                 reward_fn, ref_model=ref_model, num_samples=group_size,
                                 max_new_tokens=max_new_tokens, temperature=temperature, generator=sample_stream,
                                 gold_reward_fn=gold_fn)
        rollout, mask = batch.rollout, batch.rollout.completion_mask
        scores = batch.rewards
        if kl_in == "reward":  # the KL leash as a per-sequence reward penalty instead of a loss term
            scores = scores - beta * (rt.kl_estimate(batch.logp_old, batch.logp_ref, estimator) * mask).sum(-1)

        # Lines 10-13: normalise within each group; every token of o_i gets A_i.
        groups = scores.view(-1, group_size)
        advantages = rt.group_normalized_advantages(groups, std=std).reshape(-1)
        zero_std = rt.constant_groups(groups).float().mean()  # the same decision that zeroes their advantages

        # Lines 15-19: mu gradient steps on the GRPO objective (eq. 3) over the whole batch.
        losses, clipped = [], []
        for iteration in range(num_iterations):
            logp, token_entropy = token_logprobs(policy, rollout.input_ids, rollout.attention_mask,
                                                 temperature=temperature, return_entropy=True)
            loss, stats = rt.grpo_loss(logp, batch.logp_old, batch.logp_ref, advantages, mask, clip_eps=clip_eps,
                                       beta=beta if kl_in == "loss" else 0.0, aggregation=aggregation,
                                       max_length=max_new_tokens, estimator=estimator, return_stats=True)
            optimizer_step(optimizer, loss, policy.parameters(), max_grad_norm)
            if iteration == 0:  # the entropy of pi_old, the policy that sampled the batch
                entropy = (token_entropy.detach() * mask).sum(-1).mean()
            losses.append(loss.item())
            clipped.append(stats["clip_fraction"].item())

        gold = {} if batch.gold_rewards is None else {"gold_reward": float(batch.gold_rewards.mean())}
        return dict(loss=sum(losses) / len(losses), reward=batch.rewards.mean(), **gold,
                    kl=sampled_kl(batch).mean(), entropy=entropy, clip_fraction=sum(clipped) / len(clipped),
                    frac_zero_std_groups=zero_std, length=rollout.completion_lengths.float().mean())

    run_steps(range(steps), train_step, history=history, total=steps, description="grpo",
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_fn,
                                 reward_fn=reward_fn, num_samples=eval_samples, max_new_tokens=max_new_tokens),
              eval_every=eval_every, progress=progress, postfix=("reward", "loss"))
    policy.eval()
    return policy, history
