r"""Training a reward model on human preferences: Bradley-Terry on pairs, InstructGPT on K-wise rankings.

A reward model :math:`r_\phi(x, y)` (``rlhf_edu.lm.RewardModel``: the SFT model with a scalar head read at
the last token) is fitted by maximum likelihood under the Bradley-Terry model (1952),
:math:`P(y_w \succ y_l \mid x) = \sigma(r_\phi(x, y_w) - r_\phi(x, y_l))`, i.e. by minimising

.. math:: \mathcal{L}_R(\phi) = -\mathbb{E}_{(x, y_w, y_l)}\big[\log\sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l) - m\big)\big]

(the lecture notes' reward-model objective; ``rlhf_edu.torch.bradley_terry_loss``), with an optional
margin :math:`m` (LLaMA-2, Touvron et al. 2023). When labellers rank K completions at once, InstructGPT
(Ouyang et al., 2022, eq. 1) trains on all :math:`\binom{K}{2}` pairs of a ranking in the same batch, each
weighted :math:`1/\binom{K}{2}` (``rlhf_edu.torch.ranking_to_pairs``), so a prompt counts once however many
pairs it yields and its K completions go through the model once, not K - 1 times.

Rewards are only defined up to a constant (the loss sees differences), so a reward model's scale drifts;
``l2_reward`` adds the centering regulariser of Eisenstein et al. (2023),
:math:`\eta\,\mathbb{E}\big[(\sum_k r_\phi(x, y_k))^2\big]`, which pins the rewards of each prompt's
completions around 0 without changing any preference. Chapter 1 ("Rewards from preferences").

Measured (``benchmarks/reward_model_noise.py``): a reward model on the sentiment SFT model, trained with
the defaults (2 epochs, lr 5e-4) on 2048 pairs whose labels were flipped with probability ``noise``,
scored on 512 held-out test pairs (new prompts):

=====  ===========================  ==========================  ==============================
noise  accuracy on the test labels  accuracy, test pairs with   agreement with the gold ranking
       (best possible about 0.83)   gold gap >= 0.1 (no ties)   (non-tied test pairs)
=====  ===========================  ==========================  ==============================
0.0    0.80                         0.91                        0.93
0.1    0.79                         0.87                        0.91
0.2    0.74                         0.82                        0.82
0.3    0.64                         0.69                        0.67
0.4    0.64                         0.68                        0.66
=====  ===========================  ==========================  ==============================
"""

from __future__ import annotations


import numpy as np
import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import (RewardModel, check_vocabulary, disable_dropout_in_model, mixed_precision,
                        prompt_completion_batch, resolve_device, set_seed)
from rlhf_edu.train.data import check_fits_context, epoch_minibatches, steps_per_run
from rlhf_edu.train.distributed import data_parallel
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_optimizer_settings, run_steps
from rlhf_edu.train.preference_data import encode_pairs, pair_rows, preference_triples, ranking_records, take_rows
from rlhf_edu.validation import as_float_array, check_integer, check_nonnegative

__all__ = ["train_reward_model", "reward_margins", "pairwise_accuracy"]


def _check_reward_model(rm):
    if not isinstance(rm, RewardModel):
        raise TypeError(
            f"rm must be a rlhf_edu.lm.RewardModel, got {type(rm).__name__}; wrap a language model with "
            "RewardModel.from_pretrained_lm(sft_model)"
        )


def _is_ranking(record):
    if isinstance(record, dict):
        return "completions" in record
    return isinstance(record, (tuple, list)) and len(record) == 2 and isinstance(record[1], (list, tuple))


