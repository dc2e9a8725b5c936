"""The synthetic tasks every trainer and chapter uses; pure Python + NumPy, deterministic from a seed.

- :mod:`rlhf_edu.tasks.sentiment`: write a positive review. A documented gold reward in [0, 1], SFT data
  of mixed sentiment, simulated preference data (Bradley-Terry draws with adjustable noise, K-wise
  rankings, KTO's binary labels), so a learned reward model is a proxy that can be overoptimised.
- :mod:`rlhf_edu.tasks.arithmetic`: ``"23+48="`` -> ``"71."``, with R1-Zero-style verifiable rewards
  (accuracy + format).
- :mod:`rlhf_edu.tasks.ai_feedback`: AI feedback in the spirit of Constitutional AI, a judge that labels
  preference pairs by written principles instead of by the gold reward (chapter 0).

Both task classes share one interface, so a trainer can take either::

    task.prompts(n, split="train"|"test", seed=None)   # list[str]
    task.sft_corpus(n, split, seed)                     # list[(prompt, completion)]
    task.reward(completions, prompts)                   # np.ndarray, one reward per completion
    task.metrics(completions, prompts)                  # dict of batch means for logs
    task.all_prompts(split)                             # the whole split, fixed order

>>> from rlhf_edu.tasks import SentimentTask, ArithmeticTask
>>> SentimentTask(seed=0).reward([" great fun."]).round(4)
array([0.8808])
>>> ArithmeticTask(seed=0).reward(["71."], ["23+48="])
array([1.1])
"""

from rlhf_edu.tasks import ai_feedback, arithmetic, base, sentiment
from rlhf_edu.tasks.ai_feedback import *  # noqa: F401,F403
from rlhf_edu.tasks.arithmetic import *  # noqa: F401,F403
from rlhf_edu.tasks.base import *  # noqa: F401,F403
from rlhf_edu.tasks.sentiment import *  # noqa: F401,F403

__all__ = [*base.__all__, *sentiment.__all__, *arithmetic.__all__, *ai_feedback.__all__]
