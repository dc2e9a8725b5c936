"""The book's end-to-end run (``rlhf-edu demo``, the README's first command).

The InstructGPT pipeline on the default tiny model and the sentiment task, then two alternatives from the
same SFT model, each measured with the task's gold reward (which no method trains on directly, except
where said):

1. SFT on mixed reviews (``sentiment_sft_policy``);
2. a reward model trained with the Bradley-Terry loss on noisy preference pairs (the proxy);
3. PPO against the proxy reward, KL penalty in the reward (InstructGPT);
4. DPO on the same preference pairs, no reward model, no sampling;
5. GRPO against the proxy reward, KL in the loss, no critic.

Every trainer evaluates its policy on held-out prompts on a fixed schedule (the ``eval_*`` columns of its
history: the proxy reward, i.e. the reward model's score, the gold reward and the exact KL to the SFT
model, each the mean of one completion for each of the same ``eval_samples`` held-out prompts). Writes to the output folder ``metrics.json``,
``histories/*.json`` and two figures of those evaluation points, proxy and gold side by side:
``training_curves.png`` (against the training step) and ``reward_vs_kl.png`` (against the KL to the SFT
model). Prints a table (gold reward before and after, proxy reward, KL to the SFT model, completion length
and entropy), what happened to length and entropy, and three completions per method before
(the SFT model) and after training, on the same prompts and random draws.

Same seed, same machine: the same table on every run (the trainers seed every random stream). Another
CPU (other vector kernels or thread count) rounds differently and may print other numbers; see
``runs/demo_spread.md`` for by how much.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from rlhf_edu.lm import RewardModel, resolve_device
from rlhf_edu.tasks import gold_reward
from rlhf_edu.train import evaluate_policy, frozen_copy, sentiment_sft_policy
from rlhf_edu.train.dpo import train_dpo
from rlhf_edu.train.grpo import train_grpo
from rlhf_edu.train.ppo import train_ppo
from rlhf_edu.train.reward_model import pairwise_accuracy, train_reward_model

__all__ = ["run_demo", "DEMO_SETTINGS", "format_table", "format_changes", "format_examples",
           "format_timings", "write_figures"]

#: Sizes of the full run and of ``--quick`` (a smoke test of the same code path).
DEMO_SETTINGS = {
    "full": dict(sft_steps=256, rm_pairs=2048, rm_epochs=2, ppo_steps=30, dpo_epochs=2, grpo_steps=30,
                 eval_prompts=128, eval_samples=64, online_eval_every=5, dpo_eval_every=16),
    "quick": dict(sft_steps=8, rm_pairs=64, rm_epochs=1, ppo_steps=2, dpo_epochs=1, grpo_steps=2,
                  eval_prompts=8, eval_samples=8, online_eval_every=1, dpo_eval_every=1),
}
#: The methods trained from the SFT model, in the table's order, with their display names.
METHODS = {"ppo": "PPO", "dpo": "DPO", "grpo": "GRPO"}
#: Before/after completions printed per method.
N_EXAMPLES = 3
N_EXAMPLE_POOL = 32  # the first completions of the evaluation, to pick N_EXAMPLES distinct prompts from



def _evaluate(policy, tokenizer, prompts, sft_model, rm):
    return evaluate_policy(policy, tokenizer, prompts, rm, ref_model=sft_model, gold_reward_fn=gold_reward,
                           max_new_tokens=48, seed=2024, n_examples=N_EXAMPLE_POOL)


def run_demo(out_dir="runs/demo", *, seed: int = 0, device="auto", quick: bool = False, progress: bool = True,
             verbose: bool = True) -> dict:
    """Run the pipeline, write its outputs to ``out_dir``, print the table; returns the metrics dict."""
    settings = DEMO_SETTINGS["quick" if quick else "full"]
    out = Path(out_dir)
    (out / "histories").mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    say = (lambda *a: print(*a, flush=True)) if verbose else (lambda *a: None)  # flushed: progress in a log
    t_total = time.perf_counter()
    say(f"rlhf-edu demo on {device} (seed {seed}): SFT -> reward model -> PPO, plus DPO and GRPO from the same "
        f"SFT model")

    t0 = time.perf_counter()
    sft_model, tok, task, sft_hist = sentiment_sft_policy(steps=settings["sft_steps"], seed=seed, device=device,
                                                          progress=progress)
    sft_model = frozen_copy(sft_model)
    test_prompts = task.prompts(settings["eval_prompts"], split="test", seed=seed)
    # The evaluation schedule's prompts (the test split's few prompts, repeated): one completion each, so
    # every method's history is measured on the same draws and all start from the same point.
    eval_prompts = test_prompts[: settings["eval_samples"]]
    train_prompts = task.all_prompts("train")
    rows = {"sft": {"seconds": time.perf_counter() - t0}}
    histories = {"sft": sft_hist}

    t0 = time.perf_counter()
    # min_gap drops pairs whose gold rewards tie: their labels are coin flips that no model can predict
    pairs = task.preference_pairs(settings["rm_pairs"], split="train", seed=seed, min_gap=0.1)
    test_pairs = task.preference_pairs(max(64, settings["rm_pairs"] // 4), split="test", seed=seed + 1, min_gap=0.1)
    rm = RewardModel.from_pretrained_lm(sft_model, seed=seed)
    for p in rm.parameters():
        p.requires_grad_(True)
    rm, rm_hist = train_reward_model(rm, tok, pairs, epochs=settings["rm_epochs"], eval_pairs=test_pairs, seed=seed,
                                     device=device, progress=progress)
    rm.eval()
    rm_acc = pairwise_accuracy(rm, tok, test_pairs)
    rows["reward_model"] = {"seconds": time.perf_counter() - t0, "heldout_accuracy": rm_acc}
    histories["reward_model"] = rm_hist
    # the SFT model's row is measured once the proxy (the reward model) exists, to score it too
    rows["sft"].update(_evaluate(sft_model, tok, test_prompts, sft_model, rm))
    say(f"  sft: gold reward {rows['sft']['gold_reward']:.3f} ({rows['sft']['seconds']:.0f} s)")
    say(f"  reward model: held-out pairwise accuracy {rm_acc:.3f} ({rows['reward_model']['seconds']:.0f} s)")

    every = settings["online_eval_every"]
    evals = dict(eval_prompts=eval_prompts, gold_reward_fn=gold_reward)
    runs = {
        "ppo": lambda policy: train_ppo(policy, tok, train_prompts, rm, ref_model=sft_model, steps=settings["ppo_steps"],
                                        eval_every=every, seed=seed, device=device, progress=progress, **evals),
        "dpo": lambda policy: train_dpo(policy, tok, pairs, ref_model=sft_model, epochs=settings["dpo_epochs"],
                                        reward_fn=rm, eval_samples=1, eval_every=settings["dpo_eval_every"],
                                        seed=seed, device=device, progress=progress, **evals),
        # GRPO's own defaults (the paper's beta 0.04, lr 5e-4) overoptimise this small reward model: its
        # group-normalised advantages blow up the proxy's tiny differences (measured: gold 0.45 -> 0.66 by
        # step 12, then 0.05 at a KL of 46 nats by step 30). A firmer leash and a smaller step keep it honest.
        "grpo": lambda policy: train_grpo(policy, tok, train_prompts, rm, ref_model=sft_model, lr=2e-4, beta=0.1,
                                          steps=settings["grpo_steps"], eval_samples=1, eval_every=every, seed=seed,
                                          device=device, progress=progress, **evals),
    }
    for name, train in runs.items():
        t0 = time.perf_counter()
        policy = _trainable_copy(sft_model)
        policy, hist = train(policy)
        seconds = time.perf_counter() - t0
        rows[name] = {"seconds": seconds, **_evaluate(policy, tok, test_prompts, sft_model, rm)}
        histories[name] = hist
        say(f"  {name}: gold reward {rows[name]['gold_reward']:.3f}, KL to SFT {rows[name]['kl']:.2f} "
            f"({seconds:.0f} s)")
        del policy

    total = time.perf_counter() - t_total
    for name, hist in histories.items():
        hist.save_json(out / "histories" / f"{name}.json")
    metrics = {"device": str(device), "seed": seed, "quick": quick, "total_seconds": total, "results": rows}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    figures = write_figures(histories, out)
    say("")
    say(format_table(rows))
    say("")
    say(format_changes(rows))
    say("")
    say(format_examples(rows))
    say("")
    say(format_timings(rows, total))
    say(f"wrote {out / 'metrics.json'}, " + ", ".join(str(f) for f in figures))
    return metrics


def _trainable_copy(model):
    copy = frozen_copy(model)
    for p in copy.parameters():
        p.requires_grad_(True)
    return copy.train()


def format_table(rows: dict) -> str:
    """The demo's table: one line per policy, the SFT model first (the starting point of every method).

    Gold reward before (the SFT model's) and after, proxy reward (the reward model's score, in its own
    units), exact KL to the SFT model and entropy (nats summed over a completion), mean completion length
    (tokens, EOS included). No timings: with the same seed on the same machine the table is the same on
    every run (``format_timings`` has the seconds).
    """
    before = rows["sft"]["gold_reward"]
    lines = [f"{'method':<8} {'gold before':>11} {'gold after':>10} {'proxy':>7} {'KL to SFT':>9} "
             f"{'length':>6} {'entropy':>7}"]
    for name in ("sft", *METHODS):
        if name not in rows:
            continue
        r = rows[name]
        lines.append(f"{name:<8} {before:>11.3f} {r['gold_reward']:>10.3f} {_fmt(r.get('reward'), 7, 3)} "
                     f"{r.get('kl', 0.0):>9.3f} {_fmt(r.get('length'), 6, 1)} {_fmt(r.get('entropy'), 7, 2)}")
    return "\n".join(lines)


def format_timings(rows: dict, total: float) -> str:
    """Seconds per stage (they vary from run to run, unlike the table)."""
    parts = [f"{name.replace('_', ' ')} {r['seconds']:.0f} s" for name, r in rows.items() if "seconds" in r]
    return f"time: {', '.join(parts)}; total {total:.0f} s"


def _fmt(value, width, digits):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def format_changes(rows: dict) -> str:
    """One line per method: proxy and gold reward, completion length and entropy, SFT model -> trained.

    Flags reward over-optimisation (chapter 9) where the proxy rose but the gold reward fell, or where the
    completions collapsed (entropy down by more than half) while the proxy rose.
    """
    sft = rows["sft"]
    lines = ["What training did to the SFT model's completions (held-out prompts, same random draws):"]
    for name in METHODS:
        if name not in rows:
            continue
        r = rows[name]
        d_proxy = r["reward"] - sft["reward"] if "reward" in r and "reward" in sft else math.nan
        d_gold = r["gold_reward"] - sft["gold_reward"]
        line = (f"  {name}: proxy reward {d_proxy:+.2f}, gold reward {d_gold:+.3f}; "
                f"length {sft['length']:.1f} -> {r['length']:.1f} tokens, "
                f"entropy {sft['entropy']:.1f} -> {r['entropy']:.1f} nats per completion")
        notes = []
        if d_proxy > 0 and d_gold < 0:
            notes.append("the proxy rose while the gold reward fell")
        if d_proxy > 0 and r["entropy"] < 0.5 * sft["entropy"]:
            notes.append("fewer, surer tokens bought the proxy's rise")
        if notes:
            line += "\n      reward over-optimisation (chapter 9): " + "; ".join(notes)
        lines.append(line)
    return "\n".join(lines)


def _example_prompts(rows: dict, n: int = N_EXAMPLES) -> list:
    """The first ``n`` distinct prompts of the SFT model's evaluation samples."""
    seen: dict = {}
    for prompt, _ in rows["sft"].get("examples", []):
        seen.setdefault(prompt, None)
        if len(seen) == n:
            break
    return list(seen)


