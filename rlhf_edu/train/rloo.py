r"""REINFORCE Leave-One-Out (RLOO): REINFORCE with the other samples as baseline (Ahmadian et al., 2024).

"Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs"
(Ahmadian et al., 2024; the estimator is Kool et al., 2019). The whole completion is one action: the KL
leash is absorbed into a sequence-level reward (the lecture notes)

.. math:: R(x, y) = r_\phi(x, y) - \beta \log\frac{\pi_\theta(y\mid x)}{\pi_{ref}(y\mid x)}
    = r_\phi(x, y) - \beta \sum_t \log\frac{\pi_\theta(y_t\mid x, y_{<t})}{\pi_{ref}(y_t\mid x, y_{<t})},

k completions :math:`y^{(1)}..y^{(k)} \sim \pi_\theta(\cdot\mid x)` are drawn per prompt, and each one's
baseline is the mean reward of the k - 1 others:

.. math:: \nabla_\theta J \approx \frac1k\sum_{i=1}^k \Big[R(x, y^{(i)}) - \frac1{k-1}\sum_{j\ne i}
    R(x, y^{(j)})\Big]\nabla_\theta\log\pi_\theta(y^{(i)}\mid x) .

No value model, no ratio, no clipping: one on-policy gradient step per batch. The advantage is
``rlhf_edu.torch.leave_one_out_advantages``, the loss ``rlhf_edu.torch.reinforce_loss``. Chapter 5.
"""

from __future__ import annotations

import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import check_vocabulary, token_logprobs
from rlhf_edu.numpy.divergences import KL_ESTIMATORS
from rlhf_edu.train.evaluation import evaluator
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_optimizer_settings, run_steps
from rlhf_edu.train.rollouts import prepare_online_run, sampled_kl
from rlhf_edu.validation import check_choice, check_integer, check_nonnegative, check_positive

__all__ = ["RLOO_AGGREGATIONS", "train_rloo"]

#: How ``train_rloo`` turns per-token log-probs into the REINFORCE loss (see ``train_rloo``'s ``aggregation``).
RLOO_AGGREGATIONS = ("sequence", "token_mean")


