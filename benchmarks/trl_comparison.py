"""rlhf-edu against TRL: seconds per DPO step and per GRPO step on the same tiny model and batch, phase by phase.

Both libraries train the same tiny GPT-2 (``rlhf_edu.lm.tiny_causal_lm``, 2 layers, width 128 unless
``--layers``/``--width`` say otherwise) with the same character tokenizer, batch and sequence lengths, on the
CPU unless ``--device cuda``:

- DPO: 32 preference pairs per step (prompts ~20 characters, completions up to 40), beta 0.1, the paper's
  loss (rlhf-edu's ``sft_weight=0``), AdamW, gradients clipped to norm 1 in both;
- GRPO: 8 prompts x 8 samples per step, up to 32 new tokens at temperature 1, one policy update per
  batch, KL beta 0.04 (k3 in the loss, reference log-probs of every sampled token in both), AdamW. The
  same rows, but not the same arithmetic: rlhf-edu's sampler runs each prompt once for its 8 samples, and so
  do its reference and training passes (``token_logprobs(prompt_length=...)``, the same log-probs to float
  rounding); TRL runs every row whole in its passes. Both LM heads score only the completion columns
  (``logits_to_keep``), and both optimisers are AdamW, TRL's the fused kernel (its default), rlhf-edu's
  ``torch.optim.AdamW`` default (a loop over the tensors on the CPU, ``foreach`` on a GPU).

How a step is timed. A step is the wall time from the end of one optimiser step to the end of the next
(a global ``torch.optim`` step hook, the same for both libraries), so it holds everything a step costs:
data, sampling, scoring, every forward and backward pass, the update, logging. Inside it, each phase is
the EXCLUSIVE time spent in a few wrapped functions (a nested phase's time is not counted twice):

- generation: rlhf-edu's ``generate`` / TRL's ``GRPOTrainer._generate`` (tokenising the prompts, sampling,
  decoding); scoring: the reward function itself (the same function in both);
- reference log-probs: a forward pass of the frozen reference (rlhf-edu's DPO scores the whole dataset once
  before training, in batches of one step's 64 rows: that time divided by the number of steps is added to
  every step, so the work per step is the same as TRL's per-step reference pass);
- old log-probs: a no-grad forward pass of the policy on the sampled batch (with one update per batch
  neither library needs one: the ratio is 1 and the loss's own log-probs, detached, are the old ones);
- forward + loss: the training forward pass and the loss (rlhf-edu's ``token_logprobs`` or
  ``chosen_rejected_logps`` and its loss function; TRL's ``_compute_loss``);
- backward: ``Tensor.backward``; optimizer: gradient clipping and ``optimizer.step``;
- other: the rest of the step (batching, logging, progress, the trainers' own bookkeeping).

The wrappers live in this script only (they patch the two trainer INSTANCES' methods and a few functions
for the duration of a run and restore them); the libraries are not changed for it. Each library runs
``--runs`` times per method with fresh trainers, the two libraries' runs interleaved (so a load on the
shared machine hits both alike); the first ``--warmup`` steps of every run are left out and the figures
are medians over the remaining steps of all runs. Before them each library runs ``--warmup-runs`` short
untimed runs (default 1): on a GPU the first run of a process loads its kernels, and rlhf-edu's DPO would
otherwise spread that cost, paid in its reference pass before step 0, over every step. Thread count: ``--threads`` for both (default 1; run
with ``OMP_NUM_THREADS=1`` too, so no library starts a thread pool of its own).

TRL is an optional extra (``pip install -e ".[trl]"``); without it only rlhf-edu's times are printed.
Run: ``OMP_NUM_THREADS=1 python benchmarks/trl_comparison.py [--steps 8 --runs 3 --warmup 2]``; on a GPU add
``--device cuda [--dtype bfloat16] [--layers 12 --width 768]`` (phases are then timed with a synchronisation at
each boundary).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
import warnings

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import rlhf_edu.torch as rt
import rlhf_edu.train.dpo as dpo_module
import rlhf_edu.train.grpo as grpo_module
import rlhf_edu.train.rollouts as rollouts_module
from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
from rlhf_edu.tasks import SentimentTask, gold_reward
from rlhf_edu.train.dpo import train_dpo
from rlhf_edu.train.grpo import train_grpo
from rlhf_edu.train.trl_bridge import trl_records, trl_tokenizer

PAIRS_PER_STEP = 32
PROMPTS_PER_STEP, GROUP = 8, 8
MAX_NEW = 32
# TRL 1.16's configs default to bf16 autocast and gradient checkpointing; rlhf-edu trains in the model's
# float32 without checkpointing. Both off, so both libraries do the same arithmetic (on a CPU without bf16
# units, autocast alone makes TRL's matrix products ~10x slower: that would measure the CPU, not the code).
# ``--trl-defaults`` keeps TRL's defaults instead.
SAME_PRECISION = dict(bf16=False, gradient_checkpointing=False)
# where and in what precision both libraries run (``--device``, ``--dtype``)
RUN = dict(device="cpu", dtype="float32")
PHASES = ("generation", "scoring", "reference log-probs", "old log-probs", "forward + loss", "backward",
          "optimizer", "other")


class PhaseClock:
    """Exclusive time per phase within each optimiser step (see the module docstring)."""

    def __init__(self):
        self.steps = []  # one dict {phase: seconds, "step": seconds} per optimiser step
        self.upfront = {}  # phases timed before the first step (rlhf-edu's DPO reference pass)
        self._stack, self._current = [], {}
        self._mark = self._step_start = time.perf_counter()

    def _charge(self):
        if RUN["device"] == "cuda":  # GPU work is asynchronous: charge it to the phase that launched it
            torch.cuda.synchronize()
        now = time.perf_counter()
        phase = self._stack[-1] if self._stack else "other"
        self._current[phase] = self._current.get(phase, 0.0) + now - self._mark
        self._mark = now

    def enter(self, phase):
        self._charge()
        self._stack.append(phase)

    def leave(self):
        self._charge()
        self._stack.pop()

    @contextlib.contextmanager
    def phase(self, name):
        self.enter(name)
        try:
            yield
        finally:
            self.leave()

    def wrap(self, fn, phase):
        """``fn`` timed as ``phase`` (a name, or a callable of the arguments returning one)."""

        def timed(*args, **kwargs):
            with self.phase(phase(*args, **kwargs) if callable(phase) else phase):
                return fn(*args, **kwargs)

        return timed

    def end_step(self):
        self._charge()  # (synchronises on a GPU)
        now = time.perf_counter()
        row = dict(self._current, step=now - self._step_start)
        self._current, self._step_start = {}, now
        self.steps.append(row)


@contextlib.contextmanager
def patched(*triples):
    """Set ``setattr(obj, name, value)`` for each triple; restore the old values on exit."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in triples]
    try:
        for obj, name, value in triples:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


