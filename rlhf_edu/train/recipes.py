"""The book's starting points: an SFT policy on each synthetic task, with one set of tested settings.

Chapters, the demo and the tests all begin RLHF from "the SFT model"; these functions are that model, so
the hyper-parameters that make it good enough (and fast enough on a laptop CPU) live in one place.

Measured on a 2-core CPU: ``sentiment_sft_policy()`` trains 256 steps in about 30-60 s and its samples
score a mean gold reward of about 0.4 (mixed reviews, few misspellings), the middle of the scale, so that
RLHF has room to move it either way.
"""

from __future__ import annotations

from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
from rlhf_edu.tasks import ArithmeticTask, SentimentTask
from rlhf_edu.train.sft import train_sft

__all__ = ["sentiment_sft_policy", "arithmetic_sft_policy"]


def sentiment_sft_policy(arch="gpt2", *, steps=256, batch_size=64, lr=3e-3, d_model=128, n_layer=2, seed=0,
                         device="auto", progress=True):
    """``(policy, tokenizer, task, history)``: a tiny LM fine-tuned on the sentiment task's mixed reviews.

    ``steps`` optimiser steps of ``batch_size`` fresh examples each (one epoch over ``steps * batch_size``
    reviews from ``SentimentTask(seed)``).
    """
    tokenizer = char_tokenizer()
    task = SentimentTask(seed=seed)
    policy = tiny_causal_lm(tokenizer, arch=arch, d_model=d_model, n_layer=n_layer, seed=seed)
    policy, history = train_sft(policy, tokenizer, task.sft_corpus(steps * batch_size), epochs=1, batch_size=batch_size,
                          lr=lr, seed=seed, device=device, progress=progress)
    return policy, tokenizer, task, history


def arithmetic_sft_policy(arch="gpt2", *, steps=250, batch_size=64, lr=1e-3, d_model=128, n_layer=2, seed=0,
                          digits=2, device="auto", progress=True):
    """``(policy, tokenizer, task, history)``: a tiny LM briefly fine-tuned on correct sums.

    Kept brief on purpose: the SFT model gets the format right but the answer right well under half the
    time, leaving room for GRPO with the verifiable reward (chapter 5). The skill arrives suddenly, so the
    step count matters: measured on held-out 2-digit additions (exact match of samples at temperature 1,
    seed 0, one thread), GPT-2 is right 6% of the time after 200 steps, 19% after 250 and 53% after 300
    (Llama: 6%, 22%, 37%). From the 250-step models GRPO (lr 2e-4, 300 steps of 16 problems x 8 samples,
    ``benchmarks/method_gains.py``) reaches 46% (GPT-2) and 51% (Llama) in about 80 s.
    """
    tokenizer = char_tokenizer()
    task = ArithmeticTask(seed=seed, digits=digits)
    policy = tiny_causal_lm(tokenizer, arch=arch, d_model=d_model, n_layer=n_layer, seed=seed)
    policy, history = train_sft(policy, tokenizer, task.sft_corpus(steps * batch_size), epochs=1, batch_size=batch_size,
                          lr=lr, seed=seed, device=device, progress=progress)
    return policy, tokenizer, task, history
