r"""Direct Preference Optimization and its relatives IPO, SLiC-HF and GPO, on offline preference pairs.

DPO (Rafailov et al., 2023) trains the policy on pairs :math:`(x, y_w, y_l)` with the classification loss

.. math::

    \mathcal{L}_{DPO}(\theta) = -\mathbb{E}_{(x, y_w, y_l)}\Big[\log\sigma\Big(
        \beta\log\frac{\pi_\theta(y_w\mid x)}{\pi_{ref}(y_w\mid x)}
      - \beta\log\frac{\pi_\theta(y_l\mid x)}{\pi_{ref}(y_l\mid x)}\Big)\Big]

(the lecture notes' final DPO loss), whose gradient weights each pair by
:math:`\sigma(\hat r_\theta(x, y_l) - \hat r_\theta(x, y_w))`, the probability that the *implicit reward*
:math:`\hat r_\theta(x, y) = \beta \log \frac{\pi_\theta(y\mid x)}{\pi_{ref}(y\mid x)}` ranks the pair wrong.
``loss=`` swaps the function of the log-ratio difference :math:`h = \log\frac{\pi_\theta(y_w)}{\pi_{ref}(y_w)}
- \log\frac{\pi_\theta(y_l)}{\pi_{ref}(y_l)}`: IPO's :math:`(h - \frac{1}{2\beta})^2` (Azar et al., 2023),
GPO's :math:`f(\beta h)` for a convex ``f`` (Tang et al., 2024), or SLiC-HF's hinge
:math:`\max(0, \delta - \log\pi_\theta(y_w) + \log\pi_\theta(y_l))` (Zhao et al., 2023, no reference
model in the loss). Every loss is the one in ``rlhf_edu.torch.direct``. Chapter 6 ("Direct alignment").

Two implementation details of TRL's ``DPOTrainer`` are kept because they matter on any hardware: the
chosen and the rejected completions go through the model in ONE concatenated batch (one forward pass per
step instead of two), and the reference log-probs are computed once, before training, without gradient.
"""

from __future__ import annotations

import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import REDUCTIONS, check_vocabulary, mixed_precision, resolve_device, set_seed
from rlhf_edu.numpy.direct import GPO_LOSSES
from rlhf_edu.train.data import epoch_minibatches, steps_per_run
from rlhf_edu.train.distributed import data_parallel
from rlhf_edu.train.evaluation import evaluator
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_optimizer_settings, run_steps
from rlhf_edu.train.preference_data import (
    chosen_rejected_logps,
    encode_pairs,
    frozen_logps,
    pair_rows,
    per_token_nll,
    preference_triples,
    take_rows,
)
from rlhf_edu.train.rollouts import policy_and_reference
from rlhf_edu.validation import check_choice, check_in_range, check_integer, check_nonnegative, check_positive

__all__ = ["DPO_LOSSES", "train_dpo"]

#: The losses ``train_dpo`` can train with (``rlhf_edu.torch.dpo_loss``, ``ipo_loss``, ``slic_loss``, ``gpo_loss``).
DPO_LOSSES = ("dpo", "ipo", "slic", "gpo")