@contextlib.contextmanager
def common_clock():
    """A ``PhaseClock`` with what both libraries share timed: backward, clipping, optimiser steps."""
    clock = PhaseClock()

    def pre(optimizer, args, kwargs):
        clock.enter("optimizer")

    def post(optimizer, args, kwargs):
        clock.leave()
        clock.end_step()

    handles = [register_optimizer_step_pre_hook(pre),
               register_optimizer_step_post_hook(post)]
    try:
        with patched((torch.Tensor, "backward", clock.wrap(torch.Tensor.backward, "backward")),
                     (torch.nn.utils, "clip_grad_norm_", clock.wrap(torch.nn.utils.clip_grad_norm_, "optimizer"))):
            yield clock
    finally:
        for h in handles:
            h.remove()


def ours_dpo(model, tok, pairs, steps):
    with common_clock() as clock, patched(
        (dpo_module, "frozen_logps", clock.wrap(dpo_module.frozen_logps, "reference log-probs")),
        (dpo_module, "chosen_rejected_logps", clock.wrap(dpo_module.chosen_rejected_logps, "forward + loss")),
        (rt, "dpo_loss", clock.wrap(rt.dpo_loss, "forward + loss")),
    ):
        # sft_weight=0: the plain DPO loss of the paper, as TRL computes it; max_grad_norm=1 as TRL's default
        train_dpo(copy.deepcopy(model), tok, pairs[: steps * PAIRS_PER_STEP], epochs=1, sft_weight=0.0, beta=0.1,
                  batch_size=PAIRS_PER_STEP, lr=1e-3, max_grad_norm=1.0, progress=False, **RUN)
    # the reference pass over the whole dataset ran before step 0: spread it evenly over the steps
    first = clock.steps[0]
    upfront = first.pop("reference log-probs", 0.0)
    first["step"] -= upfront
    for row in clock.steps:
        row["reference log-probs"] = row.get("reference log-probs", 0.0) + upfront / len(clock.steps)
        row["step"] += upfront / len(clock.steps)
    return clock.steps


