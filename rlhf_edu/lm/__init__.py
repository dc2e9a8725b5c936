"""The small-model layer: tokenizer, tiny GPT-2 / Llama, log-probs, KV-cache sampling, reward and value heads.

Everything takes any Hugging Face causal LM and tokenizer, so the code the book runs on a 100k-parameter
model on a laptop CPU is the code that runs on a real checkpoint on a GPU::

    from rlhf_edu.lm import char_tokenizer, tiny_causal_lm, generate, token_logprobs
    tok = char_tokenizer()
    model = tiny_causal_lm(tok)                       # GPT-2, 2 layers, width 128 (~400k parameters)
    rollout = generate(model, tok, ["12+35="], max_new_tokens=4, num_samples=8, generator=0)
    logp = token_logprobs(model, rollout.input_ids, rollout.attention_mask)
"""

from rlhf_edu.lm import batching, checkpoint, device, dropout, generation, heads, logprobs, models, precision, tokenizer
from rlhf_edu.lm.batching import *  # noqa: F401,F403
from rlhf_edu.lm.checkpoint import *  # noqa: F401,F403
from rlhf_edu.lm.device import *  # noqa: F401,F403
from rlhf_edu.lm.dropout import *  # noqa: F401,F403
from rlhf_edu.lm.generation import *  # noqa: F401,F403
from rlhf_edu.lm.heads import *  # noqa: F401,F403
from rlhf_edu.lm.logprobs import *  # noqa: F401,F403
from rlhf_edu.lm.models import *  # noqa: F401,F403
from rlhf_edu.lm.precision import *  # noqa: F401,F403
from rlhf_edu.lm.tokenizer import *  # noqa: F401,F403

__all__ = [
    name
    for module in (tokenizer, models, dropout, device, precision, batching, logprobs, generation, heads, checkpoint)
    for name in module.__all__
]