def format_examples(rows: dict, n: int = N_EXAMPLES) -> str:
    """``n`` completions per method, before (the SFT model) and after training, on the same prompts and draws."""

    def first(examples, prompt):
        return next((c for p, c in examples if p == prompt), None)

    lines = [f"Before (SFT) and after, {n} held-out prompts:"]
    prompts = _example_prompts(rows, n)
    for name in METHODS:
        if name not in rows:
            continue
        lines.append(f"  {name}:")
        for prompt in prompts:
            before, after = first(rows["sft"]["examples"], prompt), first(rows[name].get("examples", []), prompt)
            lines.append(f"    {prompt!r}")
            lines.append(f"      before: {before!r}")
            lines.append(f"      after:  {after!r}")
    return "\n".join(lines)


#: The figures ``run_demo`` writes, and what each one says.
FIGURES = {
    "training_curves.png": "proxy and gold reward of held-out samples against training progress",
    "reward_vs_kl.png": "proxy and gold reward of held-out samples against KL to the SFT model",
}


def _eval_points(history):
    """``(step, proxy, gold, kl)`` arrays of a history's evaluation rows (those with ``eval_gold_reward``)."""
    import numpy as np

    def col(key):
        return history[key] if key in history else np.full(len(history), np.nan)

    step, proxy, gold, kl = col("step"), col("eval_reward"), col("eval_gold_reward"), col("eval_kl")
    keep = np.isfinite(gold)
    return step[keep], proxy[keep], gold[keep], kl[keep]


