"""Sampling throughput of ``rlhf_edu.lm.generate`` with and without the KV cache.

The default tiny GPT-2 of the book (2 layers, width 64, context 128, character tokenizer), a batch of 32
prompts, 64 new tokens each (``stop_at_eos=False`` so every row generates all 64). Without the cache each
step re-runs the whole prefix, so its cost grows with the length; with the cache each step runs one token.

    python benchmarks/sampling_speed.py [--device auto] [--threads 1] [--batch 32] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from rlhf_edu.lm import char_tokenizer, generate, resolve_device, tiny_causal_lm

PROMPTS = [
    "review: the film was",
    "review: the food is",
    "12+35=",
    "7*8=",
]


def measure(model, tok, prompts, max_new_tokens, use_cache, repeats, device):
    times = []
    for r in range(repeats + 1):  # the first run warms up (allocations, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        rollout = generate(model, tok, prompts, max_new_tokens, use_cache=use_cache, generator=r, stop_at_eos=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if r > 0:
            times.append(time.perf_counter() - start)
    tokens = int(rollout.completion_mask.sum())
    best = min(times)
    return tokens, best, tokens / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    # Tiny matrices: one CPU thread is as fast as several and far steadier on a shared machine.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tok = char_tokenizer()
    model = tiny_causal_lm(tok).to(device)  # the default: GPT-2, 2 layers, d_model 128
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    print(f"device={device}, threads={torch.get_num_threads()}, batch={args.batch}, new tokens={args.new_tokens}, "
          f"model=tiny GPT-2 ({model.config.n_layer} layers, d_model {model.config.n_embd}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters)")
    results = {}
    for use_cache in (True, False):
        tokens, seconds, rate = measure(model, tok, prompts, args.new_tokens, use_cache, args.repeats, device)
        results[use_cache] = rate
        label = "with KV cache   " if use_cache else "without KV cache"
        print(f"{label}: {tokens} tokens in {seconds:.3f} s (best of {args.repeats}) = {rate:,.0f} tokens/s")
    print(f"speed-up from the cache: {results[True] / results[False]:.2f}x")
    return results


if __name__ == "__main__":
    main()
