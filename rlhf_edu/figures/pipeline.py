r"""Slide figures of chapter 0 (the RLHF pipeline), and the data behind them.

- :func:`pipeline_figure` (``ch00_pipeline``): pretraining, instruction tuning (SFT), the reward model and RL
  (PPO, with the pre-training mix of PPO-ptx), with DPO's shortcut and AI feedback's labeller beside them;
- :func:`instructgpt_results_figure` (``ch00_instructgpt_results``): the lecture notes' table of InstructGPT
  against GPT-3 and the SFT model on four evaluations (:data:`INSTRUCTGPT_NOTES`);
- :func:`chapter_map_figure` (``ch00_chapter_map``): the book's chapters placed on the pipeline, each with
  the question it answers (:data:`CHAPTER_MAP`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

from rlhf_edu.figures import slide_figure

__all__ = ["INSTRUCTGPT_NOTES", "CHAPTER_MAP", "pipeline_figure", "instructgpt_results_figure",
           "chapter_map_figure"]

#: The lecture notes' InstructGPT table (seed 001, from Ouyang et al. 2022): evaluation -> (GPT-3, SFT,
#: InstructGPT) and whether higher is better. InstructGPT is the paper's PPO-ptx model.
INSTRUCTGPT_NOTES = {
    "TruthfulQA (truthful and informative)": ((0.224, 0.206, 0.413), True),
    "RealToxicity (toxicity)": ((0.233, 0.199, 0.196), False),
    "API prompts: hallucinations": ((0.414, 0.078, 0.172), False),
    "API prompts: customer-assistant appropriate": ((0.811, 0.880, 0.902), True),
}

#: The book's chapters: (number, notebook stem, title, the question it answers, pipeline stage).
CHAPTER_MAP = (
    ("0", "00_the_rlhf_pipeline", "The RLHF pipeline",
     "What are the steps from a pretrained model to an aligned one, and what does each buy?", "whole pipeline"),
    ("1", "01_bradley_terry", "Bradley-Terry reward models",
     "How do comparisons between answers become a reward?", "reward model"),
    ("2", "02_kl_divergence", "KL divergence",
     "What keeps the policy near the SFT model, and how is that distance estimated from samples?", "RL"),
    ("3", "03_mdp_grid_world", "MDPs and the grid world",
     "What are a policy, a value and a Bellman equation, computed exactly?", "RL"),
    ("4", "04_policy_gradients_ppo_gae", "Policy gradients, PPO and GAE",
     "How does PPO turn a score at the end of a text into updates of every token?", "RL"),
    ("5", "05_grpo_rloo", "GRPO, RLOO and the family",
     "Can RL drop the critic, and what do GRPO's 2025 variants change?", "RL"),
    ("6", "06_dpo_derivation", "The DPO derivation",
     "How does DPO skip the reward model and the sampling, and does it optimise the same objective?",
     "without RL"),
    ("7", "07_ipo_kto_simpo", "IPO, KTO, SimPO and the direct family",
     "What do DPO's relatives fix: overfitting, unpaired labels, length?", "without RL"),
    ("8", "08_rest_best_of_n", "ReST and best-of-N",
     "How far do sampling and filtering go without a policy gradient?", "without RL"),
    ("9", "09_reward_overoptimization", "Reward overoptimisation",
     "What happens when a policy optimises a learned reward too hard, and what helps?", "what goes wrong"),
    ("A1", "A1_anatomy_of_the_policy", "Anatomy of the policy",
     "What is inside the transformer that all of this trains?", "the model"),
)


def _box(ax, x, y, w, h, text, color, fontsize=10):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.008,rounding_size=0.02", facecolor=color,
                                edgecolor="0.25", linewidth=1.2))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, wrap=True)


def _arrow(ax, start, end, text="", color="0.2", style="-|>", offset=(0.0, 0.03)):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=color, linewidth=1.6))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=8.5, color=color)


@slide_figure("ch00_pipeline")
def pipeline_figure():
    """The pipeline in one picture: four stages, with who labels the comparisons and DPO's shortcut."""
    fig, ax = plt.subplots(figsize=(13.5, 5.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    w, h, y, xs = 0.205, 0.3, 0.56, (0.012, 0.267, 0.522, 0.777)
    stages = (
        ("0. pretraining\nnext token of web text\n-> a base model", "#dfe7f2"),
        ("1. instruction tuning (SFT)\ndemonstrations in a\ntemplate -> the SFT model", "#d9ecd9"),
        ("2. reward model\ncomparisons y_w > y_l,\nBradley-Terry -> r_phi(x, y)", "#f6e6c8"),
        ("3. RL: PPO (PPO-ptx)\nmax E[r_phi] - beta KL\n(+ gamma E log pi(x_pre))", "#f2d7d5"),
    )
    for x, (text, color) in zip(xs, stages):
        _box(ax, x, y, w, h, text, color, fontsize=9.5)
    for x0, x1 in zip(xs[:-1], xs[1:]):
        _arrow(ax, (x0 + w + 0.006, y + h / 2), (x1 - 0.006, y + h / 2))
    yb, hb = 0.08, 0.3
    _box(ax, xs[2], yb, w, hb, "who labels the pairs?\npeople (RLHF), or a\nmodel judge applying\n"
         "written principles\n(RLAIF, Constitutional AI)", "#eeeeee", fontsize=9)
    _box(ax, xs[3], yb, w, hb, "DPO: the same pairs,\na classification loss on\nthe policy itself; starts\n"
         "from the SFT model (no\nreward model, no sampling)", "#e8e0f0", fontsize=9)
    _arrow(ax, (xs[2] + w / 2, yb + hb + 0.01), (xs[2] + w / 2, y - 0.01))
    _arrow(ax, (xs[2] + w + 0.006, yb + hb / 2), (xs[3] - 0.006, yb + hb / 2))
    _box(ax, xs[0], yb, 2 * w + (xs[1] - xs[0] - w), hb, "chapter 0 runs steps 0 to 3 on a one-layer Llama of\n"
         "73k parameters that reads characters: web text with\nlists of questions, reviews as demonstrations, "
         "pairs\nof its own samples, PPO against the reward model;\nthen DPO, and a judge with a constitution",
         "#fafafa", fontsize=9)
    ax.set_title("The RLHF pipeline of InstructGPT (Ouyang et al., 2022), with the two ways around parts of it",
                 fontsize=11.5)
    return fig


@slide_figure("ch00_instructgpt_results")
def instructgpt_results_figure():
    """The notes' InstructGPT numbers: RLHF moves every evaluation, not always past SFT."""
    names = list(INSTRUCTGPT_NOTES)
    models = ("GPT-3", "SFT", "InstructGPT (PPO-ptx)")
    colors = ("#9aa9c2", "#7fbf7f", "#d9534f")
    fig, axes = plt.subplots(1, len(names), figsize=(13, 3.6), layout="constrained")
    for ax, name in zip(axes, names):
        values, higher_better = INSTRUCTGPT_NOTES[name]
        bars = ax.bar(np.arange(3), values, color=colors)
        for bar, v in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8.5)
        ax.set_xticks(np.arange(3), models, rotation=20, fontsize=8.5)
        ax.set_ylim(0, max(values) * 1.25)
        ax.set_title(f"{name}\n({'higher' if higher_better else 'lower'} is better)", fontsize=9.5)
        ax.set_ylabel("score (0 to 1)")
    fig.suptitle("The notes' InstructGPT table: more truthful and more appropriate than GPT-3, "
                 "but the SFT model hallucinates least", fontsize=11)
    return fig


_STAGES = ("the model", "whole pipeline", "reward model", "RL", "without RL", "what goes wrong")
_STAGE_COLORS = {"the model": "#eeeeee", "whole pipeline": "#dfe7f2", "reward model": "#f6e6c8", "RL": "#f2d7d5",
                 "without RL": "#e8e0f0", "what goes wrong": "#f5d0a9"}


@slide_figure("ch00_chapter_map")
def chapter_map_figure():
    """Which chapter sits where on the pipeline (columns) and which question it answers (box text)."""
    fig, ax = plt.subplots(figsize=(13.5, 8.0))
    ax.set_xlim(0, len(_STAGES))
    ax.set_ylim(0, 5.4)
    ax.axis("off")
    for col, stage in enumerate(_STAGES):
        ax.text(col + 0.5, 5.25, stage, ha="center", va="center", fontsize=11, fontweight="bold")
        chapters = [c for c in CHAPTER_MAP if c[4] == stage]
        for row, (number, _, title, question, _) in enumerate(chapters):
            y = 3.95 - row * 1.3
            _box(ax, col + 0.05, y, 0.9, 1.12, _wrap(f"{number}. {title}", 24) + "\n\n" + _wrap(question, 25),
                 _STAGE_COLORS[stage], fontsize=8)
    ax.set_title("The chapters on the pipeline, each with the question it answers", fontsize=12)
    return fig


def _wrap(text, width):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])
