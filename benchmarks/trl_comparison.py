"""rlhf-edu against TRL: seconds per DPO step and per GRPO step on the same tiny model and batch.

Both libraries train the same tiny GPT-2 (``rlhf_edu.lm.tiny_causal_lm``, 2 layers, width 128) with the
same character tokenizer, batch and sequence lengths, on the CPU. A step's time is measured as
``(T(2n steps) - T(n steps)) / n`` with fresh trainers for each run, so start-up costs (dataset
tokenisation, model copies) cancel and only the per-step cost is compared:

- DPO: 32 preference pairs per step (prompts ~20 characters, completions up to 40), reference
  log-probabilities included (TRL computes them each step; rlhf-edu once up front, which the
  difference still counts, since twice the steps means twice the pairs).
- GRPO: 8 prompts x 8 samples per step, up to 32 new tokens, one policy update per batch, KL beta 0.04.

TRL is an optional extra (``pip install -e ".[trl]"``); without it only rlhf-edu's times are printed.
Run: ``python benchmarks/trl_comparison.py [--steps 4]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
import warnings

import torch

from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
from rlhf_edu.tasks import SentimentTask, gold_reward
from rlhf_edu.train.dpo import train_dpo
from rlhf_edu.train.grpo import train_grpo
from rlhf_edu.train.trl_bridge import trl_records, trl_tokenizer

PAIRS_PER_STEP = 32
PROMPTS_PER_STEP, GROUP = 8, 8
MAX_NEW = 32


def _per_step(run, n):
    t1 = run(n)
    t2 = run(2 * n)
    return (t2 - t1) / n


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ours_dpo(model, tok, pairs, n):
    # sft_weight=0: the plain DPO loss of the paper, as TRL computes it
    return _timed(lambda: train_dpo(copy.deepcopy(model), tok, pairs[: n * PAIRS_PER_STEP], epochs=1, sft_weight=0.0,
                              batch_size=PAIRS_PER_STEP, device="cpu", progress=False))


def ours_grpo(model, tok, prompts, n):
    return _timed(lambda: train_grpo(copy.deepcopy(model), tok, prompts, lambda c, p: gold_reward(c),
                               group_size=GROUP, prompts_per_step=PROMPTS_PER_STEP, steps=n,
                               max_new_tokens=MAX_NEW, eval_every=10**9, device="cpu", progress=False))


def trl_dpo(model, tok, pairs, n):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(output_dir=out, per_device_train_batch_size=PAIRS_PER_STEP, max_steps=n, beta=0.1,
                        learning_rate=1e-3, report_to=[], save_strategy="no", logging_steps=10**6,
                        use_cpu=True, dataloader_num_workers=0, max_length=128, disable_tqdm=True)
        # the same token ids as rlhf-edu: <bos> read as an id in the prompt text, <eos> as an id after the
        # completion (without trl_tokenizer, TRL would train on "<eos>" spelled out in five characters)
        data = Dataset.from_list(trl_records(pairs[: n * PAIRS_PER_STEP], tok))
        trainer = DPOTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model), args=cfg,
                             train_dataset=data, processing_class=trl_tokenizer(tok))
        return _timed(trainer.train)


def trl_grpo(model, tok, prompts, n):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    def reward(completions, **kwargs):
        return [float(x) for x in gold_reward(completions)]

    with tempfile.TemporaryDirectory() as out:
        # TRL's GRPO builds its reference model from the policy's path, so the policy goes through disk
        model.save_pretrained(os.path.join(out, "policy"))
        cfg = GRPOConfig(output_dir=out, per_device_train_batch_size=PROMPTS_PER_STEP * GROUP,
                         num_generations=GROUP, max_completion_length=MAX_NEW, max_steps=n, beta=0.04,
                         learning_rate=5e-4, report_to=[], save_strategy="no", logging_steps=10**6,
                         use_cpu=True, dataloader_num_workers=0, temperature=1.0, loss_type="grpo",
                         disable_tqdm=True)
        data = Dataset.from_list([{"prompt": tok.bos_token + p} for p in prompts])  # rlhf-edu's prompts start with <bos>
        trainer = GRPOTrainer(model=os.path.join(out, "policy"), reward_funcs=reward, args=cfg, train_dataset=data,
                              processing_class=trl_tokenizer(tok))
        return _timed(trainer.train)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="n in (T(2n) - T(n)) / n")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    tok = char_tokenizer()
    model = tiny_causal_lm(tok, seed=0)
    task = SentimentTask(seed=0)
    pairs = task.preference_pairs(2 * args.steps * PAIRS_PER_STEP, seed=0)
    prompts = task.all_prompts("train")
    try:
        import trl  # noqa: F401

        have_trl = True
    except ImportError:
        have_trl = False
    print(f"torch threads {args.threads}; per-step seconds = (T(2n) - T(n)) / n with n = {args.steps}")
    print(f"{'method':<6} {'rlhf-edu s/step':>16} {'TRL s/step':>11} {'ratio ours/TRL':>15}")
    for name, ours, theirs, data in (("DPO", ours_dpo, trl_dpo, pairs), ("GRPO", ours_grpo, trl_grpo, prompts)):
        ours_s = _per_step(lambda n: ours(model, tok, data, n), args.steps)
        if have_trl:
            trl_s = _per_step(lambda n: theirs(model, tok, data, n), args.steps)
            print(f"{name:<6} {ours_s:>16.3f} {trl_s:>11.3f} {ours_s / trl_s:>15.2f}")
        else:
            print(f"{name:<6} {ours_s:>16.3f} {'(no TRL)':>11} {'':>15}")
    if not have_trl:
        print('TRL is not installed: pip install -e ".[trl]" to compare')


if __name__ == "__main__":
    main()
