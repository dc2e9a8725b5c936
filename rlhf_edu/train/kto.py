r"""Kahneman-Tversky Optimization (KTO): alignment from unpaired "good" / "bad" labels.

KTO (Ethayarajh et al., 2024) needs no pairs: each example is one completion labelled desirable or
undesirable. With the implied reward :math:`r_\theta(x, y) = \log\frac{\pi_\theta(y\mid x)}{\pi_{ref}(y\mid x)}`
and a reference point :math:`z_0 = \max(0, \mathrm{KL}(\pi_\theta \| \pi_{ref}))`, the value of an example
is a prospect-theory S-curve around :math:`z_0`,

.. math::

    v(x, y) = \begin{cases} \lambda_D\,\sigma(\beta(r_\theta(x, y) - z_0)) & y \text{ desirable} \\
                            \lambda_U\,\sigma(\beta(z_0 - r_\theta(x, y))) & y \text{ undesirable} \end{cases}
    \qquad \mathcal{L}_{KTO} = \mathbb{E}[\lambda_y - v(x, y)],

so a desirable completion is pushed above the reference point and an undesirable one below it. The paper
estimates :math:`z_0` per batch from *mismatched* pairs: completion :math:`y_{i+1}` scored after prompt
:math:`x_i`, :math:`\hat z_0 = \max\big(0, \frac{1}{B}\sum_i \log\frac{\pi_\theta(y_{i+1}\mid x_i)}{\pi_{ref}(y_{i+1}\mid x_i)}\big)`,
computed without gradient (the reference point is a constant of the loss, not a target). A pair is
never matched (``mismatched_indices``): a minibatch of one row, the tail of an epoch when
``n % batch_size == 1``, pairs with the next example of the dataset instead of its own completion. The loss is
``rlhf_edu.torch.kto_loss``. Chapter 7 ("IPO, KTO, SimPO").
"""

from __future__ import annotations

import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import (REDUCTIONS, check_vocabulary, mixed_precision, prompt_completion_batch, resolve_device,
                        sequence_logprobs, set_seed)
from rlhf_edu.train.data import check_fits_context, epoch_minibatches, steps_per_run
from rlhf_edu.train.distributed import data_parallel
from rlhf_edu.train.evaluation import evaluator
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_optimizer_settings, run_steps
from rlhf_edu.train.preference_data import binary_feedback_records, frozen_logps, per_token_nll, take_rows
from rlhf_edu.train.rollouts import policy_and_reference
from rlhf_edu.validation import check_choice, check_integer, check_nonnegative, check_positive

__all__ = ["mismatched_indices", "KL_ESTIMATES", "train_kto"]

#: How ``train_kto`` sets the reference point z0: the paper's mismatched-pair batch estimate, or 0.
KL_ESTIMATES = ("mismatched", "zero")


