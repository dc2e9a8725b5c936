"""Sampling and scoring for the online trainers (PPO, GRPO, RLOO, ReST, best-of-N).

One step of online RLHF starts the same way for every method: sample completions from the current
policy, score them with the reward, and record the log-probabilities of the sampled tokens under the
policy that sampled them ("old") and under the frozen reference. ``collect_rollouts`` does exactly that,
so the trainers differ only in how they turn the scores into a loss.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_edu import torch as rt
from rlhf_edu.lm import (
    MixedPrecision,
    RewardModel,
    Rollout,
    check_vocabulary,
    context_length,
    encode_prompts,
    disable_dropout_in_model,
    generate,
    mixed_precision,
    prompt_completion_batch,
    resolve_device,
    set_seed,
    token_logprobs,
)
from rlhf_edu.train.distributed import DataParallel, data_parallel
from rlhf_edu.train.prompts import check_prompts, draw_prompts
from rlhf_edu.validation import check_integer

__all__ = ["ScoredRollout", "OnlineRun", "prepare_online_run", "as_reward_fn", "check_reward_model_room",
           "check_rewards", "frozen_copy", "policy_and_reference", "collect_rollouts", "reward_model_room",
           "sampled_kl", "select_rows", "concat_rollouts", "truncated_rows"]


@dataclass
class ScoredRollout:
    """A rollout with what the losses need.

    Attributes:
        rollout: the sampled batch (``rlhf_edu.lm.Rollout``), on the policy's device.
        rewards: ``(B,)`` float tensor, the training reward of each completion (a proxy when it comes from
            a learned reward model).
        logp_old: ``(B, T)`` log-probs of the tokens under the sampling policy (0 off the completion);
            None when ``collect_rollouts`` was asked not to compute them (``old_logprobs=False``).
        logp_ref: ``(B, T)`` log-probs under the reference model, or None when no reference is given.
        gold_rewards: ``(B,)`` NumPy array of the gold reward, when a gold reward function is given.
    """

    rollout: Rollout
    rewards: torch.Tensor
    logp_old: torch.Tensor
    logp_ref: torch.Tensor | None = None
    gold_rewards: np.ndarray | None = None


def check_rewards(scores, completions, prompts, source: str = "reward_fn") -> np.ndarray:
    """``scores`` as a float64 ``(B,)`` array, after checking it is one finite number per completion.

    Raises ``ValueError`` naming ``source``, the index, the prompt and the completion of the first bad
    score (NaN, +-inf, or a value beyond float32, in which the trainers compute), or the shape, when it
    is not ``(len(completions),)``. Called on every batch a trainer scores, before any update, so a
    broken reward function never reaches the model.

    >>> check_rewards([1.0, float("nan")], ["7", "8"], ["3+4=", "3+4="])
    Traceback (most recent call last):
    ...
    ValueError: reward_fn returned nan for completion 1 (prompt '3+4=', completion '8'): rewards must be finite numbers, one per completion; the model was not updated
    """
    try:
        out = np.asarray(scores, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source} must return one number per completion, got {type(scores).__name__}") from exc
    if out.shape != (len(completions),):
        raise ValueError(f"{source} returned shape {out.shape}, expected ({len(completions)},): one number per "
                         "completion, in the order of the completions")
    bad = ~np.isfinite(out) | (np.abs(np.nan_to_num(out)) > np.finfo(np.float32).max)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{source} returned {float(out[i])} for completion {i} (prompt {prompts[i]!r}, completion "
                         f"{completions[i]!r}): rewards must be finite numbers, one per completion; "
                         "the model was not updated")
    return out


_POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings", "pos_encoding")


def _position_limit(reward_model):
    """The context of a reward model that cannot read past it, else ``None``. A position table of fixed size has
    no row past the context: learned ones (GPT-2's and GPT-Neo's ``wpe``, OPT's ``embed_positions``, of
    ``num_embeddings`` minus OPT's offset of 2 rows) and precomputed ones kept as buffers (GPT-J's and CodeGen's
    rotary ``embed_positions``, CTRL's ``pos_encoding``). A longer text fails inside the model (``IndexError`` on
    the CPU, a device-side assert on a GPU). Models that compute positions on the fly (Llama, Qwen, Gemma,
    Bloom's ALiBi) read on, beyond what they were trained on. Vision and audio towers are not searched."""
    backbone = getattr(reward_model, "backbone", reward_model)
    text = lambda name: not any(part in name for part in ("audio", "vision", "visual"))  # noqa: E731
    for name, module in backbone.named_modules():
        if name.rsplit(".", 1)[-1] in _POSITION_TABLES and isinstance(module, torch.nn.Embedding) and text(name):
            return module.num_embeddings - int(getattr(module, "offset", 0))
    for name, _ in backbone.named_buffers():
        if name.rsplit(".", 1)[-1] in _POSITION_TABLES and text(name):
            return context_length(backbone)
    return None


def reward_model_room(reward_model, tokenizer, prompts):
    """The most tokens a completion of ``prompts`` may have for ``reward_model`` to read it with its ``<eos>``:
    its context minus the longest prompt (``tokenizer``'s tokens, ``<bos>`` included) minus 1; ``None`` when it
    is no ``RewardModel`` or can read past its context (``_position_limit``).

    >>> from rlhf_edu.lm import RewardModel, char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer()
    >>> reward_model_room(RewardModel(tiny_causal_lm(tok, d_model=16, n_layer=1, max_length=16)), tok, ["1+1="])
    10
    """
    limit = _position_limit(reward_model) if isinstance(reward_model, RewardModel) else None
    if limit is None:
        return None
    return limit - max(len(ids) for ids in encode_prompts(tokenizer, list(prompts))) - 1


def check_reward_model_room(reward_model, tokenizer, prompts, max_new_tokens, name="reward_fn"):
    """Raise ``ValueError`` before any sampling when the reward model could not read a rollout: the longest
    prompt (``tokenizer``'s tokens, ``<bos>`` included) + ``max_new_tokens`` + the ``<eos>`` scoring appends
    exceed its context and it cannot read past it (``_position_limit``). A rollout that fills the policy's
    context is one token longer for a reward model of the same context, so without this check the run dies
    at the first step whose longest prompt gets an answer of ``max_new_tokens`` without EOS. One generated
    token is counted as one of the reward model's, as it is for most texts when it reads the policy's
    tokenizer; the scored text is decoded and encoded again, so with another tokenizer (or a byte-level BPE
    token that is half a character, which decodes to "\ufffd") a generated token may be several of its tokens,
    and such a text is refused when it comes (``as_reward_fn``), not up front. The online
    trainers (``prepare_online_run``) and ``rlhf-edu train`` call it; a reward that is a function is not
    checked (``as_reward_fn`` still refuses a text its reward model cannot read, when it comes).

    >>> from rlhf_edu.lm import RewardModel, char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); rm = RewardModel(tiny_causal_lm(tok, d_model=16, n_layer=1, max_length=16))
    >>> check_reward_model_room(rm, tok, ["1+1="], max_new_tokens=10)   # 5 + 10 + 1 = 16: fits
    >>> check_reward_model_room(rm, tok, ["1+1="], max_new_tokens=11)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the reward model (reward_fn) reads at most 16 positions, but the longest prompt (5 tokens) + ...
    """
    room = reward_model_room(reward_model, tokenizer, prompts)
    if room is not None and max_new_tokens > room:
        limit = _position_limit(reward_model)
        longest = limit - room - 1
        if room < 1:
            raise ValueError(f"the reward model ({name}) reads at most {limit} positions, but the longest prompt "
                             f"({longest} tokens) and the <eos> it scores with already fill them: shorten the prompts "
                             "or use a reward model with a longer context")
        raise ValueError(
            f"the reward model ({name}) reads at most {limit} positions, but the longest prompt ({longest} tokens) "
            f"+ max_new_tokens={max_new_tokens} + the <eos> it scores with need {longest + max_new_tokens + 1}: "
            f"use max_new_tokens <= {limit - longest - 1}, shorter prompts, or a reward model with a longer context")


def as_reward_fn(reward, tokenizer=None, name: str = "reward_fn"):
    """A callable ``fn(completions, prompts) -> np.ndarray`` from a callable or a ``RewardModel``.

    A ``RewardModel`` scores ``prompt + completion`` (with EOS, as it was trained) in batches without
    gradient, on its own device. A text longer than its context is named in a ``ValueError`` (row, length and
    text) before the forward pass where the model cannot read it (a position table of fixed size, see
    ``_position_limit``; ``check_reward_model_room``, which the online trainers run first), and after a failed
    forward pass where another model could not (MPT); models that compute positions read on and are not
    stopped. A batch (left-padded prompts, right-padded completions) wider than the context is scored
    right-padded instead, as wide as its longest row (GPT-Neo, MPT and BART index by the batch's width).
    Both kinds are checked on every call (``check_rewards``): one finite number per completion, else
    ``ValueError`` naming the prompt and completion.
    """
    if isinstance(reward, RewardModel):
        if tokenizer is None:
            raise ValueError("a RewardModel needs the tokenizer to score text")
        check_vocabulary(reward, tokenizer)  # a policy's tokenizer with another family's reward model
        rm, limit, context = reward, _position_limit(reward), context_length(getattr(reward, "backbone", reward))

        @torch.no_grad()
        def score(completions, prompts):
            prompts, completions = list(prompts), list(completions)
            device = next(rm.parameters()).device
            batch = prompt_completion_batch(tokenizer, prompts, completions, device=device)
            ids, mask = batch.input_ids, batch.attention_mask
            lengths = mask.sum(dim=1)

            def too_long(limit):
                i = int(lengths.argmax())
                return ValueError(
                    f"the reward model ({name}) reads at most {limit} positions, but prompt + completion {i} with "
                    f"its <eos> is {int(lengths[i])} tokens ({prompts[i][:40]!r} + {completions[i][:40]!r}): use a "
                    "reward model with a longer context, or shorter prompts or max_new_tokens")

            if limit is not None and int(lengths.max()) > limit:  # it cannot read past its context
                raise too_long(limit)
            if context is not None and ids.shape[1] > context:  # the padded table is wider than the context
                order = torch.sort((mask == 0).int(), dim=1, stable=True).indices  # real tokens first, in order
                width = int(lengths.max())
                ids, mask = ids.gather(1, order)[:, :width], mask.gather(1, order)[:, :width]
            was_training = rm.training
            rm.eval()
            try:
                out = rm(ids, mask).float().cpu().numpy()
            except (IndexError, RuntimeError) as error:  # another fixed-size table (MPT's ALiBi bias)?
                if context is not None and int(lengths.max()) > context:
                    raise too_long(context) from error
                raise
            finally:  # a failed call leaves the model in the mode it came in
                rm.train(was_training)
            return check_rewards(out, completions, prompts, f"the reward model ({name})")

        return score
    if not callable(reward):
        raise TypeError(f"{name} must be callable or a RewardModel, got {type(reward).__name__}")

    def call(completions, prompts):
        return check_rewards(reward(list(completions), list(prompts)), list(completions), list(prompts), name)

    return call


def frozen_copy(model):
    """A deep copy of ``model`` in eval mode with gradients off: the reference policy of RLHF."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def policy_and_reference(policy, ref_model, device, *, disable_dropout: bool = True, reference: bool = True):
    """Put the policy and its reference on ``device``, dropout off in both; returns the reference.

    With ``disable_dropout`` (every trainer's default) both first lose every dropout rate
    (``rlhf_edu.lm.disable_dropout_in_model``, in place), so the policy in train mode computes the function
    the reference and the sampler (eval mode) compute: at step 0 the policy IS the reference, DPO's loss is
    exactly log 2 and PPO's ratio exactly 1, instead of dropout noise. ``ref_model=None`` makes the
    reference a frozen copy of ``policy`` as given (``frozen_copy``; none when ``reference`` is False: SimPO
    and ORPO without evaluation); a given reference is moved to ``device`` in eval mode. What every trainer
    with a reference calls, the one place this is decided.
    """
    policy.to(device)
    if disable_dropout:
        disable_dropout_in_model(policy)
    if ref_model is None:
        return frozen_copy(policy) if reference else None
    ref_model.to(device).eval()
    if disable_dropout:
        disable_dropout_in_model(ref_model)
    return ref_model


@torch.no_grad()
def collect_rollouts(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    *,
    ref_model=None,
    num_samples: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k=None,
    generator=None,
    gold_reward_fn=None,
    old_logprobs: bool = True,
) -> ScoredRollout:
    """Sample ``num_samples`` completions per prompt, score them, and record old and reference log-probs.

    ``reward_fn`` and ``gold_reward_fn`` are callables ``(completions, prompts) -> array`` (wrap a
    ``RewardModel`` with ``as_reward_fn`` first). ``logp_old`` is recomputed with a forward pass at the
    sampling temperature rather than taken from the sampler, so it matches what the loss recomputes
    bit for bit (the ratio is exactly 1 before the first update). ``old_logprobs=False`` skips that
    forward pass (``logp_old`` is None): for a trainer that updates once per batch, whose loss's own
    log-probs, detached, ARE the old ones (GRPO with ``num_iterations=1``, as TRL does). Raises
    ``ValueError`` naming the prompt and completion when a reward is not one finite number per completion
    (``check_rewards``).
    """
    rollout = generate(policy, tokenizer, list(prompts), max_new_tokens, temperature=temperature, top_k=top_k,
                       num_samples=num_samples, generator=generator)
    device = rollout.input_ids.device
    mask = rollout.completion_mask.float()
    # only the completions are scored, and the num_samples rows of a prompt share one pass over it
    shared = rollout.prompt_length
    logp_old = logp_ref = None
    if old_logprobs:
        was_training = policy.training
        policy.eval()
        logp_old = token_logprobs(policy, rollout.input_ids, rollout.attention_mask, temperature=temperature,
                                   prompt_length=shared)
        policy.train(was_training)
        mask = mask.to(logp_old.dtype)
        logp_old = logp_old * mask
    if ref_model is not None:
        logp_ref = token_logprobs(ref_model, rollout.input_ids, rollout.attention_mask, temperature=temperature,
                                  prompt_length=shared)
        logp_ref = logp_ref * mask.to(logp_ref.dtype)
    # every reward is checked here, before any update: one finite number per completion
    scores = check_rewards(reward_fn(rollout.completions, rollout.prompts), rollout.completions, rollout.prompts)
    rewards = torch.as_tensor(scores.astype(np.float32), device=device)
    gold = None
    if gold_reward_fn is not None:
        gold = check_rewards(gold_reward_fn(rollout.completions, rollout.prompts), rollout.completions,
                             rollout.prompts, "gold_reward_fn")
    return ScoredRollout(rollout, rewards, logp_old, logp_ref, gold)


def sampled_kl(batch: ScoredRollout) -> torch.Tensor:
    r"""``(B,)`` estimate of :math:`\mathrm{KL}(\pi_{old}\|\pi_{ref})` per completion: k3 summed over its tokens.

    :math:`\sum_t \big(e^{\delta_t} - 1 - \delta_t\big)` with :math:`\delta_t = \log\pi_{ref}(y_t\mid\cdot)
    - \log\pi_{old}(y_t\mid\cdot)` on the sampled tokens (Schulman's k3, ``rlhf_edu.torch.kl_estimate``):
    unbiased for the sequence KL, never negative, and of lower variance than the plain log-ratio k1. The
    ``kl`` column of PPO, GRPO and RLOO is its batch mean, whatever estimator their penalty uses, so the
    column means the same in every online trainer (ReST logs the exact per-token KL of the same samples,
    and every ``eval_kl`` is exact; ``rlhf_edu.train.evaluation``).
    """
    if batch.logp_ref is None:
        raise ValueError("the rollout has no reference log-probs: collect it with ref_model=...")
    mask = batch.rollout.completion_mask.to(batch.logp_old.dtype)
    return (rt.kl_estimate(batch.logp_old, batch.logp_ref, "k3") * mask).sum(-1)


def select_rows(batch: ScoredRollout, rows) -> ScoredRollout:
    """The completions ``rows`` (indices or a boolean mask over the batch) of ``batch``, same layout.

    Used to keep some groups of a batch (DAPO's dynamic sampling) or to leave truncated completions out of
    a loss. ``num_samples`` is kept: select whole groups when the result is read group-wise.
    """
    r = batch.rollout
    rows = torch.as_tensor(rows, device=r.input_ids.device)
    if rows.dtype == torch.bool:
        rows = rows.nonzero().flatten()
    idx = rows.tolist()
    rollout = Rollout(r.input_ids[rows], r.attention_mask[rows], r.completion_mask[rows], r.prompt_length,
                      [r.prompts[i] for i in idx], [r.completions[i] for i in idx],
                      None if r.token_logprobs is None else r.token_logprobs[rows], r.num_samples)
    return ScoredRollout(rollout, batch.rewards[rows], None if batch.logp_old is None else batch.logp_old[rows],
                         None if batch.logp_ref is None else batch.logp_ref[rows],
                         None if batch.gold_rewards is None else batch.gold_rewards[idx])


def concat_rollouts(batches, pad_token_id: int) -> ScoredRollout:
    """One ``ScoredRollout`` from several, re-padded to a common layout (prompts left, completions right).

    Each batch has its own prompt width ``P`` and length; the result takes the widest prompt and the
    longest completion, padding with ``pad_token_id`` (attention and completion masks 0, log-probs 0). Position
    ids come from the attention mask, so the padding changes no log-probability beyond rounding.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: nothing to concatenate")
    if len(batches) == 1:
        return batches[0]
    width_p = max(b.rollout.prompt_length for b in batches)
    width_c = max(b.rollout.input_ids.shape[1] - b.rollout.prompt_length for b in batches)

    def pad(x, b, value):
        left = width_p - b.rollout.prompt_length
        right = width_c - (x.shape[1] - b.rollout.prompt_length)
        return torch.nn.functional.pad(x, (left, right), value=value)

    def cat(get, value):
        parts = [get(b) for b in batches]
        return None if any(p is None for p in parts) else torch.cat([pad(p, b, value) for p, b in zip(parts, batches)])

    rs = [b.rollout for b in batches]
    rollout = Rollout(cat(lambda b: b.rollout.input_ids, pad_token_id), cat(lambda b: b.rollout.attention_mask, 0),
                      cat(lambda b: b.rollout.completion_mask, 0), width_p, [p for r in rs for p in r.prompts],
                      [c for r in rs for c in r.completions], cat(lambda b: b.rollout.token_logprobs, 0.0),
                      rs[0].num_samples)
    golds = [b.gold_rewards for b in batches]
    return ScoredRollout(rollout, torch.cat([b.rewards for b in batches]), cat(lambda b: b.logp_old, 0.0),
                         cat(lambda b: b.logp_ref, 0.0),
                         None if any(g is None for g in golds) else np.concatenate(golds))


def truncated_rows(rollout: Rollout, max_new_tokens: int, eos_token_id) -> torch.Tensor:
    """``(B,)`` bool: completions cut by the length limit, ``max_new_tokens`` tokens and no EOS at the end.

    A completion whose EOS is exactly its ``max_new_tokens``-th token ended on its own and is not truncated.
    With ``eos_token_id`` None (a tokenizer without EOS) every completion of full length counts as truncated.
    """
    lengths = rollout.completion_lengths
    full = lengths >= max_new_tokens
    if eos_token_id is None:
        return full
    last = (rollout.prompt_length + lengths - 1).clamp(min=0, max=rollout.input_ids.shape[1] - 1)
    ends_with_eos = rollout.input_ids.gather(1, last[:, None]).squeeze(1) == eos_token_id
    return full & ~ends_with_eos


@dataclass
class OnlineRun:
    """What an online trainer (PPO, GRPO, RLOO, ReST) starts from; made by ``prepare_online_run``.

    ``run.collect(policy, tokenizer, n_prompts, ...)`` is the rollout step of PPO, GRPO and RLOO: a draw of
    prompts, sampled completions, their scores and log-probs (``OnlineRun.collect``).

    Attributes:
        prompts, eval_prompts: the checked prompt lists (``eval_prompts`` may be None).
        reward_fn, gold_fn: ``(completions, prompts) -> np.ndarray`` (``gold_fn`` may be None).
        device: the resolved device; the policy is on it, in eval mode, and with ``disable_dropout`` its
            dropout is off (``policy_and_reference``), so the policy that samples (eval mode) and the policy
            the loss sees (train mode) are the same function.
        ref_model: the frozen reference on the device (a copy of the policy as given, by default).
        prompt_stream: CPU generator of the prompt draws (and of PPO's minibatch order); ``sample_stream``: the
            sampler's, on the device.
        parallel: the run's ``rlhf_edu.train.distributed.DataParallel``. Under ``torchrun`` the prompt
            stream is seeded alike on every process (the global batch is drawn once, process ``r`` takes
            slice ``r``: ``parallel.share_items``) and the sample stream with ``seed + rank`` (each process
            samples its own completions); in a single process both are seeded with ``seed``, as before.
        autocast: ``rlhf_edu.lm.mixed_precision(dtype, device)``, the context of the run's forward passes.
    """

    prompts: list
    eval_prompts: list | None
    reward_fn: object
    gold_fn: object
    device: torch.device
    ref_model: torch.nn.Module
    prompt_stream: torch.Generator
    sample_stream: torch.Generator
    parallel: DataParallel | None = None
    autocast: MixedPrecision | None = None

    def collect(self, policy, tokenizer, n_prompts: int, **options) -> ScoredRollout:
        r"""The rollout of one step: ``n_prompts`` prompts drawn, sampled, scored, with old and reference log-probs.

        The first lines of every online algorithm's iteration: PPO's rollout phase (InstructGPT; Ouyang et
        al., 2022), GRPO's Algorithm 1, lines 5-9 (Shao et al., 2024: sample a batch of prompts, a group of
        completions from :math:`\pi_{\theta_{old}}` for each, their rewards) and RLOO's lines 3-4. It draws
        ``n_prompts`` prompts uniformly with replacement from ``prompts`` with ``prompt_stream``
        (``rlhf_edu.train.prompts.draw_prompts``) and hands them to ``collect_rollouts`` under ``autocast``,
        with ``reward_fn``, ``ref_model``, ``gold_fn`` and ``sample_stream`` as ``generator``.

        Data parallel (under ``torchrun``, ``N`` processes): ``n_prompts`` is per process. The global batch
        of ``N * n_prompts`` prompts is drawn once, alike on every process (their prompt streams are seeded
        alike), and this process samples and scores its slice (``parallel.share_items``) with its own sample
        stream; in a single process the draw is the batch. Each call advances both streams, so the same seed
        gives the same sequence of batches.

        Args:
            policy: the model that samples (in eval mode for the sampling; its mode is restored).
            tokenizer: the run's tokenizer (with a pad token).
            n_prompts: prompts per process, an integer >= 1.
            **options: passed to ``collect_rollouts``: ``num_samples``, ``max_new_tokens``, ``temperature``,
                ``top_k``, ``old_logprobs``.

        Returns:
            The ``ScoredRollout`` of this process's prompts (``n_prompts * num_samples`` rows in one process).

        Raises ``ValueError`` for ``n_prompts < 1`` and a reward that is not one finite number per completion
        (``check_rewards``); ``TypeError`` for a non-integer ``n_prompts`` or for an option the run supplies
        itself (``reward_fn``, ``ref_model``, ``generator``, ``gold_reward_fn``) or ``collect_rollouts`` does
        not know.
        """
        taken = sorted({"reward_fn", "ref_model", "generator", "gold_reward_fn"} & set(options))
        if taken:
            raise TypeError(f"OnlineRun.collect takes {', '.join(taken)} from the run, not as options: "
                            "build the run with them (prepare_online_run)")
        parallel = self.parallel if self.parallel is not None else DataParallel(self.device)
        n_global = parallel.global_batch_size(check_integer("n_prompts", n_prompts, minimum=1))
        # one global draw of N * n_prompts prompts, alike on every process; this process's slice
        mine = parallel.share_items(draw_prompts(self.prompts, n_global, self.prompt_stream))
        with self.autocast if self.autocast is not None else contextlib.nullcontext():
            return collect_rollouts(policy, tokenizer, mine, self.reward_fn, ref_model=self.ref_model,
                                    generator=self.sample_stream, gold_reward_fn=self.gold_fn, **options)


def prepare_online_run(policy, tokenizer, prompts, reward_fn, *, gold_reward_fn=None, eval_prompts=None,
                       ref_model=None, max_new_tokens: int, seed: int, device="auto",
                       disable_dropout: bool = True, dtype="float32",
                       find_unused_parameters: bool = False) -> OnlineRun:
    """Check the prompts against the context, wrap the rewards, seed, place the models: an ``OnlineRun``.

    The models are placed by ``policy_and_reference`` (dropout off in both with ``disable_dropout``);
    ``dtype`` is the precision of the forward passes (``rlhf_edu.lm.mixed_precision``);
    ``find_unused_parameters`` is DDP's option under ``torchrun`` (``rlhf_edu.train.distributed.data_parallel``;
    PPO's, whose actor and critic are prepared together).

    Raises ``ValueError`` for empty prompts, prompts that do not fit the context with ``max_new_tokens``,
    a tokenizer without a pad token, or a ``dtype`` the device cannot run (``rlhf_edu.lm.resolve_dtype``);
    ``TypeError`` for a reward that is neither callable nor a ``RewardModel``.
    """
    prompts = check_prompts(policy, tokenizer, prompts, max_new_tokens)
    if eval_prompts is not None:
        eval_prompts = check_prompts(policy, tokenizer, eval_prompts, max_new_tokens, name="eval_prompts")
    check_reward_model_room(reward_fn, tokenizer, prompts + (eval_prompts or []), max_new_tokens)
    check_reward_model_room(gold_reward_fn, tokenizer, prompts + (eval_prompts or []), max_new_tokens, "gold_reward_fn")
    reward_fn = as_reward_fn(reward_fn, tokenizer)
    gold_fn = None if gold_reward_fn is None else as_reward_fn(gold_reward_fn, tokenizer, "gold_reward_fn")
    set_seed(seed)
    # several processes under torchrun
    parallel = data_parallel(resolve_device(device), find_unused_parameters=find_unused_parameters)
    device = parallel.device
    autocast = mixed_precision(dtype, device)
    ref_model = policy_and_reference(policy, ref_model, device, disable_dropout=disable_dropout)
    policy.eval()
    return OnlineRun(prompts, eval_prompts, reward_fn, gold_fn, device, ref_model,
                     prompt_stream=torch.Generator().manual_seed(seed),
                     sample_stream=torch.Generator(device=device).manual_seed(seed + parallel.rank),
                     parallel=parallel, autocast=autocast)
