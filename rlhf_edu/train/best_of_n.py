r"""Best-of-n sampling with a language model, and how its reward and KL grow with n.

Best-of-n (rejection sampling at inference time; Nakano et al., 2021; Stiennon et al., 2020) draws n
completions per prompt from the policy, scores them with a reward and returns the best. No training: the
policy is untouched, and yet the answers move away from it, by at most
:math:`\mathrm{KL}(\pi_{BoN}\|\pi) \le \log n - \frac{n-1}{n}` nats (``best_of_n_kl_bound``).

``sample_best_of_n`` does the sampling. ``best_of_n_curve`` measures, for several n at once, the expected reward,
gold reward and KL of best-of-n from ONE pool of M samples per prompt: with :math:`\hat\pi` the empirical
distribution of the pool (each sample weight 1/M), the best of n draws from :math:`\hat\pi` has the exact
distribution ``rlhf_edu.numpy.best_of_n_probs(1/M, rewards, n)``, and its expected reward, gold reward and
KL to :math:`\hat\pi` are plug-in estimates of those of best-of-n from the policy (the ratio
:math:`\pi_{BoN}/\pi` depends on the reward's CDF only, which the pool estimates). Chapter 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlhf_edu.lm import generate, mixed_precision, resolve_device
from rlhf_edu.numpy.divergences import kl_divergence
from rlhf_edu.numpy.sampling import best_of_n_kl_bound, best_of_n_probs
from rlhf_edu.train.progress import progress_bar
from rlhf_edu.train.prompts import check_prompts
from rlhf_edu.train.rollouts import as_reward_fn, check_reward_model_room
from rlhf_edu.validation import check_integer, check_positive

__all__ = ["BestOfN", "sample_best_of_n", "best_of_n_from_pool", "best_of_n_curve"]


@dataclass
class BestOfN:
    """What ``sample_best_of_n`` returns, for P prompts and n samples each.

    Attributes:
        prompts: the P prompts.
        completions: the P chosen completions (the first of the highest-reward samples of each prompt).
        rewards: ``(P,)`` their rewards.
        index: ``(P,)`` which of the n samples was chosen.
        all_completions: P lists of the n samples.
        all_rewards: ``(P, n)`` the reward of every sample.
        gold_rewards, all_gold_rewards: ``(P,)`` and ``(P, n)`` gold rewards (None without ``gold_reward_fn``).
    """

    prompts: list
    completions: list
    rewards: np.ndarray
    index: np.ndarray
    all_completions: list
    all_rewards: np.ndarray
    gold_rewards: np.ndarray | None = None
    all_gold_rewards: np.ndarray | None = None

    def __len__(self):
        return len(self.prompts)


def sample_best_of_n(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    n: int,
    *,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    gold_reward_fn=None,
    batch_size: int = 256,
    seed: int = 0,
    device="auto",
    dtype="float32",
    progress: bool = False,
) -> BestOfN:
    r"""Sample ``n`` completions per prompt from ``policy`` and keep the one with the highest reward.

    .. math:: y^\star(x) = \arg\max_{i = 1..n} r(x, y_i), \qquad y_1..y_n \sim \pi(\cdot\mid x)\ \text{i.i.d.}

    Ties go to the first sample drawn. ``reward_fn`` is ``fn(completions, prompts) -> (B,)`` or a
    ``RewardModel``; ``gold_reward_fn`` (optional) is only measured. Samples are drawn ``batch_size``
    rows (about ``batch_size // n`` prompts) per ``generate`` call, from a generator seeded with
    ``seed``, so the result is the same twice on the CPU. The policy is not changed (it is moved to
    ``device``). ``dtype``: ``"float32"`` (default) or ``"bfloat16"`` (sampling and a ``RewardModel``'s scoring
    under ``torch.autocast``, ``rlhf_edu.lm.mixed_precision``; ``ValueError`` naming ``dtype`` for another
    value). Chapter 8; ``n = 1`` is plain sampling.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> out = sample_best_of_n(model, tok, ["1+1=", "2+2="], lambda c, p: [float(len(s)) for s in c], n=4,
    ...                 max_new_tokens=3, device="cpu")
    >>> out.all_rewards.shape, bool((out.rewards == out.all_rewards.max(axis=1)).all())
    ((2, 4), True)
    """
    n = check_integer("n", n, minimum=1)
    temperature = check_positive("temperature", temperature)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    prompts = check_prompts(policy, tokenizer, prompts, max_new_tokens)
    check_reward_model_room(reward_fn, tokenizer, prompts, max_new_tokens)  # before any sampling
    check_reward_model_room(gold_reward_fn, tokenizer, prompts, max_new_tokens, "gold_reward_fn")
    reward_fn = as_reward_fn(reward_fn, tokenizer)
    gold_fn = None if gold_reward_fn is None else as_reward_fn(gold_reward_fn, tokenizer)
    device = resolve_device(device)
    autocast = mixed_precision(dtype, device)
    policy.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)

    chunk = max(1, batch_size // n)
    completions, rewards, golds = [], [], []
    bar = progress_bar(len(prompts), f"best-of-{n}", progress)
    for first in range(0, len(prompts), chunk):
        part = prompts[first:first + chunk]
        with autocast:  # sampling and scoring, no backward: all of it in dtype
            rollout = generate(policy, tokenizer, part, max_new_tokens, temperature=temperature, num_samples=n,
                               generator=generator)
            rewards.append(reward_fn(rollout.completions, rollout.prompts))
            if gold_fn is not None:
                golds.append(gold_fn(rollout.completions, rollout.prompts))
        completions += rollout.completions
        bar.update(len(part))
    bar.close()

    all_rewards = np.concatenate(rewards).reshape(len(prompts), n)
    index = all_rewards.argmax(axis=1)  # the first maximum: ties go to the first sample
    rows = np.arange(len(prompts))
    all_completions = [completions[i * n:(i + 1) * n] for i in rows]
    all_gold = None if gold_fn is None else np.concatenate(golds).reshape(len(prompts), n)
    return BestOfN(prompts=prompts, completions=[all_completions[i][j] for i, j in zip(rows, index)],
                   rewards=all_rewards[rows, index], index=index, all_completions=all_completions,
                   all_rewards=all_rewards, gold_rewards=None if all_gold is None else all_gold[rows, index],
                   all_gold_rewards=all_gold)


def best_of_n_curve(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    ns=(1, 2, 4, 8, 16),
    *,
    samples_per_prompt: int = 64,
    gold_reward_fn=None,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
    device="auto",
    dtype="float32",
    progress: bool = False,
) -> dict:
    r"""Reward, gold reward and KL of best-of-n for every n in ``ns``, from one pool of samples per prompt.

    Draws M = ``samples_per_prompt`` completions per prompt (``sample_best_of_n(..., n=M)``). For each prompt and
    each n the best of n draws WITH replacement from the pool has the exact distribution
    :math:`w = ` ``best_of_n_probs(1/M, rewards, n)`` over the pool (reward ties share their level's mass,
    i.e. they are broken at random), so

    .. math:: \widehat{R}_n = \sum_j w_j\, r_j, \qquad \widehat{G}_n = \sum_j w_j\, g_j, \qquad
              \widehat{\mathrm{KL}}_n = \sum_j w_j \log(M w_j),

    averaged over the prompts. Averaging over every n-tuple drawn from the pool, these have far less variance
    than keeping the best of disjoint groups of n. :math:`\widehat{\mathrm{KL}}_n` never exceeds
    ``best_of_n_kl_bound(n)`` = :math:`\log n - (n-1)/n` (Beirami et al. 2024: for a discrete distribution
    and n >= 2 the bound is never reached; it is approached when every completion is distinct with a distinct
    reward and M is much larger than n), nor :math:`\log M`: keep M well above the largest n (4 n or more) or
    the estimate saturates.

    Returns a dict of ``(len(ns),)`` arrays: ``n``, ``reward``, ``gold_reward`` (NaN without
    ``gold_reward_fn``), ``kl`` (the plug-in estimate, nats), ``kl_bound``, plus ``samples`` (the
    ``BestOfN`` of the pool, for plots of the reward distribution). Raises ``ValueError`` if some n
    exceeds ``samples_per_prompt``; ``dtype`` as in ``sample_best_of_n``. Chapter 8's figure: gold reward and KL against n, with the bound.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> curve = best_of_n_curve(model, tok, ["1+1="], lambda c, p: [float(len(s)) for s in c], ns=(1, 4),
    ...                         samples_per_prompt=16, max_new_tokens=8, device="cpu")
    >>> float(curve["kl"][0]), bool(curve["reward"][1] > curve["reward"][0])
    (0.0, True)
    >>> bool(curve["kl"][1] <= curve["kl_bound"][1])
    True
    """
    if isinstance(ns, (int, np.integer)):
        ns = (ns,)
    ns = [check_integer("ns", n, minimum=1) for n in ns]
    if not ns:
        raise ValueError("ns is empty: give at least one n")
    samples_per_prompt = check_integer("samples_per_prompt", samples_per_prompt, minimum=1)
    if max(ns) > samples_per_prompt:
        raise ValueError(f"samples_per_prompt ({samples_per_prompt}) must be at least the largest n ({max(ns)}), "
                         f"better 4 times it: the pool estimates best-of-n by drawing from itself")
    pool = sample_best_of_n(policy, tokenizer, prompts, reward_fn, samples_per_prompt, max_new_tokens=max_new_tokens,
                     temperature=temperature, gold_reward_fn=gold_reward_fn, batch_size=batch_size, seed=seed,
                     device=device, dtype=dtype, progress=progress)
    return {**best_of_n_from_pool(pool.all_rewards, ns, gold_rewards=pool.all_gold_rewards), "samples": pool}


def best_of_n_from_pool(rewards, ns, gold_rewards=None) -> dict:
    r"""Plug-in estimates of best-of-n's reward, gold reward and KL from a pool of M scored samples per prompt.

    ``rewards`` is ``(P, M)`` (or ``(M,)`` for one prompt): the rewards of M i.i.d. samples of each
    prompt; ``gold_rewards`` (optional) the same shape. For each n, :math:`w` = ``best_of_n_probs(1/M,
    rewards, n)`` is the exact distribution of the best of n draws with replacement from the pool (ties in
    reward share their level's mass: a random tie-break), and the estimates are

    .. math:: \widehat{R}_n = \sum_j w_j r_j, \qquad \widehat{G}_n = \sum_j w_j g_j, \qquad
              \widehat{\mathrm{KL}}_n = \sum_j w_j \log(M w_j),

    averaged over the prompts. Returns a dict of ``(len(ns),)`` arrays ``n``, ``reward``, ``gold_reward``
    (NaN without ``gold_rewards``), ``kl``, ``kl_bound`` (``best_of_n_kl_bound(n)``). Used by
    ``best_of_n_curve``; chapter 8.

    Four samples with distinct rewards, n = 2: w = (1, 3, 5, 7) / 16, so the expected best reward is
    (0 + 3 + 10 + 21) / 16 = 2.125 and the KL is below the bound log 2 - 1/2:

    >>> est = best_of_n_from_pool([0.0, 1.0, 2.0, 3.0], ns=(1, 2))
    >>> est["reward"].round(4).tolist(), est["kl"].round(4).tolist(), est["kl_bound"].round(4).tolist()
    ([1.5, 2.125], [0.0, 0.174], [0.0, 0.1931])
    """
    rewards = np.atleast_2d(np.asarray(rewards, dtype=float))
    if rewards.ndim != 2 or rewards.shape[-1] == 0:
        raise ValueError(f"rewards must have shape (P, M) with M >= 1 samples per prompt, got {rewards.shape}")
    if not np.isfinite(rewards).all():
        raise ValueError("rewards must be finite")
    if gold_rewards is not None:
        gold_rewards = np.atleast_2d(np.asarray(gold_rewards, dtype=float))
        if gold_rewards.shape != rewards.shape:
            raise ValueError(f"gold_rewards must have the shape of rewards {rewards.shape}, got {gold_rewards.shape}")
    if isinstance(ns, (int, np.integer)):
        ns = (ns,)
    ns = [check_integer("ns", n, minimum=1) for n in ns]
    if not ns:
        raise ValueError("ns is empty: give at least one n")
    uniform = np.full(rewards.shape, 1.0 / rewards.shape[-1])
    means, golds, kls = [], [], []
    for n in ns:
        # (P, M): the best-of-n distribution over each pool; best-of-1 is the pool itself, exactly
        w = uniform if n == 1 else best_of_n_probs(uniform, rewards, n)
        means.append((w * rewards).sum(-1).mean())
        golds.append(np.nan if gold_rewards is None else (w * gold_rewards).sum(-1).mean())
        kls.append(max(0.0, kl_divergence(w, uniform).mean()))  # >= 0, also after rounding
    return {"n": np.array(ns), "reward": np.array(means), "gold_reward": np.array(golds), "kl": np.array(kls),
            "kl_bound": np.array([best_of_n_kl_bound(n) for n in ns])}