def train_dpo(
    policy,
    tokenizer,
    pairs,
    *,
    ref_model=None,
    beta: float = 0.3,
    loss: str = "dpo",
    gpo_f: str = "logistic",
    slic_delta: float = 1.0,
    slic_lam: float = 0.0,
    label_smoothing: float = 0.0,
    sft_weight: float = 1.0,
    logp_reduction: str = "sum",
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 3e-4,
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
    r"""Train ``policy`` on preference ``pairs`` with DPO (or IPO, SLiC-HF, GPO); returns ``(policy, history)``.

    Per minibatch of B pairs: one forward pass over the 2B concatenated completions gives
    :math:`\log\pi_\theta(y_w\mid x)` and :math:`\log\pi_\theta(y_l\mid x)`; with the reference log-probs
    (computed once up front) the per-pair loss is

    - ``"dpo"``: :math:`-\log\sigma(\beta h)` (Rafailov et al. 2023, eq. 7), or with ``label_smoothing``
      :math:`\varepsilon` the conservative cDPO :math:`-(1-\varepsilon)\log\sigma(\beta h) -
      \varepsilon\log\sigma(-\beta h)` (Mitchell 2023), for labels flipped with probability
      :math:`\varepsilon`;
    - ``"ipo"``: :math:`(h - \frac{1}{2\beta})^2` (Azar et al. 2023, eq. 17): a target margin instead of
      an ever-growing one;
    - ``"gpo"``: :math:`f(\beta h)` with ``gpo_f`` one of ``rlhf_edu.numpy.direct.GPO_LOSSES``
      (``"logistic"`` is DPO, ``"squared"`` IPO up to scale, ``"hinge"`` SLiC; Tang et al. 2024, table 1);
    - ``"slic"``: :math:`\max(0, \delta - \log\pi_\theta(y_w\mid x) + \log\pi_\theta(y_l\mid x)) -
      \lambda\log\pi_\theta(y_w\mid x)` (Zhao et al. 2023) with :math:`\delta` = ``slic_delta`` and
      :math:`\lambda` = ``slic_lam`` (the regulariser's target is the chosen completion); the reference
      model only enters the logged implicit rewards.

    averaged over the batch, where :math:`h = (\log\pi_\theta(y_w) - \log\pi_{ref}(y_w)) -
    (\log\pi_\theta(y_l) - \log\pi_{ref}(y_l))`, plus ``sft_weight`` times the per-token NLL of the
    chosen completions, :math:`-\frac{1}{|y_w|}\log\pi_\theta(y_w\mid x)` (RPO, Pang et al. 2024; Llama 3's
    DPO recipe, Dubey et al. 2024, uses 0.2).

    Why an SFT anchor (``sft_weight=1.0`` by default; 0 gives the paper's loss): DPO only constrains the
    policy on the completions in the data, and both :math:`\log\pi_\theta(y_w)` and
    :math:`\log\pi_\theta(y_l)` usually fall while their difference grows; the mass goes elsewhere. On the
    book's tiny character-level model it goes to misspelt words, which the sentiment task's gold reward
    punishes. Measured with the defaults (1024 pairs with ``min_gap=0.1``, one epoch; gold reward of 256
    samples on the test prompts): +0.23 gold at a KL to the SFT model of 2.2 nats; the same run with
    ``sft_weight=0`` ends at +0.06 with a KL of 6.1 (it passes +0.1 to +0.15 on the way, then its samples
    fill with misspelt words).

    Args:
        policy: any Hugging Face causal LM (trained in place and returned).
        tokenizer: its tokenizer (needs a pad token).
        pairs: records ``{"prompt", "chosen", "rejected"}`` or ``(prompt, chosen, rejected)`` tuples
            (``SentimentTask.preference_pairs`` returns them).
        ref_model: the frozen reference :math:`\pi_{ref}`; default a frozen deep copy of ``policy`` as
            given (the SFT model).
        beta: :math:`\beta > 0`, the strength of the implicit KL leash (the DPO paper uses 0.1; 0.3, the
            default, measured best on the sentiment task).
        loss: one of ``DPO_LOSSES``: ``"dpo"`` (default), ``"ipo"``, ``"slic"``, ``"gpo"``.
        gpo_f: GPO's convex function (only with ``loss="gpo"``).
        slic_delta, slic_lam: SLiC's margin :math:`\delta` and regulariser weight (only with ``"slic"``).
        label_smoothing: cDPO's :math:`\varepsilon` in [0, 0.5] (only with ``"dpo"``).
        sft_weight: weight of the chosen completions' per-token NLL (default 1.0; 0: the paper's loss).
        logp_reduction: ``"sum"`` (default: :math:`\log\pi(y\mid x)`, what the derivation uses) or
            ``"mean"`` per completion token (length-normalised; the chapter's "sum vs mean" bug).
        epochs, batch_size, lr, weight_decay, max_grad_norm: AdamW over ``epochs`` passes of shuffled
            minibatches of ``batch_size`` pairs, gradients clipped to ``max_grad_norm`` (None: no clip).
            Under ``torchrun --nproc_per_node N`` ``batch_size`` is per process: each step takes a global
            batch of ``N * batch_size`` pairs and averages the gradients (``rlhf_edu.train.distributed``).
        max_steps: ``None`` (default: ``epochs`` passes) or the number of optimiser steps to take, over as
            many passes over the reshuffled pairs as they need (``epochs`` is then ignored; transformers'
            ``max_steps``). ``rlhf-edu train --steps N`` passes it.
        gold_reward_fn, reward_fn: callables ``(completions, prompts) -> (B,)`` (or a ``RewardModel`` for
            ``reward_fn``) used only at evaluation: ``eval_gold_reward``, ``eval_reward``.
        eval_prompts: prompts to sample from every ``eval_every`` steps (``eval_samples`` completions each,
            at most ``eval_max_new_tokens`` tokens); None: no evaluation.
        disable_dropout: set every dropout rate of the policy and the reference to 0 before training
            (default, as TRL's ``disable_dropout``; ``rlhf_edu.lm.disable_dropout_in_model``, in place and
            permanent), so the policy in train mode computes what the reference computed: at step 0, where
            :math:`\pi_\theta = \pi_{ref}`, the loss is exactly :math:`\log 2` and the logged margins,
            accuracies and implicit rewards are 0, not dropout noise (GPT-2's and OPT's configs default to
            dropout 0.1). ``False`` keeps the model's dropout in the training forward passes.
        seed: seeds the run (shuffling and torch); the same seed gives the same history on the CPU.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        dtype: ``"float32"`` (default) or ``"bfloat16"``, the precision of the forward passes (policy,
            reference, sampling). bfloat16 runs them under ``torch.autocast`` (``rlhf_edu.lm.mixed_precision``,
            as Hugging Face ``Trainer(bf16=True)``): the matrix products run in bfloat16 while the weights and
            the optimiser state stay float32, and the log-probs and the loss are float32. A policy already
            loaded in bfloat16 trains as it is, in bfloat16 throughout: its AdamW state is bfloat16 too and
            updates below its rounding step are lost (load it in float32 to train it). ``ValueError`` naming
            ``dtype`` for another value, for float16 (it would need loss scaling) or for bfloat16 on a GPU
            without it.
        progress: show a progress bar.

    Returns:
        ``(policy, history)``. One history row per optimiser step: ``step``, ``epoch``, ``loss``,
        ``margin`` (mean implicit-reward margin :math:`\hat r(y_w) - \hat r(y_l)`, also logged as
        ``reward``, the training signal every trainer logs), ``accuracy`` (fraction of pairs with
        :math:`\hat r(y_w) > \hat r(y_l)`), ``chosen_reward``, ``rejected_reward`` (mean implicit
        rewards), ``chosen_logp``, ``rejected_logp`` (mean :math:`\log\pi_\theta`; both often fall while
        the margin grows), ``seconds``. With ``eval_prompts``, the rows of steps 0, ``eval_every``, ...
        also hold ``eval_gold_reward``, ``eval_reward``, ``eval_kl`` (exact KL to ``ref_model``),
        ``eval_entropy``, ``eval_length``, measured BEFORE that step's update (step 0: the starting
        policy), and one last row (``step`` = number of steps) holds the evaluation after training.

    Raises ``ValueError`` for ``beta <= 0``, an unknown ``loss``, empty ``pairs``, a tokenizer without a
    pad token, or pairs longer than the model's context.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> pairs = [{"prompt": "review:", "chosen": " good.", "rejected": " bad."}] * 8
    >>> model, hist = train_dpo(model, tok, pairs, sft_weight=0.0, batch_size=4, lr=1e-2, device="cpu", progress=False)
    >>> len(hist), round(hist.first("loss"), 4), hist.last("margin") > 0
    (2, 0.6931, True)
    """
    beta = check_positive("beta", beta)
    check_choice("loss", loss, DPO_LOSSES)
    check_choice("gpo_f", gpo_f, GPO_LOSSES)
    slic_delta = check_nonnegative("slic_delta", slic_delta)
    slic_lam = check_nonnegative("slic_lam", slic_lam)
    label_smoothing = check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
    sft_weight = check_nonnegative("sft_weight", sft_weight)
    check_choice("logp_reduction", logp_reduction, REDUCTIONS)
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
    ref_model = policy_and_reference(policy, ref_model, device, disable_dropout=disable_dropout)
    data = encode_pairs(tokenizer, prompts, chosen, rejected, model=policy)
    # log pi_ref(y|x) of every chosen and rejected completion, once: the reference never changes.
    with autocast:
        ref_logps = frozen_logps(ref_model, data, logp_reduction, device=device)

    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    model, optimizer = parallel.prepare(policy, optimizer)  # model: what the gradients flow through
    history = History(f"dpo-{loss}", dict(beta=beta, loss=loss, gpo_f=gpo_f, slic_delta=slic_delta,
                                          slic_lam=slic_lam, label_smoothing=label_smoothing, sft_weight=sft_weight,
                                          logp_reduction=logp_reduction, epochs=epochs, max_steps=max_steps,
                                          batch_size=batch_size, lr=lr, n_pairs=len(prompts),
                                          disable_dropout=disable_dropout, seed=seed))
    n = len(prompts)

    def train_step(minibatch):
        epoch, idx = minibatch
        idx, _ = parallel.share(idx)  # this process's slice of the global minibatch
        rows = pair_rows(idx, n)
        batch = take_rows(data, rows, device)
        # Chosen and rejected in ONE forward pass (rows 0..B-1 chosen, B..2B-1 rejected).
        with autocast:  # the forward pass only: backward runs outside autocast
            policy_chosen, policy_rejected = chosen_rejected_logps(model, batch, logp_reduction)
        ref_chosen, ref_rejected = ref_logps[rows.to(device)].chunk(2)

        if loss == "dpo":  # Rafailov et al. 2023, eq. 7 (cDPO with label_smoothing)
            losses = rt.dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing)
        elif loss == "ipo":  # Azar et al. 2023, eq. 17
            losses = rt.ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
        elif loss == "gpo":  # Tang et al. 2024: f(beta * rho)
            rho = rt.log_ratio_difference(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
            losses = rt.gpo_loss(rho, beta, gpo_f)
        else:  # SLiC-HF (Zhao et al. 2023): calibration hinge + lam * NLL of the chosen completion
            ref_nll = -policy_chosen if slic_lam > 0 else None
            losses = rt.slic_loss(policy_chosen, policy_rejected, slic_delta, ref_nll, slic_lam)
        objective = losses.mean()
        if sft_weight > 0:  # RPO (Pang et al. 2024): + alpha * per-token NLL of the chosen completion
            objective = objective + sft_weight * per_token_nll(policy_chosen, batch.completion_mask[: len(idx)], logp_reduction).mean()
        parallel.optimizer_step(optimizer, objective, model.parameters(), max_grad_norm)

        with torch.no_grad():  # the implicit reward model r = beta log(pi / pi_ref) of the pairs
            chosen_reward = rt.dpo_implicit_reward(policy_chosen.detach(), ref_chosen, beta)
            rejected_reward = rt.dpo_implicit_reward(policy_rejected.detach(), ref_rejected, beta)
            margin = (chosen_reward - rejected_reward).mean()
        return dict(epoch=epoch, loss=objective.detach(), reward=margin, margin=margin,
                    accuracy=(chosen_reward > rejected_reward).float().mean(),
                    chosen_reward=chosen_reward.mean(), rejected_reward=rejected_reward.mean(),
                    chosen_logp=policy_chosen.detach().mean(), rejected_logp=policy_rejected.detach().mean())

    policy.train()
    global_batch = parallel.global_batch_size(batch_size)
    run_steps(epoch_minibatches(n, global_batch, epochs, seed, max_steps), train_step, history=history,
              total=steps_per_run(n, global_batch, epochs, max_steps), description=f"dpo ({loss})", parallel=parallel,
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_reward_fn,
                                 reward_fn=reward_fn, num_samples=eval_samples, max_new_tokens=eval_max_new_tokens,
                                 autocast=autocast),
              eval_every=eval_every, progress=progress, postfix=("loss", "margin"))
    policy.eval()
    return policy, history
