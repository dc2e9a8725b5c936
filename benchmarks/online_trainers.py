"""GRPO, RLOO, ReST and best-of-n on the book's tasks: gold reward and KL to the SFT model, and wall time.

Sentiment: the SFT model of ``sentiment_sft_policy(arch)`` is trained with each method's DEFAULT settings,
the gold reward as the training reward; its samples on the 8 held-out prompts (16 each, 32 new tokens at
most) are scored with the gold reward and the exact KL to the SFT model. Best-of-n: the gold reward and
KL of best-of-n for n = 1..16 from 64 samples per prompt, next to the bound log n - (n - 1)/n.

Arithmetic: an SFT model trained for ``--arith-sft-steps`` steps (600: right about a quarter of the time
when sampled), then GRPO (16 prompts x 8 samples per step, 40 steps, 5 new tokens, the verifiable reward
with its format bonus); exact match on every 4th held-out problem, sampled (temperature 1) and greedy.

    python benchmarks/online_trainers.py [--arch gpt2|llama] [--seeds 0,1,2] [--threads 1] [--skip-arithmetic]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from rlhf_edu.lm import generate
from rlhf_edu.tasks import exact_match
from rlhf_edu.train.best_of_n import best_of_n_curve
from rlhf_edu.train.evaluation import evaluate_policy
from rlhf_edu.train.grpo import grpo
from rlhf_edu.train.recipes import arithmetic_sft_policy, sentiment_sft_policy
from rlhf_edu.train.rest import rest
from rlhf_edu.train.rloo import rloo


def sentiment(arch, seeds):
    policy, tok, task, _ = sentiment_sft_policy(arch, device="cpu", progress=False)
    test = task.all_prompts("test")
    start = evaluate_policy(policy, tok, test, gold_reward_fn=task.reward, ref_model=policy, num_samples=16)
    print(f"[{arch}] SFT model: gold reward {start['gold_reward']:.3f}")
    curve = best_of_n_curve(policy, tok, test, task.reward, ns=(1, 2, 4, 8, 16), samples_per_prompt=64,
                            gold_reward_fn=task.reward, device="cpu")
    for n, g, kl, bound in zip(curve["n"], curve["gold_reward"], curve["kl"], curve["kl_bound"]):
        print(f"[{arch}] best-of-{n:<2d}: gold {g:.3f}  KL {kl:.3f} (bound {bound:.3f})")
    for name, method in (("grpo", grpo), ("rloo", rloo), ("rest", rest)):
        for seed in seeds:
            tic = time.perf_counter()
            trained, _ = method(copy.deepcopy(policy), tok, task.all_prompts("train"), task.reward, seed=seed,
                                device="cpu", progress=False)
            seconds = time.perf_counter() - tic
            end = evaluate_policy(trained, tok, test, gold_reward_fn=task.reward, ref_model=policy, num_samples=16)
            print(f"[{arch}] {name} seed {seed}: gold {start['gold_reward']:.3f} -> {end['gold_reward']:.3f} "
                  f"({end['gold_reward'] - start['gold_reward']:+.3f}), KL to SFT {end['kl']:.2f}, "
                  f"{seconds:.1f} s; e.g. {end['examples'][0][1]!r}")


def arithmetic(arch, seeds, sft_steps):
    policy, tok, task, _ = arithmetic_sft_policy(arch, steps=sft_steps, device="cpu", progress=False)
    test = task.all_prompts("test")[::4]

    def accuracy(model):
        return {t: float(exact_match(generate(model, tok, test, 5, temperature=t, generator=123).completions,
                                     test).mean()) for t in (1.0, 0.0)}

    start = accuracy(policy)
    print(f"[{arch}] arithmetic SFT ({sft_steps} steps): exact match sampled {start[1.0]:.3f}, greedy {start[0.0]:.3f}")
    for seed in seeds:
        tic = time.perf_counter()
        trained, _ = grpo(copy.deepcopy(policy), tok, task.all_prompts("train"), task.reward, prompts_per_step=16,
                          steps=40, max_new_tokens=5, seed=seed, device="cpu", progress=False)
        seconds = time.perf_counter() - tic
        end = accuracy(trained)
        print(f"[{arch}] arithmetic GRPO seed {seed}: sampled {start[1.0]:.3f} -> {end[1.0]:.3f} "
              f"({100 * (end[1.0] - start[1.0]):+.1f} points), greedy {start[0.0]:.3f} -> {end[0.0]:.3f}, "
              f"{seconds:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="gpt2", choices=("gpt2", "llama"))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the RL runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arith-sft-steps", type=int, default=600)
    parser.add_argument("--skip-arithmetic", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    sentiment(args.arch, seeds)
    if not args.skip_arithmetic:
        arithmetic(args.arch, seeds, args.arith_sft_steps)


if __name__ == "__main__":
    main()