def mismatched_indices(idx, n: int) -> torch.Tensor:
    """For the rows ``idx`` (dataset indices) of a minibatch, the completion index ``j_i != idx_i`` to pair
    with prompt ``idx_i`` in KTO's z0 estimate (Ethayarajh et al., 2024, section 4.2: mismatched pairs).

    The next row of the minibatch (a roll by one), as the paper; where that is the row's own example (a
    minibatch of one, the tail of an epoch when ``n % batch_size == 1``, or a repeated index), the next
    example of the whole dataset, ``(idx_i + 1) % n``, instead. So no prompt is ever scored with its own
    completion, for any ``n >= 2`` and batch size. Raises ``ValueError`` for ``n < 2``.

    >>> mismatched_indices(torch.tensor([4, 1, 7]), 8).tolist(), mismatched_indices(torch.tensor([7]), 8).tolist()
    ([1, 7, 4], [0])
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 for mismatched pairs (a single example can only pair with itself), got {n}")
    idx = torch.as_tensor(idx)
    shifted = torch.roll(idx, -1)
    return torch.where(shifted == idx, (idx + 1) % n, shifted)


def train_kto(
    policy,
    tokenizer,
    examples,
    *,
    ref_model=None,
    beta: float = 0.1,
    lambda_d: float | None = None,
    lambda_u: float = 1.0,
    kl_estimate: str = "mismatched",
    sft_weight: float = 1.0,
    logp_reduction: str = "sum",
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 2e-4,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    gold_reward_fn=None,
    reward_fn=None,
    eval_prompts=None,
    eval_every: int = 16,
    eval_samples: int = 4,
    eval_max_new_tokens: int = 48,
    disable_dropout: bool = True,
    seed: int = 0,
    device="auto",
    dtype="float32",
    progress: bool = True,
):
    r"""Train ``policy`` with KTO on unpaired labelled ``examples``; returns ``(policy, history)``.

    Per minibatch of B examples :math:`(x_i, y_i, \text{label}_i)`:

    1. :math:`\log\pi_\theta(y_i\mid x_i)` with gradient; :math:`\log\pi_{ref}(y_i\mid x_i)` was computed
       once before training;
    2. the reference point (``kl_estimate="mismatched"``): the mismatched pairs
       :math:`(x_i, y_{(i+1) \bmod B})` are scored by the policy and the reference WITHOUT gradient and
       :math:`\hat z_0 = \frac{1}{B}\sum_i [\log\pi_\theta - \log\pi_{ref}](y_{i+1}\mid x_i)`
       (Ethayarajh et al. 2024, section 4.1); ``kto_loss`` clamps it at 0 and detaches it. With
       ``"zero"``, :math:`z_0 = 0` (the cheaper variant: one forward pass less per step);
    3. the loss :math:`\frac{1}{B}\sum_i \lambda_{y_i} - v(x_i, y_i)` (``rlhf_edu.torch.kto_loss``).

    4. with ``sft_weight`` > 0, plus ``sft_weight`` times the per-token NLL of the batch's desirable
       completions (an SFT anchor, as ORPO's; see "Why an SFT anchor" below).

    The paper's rule for imbalanced data: choose :math:`\lambda_D, \lambda_U` so that
    :math:`\frac{\lambda_D n_D}{\lambda_U n_U} \in [1, \frac{4}{3}]` (:math:`n_D, n_U` the numbers of
    desirable and undesirable examples). ``lambda_d=None`` (default) applies its lower end,
    :math:`\lambda_D = \lambda_U n_U / n_D`: the sentiment task's ``kto_examples`` are about 30% desirable,
    which gives :math:`\lambda_D \approx 2.3`.

    Why an SFT anchor (``sft_weight=1.0`` by default; 0 gives the paper's loss): on the book's tiny
    character-level model, pushing undesirable completions down moves probability to misspelt words, which
    the gold reward punishes. Measured with the defaults (1024 ``kto_examples``, one epoch; gold reward of
    256 samples on the test prompts): +0.21 gold at a KL to the SFT model of 1.9 nats; with
    ``sft_weight=0`` the run ends at +0.01 with a KL of 7.4. The anchor alone (``lambda_d = lambda_u = 0``:
    SFT on the desirable examples) gains about as much (+0.24 at KL 1.5 in a 64-sample check): on this
    task, filtering out the undesirable examples does most of the work.

    Args:
        policy, tokenizer: any Hugging Face causal LM and its tokenizer (pad token required).
        examples: records ``{"prompt", "completion", "label"}`` (label True = desirable) or
            ``(prompt, completion, label)`` tuples (``SentimentTask.kto_examples``, or
            ``to_records(pairs, "kto")`` for pairs split into one good and one bad example).
        ref_model: the frozen reference; default a frozen copy of ``policy`` as given.
        beta: :math:`\beta > 0` (0.1, the paper's default).
        lambda_d, lambda_u: :math:`\lambda_D, \lambda_U \ge 0`, weights of desirable and undesirable
            examples; ``lambda_d=None`` balances them by the paper's rule (above).
        sft_weight: weight of the desirable completions' per-token NLL (default 1.0; 0: the paper's loss).
        kl_estimate: ``"mismatched"`` (the paper's batch estimate; any ``batch_size``: a minibatch of
            one pairs its prompt with the next example's completion, see :func:`mismatched_indices`) or ``"zero"``.
        logp_reduction: ``"sum"`` (default) or ``"mean"`` over completion tokens.
        epochs, batch_size, lr, weight_decay, max_grad_norm, seed, device, dtype, progress: as in ``train_dpo``
            (``batch_size`` per process under ``torchrun``; the mismatched pairs behind :math:`z_0` and the
            SFT term's mean over desirable examples are those of the global batch, as in one process; the
            logged ``desirable_reward``, ``undesirable_reward`` and ``reward`` average each process's means,
            NaN when a process's share has no example of that label).
        max_steps: ``None`` or the number of optimiser steps, as in ``train_dpo`` (``rlhf-edu train --steps``).
        disable_dropout: dropout off in the policy and the reference (default), as in ``train_dpo``: at
            step 0 the loss is exactly :math:`\lambda_y / 2` per example and ``kl_reference`` 0.
        gold_reward_fn, reward_fn, eval_prompts, eval_every, eval_samples, eval_max_new_tokens: evaluation,
            as in ``train_dpo``.

    Returns:
        ``(policy, history)``; one row per optimiser step with ``loss``, ``kl_reference`` (the batch
        estimate :math:`\hat z_0` before clamping), ``desirable_reward``, ``undesirable_reward`` (mean
        implied rewards :math:`\beta r_\theta` of each kind in the batch; NaN when the batch has none),
        ``margin`` (their difference, also logged as ``reward``), ``accuracy`` (fraction of examples on
        the right side of :math:`z_0`), ``desirable_fraction``, ``seconds``; plus the ``eval_*`` columns
        of ``train_dpo``.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> data = [("review:", " good.", True), ("review:", " bad.", False)] * 4
    >>> model, hist = train_kto(model, tok, data, sft_weight=0.0, batch_size=4, lr=1e-2, device="cpu", progress=False)
    >>> len(hist), round(hist.first("loss"), 4), hist.last("margin") > 0
    (2, 0.5, True)
    """
    beta = check_positive("beta", beta)
    if lambda_d is not None:
        lambda_d = check_nonnegative("lambda_d", lambda_d)
    lambda_u = check_nonnegative("lambda_u", lambda_u)
    sft_weight = check_nonnegative("sft_weight", sft_weight)
    check_choice("kl_estimate", kl_estimate, KL_ESTIMATES)
    check_choice("logp_reduction", logp_reduction, REDUCTIONS)
    epochs = check_integer("epochs", epochs, minimum=1)
    max_steps = None if max_steps is None else check_integer("max_steps", max_steps, minimum=1)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    lr, max_grad_norm, weight_decay = check_optimizer_settings(lr, max_grad_norm, weight_decay)
    check_vocabulary(policy, tokenizer)
    eval_every = check_integer("eval_every", eval_every, minimum=1)
    prompts, completions, labels = binary_feedback_records(examples)
    if lambda_d is None:  # the paper's rule: lambda_D n_D = lambda_U n_U
        n_desirable = int(labels.sum())
        lambda_d = lambda_u * (len(labels) - n_desirable) / n_desirable if n_desirable else 1.0

    set_seed(seed)
    parallel = data_parallel(resolve_device(device))  # several processes under torchrun (batch_size per process)
    device = parallel.device
    autocast = mixed_precision(dtype, device)  # bfloat16: the forward passes under torch.autocast
    ref_model = policy_and_reference(policy, ref_model, device, disable_dropout=disable_dropout)
    data = prompt_completion_batch(tokenizer, prompts, completions)
    check_fits_context(policy, data.input_ids)
    with autocast:
        ref_logps = frozen_logps(ref_model, data, logp_reduction, device=device)  # once, no gradient
    desirable = torch.as_tensor(labels, device=device)

    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    model, optimizer = parallel.prepare(policy, optimizer)  # what the gradients flow through
    history = History("kto", dict(beta=beta, lambda_d=lambda_d, lambda_u=lambda_u, kl_estimate=kl_estimate,
                                  sft_weight=sft_weight,
                                  logp_reduction=logp_reduction, epochs=epochs, max_steps=max_steps,
                                  batch_size=batch_size, lr=lr,
                                  n_examples=len(prompts), n_desirable=int(labels.sum()),
                                  disable_dropout=disable_dropout, seed=seed))

    n = len(prompts)
    if kl_estimate == "mismatched" and n < 2:
        raise ValueError("kl_estimate='mismatched' needs at least 2 examples: with one, the only completion "
                         "to pair a prompt with is its own (use kl_estimate='zero')")

    @torch.no_grad()
    def mismatched_kl(idx):
        # The paper's estimate of KL(pi || pi_ref): prompt x_i with the NEXT example's completion y_{i+1}.
        shifted = mismatched_indices(idx, n)
        if parallel.distributed:  # the pairs of the global minibatch; this process scores its slice of them
            (idx, weight), (shifted, _) = parallel.share(idx), parallel.share(shifted)
        pairs = prompt_completion_batch(tokenizer, [prompts[i] for i in idx.tolist()],
                                        [completions[j] for j in shifted.tolist()], device=device)
        was_training = policy.training
        policy.eval()
        logp = sequence_logprobs(policy, pairs.input_ids, pairs.attention_mask, pairs.completion_mask, logp_reduction)
        policy.train(was_training)
        ref = sequence_logprobs(ref_model, pairs.input_ids, pairs.attention_mask, pairs.completion_mask, logp_reduction)
        kl = (logp - ref).mean()
        return parallel.mean(kl * weight).to(kl.dtype) if parallel.distributed else kl  # the global mean


    def train_step(minibatch):
        epoch, global_idx = minibatch
        idx, weight = parallel.share(global_idx)  # this process's slice of the global minibatch
        batch = take_rows(data, idx, device)
        with autocast:  # the forward passes only: backward runs outside autocast
            policy_logps = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask,
                                             logp_reduction)
            if kl_estimate == "mismatched":  # z0 from the whole global minibatch
                kl_reference = mismatched_kl(global_idx)
        ref_batch = ref_logps[idx.to(device)]
        is_desirable = desirable[idx.to(device)]
        if kl_estimate != "mismatched":
            kl_reference = torch.zeros((), device=device, dtype=policy_logps.dtype)
        # Ethayarajh et al. 2024, eq. 8: lambda_y - v(x, y), z0 = max(0, KL) detached inside kto_loss.
        losses = rt.kto_loss(policy_logps, ref_batch, is_desirable, kl_reference, beta, lambda_d, lambda_u)
        objective = losses.mean()
        if sft_weight > 0:  # + NLL per token of the desirable completions
            # under torchrun: their mean over the global minibatch's desirable examples (share 1.0 alone)
            share, _ = parallel.count_weight(is_desirable.sum() if weight > 0 else 0)
            if bool(is_desirable.any()) and share > 0:
                nll = per_token_nll(policy_logps, batch.completion_mask, logp_reduction)
                objective = objective + sft_weight * nll[is_desirable].mean() * (share / weight)
        parallel.optimizer_step(optimizer, objective, model.parameters(), max_grad_norm)

        with torch.no_grad():
            implied = rt.dpo_implicit_reward(policy_logps.detach(), ref_batch, beta)  # beta * r_theta
            z0 = beta * kl_reference.clamp(min=0.0)
            good = implied[is_desirable].mean() if bool(is_desirable.any()) else torch.tensor(float("nan"))
            bad = implied[~is_desirable].mean() if bool((~is_desirable).any()) else torch.tensor(float("nan"))
            right_side = torch.where(is_desirable, implied > z0, implied < z0).float().mean()
        return dict(epoch=epoch, loss=objective.detach(), kl_reference=kl_reference, reward=good - bad,
                    margin=good - bad, desirable_reward=good, undesirable_reward=bad, accuracy=right_side,
                    desirable_fraction=is_desirable.float().mean())

    policy.train()
    global_batch = parallel.global_batch_size(batch_size)
    run_steps(epoch_minibatches(n, global_batch, epochs, seed, max_steps), train_step, history=history,
              total=steps_per_run(n, global_batch, epochs, max_steps), description="kto", parallel=parallel,
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_reward_fn,
                                 reward_fn=reward_fn, num_samples=eval_samples, max_new_tokens=eval_max_new_tokens,
                                 autocast=autocast),
              eval_every=eval_every, progress=progress, postfix=("loss", "kl_reference"))
    policy.eval()
    return policy, history