def _margins(margin, n):
    """``margin`` as None or an ``(n,)`` float array (a number is the same margin for every record)."""
    if margin is None:
        return None
    m = as_float_array("margin", margin)
    if m.ndim == 0:
        m = np.full(n, float(m))
    if m.shape != (n,):
        raise ValueError(f"margin must be a number or one value per record ({n}), got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("margin must be finite")
    return m


@torch.no_grad()
def reward_margins(rm, tokenizer, pairs, *, batch_size: int = 64):
    r"""``(N,)`` NumPy array of :math:`r_\phi(x, y_w) - r_\phi(x, y_l)` for each pair, without gradient.

    Positive where the reward model agrees with the label. Its histogram is the chapter's picture of a
    reward model (a wide positive bulk: confident and right; mass below 0: disagreements with the
    labellers, partly label noise). Chosen and rejected of ``batch_size`` pairs are scored in one forward
    pass, on the reward model's device, in eval mode (its mode is restored afterwards).

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm, RewardModel
    >>> tok = char_tokenizer(); rm = RewardModel(tiny_causal_lm(tok, d_model=32, n_layer=1), seed=0)
    >>> m = reward_margins(rm, tok, [("p:", " good.", " bad."), ("p:", " bad.", " bad.")])
    >>> m.shape, abs(float(m[1])) < 1e-6   # the same completion twice: margin 0 (up to rounding)
    ((2,), True)
    """
    _check_reward_model(rm)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    prompts, chosen, rejected = preference_triples(pairs)
    data = encode_pairs(tokenizer, prompts, chosen, rejected, model=rm)
    device = next(rm.parameters()).device
    was_training = rm.training
    rm.eval()
    n, out = len(prompts), []
    for start in range(0, n, batch_size):
        batch = take_rows(data, pair_rows(torch.arange(start, min(start + batch_size, n)), n), device)
        r_chosen, r_rejected = rm(batch.input_ids, batch.attention_mask).chunk(2)
        out.append((r_chosen - r_rejected).float().cpu().numpy())
    rm.train(was_training)
    return np.concatenate(out)


def pairwise_accuracy(rm, tokenizer, pairs, *, batch_size: int = 64) -> float:
    r"""Fraction of pairs the reward model ranks like the label: :math:`r_\phi(x, y_w) > r_\phi(x, y_l)`.

    A tie counts one half (a constant reward model scores 0.5, chance). With labels drawn from a noisy
    annotator, the best possible accuracy is below 1: for the sentiment task's Bradley-Terry labels
    (``beta=10``) it is :math:`\mathbb{E}[\max(\sigma(\beta\Delta g), \sigma(-\beta\Delta g))]`, about 0.83
    on its test pairs, where a quarter of the pairs are ties in gold reward and get a coin-flip label.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm, RewardModel
    >>> tok = char_tokenizer(); rm = RewardModel(tiny_causal_lm(tok, d_model=32, n_layer=1), seed=0)
    >>> pairwise_accuracy(rm, tok, [("p:", " good.", " bad."), ("p:", " bad.", " good.")])  # mirror images
    0.5
    """
    m = reward_margins(rm, tokenizer, pairs, batch_size=batch_size)
    return float(np.mean(m > 0) + 0.5 * np.mean(m == 0))


def train_reward_model(
    rm,
    tokenizer,
    pairs,
    *,
    k_wise=None,
    epochs: int = 2,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 5e-4,
    weight_decay: float = 0.0,
    margin=None,
    l2_reward: float = 0.0,
    max_grad_norm: float | None = 1.0,
    eval_pairs=None,
    eval_every: int = 16,
    disable_dropout: bool = True,
    seed: int = 0,
    device="auto",
    dtype="float32",
    progress: bool = True,
):
    r"""Train a ``RewardModel`` on preference pairs or K-wise rankings; returns ``(rm, history)``.

    Pairs (``{"prompt", "chosen", "rejected"}`` or 3-tuples): per minibatch of B pairs, chosen and
    rejected go through the model in ONE forward pass of 2B rows and the loss is

    .. math:: \frac{1}{B}\sum_i -\log\sigma(r_{w,i} - r_{l,i} - m_i) \;+\; \eta\,\frac{1}{B}\sum_i (r_{w,i} + r_{l,i})^2 .

    Rankings (``{"prompt", "completions"}``, K completions BEST FIRST, e.g.
    ``SentimentTask.k_wise_rankings``): per minibatch of B rankings, the BK completions go through the
    model once and every ranking contributes its :math:`\binom{K}{2}` pairs weighted :math:`1/\binom{K}{2}`
    (InstructGPT, eq. 1):

    .. math:: \frac{1}{B}\sum_i \sum_{j<k} \tfrac{1}{\binom{K}{2}} \big(-\log\sigma(r_{i,j} - r_{i,k} - m_i)\big)
              \;+\; \eta\,\frac{1}{B}\sum_i \big(\textstyle\sum_k r_{i,k}\big)^2 .

    Args:
        rm: a ``rlhf_edu.lm.RewardModel`` (``RewardModel.from_pretrained_lm(sft_model)``, as in
            InstructGPT); trained in place and returned.
        tokenizer: the tokenizer (pad token required).
        pairs: pair records or ranking records (see above).
        k_wise: ``None`` (default: rankings when the first record has ``"completions"``), ``True``
            (rankings) or ``False`` (pairs).
        epochs, batch_size, lr, weight_decay, max_grad_norm: AdamW over ``epochs`` passes of shuffled
            minibatches of ``batch_size`` records, gradients clipped to ``max_grad_norm`` (None: no clip).
            Under ``torchrun --nproc_per_node N`` ``batch_size`` is per process: each step takes a global
            batch of ``N * batch_size`` records and averages the gradients (``rlhf_edu.train.distributed``;
            the logged ``reward_std`` is then the mean of the processes' standard deviations).
        max_steps: ``None`` (default: ``epochs`` passes) or the number of optimiser steps to take, over as
            many passes over the reshuffled records as they need (``epochs`` is then ignored; transformers'
            ``max_steps``). ``rlhf-edu train --steps N`` passes it.
        margin: ``None`` (no margin), a number (every pair), or one number per record (LLaMA-2's margin
            from the labellers' "significantly better" ratings).
        l2_reward: :math:`\eta \ge 0`, the weight of the reward-centering regulariser (default 0).
        eval_pairs: held-out pair records; ``eval_accuracy`` (``pairwise_accuracy``) and ``eval_margin``
            (mean of ``reward_margins``) every ``eval_every`` steps and after the last one.
        disable_dropout: set every dropout rate of ``rm`` to 0 first (default; as TRL's reward trainer,
            ``rlhf_edu.lm.disable_dropout_in_model``, in place): the rewards the loss sees in train mode are
            then the ones ``reward_margins`` and the RL trainers read in eval mode. ``False`` keeps them.
        seed, device, dtype, progress: as in every trainer (``dtype``: see ``train_dpo``; the rewards and
            the loss are float32).

    Returns:
        ``(rm, history)``; one row per optimiser step: ``loss`` (all terms), ``bt_loss`` (the
        Bradley-Terry term), ``accuracy`` (fraction of the batch's pairs ranked like the label; ties
        half), ``margin`` (mean :math:`r_w - r_l`), ``reward_mean``, ``reward_std`` (of all the batch's
        rewards: the scale and drift that ``l2_reward`` controls), ``seconds``; with ``eval_pairs``, the
        rows of steps 0, ``eval_every``, ... (measured before that step's update) and one last row after
        training hold ``eval_accuracy`` and ``eval_margin``.

    Raises ``TypeError`` if ``rm`` is not a ``RewardModel``; ``ValueError`` for empty data, malformed
    records, rankings of different K, a negative ``l2_reward``, or texts longer than the context.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm, RewardModel
    >>> tok = char_tokenizer(); rm = RewardModel(tiny_causal_lm(tok, d_model=32, n_layer=1), seed=0)
    >>> pairs = [("review:", " good.", " bad."), ("review:", " fun.", " dull.")] * 8
    >>> rm, hist = train_reward_model(rm, tok, pairs, epochs=3, batch_size=8, lr=3e-3, device="cpu", progress=False)
    >>> len(hist), hist.last("bt_loss") < hist.first("bt_loss"), pairwise_accuracy(rm, tok, pairs)
    (6, True, 1.0)
    """
    _check_reward_model(rm)
    epochs = check_integer("epochs", epochs, minimum=1)
    max_steps = None if max_steps is None else check_integer("max_steps", max_steps, minimum=1)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    lr, max_grad_norm, weight_decay = check_optimizer_settings(lr, max_grad_norm, weight_decay)
    check_vocabulary(rm, tokenizer)
    l2_reward = check_nonnegative("l2_reward", l2_reward)
    eval_every = check_integer("eval_every", eval_every, minimum=1)
    if isinstance(pairs, (str, dict)):
        raise TypeError(f"pairs must be a list of records, got a single {type(pairs).__name__}; wrap it in [...]")
    records = list(pairs)
    if len(records) == 0:
        raise ValueError("pairs is empty: nothing to train on")
    if k_wise is None:
        k_wise = _is_ranking(records[0])
    if k_wise:
        prompts, rankings = ranking_records(records, name="pairs")
        K = len(rankings[0])
        # Rows i*K .. i*K + K-1 hold ranking i, best first.
        data = prompt_completion_batch(tokenizer, [p for p in prompts for _ in range(K)],
                                       [c for cs in rankings for c in cs])
        check_fits_context(rm, data.input_ids, name="pairs")
    else:
        prompts, chosen, rejected = preference_triples(records)
        K = 2
        data = encode_pairs(tokenizer, prompts, chosen, rejected, model=rm)
    n = len(prompts)
    margins = _margins(margin, n)
    eval_records = None if eval_pairs is None else list(eval_pairs)
    if eval_records is not None:
        preference_triples(eval_records, name="eval_pairs")  # fail now, not after training

    set_seed(seed)
    # several processes under torchrun (batch_size per process); the backbone's LM head gets no gradient
    parallel = data_parallel(resolve_device(device), find_unused_parameters=True)
    device = parallel.device
    autocast = mixed_precision(dtype, device)  # bfloat16: the forward passes under torch.autocast
    rm.to(device)
    if disable_dropout:
        disable_dropout_in_model(rm)
    if margins is not None:
        margins = torch.as_tensor(margins, dtype=next(rm.parameters()).dtype, device=device)
    # (winner, loser) positions of every pair of a best-first ranking of K, weights 1/C(K, 2).
    winners, losers, pair_weights = rt.ranking_to_pairs(torch.arange(K, device=device),
                                                        dtype=next(rm.parameters()).dtype)

    optimizer = torch.optim.AdamW(rm.parameters(), lr=lr, weight_decay=weight_decay)
    model, optimizer = parallel.prepare(rm, optimizer)  # what the gradients flow through
    history = History("reward_model", dict(k_wise=bool(k_wise), K=K, epochs=epochs, max_steps=max_steps,
                                           batch_size=batch_size, lr=lr,
                                           margin=None if margin is None else "given", l2_reward=l2_reward,
                                           n_records=n, disable_dropout=disable_dropout, seed=seed))

    def evaluate():
        with autocast:
            m = reward_margins(rm, tokenizer, eval_records)
        return {"eval_accuracy": float(np.mean(m > 0) + 0.5 * np.mean(m == 0)), "eval_margin": float(m.mean())}

    def train_step(minibatch):
        epoch, idx = minibatch
        idx, _ = parallel.share(idx)  # this process's slice of the global minibatch
        rows = (idx[:, None] * K + torch.arange(K)).flatten() if k_wise else pair_rows(idx, n)
        batch = take_rows(data, rows, device)
        with autocast:  # the forward pass only: backward runs outside autocast
            rewards = model(batch.input_ids, batch.attention_mask)
        # (B, K): row b holds the K completions of record b, best first ((B, 2) for pairs: chosen, rejected)
        rewards = rewards.view(len(idx), K) if k_wise else torch.stack(rewards.chunk(2), dim=1)
        r_win, r_lose = rewards[:, winners], rewards[:, losers]  # (B, C(K, 2))
        m = 0.0 if margins is None else margins[idx.to(device)][:, None]
        # Bradley-Terry NLL of every pair, weighted 1/C(K,2) per ranking (InstructGPT eq. 1).
        bt_loss = (pair_weights * rt.bradley_terry_loss(r_win, r_lose, m)).sum(dim=1).mean()
        objective = bt_loss
        if l2_reward > 0:  # reward centering (Eisenstein et al. 2023): (sum_k r_k)^2 per prompt
            objective = objective + l2_reward * rewards.sum(dim=1).pow(2).mean()
        parallel.optimizer_step(optimizer, objective, model.parameters(), max_grad_norm)

        with torch.no_grad():
            diff = (r_win - r_lose).detach()
            right = (diff > 0).to(diff.dtype) + 0.5 * (diff == 0).to(diff.dtype)
            accuracy = (pair_weights * right).sum(dim=1).mean()
        return dict(epoch=epoch, loss=objective.detach(), bt_loss=bt_loss.detach(), accuracy=accuracy,
                    margin=diff.mean(), reward_mean=rewards.detach().mean(), reward_std=rewards.detach().std())

    rm.train()
    global_batch = parallel.global_batch_size(batch_size)
    run_steps(epoch_minibatches(n, global_batch, epochs, seed, max_steps), train_step, history=history,
              total=steps_per_run(n, global_batch, epochs, max_steps), description="reward model", parallel=parallel,
              evaluate=None if eval_records is None else evaluate, eval_every=eval_every, progress=progress,
              postfix=("loss", "accuracy"))
    rm.eval()
    return rm, history
