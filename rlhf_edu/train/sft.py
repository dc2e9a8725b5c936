"""Supervised fine-tuning (SFT): the first stage of the InstructGPT pipeline (Ouyang et al., 2022).

Maximise the log-likelihood of demonstration completions given their prompts:

.. math:: \\mathcal{L}_{SFT}(\\theta) = -\\frac{1}{\\sum_i |y_i|} \\sum_i \\sum_t \\log \\pi_\\theta(y_{i,t} \\mid x_i, y_{i,<t})

(``loss_reduction="token_mean"``, the default), or the mean over examples of each example's mean
(``"sequence_mean"``). With ``loss_on="all"`` the prompt tokens are trained on too (plain language
modelling). Used by every later stage: the SFT model is the starting point and the reference policy.
"""

from __future__ import annotations

import time

import torch

from rlhf_edu.lm import (check_vocabulary, disable_dropout_in_model, mixed_precision, prompt_completion_batch,
                        resolve_device, set_seed, token_logprobs)
from rlhf_edu.train.data import check_fits_context, epoch_minibatches, prompt_completion_pairs, steps_per_run
from rlhf_edu.train.distributed import data_parallel
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import NonFiniteLossError, check_optimizer_settings
from rlhf_edu.train.progress import progress_bar
from rlhf_edu.validation import check_choice, check_integer

__all__ = ["train_sft", "masked_nll"]


