"""Small-model end-to-end training: every method of the book on any Hugging Face causal LM.

Each trainer is one readable loop in its own module and returns ``(model, history)``; the losses are the
ones in ``rlhf_edu.torch``, never a second copy.
"""

from rlhf_edu.train.dpo import DPO_LOSSES, dpo
from rlhf_edu.train.kto import KL_ESTIMATES, kto
from rlhf_edu.train.orpo import orpo
from rlhf_edu.train.reward_model import pairwise_accuracy, reward_margins, reward_model
from rlhf_edu.train.simpo import simpo
from rlhf_edu.train.data import check_fits_context, minibatches, prompt_completion_pairs
from rlhf_edu.train.evaluation import evaluate_policy, sequence_kl
from rlhf_edu.train.history import History
from rlhf_edu.train.ppo import AdaptiveKLController, RunningMoments, ppo
from rlhf_edu.train.progress import progress_bar
from rlhf_edu.train.recipes import arithmetic_sft_policy, sentiment_sft_policy
from rlhf_edu.train.rollouts import ScoredRollout, as_reward_fn, collect_rollouts, frozen_copy
from rlhf_edu.train.sft import masked_nll, sft
from rlhf_edu.train.tabular_ppo import Episodes, sample_episodes, tabular_ppo

__all__ = [
    "History", "progress_bar", "prompt_completion_pairs", "check_fits_context", "minibatches",
    "sft", "masked_nll", "evaluate_policy", "sequence_kl",
    "ScoredRollout", "as_reward_fn", "collect_rollouts", "frozen_copy",
    "sentiment_sft_policy", "arithmetic_sft_policy",
    "ppo", "AdaptiveKLController", "RunningMoments",
    "tabular_ppo", "sample_episodes", "Episodes",
    "reward_model", "pairwise_accuracy", "reward_margins",
    "dpo", "DPO_LOSSES", "kto", "KL_ESTIMATES", "simpo", "orpo",
]
