"""The runs of tests/test_data_parallel.py, unchanged whether one process or ``torchrun`` runs them.

``python tests/data_parallel_worker.py OUT BATCH_SIZE`` trains SFT, DPO, SimPO, ORPO, KTO and the reward
model on a tiny model with ``batch_size=BATCH_SIZE``, and GRPO, RLOO and PPO for two steps each (and GRPO
once more on a single prompt, ``grpo_one_prompt``: every process then samples the same prompts) and
ReST for one Grow and one Improve step, and
writes to ``OUT`` per process (rank r): ``{trainer}_rank{r}.pt`` (the final parameters and the history's
rows) and, for the online trainers, ``{trainer}_samples_rank{r}.json`` (the prompts and completions the
process's reward function saw).
"""

import json
import os
import sys

import numpy as np
import torch

from rlhf_edu.lm import RewardModel, char_tokenizer, tiny_causal_lm
from rlhf_edu.train import (train_dpo, train_grpo, train_kto, train_orpo, train_ppo, train_reward_model, train_rest,
                            train_rloo, train_sft, train_simpo)

N_EXAMPLES = 19  # with a global batch of 8: shares 4+4, 4+4, then 2+1 (unequal, weighted)


def examples():
    rng = np.random.default_rng(0)
    sft, pairs, kto = [], [], []
    for i in range(N_EXAMPLES):
        a, b = int(rng.integers(10)), int(rng.integers(10))
        prompt = f"{a}+{b}="
        sft.append((prompt, f"{a + b}." + "!" * int(rng.integers(3))))  # unequal lengths: token_mean matters
        pairs.append({"prompt": prompt, "chosen": f"{a + b}.", "rejected": f"{a + b + 1 + i % 3}."})
        good = i % 3 != 1  # shares with unequal desirable counts: KTO's SFT term is a global mean
        kto.append((prompt, f"{a + b}." if good else f"{a + b + 1}.", good))
    return sft, pairs, kto


def small(tok, seed=0):
    # float64: the few gradients near 0 that rounding flips in sign would move by ~lr under Adam in float32
    return tiny_causal_lm(tok, d_model=32, n_layer=1, max_length=32, seed=seed).double()


def save(out, name, model, history):
    rank = int(os.environ.get("RANK", "0"))
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in history.rows]
    torch.save({"params": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, "rows": rows},
               os.path.join(out, f"{name}_rank{rank}.pt"))


def main(out, batch_size):
    torch.set_num_threads(1)
    tok = char_tokenizer()
    sft, pairs, kto = examples()
    common = dict(batch_size=batch_size, lr=1e-2, epochs=1, seed=0, device="cpu", progress=False)

    model, history = train_sft(small(tok), tok, sft, **common)
    save(out, "sft", model, history)
    for name, trainer in (("dpo", train_dpo), ("simpo", train_simpo), ("orpo", train_orpo)):
        model, history = trainer(small(tok), tok, pairs, **common)
        save(out, name, model, history)
    model, history = train_kto(small(tok), tok, kto, **common)  # z0 from mismatched pairs; the SFT term
    save(out, "kto", model, history)
    rm = RewardModel(small(tok), seed=0).double()
    rm, history = train_reward_model(rm, tok, pairs, **common)
    save(out, "reward_model", rm, history)

    prompts = [f"{a}+{b}=" for a in range(10) for b in range(10)]
    online = dict(max_new_tokens=6, seed=0, device="cpu", progress=False)
    for name, trainer, options in (
        ("grpo", train_grpo, dict(steps=2, group_size=4, prompts_per_step=2)),
        ("grpo_one_prompt", train_grpo, dict(steps=2, group_size=4, prompts_per_step=2, prompts=["4+4="])),
        ("rloo", train_rloo, dict(steps=2, group_size=4, prompts_per_step=2)),
        # 8 samples per process, as GRPO's and RLOO's; the actor frozen for the first step
        ("ppo", train_ppo, dict(steps=2, batch_size=8, minibatch_size=4, critic_warmup_steps=1)),
        # the Grow step (8 prompts x 2 samples) split over the processes and gathered; SFT on all of it
        ("rest", train_rest, dict(prompts=prompts[:8], grow_steps=1, improve_steps=1, thresholds=(0.0,),
                                  samples_per_prompt=2, batch_size=2, epochs=1)),
    ):
        seen = []

        def reward(completions, prompts):
            seen.append({"prompts": list(prompts), "completions": list(completions)})
            return np.array([sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions])

        model, history = trainer(small(tok), tok, options.pop("prompts", prompts), reward, **options, **online)
        save(out, name, model, history)
        rank = int(os.environ.get("RANK", "0"))
        with open(os.path.join(out, f"{name}_samples_rank{rank}.json"), "w") as f:
            json.dump(seen, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