def trl_dpo(model, tok, pairs, steps):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(output_dir=out, per_device_train_batch_size=PAIRS_PER_STEP, max_steps=steps, beta=0.1,
                        learning_rate=1e-3, report_to=[], save_strategy="no", logging_steps=10**6,
                        use_cpu=RUN["device"] == "cpu", dataloader_num_workers=0, max_length=128, disable_tqdm=True, **SAME_PRECISION)
        # the same token ids as rlhf-edu: <bos> read as an id in the prompt text, <eos> as an id after the
        # completion (without trl_tokenizer, TRL would train on "<eos>" spelled out in five characters)
        data = Dataset.from_list(trl_records(pairs[: steps * PAIRS_PER_STEP], tok))
        trainer = DPOTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model), args=cfg,
                             train_dataset=data, processing_class=trl_tokenizer(tok))
        with common_clock() as clock, patched(
            (trainer, "_compute_loss", clock.wrap(trainer._compute_loss, "forward + loss")),
            (trainer.ref_model, "forward", clock.wrap(trainer.ref_model.forward, "reference log-probs")),
        ):
            with contextlib.redirect_stdout(io.StringIO()):  # TRL prints its run's summary dict
                trainer.train()
    return clock.steps


def _reward(completions, prompts=None, **kwargs):
    return [float(x) for x in gold_reward(completions)]


def ours_grpo(model, tok, prompts, steps):
    policy = copy.deepcopy(model)
    holder = {}

    def logprob_phase(model, *args, **kwargs):
        if model is holder.get("ref"):
            return "reference log-probs"
        return "forward + loss" if torch.is_grad_enabled() else "old log-probs"

    def keep_reference(*args, **kwargs):
        run = prepare(*args, **kwargs)
        holder["ref"] = run.ref_model
        return run

    prepare = grpo_module.prepare_online_run
    with common_clock() as clock, patched(
        (grpo_module, "prepare_online_run", keep_reference),
        (rollouts_module, "generate", clock.wrap(rollouts_module.generate, "generation")),
        (rollouts_module, "token_logprobs", clock.wrap(rollouts_module.token_logprobs, logprob_phase)),
        (grpo_module, "token_logprobs", clock.wrap(grpo_module.token_logprobs, logprob_phase)),
        (rt, "grpo_loss", clock.wrap(rt.grpo_loss, "forward + loss")),
    ):
        train_grpo(policy, tok, prompts, clock.wrap(_reward, "scoring"), group_size=GROUP,
                   prompts_per_step=PROMPTS_PER_STEP, steps=steps, max_new_tokens=MAX_NEW, beta=0.04,
                   lr=5e-4, max_grad_norm=1.0, eval_every=10**9, progress=False, **RUN)
    return clock.steps


def trl_grpo(model, tok, prompts, steps):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    clock_box = {}

    def reward(completions, **kwargs):
        with clock_box["clock"].phase("scoring"):
            return _reward(completions)

    with tempfile.TemporaryDirectory() as out:
        # TRL's GRPO builds its reference model from the policy's path, so the policy goes through disk
        model.save_pretrained(os.path.join(out, "policy"))
        cfg = GRPOConfig(output_dir=out, per_device_train_batch_size=PROMPTS_PER_STEP * GROUP,
                         num_generations=GROUP, max_completion_length=MAX_NEW, max_steps=steps, beta=0.04,
                         learning_rate=5e-4, report_to=[], save_strategy="no", logging_steps=10**6,
                         use_cpu=RUN["device"] == "cpu", dataloader_num_workers=0, temperature=1.0, loss_type="grpo",
                         disable_tqdm=True, **SAME_PRECISION)
        data = Dataset.from_list([{"prompt": tok.bos_token + p} for p in prompts])  # rlhf-edu's prompts start with <bos>
        trainer = GRPOTrainer(model=os.path.join(out, "policy"), reward_funcs=reward, args=cfg, train_dataset=data,
                              processing_class=trl_tokenizer(tok))

        def logprob_phase(model, *args, **kwargs):
            if model is trainer.ref_model:
                return "reference log-probs"
            return "forward + loss" if torch.is_grad_enabled() else "old log-probs"

        with common_clock() as clock, patched(
            (trainer, "_generate", clock.wrap(trainer._generate, "generation")),
            (trainer, "_get_per_token_logps_and_entropies",
             clock.wrap(trainer._get_per_token_logps_and_entropies, logprob_phase)),
            (trainer, "_compute_loss", clock.wrap(trainer._compute_loss, "forward + loss")),
        ):
            clock_box["clock"] = clock
            with contextlib.redirect_stdout(io.StringIO()):  # TRL prints its run's summary dict
                trainer.train()
    return clock.steps


