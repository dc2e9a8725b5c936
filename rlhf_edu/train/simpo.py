r"""SimPO: preference optimisation with a length-normalised reward and no reference model.

SimPO (Meng, Xia and Chen, 2024) replaces DPO's implicit reward :math:`\beta\log\frac{\pi_\theta(y\mid x)}
{\pi_{ref}(y\mid x)}` with the average log-probability per token, :math:`\frac{\beta}{|y|}\log\pi_\theta(y\mid x)`
(the quantity generation actually ranks by), and asks the chosen completion to win by a target margin
:math:`\gamma`:

.. math::

    \mathcal{L}_{SimPO}(\theta) = -\mathbb{E}_{(x, y_w, y_l)}\Big[\log\sigma\Big(
        \frac{\beta}{|y_w|}\log\pi_\theta(y_w\mid x) - \frac{\beta}{|y_l|}\log\pi_\theta(y_l\mid x) - \gamma\Big)\Big].

No reference model enters the loss (half the forward passes of DPO); the length normalisation removes
DPO's incentive to change the length of its answers. The loss is ``rlhf_edu.torch.simpo_loss``.
Chapter 7 ("IPO, KTO, SimPO"); the lecture notes list SimPO under "remove the reference policy" and
"length control".
"""

from __future__ import annotations

import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import check_vocabulary, mixed_precision, resolve_device, set_seed
from rlhf_edu.train.data import epoch_minibatches, steps_per_run
from rlhf_edu.train.distributed import data_parallel
from rlhf_edu.train.evaluation import evaluator
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_optimizer_settings, run_steps
from rlhf_edu.train.preference_data import (
    chosen_rejected_logps,
    encode_pairs,
    pair_rows,
    per_token_nll,
    preference_triples,
    take_rows,
)
from rlhf_edu.train.rollouts import policy_and_reference
from rlhf_edu.validation import check_integer, check_nonnegative, check_positive

__all__ = ["train_simpo"]


