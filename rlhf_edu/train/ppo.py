r"""PPO for language models, InstructGPT style (chapter 4): an actor, a critic, a frozen reference and a reward.

One iteration of RLHF-PPO (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences";
Stiennon et al. 2020; Ouyang et al. 2022, InstructGPT; the lecture notes' "Secrets of RLHF", Zheng et
al. 2023) on a batch of prompts :math:`x`:

1. **Rollout.** Sample completions :math:`y \sim \pi_{\theta_{old}}(\cdot \mid x)`; record the log-probs
   of the sampled tokens under the sampling policy and under the reference :math:`\pi_{ref}` (the SFT
   model); score each completion once, :math:`s = R_\phi(x, y)`, read at its last (end) token.
2. **Per-token reward** (Ziegler et al. 2019, eq. 2; Stiennon et al. 2020, eq. 1): the score at the last
   token minus a KL penalty at every token,

   .. math:: r_t = -\beta \, \widehat{\mathrm{KL}}_t + [t = T]\, s, \qquad
             \widehat{\mathrm{KL}}_t = \log \pi_{\theta_{old}}(y_t \mid s_t) - \log \pi_{ref}(y_t \mid s_t) \;(k_1)

   (``rlhf_edu.torch.kl_penalized_rewards``), so :math:`\sum_t r_t = s - \beta \, \widehat{\mathrm{KL}}(y)`:
   the KL-regularised objective of chapter 2, one token at a time.
3. **Advantages with the critic, once per batch.** Values :math:`V_\psi(s_t)` of the states before each
   completion token; GAE (Schulman et al. 2016, eq. 16)
   :math:`\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)`, :math:`A_t = \sum_l (\gamma\lambda)^l \delta_{t+l}`,
   returns :math:`R_t = A_t + V(s_t)` (``rlhf_edu.torch.gae``), then whitening over the batch
   (``rlhf_edu.torch.whiten``).
4. **Several epochs of minibatch updates** of the clipped surrogate (Schulman et al. 2017, eq. 7) with
   :math:`c_t = \pi_\theta(y_t \mid s_t) / \pi_{\theta_{old}}(y_t \mid s_t)` and the clipped value loss:

   .. math:: \mathcal L = -\frac{1}{N}\sum_t \min\big(c_t A_t, \mathrm{clip}(c_t, 1-\epsilon, 1+\epsilon) A_t\big)
             - w_H \, H(\pi_\theta) + w_V \, \tfrac12 \frac{1}{N}\sum_t \max\big((V_\psi - R_t)^2,
             (\mathrm{clip}(V_\psi, V_{old} \pm \epsilon_V) - R_t)^2\big)

   (``rlhf_edu.torch.ppo_clip_loss``, ``rlhf_edu.torch.value_loss``): the lecture notes' full PPO objective
   :math:`\mathcal L_{clip} + w_1 H - w_2 KL - w_3 \mathcal L(\gamma)` written as a loss to minimise, with the
   KL in the reward (default) or in the loss (``kl_in="loss"``).

The implementation details of the lecture notes' "PPO implementation tricks" slide are explicit options:
reward at the end token only (``kl_penalized_rewards``; ``missing_eos_penalty`` for completions cut off
before their end token), token-level KL (``kl_in``), reward normalisation (``reward_normalization``),
advantage whitening (``whiten_advantages``), critic initialised from the reward model (``critic_init``),
a lower learning rate for the actor than the critic (``lr`` < ``critic_lr``), the actor frozen while the
critic warms up (``critic_warmup_steps``), GAE (``gamma``, ``lam``), and Ziegler et al.'s adaptive KL
controller (``adaptive_kl``); so is InstructGPT's pre-training mix, PPO-ptx (``ptx_coef``,
``ptx_examples``). Not implemented: the learning-rate schedule of the same slide.

Measured with the defaults (20 rollout batches of 64 samples) from ``sentiment_sft_policy()``, mean gold
reward of samples on the 8 test prompts (128 samples) before -> after, exact KL to the SFT model after, CPU
seconds on ONE thread including five evaluations:

=============================  ===========================  ===========================
reward_fn                      GPT-2 (2 layers, d 128)       Llama (2 layers, d 128)
=============================  ===========================  ===========================
``gold_reward``                0.41 -> 0.72, KL 3.1, 27 s   0.42 -> 0.67, KL 2.3, 38 s
reward model (2048 pairs)      0.41 -> 0.70, KL 3.3, 41 s   0.42 -> 0.73, KL 3.0, 42 s
=============================  ===========================  ===========================
"""