def train_rloo(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    *,
    group_size: int = 4,
    prompts_per_step: int = 8,
    steps: int = 30,
    lr: float = 5e-4,
    beta: float = 0.05,
    estimator: str = "k1",
    aggregation: str = "sequence",
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
    r"""Train ``policy`` with RLOO on ``prompts`` scored by ``reward_fn``; returns ``(policy, history)``.

    One step (the notes' algorithm RLOO, lines 3-8): draw ``prompts_per_step`` prompts, sample ``k`` =
    ``group_size`` completions each from the current policy, compute the KL-penalised sequence reward
    :math:`R = r - \beta\sum_t \mathbb D_{KL,t}` (the per-token ``estimator`` on the sampled tokens;
    ``"k1"``, the default, is :math:`\log\pi_\theta/\pi_{ref}` of the notes), subtract the leave-one-out
    baseline, and take one AdamW step on the REINFORCE loss.

    Args:
        policy, tokenizer, prompts, reward_fn: as ``rlhf_edu.train.grpo``.
        group_size: k >= 2 completions per prompt (the leave-one-out baseline needs another sample).
        prompts_per_step, steps, lr, max_grad_norm: batch of ``prompts_per_step * group_size`` samples
            (per process under ``torchrun``, as in ``train_grpo``: each process's loss weighs as its share of
            the global batch's samples, or tokens for ``"token_mean"``, so the gradient is the global batch's);
            ``steps`` batches, one AdamW step each; gradient-norm clip (None: no clip).
        beta: :math:`\beta \ge 0`, the KL coefficient inside the reward.
        estimator: ``"k1"`` (default, the notes), ``"k2"`` or ``"k3"``: the per-token KL estimate summed into
            the penalty. It enters the reward only, so it carries no gradient of its own.
        aggregation: ``"sequence"`` (default, the notes and Ahmadian et al.: the advantage times
            :math:`\log\pi_\theta(y\mid x) = \sum_t \log\pi_\theta(y_t\mid\cdot)`, averaged over the
            completions) or ``"token_mean"`` (advantage times each token's log-prob, averaged over all
            completion tokens of the batch: long completions weigh more, the gradient is ~1/length
            smaller).
        max_new_tokens, temperature, ref_model, gold_reward_fn: as ``rlhf_edu.train.grpo``.
        eval_prompts, eval_every, eval_samples, seed, device, dtype, progress: as ``rlhf_edu.train.grpo``.
        disable_dropout: dropout off in the policy and the reference (default), as ``rlhf_edu.train.grpo``:
            the log-probs the loss reinforces are then those of the policy that sampled.

    Returns:
        ``(policy, history)``, one row per step: ``loss``, ``reward`` (mean raw reward :math:`r` of the
        batch), ``penalized_reward`` (mean :math:`R`), ``gold_reward`` (with ``gold_reward_fn``), ``kl``
        (mean :math:`\sum_t` k3 on the sampled tokens, ``rlhf_edu.train.rollouts.sampled_kl``, the same
        column in every online trainer), ``kl_penalty`` (mean :math:`\sum_t` of the ``estimator``: the KL
        that is in the reward, so ``penalized_reward = reward - beta * kl_penalty``),
        ``entropy`` (mean summed token entropy per completion), ``length``, ``seconds``, and the ``eval_*``
        columns as in ``train_grpo``. RLOO has no ratio, so no ``clip_fraction``.

    Raises ``ValueError`` for ``group_size < 2``, ``beta < 0``, empty ``prompts``, a tokenizer without a pad
    token, prompts that do not fit the context with ``max_new_tokens``, or an unknown option.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> reward = lambda completions, prompts: [float(c.startswith("7")) for c in completions]
    >>> model, hist = train_rloo(model, tok, ["3+4="], reward, group_size=4, prompts_per_step=2, steps=2,
    ...                    max_new_tokens=3, device="cpu", progress=False)
    >>> len(hist), abs(hist.first("kl")) < 1e-6   # step 0: the policy is the reference
    (2, True)
    """
    group_size = check_integer("group_size", group_size, minimum=1)
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2: the leave-one-out baseline of a sample is the mean reward "
                         f"of the OTHER samples of its prompt (got group_size={group_size})")
    prompts_per_step = check_integer("prompts_per_step", prompts_per_step, minimum=1)
    steps = check_integer("steps", steps, minimum=1)
    lr, max_grad_norm, _ = check_optimizer_settings(lr, max_grad_norm)
    check_vocabulary(policy, tokenizer)
    beta = check_nonnegative("beta", beta)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_choice("aggregation", aggregation, RLOO_AGGREGATIONS)
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
    history = History("rloo", dict(group_size=group_size, prompts_per_step=prompts_per_step, steps=steps, lr=lr,
                                   beta=beta, estimator=estimator, aggregation=aggregation,
                                   max_new_tokens=max_new_tokens, temperature=temperature,
                                   disable_dropout=disable_dropout, seed=seed))

    def train_step(step):
        # Lines 3-4: a batch of prompts, k samples each from the current policy.
        batch = run.collect(policy, tokenizer, prompts_per_step, num_samples=group_size,
                            max_new_tokens=max_new_tokens, temperature=temperature)
        rollout, mask = batch.rollout, batch.rollout.completion_mask

        # The KL absorbed into a sequence-level reward: R = r - beta * sum_t KL_t (data, no gradient).
        penalty = (rt.kl_estimate(batch.logp_old, batch.logp_ref, estimator) * mask).sum(-1)
        penalized = batch.rewards - beta * penalty
        # Line 5: R_i minus the mean R of the other k - 1 samples of the same prompt.
        advantages = rt.leave_one_out_advantages(penalized.view(-1, group_size)).reshape(-1)

        # Lines 6-8: the REINFORCE estimate, averaged over samples and prompts, as a loss to minimise.
        with autocast:  # the forward pass only: backward runs outside autocast
            logp, token_entropy = token_logprobs(model, rollout.input_ids, rollout.attention_mask,
                                                 temperature=temperature, return_entropy=True,
                                                 prompt_length=rollout.prompt_length)
        if aggregation == "sequence":
            loss = rt.reinforce_loss((logp * mask).sum(-1), advantages)  # log pi(y|x) of each completion
        else:
            loss = rt.reinforce_loss(logp, advantages, mask)
        # under torchrun: "token_mean" weighs each process's loss as its share of the global batch's tokens
        weight, _ = parallel.count_weight(mask.sum() if aggregation == "token_mean" else len(advantages))
        parallel.optimizer_step(optimizer, loss, model.parameters(), max_grad_norm, weight=weight)

        gold = {} if batch.gold_rewards is None else {"gold_reward": float(batch.gold_rewards.mean())}
        return dict(loss=loss.detach() * weight, reward=batch.rewards.mean(), penalized_reward=penalized.mean(),
                    **gold, kl=sampled_kl(batch).mean(), kl_penalty=penalty.mean(),
                    entropy=(token_entropy.detach() * mask).sum(-1).mean(),
                    length=rollout.completion_lengths.float().mean())

    policy.train()  # updated in train mode; generate() samples in eval mode
    run_steps(range(steps), train_step, history=history, total=steps, description="rloo", parallel=parallel,
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_fn,
                                 reward_fn=reward_fn, num_samples=eval_samples, max_new_tokens=max_new_tokens,
                                 autocast=autocast),
              eval_every=eval_every, progress=progress, postfix=("reward", "kl"))
    policy.eval()
    return policy, history