def train_simpo(
    policy,
    tokenizer,
    pairs,
    *,
    beta: float = 2.0,
    gamma: float = 1.0,
    sft_weight: float = 1.0,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 2e-4,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    ref_model=None,
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
    r"""Train ``policy`` on preference ``pairs`` with SimPO; returns ``(policy, history)``.

    Per minibatch of B pairs, one forward pass over the 2B concatenated completions gives the summed
    log-probs and the lengths :math:`|y|` (completion tokens, EOS included); the per-pair loss is
    ``rt.simpo_loss`` (Meng et al. 2024, eq. 6), averaged over the batch, plus ``sft_weight`` times the
    per-token NLL of the chosen completions (the CPO / RPO regulariser; 0 gives the paper's loss). The
    anchor is on by default for the reason given in ``train_dpo``: without it the tiny model of the book trades
    spelling for sentiment. Measured on the sentiment task (1024 pairs with ``min_gap=0.1``, one epoch):
    the paper's loss at lr 2e-4 gains +0.09 gold at first, then falls below the SFT model (KL 15 nats);
    at lr 5e-5 it gains +0.09 at KL 0.4; with the defaults (anchor on, lr 2e-4), +0.20 at KL 2.2.

    Args:
        policy, tokenizer, pairs: as in ``rlhf_edu.train.dpo``.
        beta: :math:`\beta > 0`, the reward scale (the paper uses 2 to 2.5).
        gamma: :math:`\gamma \ge 0`, the target reward margin (the paper's ratio :math:`\gamma/\beta` of
            about 0.5 gives the default 1.0).
        sft_weight: weight of the chosen completions' per-token NLL (default 1.0; 0: the paper's loss).
        epochs, batch_size, lr, weight_decay, max_grad_norm, seed, device, dtype, progress: as in ``train_dpo``.
        max_steps: ``None`` or the number of optimiser steps, as in ``train_dpo`` (``rlhf-edu train --steps``).
        disable_dropout: dropout off in the policy (and the reference) before training (default), as in
            ``train_dpo``: the step-0 loss is the loss of the model as given, not dropout noise.
        ref_model: NOT used by the loss; only the evaluation's ``eval_kl`` is measured against it (default
            a frozen copy of ``policy`` as given, made only when ``eval_prompts`` is set).
        gold_reward_fn, reward_fn, eval_prompts, eval_every, eval_samples, eval_max_new_tokens: as in ``train_dpo``.

    Returns:
        ``(policy, history)``; one row per optimiser step with ``loss``, ``chosen_reward``,
        ``rejected_reward`` (mean :math:`\frac{\beta}{|y|}\log\pi_\theta(y\mid x)`), ``margin`` (their mean
        difference, also logged as ``reward``), ``accuracy`` (fraction of pairs with the chosen reward
        higher), ``chosen_length``, ``rejected_length``, ``seconds``, plus the ``eval_*`` columns of ``train_dpo``.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> pairs = [{"prompt": "review:", "chosen": " good.", "rejected": " bad."}] * 8
    >>> model, hist = train_simpo(model, tok, pairs, sft_weight=0.0, batch_size=4, lr=1e-2, device="cpu", progress=False)
    >>> len(hist), hist.last("margin") > hist.first("margin")
    (2, True)
    """
    beta = check_positive("beta", beta)
    gamma = check_nonnegative("gamma", gamma)
    sft_weight = check_nonnegative("sft_weight", sft_weight)
    epochs = check_integer("epochs", epochs, minimum=1)
    max_steps = None if max_steps is None else check_integer("max_steps", max_steps, minimum=1)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    lr, max_grad_norm, weight_decay = check_optimizer_settings(lr, max_grad_norm, weight_decay)
    check_vocabulary(policy, tokenizer)
    eval_every = check_integer("eval_every", eval_every, minimum=1)
    prompts, chosen, rejected = preference_triples(pairs)

    set_seed(seed)
    parallel = data_parallel(resolve_device(device))  # several processes under torchrun (batch_size per process)
    device = parallel.device
    autocast = mixed_precision(dtype, device)  # bfloat16: the forward passes under torch.autocast
    # Only the evaluation's KL needs a reference.
    ref_model = policy_and_reference(policy, ref_model, device, disable_dropout=disable_dropout,
                                     reference=eval_prompts is not None)
    data = encode_pairs(tokenizer, prompts, chosen, rejected, model=policy)

    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    model, optimizer = parallel.prepare(policy, optimizer)  # what the gradients flow through
    history = History("simpo", dict(beta=beta, gamma=gamma, sft_weight=sft_weight, epochs=epochs, max_steps=max_steps,
                                    batch_size=batch_size, lr=lr, n_pairs=len(prompts),
                                    disable_dropout=disable_dropout, seed=seed))

    n = len(prompts)

    def train_step(minibatch):
        epoch, idx = minibatch
        idx, _ = parallel.share(idx)  # this process's slice of the global minibatch
        batch = take_rows(data, pair_rows(idx, n), device)
        # Summed log-probs of chosen and rejected in ONE forward pass, and their lengths |y|.
        with autocast:  # the forward pass only: backward runs outside autocast
            chosen_logps, rejected_logps = chosen_rejected_logps(model, batch, "sum")
        lengths = batch.completion_mask.sum(dim=1).to(chosen_logps.dtype)
        chosen_lengths, rejected_lengths = lengths.chunk(2)
        # Meng et al. 2024, eq. 6: -log sigma(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma)
        losses = rt.simpo_loss(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, beta, gamma)
        objective = losses.mean()
        if sft_weight > 0:
            objective = objective + sft_weight * per_token_nll(chosen_logps, batch.completion_mask[: len(idx)]).mean()
        parallel.optimizer_step(optimizer, objective, model.parameters(), max_grad_norm)

        with torch.no_grad():  # SimPO's reward: beta times the average log-prob per token
            chosen_reward = beta * chosen_logps.detach() / chosen_lengths
            rejected_reward = beta * rejected_logps.detach() / rejected_lengths
            margin = (chosen_reward - rejected_reward).mean()
        return dict(epoch=epoch, loss=objective.detach(), reward=margin, margin=margin,
                    accuracy=(chosen_reward > rejected_reward).float().mean(),
                    chosen_reward=chosen_reward.mean(), rejected_reward=rejected_reward.mean(),
                    chosen_length=chosen_lengths.mean(), rejected_length=rejected_lengths.mean())

    policy.train()
    global_batch = parallel.global_batch_size(batch_size)
    run_steps(epoch_minibatches(n, global_batch, epochs, seed, max_steps), train_step, history=history,
              total=steps_per_run(n, global_batch, epochs, max_steps), description="simpo", parallel=parallel,
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_reward_fn,
                                 reward_fn=reward_fn, num_samples=eval_samples, max_new_tokens=eval_max_new_tokens,
                                 autocast=autocast),
              eval_every=eval_every, progress=progress, postfix=("loss", "margin"))
    policy.eval()
    return policy, history