def _median(rows, key):
    return statistics.median(row.get(key, 0.0) for row in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per library and method (interleaved)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each run left out")
    parser.add_argument("--warmup-runs", type=int, default=1,
                        help="untimed short runs of each library first (CUDA loads its kernels on first use)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for both libraries")
    parser.add_argument("--methods", default="dpo,grpo", help="comma-separated: dpo, grpo")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both libraries train")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute precision of both (rlhf-edu's dtype=, TRL's bf16=)")
    parser.add_argument("--layers", type=int, default=2, help="depth of the tiny GPT-2")
    parser.add_argument("--width", type=int, default=128, help="width of the tiny GPT-2 (heads of 32)")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="TRL with its own defaults (bf16 autocast, gradient checkpointing), not float32 as rlhf-edu")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    torch.set_num_threads(args.threads)
    RUN.update(device=args.device, dtype=args.dtype)
    SAME_PRECISION["bf16"] = args.dtype == "bfloat16"
    if args.trl_defaults:
        SAME_PRECISION.clear()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:  # TRL maps its datasets with progress bars
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    warnings.filterwarnings("ignore")
    tok = char_tokenizer()
    model = tiny_causal_lm(tok, n_layer=args.layers, d_model=args.width, n_head=max(1, args.width // 32), seed=0)
    task = SentimentTask(seed=0)
    pairs = task.preference_pairs(args.steps * PAIRS_PER_STEP, seed=0)
    prompts = task.all_prompts("train")
    try:
        import trl  # noqa: F401

        have_trl = True
    except ImportError:
        have_trl = False
    methods = {"dpo": ("DPO", ours_dpo, trl_dpo, pairs), "grpo": ("GRPO", ours_grpo, trl_grpo, prompts)}
    measured = args.runs * (args.steps - args.warmup)
    print(f"device {args.device}, {args.dtype}; GPT-2 of {args.layers} layers, width {args.width} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    print(f"torch threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
          f"{args.runs} interleaved runs of {args.steps} steps per library, the first {args.warmup} of each left "
          f"out: medians over {measured} steps (seconds)")
    summary = []
    for key in args.methods.split(","):
        name, ours, theirs, data = methods[key.strip()]
        results = {"rlhf-edu": [], "TRL": []}
        for _ in range(args.warmup_runs):  # untimed: first calls load kernels and fill caches
            ours(model, tok, data, 2)
            if have_trl:
                theirs(model, tok, data, 2)
        for _ in range(args.runs):
            results["rlhf-edu"] += ours(model, tok, data, args.steps)[args.warmup:]
            if have_trl:
                results["TRL"] += theirs(model, tok, data, args.steps)[args.warmup:]
        libs = [lib for lib in results if results[lib]]
        print(f"\n{name} step{'':<15}" + "".join(f"{lib:>10}" for lib in libs)
              + (f"{'ours/TRL':>10}" if len(libs) == 2 else ""))
        for phase in PHASES + ("step",):
            values = [_median(results[lib], phase) for lib in libs]
            if phase != "step" and not any(values):
                continue
            label = "whole step" if phase == "step" else phase
            ratio = f"{values[0] / values[1]:>10.2f}" if len(libs) == 2 and values[1] > 0 else ""
            print(f"  {label:<23}" + "".join(f"{v:>10.4f}" for v in values) + ratio)
        if len(libs) == 2:
            summary.append((name, _median(results["rlhf-edu"], "step") / _median(results["TRL"], "step")))
    print("\n(each row a median over steps, so the phases need not add up to the whole step)")
    print("TRL: " + (f"its defaults, bf16 autocast and gradient checkpointing (rlhf-edu: {args.dtype}, no checkpointing)"
                     if args.trl_defaults else f"bf16={SAME_PRECISION['bf16']}, gradient_checkpointing=False (its "
                     f"defaults are True), so both compute in {args.dtype} without recomputation"))
    grouping = ("rlhf-edu's DPO passes group the rows by length (less padding), TRL pads the batch to its "
                "longest row" if args.device == "cpu" else "both pad a DPO batch to its longest row (rlhf-edu "
                "groups rows by length on the CPU only)")
    print("The same rows through the same model. DPO's reference log-probs: rlhf-edu scores the dataset once "
          "before training (64 rows at a time, spread over the steps above), TRL each step's batch; "
          f"{grouping}. With one update per GRPO batch neither library recomputes the old log-probs. GRPO's "
          "passes: rlhf-edu runs each prompt once for its samples (token_logprobs' prompt_length), TRL every "
          "row whole; both LM heads on the completion columns only.")
    for name, ratio in summary:
        print(f"{name}: median step rlhf-edu / TRL = {ratio:.2f}")
    if not have_trl:
        print('TRL is not installed: pip install -e ".[trl]" to compare')


if __name__ == "__main__":
    main()
