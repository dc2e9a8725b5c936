"""Small-model end-to-end training: every method of the book on any Hugging Face causal LM.

Each trainer is its method's step written out in its own module (the losses are the ones in
``rlhf_edu.torch``, never a second copy) around one shared loop (``rlhf_edu.train.loop``); each returns
``(model, history)``.

A trainer is named for what it does, ``train_<method>`` (``train_dpo`` in the module ``rlhf_edu.train.dpo``;
best-of-N, which trains nothing, is ``sample_best_of_n``), so a module and a function never share a name:
``import rlhf_edu.train.dpo as dpo_module`` reaches the module, ``from rlhf_edu.train import train_dpo`` the
trainer.
"""

from rlhf_edu.train.best_of_n import BestOfN, best_of_n_curve, best_of_n_from_pool, sample_best_of_n
from rlhf_edu.train.data import (
    check_fits_context,
    epoch_minibatches,
    minibatches,
    prompt_completion_pairs,
    steps_per_run,
)
from rlhf_edu.train.distributed import DataParallel, data_parallel
from rlhf_edu.train.dpo import DPO_LOSSES, train_dpo
from rlhf_edu.train.evaluation import evaluate_policy, evaluator, log_evaluation, sequence_kl
from rlhf_edu.train.grpo import KL_PLACEMENTS, train_grpo
from rlhf_edu.train.history import History
from rlhf_edu.train.kto import KL_ESTIMATES, train_kto
from rlhf_edu.train.loop import optimizer_step, run_steps
from rlhf_edu.train.orpo import train_orpo
from rlhf_edu.train.ppo import AdaptiveKLController, RunningMoments, train_ppo
from rlhf_edu.train.progress import progress_bar
from rlhf_edu.train.prompts import check_prompts, draw_prompts
from rlhf_edu.train.recipes import arithmetic_sft_policy, sentiment_sft_policy
from rlhf_edu.train.rest import train_rest
from rlhf_edu.train.reward_model import pairwise_accuracy, reward_margins, train_reward_model
from rlhf_edu.train.rloo import RLOO_AGGREGATIONS, train_rloo
from rlhf_edu.train.rollouts import (
    OnlineRun,
    ScoredRollout,
    as_reward_fn,
    check_reward_model_room,
    collect_rollouts,
    frozen_copy,
    policy_and_reference,
    prepare_online_run,
    reward_model_room,
    sampled_kl,
)
from rlhf_edu.train.sft import masked_nll, train_sft
from rlhf_edu.train.simpo import train_simpo
from rlhf_edu.train.tabular_ppo import Episodes, sample_episodes, train_tabular_ppo

__all__ = [
    # shared machinery
    "History", "progress_bar", "run_steps", "optimizer_step", "DataParallel", "data_parallel",
    "prompt_completion_pairs", "check_fits_context", "minibatches", "epoch_minibatches", "steps_per_run",
    "check_prompts", "draw_prompts",
    "evaluate_policy", "sequence_kl", "log_evaluation", "evaluator",
    "ScoredRollout", "as_reward_fn", "collect_rollouts", "frozen_copy", "sampled_kl", "OnlineRun", "prepare_online_run",
    "policy_and_reference", "check_reward_model_room", "reward_model_room",
    # supervised and reward modelling
    "train_sft", "masked_nll", "sentiment_sft_policy", "arithmetic_sft_policy",
    "train_reward_model", "pairwise_accuracy", "reward_margins",
    # online RL
    "train_ppo", "AdaptiveKLController", "RunningMoments",
    "train_grpo", "KL_PLACEMENTS", "train_rloo", "RLOO_AGGREGATIONS",
    "train_rest", "sample_best_of_n", "best_of_n_from_pool", "best_of_n_curve", "BestOfN",
    "train_tabular_ppo", "sample_episodes", "Episodes",
    # offline preference optimisation
    "train_dpo", "DPO_LOSSES", "train_kto", "KL_ESTIMATES", "train_simpo", "train_orpo",
]
