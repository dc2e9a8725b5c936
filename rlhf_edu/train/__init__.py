"""Small-model end-to-end training: every method of the book on any Hugging Face causal LM.

Each trainer is its method's step written out in its own module (the losses are the ones in
``rlhf_edu.torch``, never a second copy) around one shared loop (``rlhf_edu.train.loop``); each returns
``(model, history)``.

The trainers are exported under their module's name (``rlhf_edu.train.dpo`` is the FUNCTION ``dpo``
here); to reach a module itself use ``importlib.import_module("rlhf_edu.train.dpo")``.
"""

from rlhf_edu.train.best_of_n import BestOfN, best_of_n, best_of_n_curve, best_of_n_from_pool
from rlhf_edu.train.data import (
    check_fits_context,
    epoch_minibatches,
    minibatches,
    prompt_completion_pairs,
    steps_per_run,
)
from rlhf_edu.train.dpo import DPO_LOSSES, dpo
from rlhf_edu.train.evaluation import evaluate_policy, evaluator, log_evaluation, sequence_kl
from rlhf_edu.train.grpo import KL_PLACEMENTS, grpo
from rlhf_edu.train.history import History
from rlhf_edu.train.kto import KL_ESTIMATES, kto
from rlhf_edu.train.loop import optimizer_step, run_steps
from rlhf_edu.train.orpo import orpo
from rlhf_edu.train.ppo import AdaptiveKLController, RunningMoments, ppo
from rlhf_edu.train.progress import progress_bar
from rlhf_edu.train.prompts import check_prompts, draw_prompts
from rlhf_edu.train.recipes import arithmetic_sft_policy, sentiment_sft_policy
from rlhf_edu.train.rest import rest
from rlhf_edu.train.reward_model import pairwise_accuracy, reward_margins, reward_model
from rlhf_edu.train.rloo import RLOO_AGGREGATIONS, rloo
from rlhf_edu.train.rollouts import (
    OnlineRun,
    ScoredRollout,
    as_reward_fn,
    collect_rollouts,
    frozen_copy,
    prepare_online_run,
    sampled_kl,
)
from rlhf_edu.train.sft import masked_nll, sft
from rlhf_edu.train.simpo import simpo
from rlhf_edu.train.tabular_ppo import Episodes, sample_episodes, tabular_ppo

__all__ = [
    # shared machinery
    "History", "progress_bar", "run_steps", "optimizer_step",
    "prompt_completion_pairs", "check_fits_context", "minibatches", "epoch_minibatches", "steps_per_run",
    "check_prompts", "draw_prompts",
    "evaluate_policy", "sequence_kl", "log_evaluation", "evaluator",
    "ScoredRollout", "as_reward_fn", "collect_rollouts", "frozen_copy", "sampled_kl", "OnlineRun", "prepare_online_run",
    # supervised and reward modelling
    "sft", "masked_nll", "sentiment_sft_policy", "arithmetic_sft_policy",
    "reward_model", "pairwise_accuracy", "reward_margins",
    # online RL
    "ppo", "AdaptiveKLController", "RunningMoments",
    "grpo", "KL_PLACEMENTS", "rloo", "RLOO_AGGREGATIONS",
    "rest", "best_of_n", "best_of_n_from_pool", "best_of_n_curve", "BestOfN",
    "tabular_ppo", "sample_episodes", "Episodes",
    # offline preference optimisation
    "dpo", "DPO_LOSSES", "kto", "KL_ESTIMATES", "simpo", "orpo",
]