def write_figures(histories: dict, out) -> list:
    """Draw the methods' held-out evaluation points (``eval_*`` columns) into ``out``; returns the paths.

    ``training_curves.png``: proxy reward | gold reward against training progress (% of each method's
    steps, since a PPO or GRPO step is a batch of samples and a DPO step a batch of pairs);
    ``reward_vs_kl.png``: the same two rewards against the exact KL to the SFT model. Every point is the
    mean over the same held-out prompts and random draws, so every method starts from the same point (the
    SFT model, a dotted line).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out)
    runs = [(name, label, _eval_points(histories[name])) for name, label in METHODS.items() if name in histories]
    runs = [r for r in runs if len(r[2][0])]
    colors = {"ppo": "C0", "dpo": "C2", "grpo": "C1"}
    paths = []
    panels = (("proxy", 1, "proxy reward (reward-model score, logit units)"),
              ("gold", 2, "gold reward (task's judge, 0 to 1)"))
    for fname, xkind in (("training_curves.png", "step"), ("reward_vs_kl.png", "kl")):
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
        for ax, (what, idx, ylabel) in zip(axes, panels):
            for name, label, pts in runs:
                step, kl, y = pts[0], pts[3], pts[idx]
                ok = np.isfinite(y) & (np.isfinite(kl) if xkind == "kl" else True)
                if not ok.any():
                    continue
                total = max(step.max(), 1.0)
                xs = (100.0 * step / total if xkind == "step" else kl)[ok]
                ys = y[ok]
                steps = int(step.max())
                ax.plot(xs, ys, color=colors[name], marker="o", markersize=4, linewidth=1.2, alpha=0.9,
                        label=f"{label} ({steps} steps)")
                ax.plot(xs[-1:], ys[-1:], color=colors[name], marker="*", markersize=13, linestyle="none")
            if runs and np.isfinite(runs[0][2][idx][0]):  # step 0: the SFT model, the same for every method
                ax.axhline(runs[0][2][idx][0], color="gray", linestyle=":", linewidth=1.2, label="SFT model (start)")
            ax.set_ylabel(ylabel)
            ax.set_xlabel("training progress (% of the method's steps)" if xkind == "step"
                          else "KL(policy || SFT model) (nats per completion)")
            if xkind == "kl":
                ax.set_xlim(left=0.0)
            ax.grid(alpha=0.3)
        axes[0].set_title("proxy reward: what the methods optimise")
        axes[1].set_title("gold reward: what we wanted")
        handles, labels = axes[1].get_legend_handles_labels()
        handles.append(plt.Line2D([], [], color="gray", marker="*", markersize=11, linestyle="none"))
        labels.append("end of training")
        axes[1].legend(handles, labels, fontsize="small", loc="best")
        suptitle = ("Proxy and gold reward of held-out samples during training (every point: the same prompts "
                    "and random draws)" if xkind == "step" else
                    "What each method's distance from the SFT model bought: proxy reward (left), gold reward (right)")
        fig.suptitle(suptitle, fontsize="medium")
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