from __future__ import annotations

import copy
import math

import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import RewardModel, ValueModel, check_vocabulary, disable_dropout_in_model, token_logprobs
from rlhf_edu.lm.batching import prompt_completion_batch
from rlhf_edu.numpy.divergences import KL_ESTIMATORS
from rlhf_edu.train.data import check_fits_context, minibatches
from rlhf_edu.train.evaluation import evaluator
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_finite_grads, check_optimizer_settings, run_steps
from rlhf_edu.train.rollouts import prepare_online_run, sampled_kl
from rlhf_edu.train.sft import masked_nll
from rlhf_edu.validation import check_choice, check_in_range, check_integer, check_nonnegative, check_positive

__all__ = ["AdaptiveKLController", "RunningMoments", "train_ppo", "KL_PLACEMENTS", "REWARD_NORMALIZATIONS",
           "CRITIC_INITS"]

#: Where the KL to the reference goes: a per-token penalty in the reward, or a term of the loss.
KL_PLACEMENTS = ("reward", "loss")
#: How the scores are normalised before the KL penalty is added.
REWARD_NORMALIZATIONS = (None, "batch", "running")
#: What the critic's backbone and head start from.
CRITIC_INITS = ("reward_model", "policy")


class AdaptiveKLController:
    r"""Ziegler et al. (2019, section 2.2) adaptive KL coefficient: steer the measured KL towards a target.

    After each rollout batch with measured KL :math:`\mathrm{KL}_t` (nats per sequence),

    .. math:: e_t = \mathrm{clip}\Big(\frac{\mathrm{KL}_t - \mathrm{KL}_{target}}{\mathrm{KL}_{target}},
              -0.2, 0.2\Big), \qquad \beta_{t+1} = \beta_t \,\big(1 + K_\beta\, e_t\big), \quad
              K_\beta = \frac{n\_steps}{\text{horizon}}

    with ``n_steps`` the number of samples in the batch (as in OpenAI's lm-human-preferences and TRL): a
    proportional controller that raises :math:`\beta` when the policy drifts past the target and lowers
    it when it stays close. The paper's values are ``target=6`` nats and ``horizon=10000`` samples, made
    for runs of millions of samples; the book's short runs use a smaller horizon (e.g. 500) so the
    coefficient can move within a minute. Used by ``train_ppo(adaptive_kl=...)`` (chapter 4).

    >>> ctl = AdaptiveKLController(0.1, target=2.0, horizon=100)
    >>> round(ctl.update(4.0, n_steps=10), 6)   # KL twice the target: error clipped to 0.2
    0.102
    >>> round(ctl.update(2.0, n_steps=10), 6)   # on target: unchanged
    0.102
    """

    def __init__(self, init_kl_coef: float = 0.2, target: float = 6.0, horizon: int = 10_000,
                 max_error: float = 0.2):
        self.value = check_positive("init_kl_coef", init_kl_coef)
        self.target = check_positive("target", target)
        self.horizon = check_positive("horizon", horizon)
        self.max_error = check_positive("max_error", max_error)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update the coefficient from the KL measured on a batch of ``n_steps`` samples; return it."""
        error = min(max(float(current_kl) / self.target - 1.0, -self.max_error), self.max_error)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def __repr__(self):
        return f"AdaptiveKLController(value={self.value:.4g}, target={self.target}, horizon={self.horizon})"


class RunningMoments:
    r"""Running mean and (population) standard deviation of every score seen so far (Chan et al.'s merge).

    ``update(x)`` merges a batch into the running statistics; ``normalize(x)`` returns
    :math:`(x - \mu) / \max(\sigma, \text{eps})`. The ``reward_normalization="running"`` option of ``train_ppo``
    (the lecture notes' "apply reward normalization for training stability"): unlike per-batch
    normalisation, a batch that is better than the past ones keeps a positive mean score.

    >>> m = RunningMoments(); m.update(torch.tensor([1.0, 3.0])); m.update(torch.tensor([5.0, 7.0]))
    >>> m.mean, round(m.std, 4)
    (4.0, 2.2361)
    """

    def __init__(self, eps: float = 1e-8):
        self.eps = check_positive("eps", eps)
        self.mean, self.var, self.count = 0.0, 1.0, 0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            raise ValueError("x is empty: no score to update the running moments with")
        mean, var = float(x.mean()), float(x.var(correction=0))
        total = self.count + n
        delta = mean - self.mean
        # Parallel-variance formula: merge (count, mean, var) with the batch's (n, mean, var).
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / max(self.std, self.eps)


def _completion_values(critic, input_ids, attention_mask, prompt_length):
    """``(B, L)`` values of the states before each completion token: V(s_t) for completion column t.

    ``ValueModel`` gives ``values[:, j]``, the value of the state after token j; completion token t (column
    ``P + t``) is chosen from the state after token ``P + t - 1``. Reading ``values[:, P:]`` instead is the
    classic off-by-one: the value would already have seen the token it is supposed to judge.
    """
    values = critic(input_ids, attention_mask)
    return values[:, prompt_length - 1 : -1]


def _masked_mean(x, mask):
    return torch.where(mask > 0, x, torch.zeros_like(x)).sum() / mask.sum()


def train_ppo(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    *,
    value_model=None,
    critic_init=None,
    ref_model=None,
    steps: int = 20,
    batch_size: int = 64,
    ppo_epochs: int = 2,
    minibatch_size: int = 32,
    lr: float = 3e-4,
    critic_lr: float = 1e-3,
    max_grad_norm: float | None = 1.0,
    kl_coef: float = 0.2,
    adaptive_kl=False,
    kl_estimator: str | None = None,
    kl_in: str = "reward",
    gamma: float = 1.0,
    lam: float = 0.95,
    clip_eps: float = 0.2,
    value_clip: float | None = 0.2,
    vf_coef: float = 0.1,
    entropy_coef: float = 0.0,
    ptx_coef: float = 0.0,
    ptx_examples=None,
    whiten_advantages: bool = True,
    reward_normalization: str | None = "running",
    missing_eos_penalty: float | None = None,
    critic_warmup_steps: int = 0,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    gold_reward_fn=None,
    eval_prompts=None,
    eval_every: int = 10,
    disable_dropout: bool = True,
    seed: int = 0,
    device="auto",
    dtype="float32",
    progress: bool = True,
):
    r"""Fine-tune ``policy`` with PPO against ``reward_fn`` (see the module docstring); returns ``(policy, history)``.

    Args:
        policy: any Hugging Face causal LM (the SFT model); trained in place and returned.
        tokenizer: its tokenizer (needs a pad token).
        prompts: the prompt pool; each step draws ``batch_size`` of them with replacement.
        reward_fn: ``fn(completions, prompts) -> (B,)`` scores, or a ``RewardModel``.
        value_model: the critic, a ``ValueModel``; default: built according to ``critic_init``.
        critic_init: ``"reward_model"`` (``ValueModel.from_reward_model``, InstructGPT; needs ``reward_fn``
            to be a ``RewardModel``) or ``"policy"`` (a copy of the policy's backbone with a fresh head).
            Default ``None``: ``"reward_model"`` when ``reward_fn`` is a ``RewardModel``, else ``"policy"``.
        ref_model: the frozen reference; default a frozen deep copy of ``policy`` as passed in.
        steps: rollout batches (PPO iterations); each makes ``ppo_epochs * ceil(batch_size /
            minibatch_size)`` optimiser steps of the actor and of the critic.
        batch_size, ppo_epochs, minibatch_size: samples per rollout, passes over them, samples per update.
            Under ``torchrun --nproc_per_node N`` both sizes are per process: a step draws ``N * batch_size``
            prompts alike on every process, process ``r`` samples its slice with its own stream (seed + r),
            the gradients of actor and critic are averaged and the adaptive KL controller sees the global
            batch's KL (``rlhf_edu.train.distributed``); reward and advantage whitening use each process's
            own batch, and each minibatch's loss is a token mean over the process's own minibatch, so N
            processes do not take the steps of one process with ``N * batch_size``.
        lr, critic_lr: Adam learning rates of the actor and the critic (the notes: the actor's lower).
        max_grad_norm: gradient-norm clip of each network (``None``: no clipping).
        kl_coef: :math:`\beta`, the KL coefficient (initial value when ``adaptive_kl``), per nat of KL in
            units of the (normalised) score. 0.2 keeps a learned reward model from being over-optimised
            within the default 20 steps; 0.05 lets the proxy climb while the gold reward turns down.
        adaptive_kl: ``False`` (fixed :math:`\beta`), ``True`` (``AdaptiveKLController(kl_coef)`` with the
            paper's target 6 and horizon 10000) or an ``AdaptiveKLController`` of your own.
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (Schulman 2020); default ``None`` means ``"k1"`` with
            ``kl_in="reward"`` (the unbiased per-token log-ratio of InstructGPT) and ``"k3"`` with
            ``kl_in="loss"`` (GRPO's choice: ``k1`` in a loss has zero expected gradient on-policy).
        kl_in: ``"reward"``: :math:`-\beta\,\widehat{KL}_t` in every token's reward; ``"loss"``: the score
            alone in the reward and :math:`+\beta` times the token mean of the estimator in the actor's loss.
        gamma, lam: GAE discount and :math:`\lambda` over the completion tokens (the book's RLHF default:
            no discount, :math:`\lambda = 0.95`).
        clip_eps: the PPO ratio clip :math:`\epsilon`.
        value_clip: clip of the value update around the rollout's values (``None``: plain squared error).
        vf_coef: weight :math:`w_V` of the value loss. The critic is a separate network with its own Adam
            optimiser here, so this mostly rescales the critic's gradient (Adam undoes most of it); it
            matters when a critic shares the policy's backbone.
        entropy_coef: weight :math:`w_H` of the entropy bonus (token mean, nats per token).
        ptx_coef, ptx_examples: InstructGPT's pre-training mix, PPO-ptx (Ouyang et al. 2022, eq. 2, the term
            :math:`\gamma\,\mathbb E_{x \sim D_{pretrain}}[\log \pi_\theta(x)]` of the objective; the paper
            uses :math:`\gamma = 27.8`). With ``ptx_coef`` :math:`\gamma > 0` every actor update adds
            :math:`\gamma` times the mean negative log-likelihood per token of ``minibatch_size`` texts drawn
            with replacement from ``ptx_examples`` (a list of non-empty strings, every token trained on: after
            ``<bos>``, ``<eos>`` appended) to the actor's loss, and the history logs that NLL as ``ptx_loss``
            (nats per token). Default 0: plain PPO (the paper's "PPO" models), no pre-training text drawn.
        whiten_advantages: normalise advantages to mean 0, std 1 over the batch's completion tokens.
        reward_normalization: ``None`` (raw scores), ``"batch"`` (each batch's scores to mean 0, std 1) or
            ``"running"`` (by the running mean and std of all scores so far, ``RunningMoments``).
        missing_eos_penalty: subtracted from the score of a completion that hit ``max_new_tokens`` before
            its end token (the reward model reads the end token; ``None``: no penalty).
        critic_warmup_steps: the first rollout batches update the critic only (the actor is frozen), so
            the first advantages of the actor come from a critic that has seen some returns.
        max_new_tokens, temperature: sampling settings (log-probs are taken at the same temperature).
        gold_reward_fn: ``fn(completions, prompts)`` measured on every rollout (``gold_reward`` column),
            never trained on.
        eval_prompts, eval_every: when given, ``evaluate_policy`` on ``eval_prompts`` at steps 0,
            ``eval_every``, ... (before that step's update) and once more after the last step, in an extra
            row ``step=steps``; columns ``eval_reward``, ``eval_gold_reward``, ``eval_kl`` (exact sequence
            KL to the reference), ``eval_entropy``, ``eval_length``.
        disable_dropout: set every dropout rate of the policy, the reference and the critic to 0 first
            (default; ``rlhf_edu.train.rollouts.policy_and_reference``): the policy updates in train mode and
            its rollout log-probs come from eval mode, and only without dropout are they the same function,
            so the ratio :math:`\pi_\theta / \pi_{\theta_{old}}` is exactly 1 at the first minibatch and the
            clipping acts on policy change, not on dropout noise. ``False`` keeps the models' dropout.
        seed, device, progress: random seed (same seed, same history on the CPU), ``"auto"``/``"cpu"``/
            ``"cuda"``, progress bar.
        dtype: ``"float32"`` (default) or ``"bfloat16"``: the precision of the forward passes of the four
            models, sampling included; as in ``rlhf_edu.train.train_dpo`` (the values, like the log-probs,
            are float32).

    Returns:
        ``(policy, history)``: one history row per rollout batch with ``loss`` (actor loss + ``vf_coef`` x
        value loss), ``policy_loss``, ``value_loss``, ``entropy`` (nats per token), ``clip_fraction``,
        ``approx_kl`` (old vs new policy; means over the batch's updates), ``reward`` (mean score from
        ``reward_fn``: a proxy when it is a reward model), ``reward_std``, ``gold_reward``, ``kl`` (mean
        per-sequence k3 estimate of KL(policy || reference) on the rollout, nats; ``rollouts.sampled_kl``,
        what the adaptive controller reads), ``kl_coef``,
        ``value_error`` (mean squared error of the critic's values against the returns, before the update),
        ``explained_variance`` (1 - Var(R - V) / Var(R)), ``length``, ``truncated`` (fraction without end
        token), ``seconds``. The trained critic is ``history.value_model``; the KL controller
        ``history.kl_controller``.

    Raises ``ValueError`` naming the argument for an empty prompt list, a tokenizer without a pad token, a
    prompt too long for the context, a negative ``kl_coef``, ``critic_init="reward_model"`` without a reward
    model, and every out-of-range option. Chapter 4's small-model run.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> share_of_a = lambda completions, prompts: [c.count("a") / max(len(c), 1) for c in completions]
    >>> model, hist = train_ppo(model, tok, ["review:"], share_of_a, steps=2, batch_size=8, minibatch_size=4,
    ...                   max_new_tokens=8, device="cpu", progress=False)
    >>> len(hist), abs(hist.first("kl")) < 1e-6   # the first batch is sampled by the reference itself
    (2, True)
    """
    # ----- checks, before anything slow --------------------------------------------------------------
    steps = check_integer("steps", steps, minimum=1)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    ppo_epochs = check_integer("ppo_epochs", ppo_epochs, minimum=1)
    minibatch_size = check_integer("minibatch_size", minibatch_size, minimum=1)
    if minibatch_size > batch_size:
        raise ValueError(f"minibatch_size ({minibatch_size}) must be <= batch_size ({batch_size})")
    lr, max_grad_norm, _ = check_optimizer_settings(lr, max_grad_norm)
    check_vocabulary(policy, tokenizer)
    critic_lr = check_positive("critic_lr", critic_lr, finite=True)
    kl_coef = check_nonnegative("kl_coef", kl_coef)
    check_choice("kl_in", kl_in, KL_PLACEMENTS)
    if kl_estimator is None:
        kl_estimator = "k1" if kl_in == "reward" else "k3"
    check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
    check_in_range("gamma", gamma, 0.0, 1.0)
    check_in_range("lam", lam, 0.0, 1.0)
    check_in_range("clip_eps", clip_eps, 0.0, 1.0, low_open=True, high_open=True)
    if value_clip is not None:
        value_clip = check_positive("value_clip", value_clip)
    vf_coef = check_nonnegative("vf_coef", vf_coef)
    entropy_coef = check_nonnegative("entropy_coef", entropy_coef)
    ptx_coef = check_nonnegative("ptx_coef", ptx_coef)
    ptx_batch = None
    if ptx_coef > 0:  # PPO-ptx: the pre-training texts, encoded once (every token a target)
        if ptx_examples is None:
            raise ValueError("ptx_coef > 0 needs ptx_examples, the pre-training texts of the PPO-ptx term")
        if isinstance(ptx_examples, str):
            raise TypeError("ptx_examples must be a list of strings, got a single string; wrap it: [text]")
        ptx_examples = list(ptx_examples)
        if not ptx_examples or not all(isinstance(t, str) and t for t in ptx_examples):
            raise ValueError("ptx_examples must be a non-empty list of non-empty strings")
        ptx_batch = prompt_completion_batch(tokenizer, [""] * len(ptx_examples), ptx_examples)
        check_fits_context(policy, ptx_batch.input_ids, name="ptx_examples")
    check_choice("reward_normalization", reward_normalization, REWARD_NORMALIZATIONS)
    if missing_eos_penalty is not None:
        missing_eos_penalty = check_nonnegative("missing_eos_penalty", missing_eos_penalty)
    critic_warmup_steps = check_integer("critic_warmup_steps", critic_warmup_steps, minimum=0)
    check_nonnegative("temperature", temperature)
    if temperature == 0:
        raise ValueError("temperature must be > 0: PPO needs sampled completions and their log-probs")
    eval_every = check_integer("eval_every", eval_every, minimum=1)
    if isinstance(adaptive_kl, AdaptiveKLController):
        kl_controller = adaptive_kl
    elif isinstance(adaptive_kl, bool):
        if adaptive_kl and kl_coef == 0:
            raise ValueError("kl_coef must be > 0 with adaptive_kl=True: the controller scales it")
        kl_controller = AdaptiveKLController(kl_coef) if adaptive_kl else None
    else:
        raise TypeError(f"adaptive_kl must be a bool or an AdaptiveKLController, got {type(adaptive_kl).__name__}")
    if critic_init is None:
        critic_init = "reward_model" if isinstance(reward_fn, RewardModel) else "policy"
    check_choice("critic_init", critic_init, CRITIC_INITS)
    if value_model is None and critic_init == "reward_model" and not isinstance(reward_fn, RewardModel):
        raise ValueError("critic_init='reward_model' needs reward_fn to be a RewardModel; use critic_init='policy'")
    if value_model is not None and not isinstance(value_model, ValueModel):
        raise TypeError(f"value_model must be a ValueModel, got {type(value_model).__name__}")

    # ----- the four models: actor, critic, reference, reward -----------------------------------------
    # The prompts checked, the rewards wrapped, the run seeded, the processes found (under torchrun;
    # batch_size and minibatch_size per process). Dropout off (disable_dropout): the ratio pi / pi_old is then
    # exactly 1 before the first update instead of noise. The reference is the SFT model, before any update.
    run = prepare_online_run(policy, tokenizer, prompts, reward_fn, gold_reward_fn=gold_reward_fn,
                             eval_prompts=eval_prompts, ref_model=ref_model, max_new_tokens=max_new_tokens, seed=seed,
                             device=device, disable_dropout=disable_dropout, dtype=dtype, find_unused_parameters=True)
    eval_prompts, ref_model, parallel, device = run.eval_prompts, run.ref_model, run.parallel, run.device
    autocast = run.autocast  # bfloat16: the forward passes under torch.autocast
    if isinstance(reward_fn, RewardModel):
        reward_fn.to(device).eval()
    if value_model is not None:
        critic = value_model
    elif critic_init == "reward_model":
        critic = ValueModel.from_reward_model(reward_fn)  # InstructGPT: the critic starts as the reward model
    else:
        critic = ValueModel(copy.deepcopy(policy), seed=seed)
    critic.to(device)
    if disable_dropout:
        disable_dropout_in_model(critic)
    # Separate optimisers: the critic learns faster than the actor (the lecture notes' PPO tricks).
    actor_opt = torch.optim.Adam(policy.parameters(), lr=lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=critic_lr)
    # what the gradients flow through (the models themselves in one process)
    actor_model, critic_model, actor_opt, critic_opt = parallel.prepare(policy, critic, actor_opt, critic_opt)
    moments = RunningMoments() if reward_normalization == "running" else None

    config = dict(steps=steps, batch_size=batch_size, ppo_epochs=ppo_epochs, minibatch_size=minibatch_size, lr=lr,
                  critic_lr=critic_lr, kl_coef=kl_coef, adaptive_kl=repr(kl_controller), kl_estimator=kl_estimator,
                  kl_in=kl_in, gamma=gamma, lam=lam, clip_eps=clip_eps, value_clip=value_clip, vf_coef=vf_coef,
                  entropy_coef=entropy_coef, ptx_coef=ptx_coef, whiten_advantages=whiten_advantages,
                  reward_normalization=reward_normalization, missing_eos_penalty=missing_eos_penalty,
                  critic_init="given" if value_model is not None else critic_init,
                  critic_warmup_steps=critic_warmup_steps, max_new_tokens=max_new_tokens, temperature=temperature,
                  disable_dropout=disable_dropout, seed=seed)
    history = History("ppo", config)
    prompt_gen = run.prompt_stream  # prompts and minibatch order, on the CPU (the sampler's: run.sample_stream)
    # PPO-ptx's draws, apart: ptx_coef=0 leaves the run as it was
    ptx_gen = torch.Generator().manual_seed(seed + 1 + parallel.rank)
    if ptx_batch is not None:
        ptx_batch = ptx_batch.to(device)

    def train_step(step):
        beta = kl_controller.value if kl_controller is not None else kl_coef

        # 1. Rollout: sample, score, log-probs under the sampling ("old") policy and the reference.
        batch = run.collect(policy, tokenizer, batch_size, max_new_tokens=max_new_tokens, temperature=temperature)
        roll, P = batch.rollout, batch.rollout.prompt_length
        ids, attn = roll.input_ids, roll.attention_mask
        mask = roll.completion_mask[:, P:].to(batch.logp_old.dtype)  # (B, L) over the completion columns
        logp_old, logp_ref = batch.logp_old[:, P:], batch.logp_ref[:, P:]

        with torch.no_grad(), autocast:
            # 2. Score at the end token, normalised, plus the per-token KL penalty (Ziegler et al. eq. 2).
            score = batch.rewards
            lengths = mask.sum(-1).long()
            ended = roll.input_ids[:, P:].gather(1, (lengths - 1).unsqueeze(1)).squeeze(1) == tokenizer.eos_token_id
            if missing_eos_penalty is not None:
                score = torch.where(ended, score, score - missing_eos_penalty)
            if reward_normalization == "batch":
                score = rt.whiten(score)
            elif moments is not None:
                moments.update(score)
                score = moments.normalize(score)
            token_rewards = rt.kl_penalized_rewards(score, logp_old, logp_ref, mask,
                                                    beta if kl_in == "reward" else 0.0, kl_estimator)

            # 3. Advantages ONCE per batch, with the critic as it is now. Recomputing them inside the
            # epoch loop below with the critic being updated is the common bug: the critic would then
            # regress on targets built from itself, and the actor's advantages would shift mid-batch.
            values_old = _completion_values(critic, ids, attn, P) * mask
            advantages, returns = rt.gae(token_rewards, values_old, gamma, lam)  # 0 after each end token
            value_error = _masked_mean((values_old - returns) ** 2, mask)
            kept = mask > 0
            residual_var = (returns[kept] - values_old[kept]).var(correction=0)
            explained_variance = 1.0 - residual_var / returns[kept].var(correction=0).clamp_min(1e-12)
            if whiten_advantages:
                advantages = rt.whiten(advantages, mask)

        # 4. ppo_epochs passes of minibatch updates of the actor (clipped surrogate) and the critic.
        actor_frozen = step < critic_warmup_steps
        actor = policy if actor_frozen else actor_model  # a frozen actor's forward need not sync
        sums = dict.fromkeys(("loss", "policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl"), 0.0)
        n_updates = 0
        for _ in range(ppo_epochs):
            for idx in minibatches(len(roll), minibatch_size, prompt_gen):
                idx = idx.to(device)
                m = mask[idx]
                with autocast:  # the forward pass only: backward runs outside autocast
                    logp, ent = token_logprobs(actor, ids[idx], attn[idx], temperature=temperature,
                                               return_entropy=True, prompt_length=P)  # the completions only
                logp, ent = logp[:, P:], ent[:, P:]
                policy_loss, stats = rt.ppo_clip_loss(logp, logp_old[idx], advantages[idx], m, clip_eps,
                                                      return_stats=True)
                entropy = _masked_mean(ent, m)
                actor_loss = policy_loss - entropy_coef * entropy
                if ptx_batch is not None:  # PPO-ptx: + gamma * NLL of pre-training texts (InstructGPT eq. 2)
                    pick = torch.randint(len(ptx_batch), (len(idx),), generator=ptx_gen).to(device)
                    with autocast:
                        ptx_logp = token_logprobs(actor, ptx_batch.input_ids[pick], ptx_batch.attention_mask[pick])
                    ptx_loss = masked_nll(ptx_logp, ptx_batch.completion_mask[pick])
                    actor_loss = actor_loss + ptx_coef * ptx_loss
                    sums["ptx_loss"] = sums.get("ptx_loss", 0.0) + float(ptx_loss.detach())
                if kl_in == "loss":  # GRPO-style: beta * KL estimate of the current policy in the loss
                    actor_loss = actor_loss + beta * _masked_mean(rt.kl_estimate(logp, logp_ref[idx], kl_estimator), m)
                if actor_frozen:
                    actor_loss = actor_loss.detach()
                with autocast:
                    values = _completion_values(critic_model, ids[idx], attn[idx], P)
                v_loss = rt.value_loss(values, returns[idx], values_old[idx], clip=value_clip, mask=m)
                loss = actor_loss + vf_coef * v_loss

                actor_opt.zero_grad(set_to_none=True)
                critic_opt.zero_grad(set_to_none=True)
                parallel.check_finite_loss(loss)  # a NaN/inf loss stops the run before any parameter moves
                if loss.requires_grad:  # not when the actor is frozen and vf_coef is 0
                    parallel.backward(loss)  # under torchrun: the gradients averaged over the processes
                check_finite_grads(list(actor_model.parameters()) + list(critic_model.parameters()))
                if max_grad_norm is not None:
                    parallel.clip_grad_norm_(critic_model.parameters(), max_grad_norm)
                    if not actor_frozen:
                        parallel.clip_grad_norm_(actor_model.parameters(), max_grad_norm)
                if not actor_frozen:
                    actor_opt.step()
                critic_opt.step()
                for key, value in (("loss", loss), ("policy_loss", policy_loss), ("value_loss", v_loss),
                                   ("entropy", entropy), ("clip_fraction", stats["clip_fraction"]),
                                   ("approx_kl", stats["approx_kl"])):
                    sums[key] += float(value.detach())
                n_updates += 1

        # 5. The KL of the policy that sampled this batch (k3 summed per sequence), and the controller.
        kl = float(sampled_kl(batch).mean())
        if parallel.distributed:  # one controller, the same on every process: the global batch's KL
            kl = float(parallel.mean(kl))
        if kl_controller is not None:
            kl_controller.update(kl, n_steps=parallel.global_batch_size(len(roll)))
        row = {k: v / n_updates for k, v in sums.items()}
        row.update(reward=batch.rewards.mean(), reward_std=batch.rewards.std(correction=0), kl=kl, kl_coef=beta,
                   value_error=value_error, explained_variance=explained_variance,
                   length=lengths.float().mean(), truncated=1.0 - ended.float().mean())
        if batch.gold_rewards is not None:
            row["gold_reward"] = float(batch.gold_rewards.mean())
        return row

    policy.train()  # the updates run in train mode (sampling and the rollout log-probs in eval mode)
    critic.train()
    run_steps(range(steps), train_step, history=history, total=steps, description="ppo", parallel=parallel,
              evaluate=evaluator(policy, tokenizer, eval_prompts, ref_model=ref_model, gold_reward_fn=gold_reward_fn,
                                 reward_fn=reward_fn, num_samples=1, max_new_tokens=max_new_tokens,
                                 temperature=temperature, autocast=autocast),
              eval_every=eval_every, progress=progress, postfix=("reward", "kl"))
    policy.eval()
    critic.eval()
    history.value_model = critic
    history.kl_controller = kl_controller
    return policy, history