def masked_nll(logp: torch.Tensor, mask: torch.Tensor, reduction: str = "token_mean") -> torch.Tensor:
    """Negative log-likelihood of the tokens where ``mask`` is 1, reduced per ``reduction``.

    ``"token_mean"``: total over tokens / number of tokens; ``"sequence_mean"``: mean over rows of each
    row's token mean; ``"sum"``: the total.
    """
    check_choice("reduction", reduction, ("token_mean", "sequence_mean", "sum"))
    mask = mask.to(logp.dtype)
    if reduction == "sum":
        return -(logp * mask).sum()
    if reduction == "token_mean":
        return -(logp * mask).sum() / mask.sum().clamp_min(1.0)
    return -((logp * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()


def _global_token_loss(parallel, logp, target, weight, reduction):
    r"""This process's share :math:`L_r` of a ``"token_mean"`` or ``"sum"`` loss over the GLOBAL batch,
    scaled so that the mean over the N processes (what DDP's gradient average computes) is that loss.

    ``"token_mean"``: :math:`L_r = -\frac{N}{T}\sum_{t \in r}\log\pi(y_t)` with :math:`T` the number of
    target tokens of all processes (one all-reduce), so :math:`\frac{1}{N}\sum_r L_r` is the token mean
    of the global batch, not a mean of per-process token means; ``"sum"``: :math:`L_r = -N\sum_{t \in
    r}\log\pi(y_t)`. A stand-in share (``weight`` 0) counts no token and its loss is backpropagated times 0.
    """
    mask = target.to(logp.dtype) * (1.0 if weight > 0 else 0.0)
    total = -(logp * mask).sum()
    if reduction == "sum":
        return total * parallel.world_size
    tokens = parallel.sum(mask.sum()).clamp_min(1.0).to(logp.dtype)
    return total * (parallel.world_size / tokens)


def train_sft(
    model,
    tokenizer,
    examples,
    *,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    loss_on: str = "completion",
    loss_reduction: str = "token_mean",
    max_grad_norm: float | None = 1.0,
    disable_dropout: bool = True,
    seed: int = 0,
    device="auto",
    dtype="float32",
    progress: bool = True,
    log_every: int = 1,
):
    """Fine-tune ``model`` (any HF causal LM) on prompt/completion ``examples``; returns ``(model, history)``.

    ``examples``: records ``{"prompt", "completion"}`` or ``(prompt, completion)`` tuples. The history logs
    ``loss``, ``tokens`` and ``seconds`` (since the start) per optimiser step.

    ``disable_dropout=True`` (default) sets every dropout rate of ``model`` to 0 first
    (``rlhf_edu.lm.disable_dropout_in_model``, in place), as every trainer of the book does: the logged loss
    is then the model's loss, not a dropout sample, and the SFT model that later serves as policy and
    reference has no dropout to make them differ. ``False`` trains with the model's dropout (a regulariser).

    Under ``torchrun --nproc_per_node N`` ``batch_size`` is per process: each step takes a global batch of
    ``N * batch_size`` examples, each process computes its share of the GLOBAL loss (for ``"token_mean"``
    normalised by the token count of the whole global batch) and the gradients are averaged
    (``rlhf_edu.train.distributed``); every process logs the global ``loss`` and ``tokens``.

    ``dtype``: ``"float32"`` (default) or ``"bfloat16"``, the precision of the forward pass, as in
    ``train_dpo`` (autocast: weights and optimiser state stay float32, the loss is float32).

    Args:
        model: any Hugging Face causal LM (trained in place and returned).
        tokenizer: its tokenizer, with a pad token.
        examples: the records (see above).
        epochs: passes over the shuffled examples.
        max_steps: ``None`` (default: ``epochs`` passes) or the number of optimiser steps to take, over as
            many passes over the reshuffled examples as they need (``epochs`` is then ignored; transformers'
            ``max_steps``). ``rlhf-edu train --steps N`` passes it.
        batch_size: examples per optimiser step (per process under ``torchrun``).
        lr: AdamW learning rate (finite, > 0).
        weight_decay: AdamW's decoupled weight decay (>= 0).
        loss_on: ``"completion"`` (default: the prompt's tokens are context, not targets) or ``"all"``
            (every token of prompt + completion is a target).
        loss_reduction: how token losses become the batch loss: ``"token_mean"`` (default: the mean over
            every target token of the batch), ``"sequence_mean"`` (each example's mean, then the mean over
            examples) or ``"sum"``.
        max_grad_norm: clip the global gradient norm to this value (> 0); None: no clipping.
        disable_dropout: set every dropout rate to 0 first (see above).
        seed: seed of the shuffling (and of torch's random stream).
        device: ``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda"``, ...
        dtype: ``"float32"`` or ``"bfloat16"`` (see above).
        progress: show a progress bar.
        log_every: log every ``log_every``-th optimiser step (from step 0) and the last one.

    Raises ``ValueError``/``TypeError`` naming the argument for a bad record or setting (a record that does
    not fit the model's context, a tokenizer with more tokens than the model has embeddings, ``lr`` not
    finite, ``max_grad_norm`` <= 0, ...); ``NonFiniteLossError`` if the loss or a gradient becomes NaN or
    inf (no update is made with it).

    >>> model, hist = train_sft(tiny_causal_lm(tok), tok, [("12+3=", "15.")] * 64, epochs=2)   # doctest: +SKIP
    """
    check_integer("epochs", epochs, minimum=1)
    max_steps = None if max_steps is None else check_integer("max_steps", max_steps, minimum=1)
    check_integer("batch_size", batch_size, minimum=1)
    lr, max_grad_norm, weight_decay = check_optimizer_settings(lr, max_grad_norm, weight_decay)
    check_vocabulary(model, tokenizer)
    check_choice("loss_on", loss_on, ("completion", "all"))
    check_choice("loss_reduction", loss_reduction, ("token_mean", "sequence_mean", "sum"))
    prompts, completions = prompt_completion_pairs(examples)
    set_seed(seed)
    parallel = data_parallel(resolve_device(device))  # several processes under torchrun (batch_size per process)
    device = parallel.device
    autocast = mixed_precision(dtype, device)  # bfloat16: the forward passes under torch.autocast
    model.to(device).train()
    if disable_dropout:
        disable_dropout_in_model(model)
    batch = prompt_completion_batch(tokenizer, prompts, completions)
    check_fits_context(model, batch.input_ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    trained, optimizer = parallel.prepare(model, optimizer)  # what the gradients flow through
    history = History("sft", dict(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, loss_on=loss_on,
                                  loss_reduction=loss_reduction, n_examples=len(prompts),
                                  disable_dropout=disable_dropout, seed=seed))
    n = len(prompts)
    global_batch = parallel.global_batch_size(batch_size)
    total = steps_per_run(n, global_batch, epochs, max_steps)
    bar = progress_bar(total, "sft", progress and parallel.is_main)
    start = time.perf_counter()
    for step, (epoch, idx) in enumerate(epoch_minibatches(n, global_batch, epochs, seed, max_steps)):
        idx, weight = parallel.share(idx)  # this process's slice of the global minibatch
        ids = batch.input_ids[idx].to(device)
        attn = batch.attention_mask[idx].to(device)
        if loss_on == "completion":
            target = batch.completion_mask[idx].to(device)
        else:  # every real token that has a real token before it
            target = attn.clone()
            target[:, 1:] *= attn[:, :-1]
            target[:, 0] = 0
        with autocast:  # the forward pass only: backward runs outside autocast
            logp = token_logprobs(trained, ids, attn)
        if parallel.distributed and loss_reduction != "sequence_mean":
            loss, weight = _global_token_loss(parallel, logp, target, weight, loss_reduction), float(weight > 0)
        else:
            loss = masked_nll(logp, target, loss_reduction)
        try:
            parallel.optimizer_step(optimizer, loss, trained.parameters(), max_grad_norm, weight=weight)
        except NonFiniteLossError as exc:
            bar.close()
            raise NonFiniteLossError(f"sft: stopped at step {step}: {exc}", step=step, history=history) from exc
        if step % log_every == 0 or step == total - 1:  # every step would cost more than a tiny model's step
            row = parallel.reduce_metrics(dict(loss=loss.detach(), tokens=target.sum() if weight > 0 else 0.0),
                                          weight=weight, sums=("tokens",))
            history.log(step=step, epoch=epoch, **row, seconds=time.perf_counter() - start)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model, history

