r"""ORPO: supervised fine-tuning and preference alignment in one loss, with no reference model.

ORPO (Hong, Lee and Thorne, 2024) adds to the SFT loss on the chosen completion a term that raises the
odds of the chosen completion relative to the rejected one. With the length-normalised likelihood
:math:`P_\theta(y\mid x) = \exp\big(\frac{1}{|y|}\log\pi_\theta(y\mid x)\big)` and its odds
:math:`\mathrm{odds}_\theta(y\mid x) = \frac{P_\theta(y\mid x)}{1 - P_\theta(y\mid x)}`,

.. math::

    \mathcal{L}_{ORPO} = \mathbb{E}_{(x, y_w, y_l)}\Big[\underbrace{-\frac{1}{|y_w|}\log\pi_\theta(y_w\mid x)}_{\mathcal{L}_{SFT}}
        \; - \; \lambda \log\sigma\Big(\log\frac{\mathrm{odds}_\theta(y_w\mid x)}{\mathrm{odds}_\theta(y_l\mid x)}\Big)\Big].

The SFT term keeps the model fluent on the chosen answers (so ORPO can start from a base model); the
odds-ratio term is a gentle contrast (its gradient vanishes once the chosen odds clearly win). The loss
is ``rlhf_edu.torch.orpo_loss`` on mean per-token log-probs. Chapter 7 ("IPO, KTO, SimPO"); the lecture
notes list ORPO among the methods that "integrate SFT and alignment into a single process".
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
    preference_triples,
    take_rows,
)
from rlhf_edu.train.rollouts import policy_and_reference
from rlhf_edu.validation import check_integer, check_nonnegative

__all__ = ["train_orpo"]


def train_orpo(
    policy,
    tokenizer,
    pairs,
    *,
    lam: float = 1.0,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 5e-4,
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
    r"""Train ``policy`` on preference ``pairs`` with ORPO; returns ``(policy, history)``.

    Per minibatch of B pairs, one forward pass over the 2B concatenated completions gives the MEAN
    per-token log-probs :math:`\frac{1}{|y|}\log\pi_\theta(y\mid x)` of chosen and rejected; the per-pair
    loss is ``rt.orpo_loss(chosen_mean, rejected_mean, chosen_nll=-chosen_mean, lam)`` (Hong et al. 2024,
    eq. 6-7), averaged over the batch.

    Args:
        policy, tokenizer, pairs: as in ``rlhf_edu.train.dpo``.
        lam: :math:`\lambda \ge 0`, the weight of the odds-ratio term. The paper uses 0.1 to 0.25 when
            starting from a base model; starting from an SFT model that already writes the chosen kind of
            text, the SFT term has little left to teach and the default 1.0 lets the contrast act.
        epochs, batch_size, lr, weight_decay, max_grad_norm, seed, device, dtype, progress: as in ``train_dpo``.
        max_steps: ``None`` or the number of optimiser steps, as in ``train_dpo`` (``rlhf-edu train --steps``).
        disable_dropout: dropout off in the policy (and the reference) before training (default), as in
            ``train_dpo``: the step-0 loss is the loss of the model as given, not dropout noise.
        ref_model: NOT used by the loss; only for the evaluation's ``eval_kl`` (default a frozen copy of
            ``policy`` as given, made only when ``eval_prompts`` is set).
        gold_reward_fn, reward_fn, eval_prompts, eval_every, eval_samples, eval_max_new_tokens: as in ``train_dpo``.

    Returns:
        ``(policy, history)``; one row per optimiser step with ``loss``, ``nll`` (the SFT term),
        ``log_odds_ratio`` (mean :math:`\log\frac{\mathrm{odds}(y_w)}{\mathrm{odds}(y_l)}`, also logged as
        ``margin`` and ``reward``), ``accuracy`` (fraction of pairs with a positive log odds ratio),
        ``chosen_logp``, ``rejected_logp`` (mean per-token log-probs), ``seconds``, plus the ``eval_*``
        columns of ``train_dpo``.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> pairs = [{"prompt": "review:", "chosen": " good.", "rejected": " bad."}] * 8
    >>> model, hist = train_orpo(model, tok, pairs, batch_size=4, lr=1e-2, device="cpu", progress=False)
    >>> len(hist), hist.last("nll") < hist.first("nll")
    (2, True)
    """
    lam = check_nonnegative("lam", lam)
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
    history = History("orpo", dict(lam=lam, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
                                   n_pairs=len(prompts), disable_dropout=disable_dropout, seed=seed))

    n = len(prompts)

    def train_step(minibatch):
        epoch, idx = minibatch
        idx, _ = parallel.share(idx)  # this process's slice of the global minibatch
        batch = take_rows(data, pair_rows(idx, n), device)
        # Mean per-token log-probs of chosen and rejected in ONE forward pass.
        with autocast:  # the forward pass only: backward runs outside autocast
            chosen_mean, rejected_mean = chosen_rejected_logps(model, batch, "mean")
        nll = -chosen_mean  # L_SFT: the chosen completion's per-token NLL
        # Hong et al. 2024, eq. 6: L_SFT + lam * L_OR, L_OR = -log sigma(log odds(y_w) - log odds(y_l))
        objective = rt.orpo_loss(chosen_mean, rejected_mean, nll, lam).mean()
        parallel.optimizer_step(optimizer, objective, model.parameters(), max_grad_norm)

        with torch.no_grad():
            log_odds_ratio = rt.orpo_log_odds(chosen_mean.detach()) - rt.orpo_log_odds(rejected_mean.detach())
            ratio = log_odds_ratio.mean()
        return dict(epoch=epoch, loss=objective.detach(), nll=nll.detach().mean(), log_odds_ratio=ratio,
                    margin=ratio, reward=ratio, accuracy=(log_odds_ratio > 0).float().mean(),
                    chosen_logp=chosen_mean.detach().mean(), rejected_logp=rejected_mean.detach().mean())

    policy.train()
    global_batch = parallel.global_batch_size(batch_size)
    run_steps(epoch_minibatches(n, global_batch, epochs, seed, max_steps), train_step, history=history,
              total=steps_per_run(n, global_batch, epochs, max_steps), description="orpo", parallel=parallel,
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_reward_fn,
                                 reward_fn=reward_fn, num_samples=eval_samples, max_new_tokens=eval_max_new_tokens,
                                 autocast=autocast),
              eval_every=eval_every, progress=progress, postfix=("loss", "log_odds_ratio"))
    policy.eval()
    return policy, history
