"""What label noise does to a reward model: held-out accuracy against the fraction of flipped labels.

Trains one reward model (``rlhf_edu.train.reward_model``, from the sentiment SFT model) per noise level on
the sentiment task's preference pairs whose labels were flipped with probability ``noise``, and measures
on held-out test pairs (new subject-verb prompts):

- ``label acc``: agreement with the test labels (Bradley-Terry annotator, beta=10, no flips; the best
  possible is about 0.83, since a quarter of the pairs tie in gold reward and get a coin-flip label);
- ``acc (gap>=0.1)``: the same on test pairs whose golds differ by at least 0.1 (no ties);
- ``gold order``: agreement with the gold reward's ranking on the non-tied test pairs (the truth the
  labels are noisy views of).

Run: ``python benchmarks/reward_model_noise.py`` (about 1-2 minutes per noise level on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rlhf_edu.lm import RewardModel, load_model
from rlhf_edu.tasks import SentimentTask
from rlhf_edu.train.recipes import sentiment_sft_policy
from rlhf_edu.train.reward_model import pairwise_accuracy, reward_margins, train_reward_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sft", default=None, help="a folder saved by rlhf_edu.lm.save_model (default: train it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.sft:
        policy, tok = load_model(args.sft, return_tokenizer=True)
        task = SentimentTask(seed=0)  # the task of sentiment_sft_policy(seed=0)
    else:
        policy, tok, task, _ = sentiment_sft_policy(device="cpu", progress=False)
    test = task.preference_pairs(512, split="test", seed=0)
    test_gap = task.preference_pairs(512, split="test", seed=0, min_gap=0.1)
    gold_c = np.array([r["gold_chosen"] for r in test])
    gold_r = np.array([r["gold_rejected"] for r in test])
    untied = np.abs(gold_c - gold_r) > 1e-9
    print(f"{'noise':>6} {'label acc':>10} {'acc (gap>=0.1)':>15} {'gold order':>11} {'train acc':>10} {'seconds':>8}")
    for noise in args.noise:
        rm = RewardModel.from_pretrained_lm(policy, seed=0)
        train = task.preference_pairs(args.pairs, noise=noise, seed=1)
        start = time.perf_counter()
        rm, hist = train_reward_model(rm, tok, train, epochs=args.epochs, device="cpu", progress=False)
        seconds = time.perf_counter() - start
        m = reward_margins(rm, tok, test)
        gold_order = np.mean((m[untied] > 0) == (gold_c[untied] > gold_r[untied]))
        print(f"{noise:6.2f} {pairwise_accuracy(rm, tok, test):10.3f} {pairwise_accuracy(rm, tok, test_gap):15.3f} "
              f"{gold_order:11.3f} {np.mean(hist['accuracy'][-16:]):10.3f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
