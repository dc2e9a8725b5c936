r"""From strings to padded tensors: the one batch layout every trainer and ``generate`` share.

Layout (prompt left-padded to a common width ``P``, completion right-padded after it)::

    column:        0     1     2   | 3     4     5     6
    row 0:       <pad> <bos>  "h"  | "i"  <eos> <pad> <pad>      prompt "h",  completion "i"
    row 1:       <bos>  "o"   "k"  | "y"   "e"   "s"  <eos>     prompt "ok", completion "yes"
                 \______ P = 3 ___/

- ``attention_mask`` is 1 on every real token (prompt and completion), 0 on padding;
- ``completion_mask`` is 1 on the completion tokens (the EOS included), the positions whose
  log-probabilities a policy-gradient or DPO loss sums;
- position ids count real tokens only (``position_ids_from_mask``), so a padded row is computed exactly
  as the same row without padding: left padding shifts GPT-2's learned positions otherwise, the classic
  padding bug.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf_edu.validation import check_integer

__all__ = ["TokenBatch", "position_ids_from_mask", "left_pad", "encode_prompts", "encode_completion",
           "prompt_completion_batch"]


def position_ids_from_mask(attention_mask):
    r"""Position ids that count real tokens only: :math:`\text{pos}_t = \max(0, \sum_{s \le t} m_s - 1)`.

    For a left-padded row ``[0, 0, 1, 1, 1]`` this gives ``[0, 0, 0, 1, 2]``: the first real token gets
    position 0, as it would without padding (padding positions get 0; their outputs are never used). A
    right-padded row keeps ``0, 1, 2, ...`` on its real tokens. Pass the result as ``position_ids`` to any
    Hugging Face model. Used by ``token_logprobs``, ``generate`` and the reward and value heads.

    >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]]))
    tensor([[0, 0, 0, 1, 2],
            [0, 1, 2, 3, 3]])
    """
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must have shape (B, T), got {tuple(attention_mask.shape)}")
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _as_id_list(name, ids):
    if isinstance(ids, torch.Tensor):
        if ids.ndim != 1:
            raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"{name} must be a string or a list of token ids, got {type(ids).__name__}")
    out = []
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) and not hasattr(token, "__index__"):
            raise TypeError(f"{name} must contain integer token ids, got {type(token).__name__}")
        out.append(int(token))
    return out


def left_pad(sequences, pad_token_id, device=None):
    """Stack lists of token ids into ``(input_ids, attention_mask)``, padding on the LEFT.

    Every row ends in the last column, which is where ``generate`` appends the next token.

    >>> ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    >>> ids
    tensor([[5, 6, 7],
            [0, 0, 8]])
    >>> mask
    tensor([[1, 1, 1],
            [0, 0, 1]])
    """
    if len(sequences) == 0:
        raise ValueError("sequences is empty: nothing to pad")
    check_integer("pad_token_id", pad_token_id)
    rows = [_as_id_list(f"sequences[{i}]", s) for i, s in enumerate(sequences)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def _require_pad(tokenizer):
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "the tokenizer has no pad token; set one first, e.g. tokenizer.pad_token = tokenizer.eos_token"
        )
    return tokenizer.pad_token_id


def encode_prompts(tokenizer, prompts, add_bos=True):
    """Token ids of each prompt: a string is tokenized (no special tokens) and ``<bos>`` put in front.

    ``<bos>`` is prepended only if ``add_bos`` and the tokenizer has one (GPT-2's real tokenizer uses
    ``<|endoftext|>``). A prompt already given as a list of ids is taken as is. Empty prompts (no token
    at all) raise ``ValueError``: the model would have nothing to condition on.

    >>> from rlhf_edu.lm import char_tokenizer
    >>> encode_prompts(char_tokenizer(), ["ab", [7, 8]])
    [[1, 4, 5], [7, 8]]
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings (or of id lists), got a single string; wrap it in [...]")
    prompts = list(prompts)
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt")
    bos = tokenizer.bos_token_id if add_bos else None
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if bos is not None:
                ids = [bos] + ids
        else:
            ids = _as_id_list(f"prompts[{i}]", prompt)
        if len(ids) == 0:
            raise ValueError(f"prompts[{i}] is empty (no tokens): give the model at least one token")
        out.append(ids)
    return out


def encode_completion(tokenizer, prompt, completion) -> list:
    """Token ids of ``completion`` as they follow ``prompt``: ``ids(prompt + completion)`` minus ``ids(prompt)``.

    Tokenizing a completion on its own can give other ids than the same text after its prompt:
    SentencePiece-style tokenizers (Llama, Mistral, Gemma; ``Metaspace``) mark the start of a text, so
    ``"film"`` alone becomes ``"▁film"`` although after ``"the"`` it would continue the word, and the
    sampled ids of a completion would not come back when its text is scored. So the completion is read in
    context when the prompt's ids start the ids of ``prompt + completion``. When they do not (a merge across
    the boundary, e.g. BPE joining ``"the"`` and ``"re"`` into ``"there"``), or ``prompt`` is given as ids,
    the completion is tokenized on its own. No special tokens are added. The inverse of
    ``rlhf_edu.lm.decode_completions``.

    >>> from rlhf_edu.lm import char_tokenizer
    >>> tok = char_tokenizer()
    >>> encode_completion(tok, "review: the", " film") == tok(" film", add_special_tokens=False)["input_ids"]
    True
    """
    alone = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if not isinstance(prompt, str):
        return alone
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    joint = list(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"])
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids):]
    return alone


@dataclass
class TokenBatch:
    """A padded batch of prompt + completion (layout in the module docstring).

    Attributes: ``input_ids``, ``attention_mask``, ``completion_mask`` (all ``(B, T)``, long) and
    ``prompt_length`` (int ``P``: completions start at column ``P``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    prompt_length: int

    def to(self, device):
        """The same batch on ``device``."""
        return TokenBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.completion_mask.to(device), self.prompt_length
        )

    def __len__(self):
        return self.input_ids.shape[0]


def prompt_completion_batch(tokenizer, prompts, completions, add_bos=True, add_eos=True, device=None):
    """Tokenize prompt/completion pairs into a ``TokenBatch`` (the layout ``generate`` returns).

    Prompts go through ``encode_prompts`` (``<bos>`` in front); each completion is tokenized as it follows
    its prompt (``encode_completion``, no special tokens) and ``<eos>`` appended when ``add_eos`` (so an SFT
    model learns to stop). Strings or
    lists of ids are accepted for both. Used by the SFT, reward-model and DPO-family trainers (chapters 1
    and 6), which score given completions rather than sampled ones.

    >>> from rlhf_edu.lm import char_tokenizer
    >>> b = prompt_completion_batch(char_tokenizer(), ["h", "ok"], ["i", "yes"])
    >>> b.input_ids
    tensor([[ 0,  1, 11, 12,  2,  0,  0],
            [ 1, 18, 14, 28,  8, 22,  2]])
    >>> b.completion_mask
    tensor([[0, 0, 0, 1, 1, 0, 0],
            [0, 0, 0, 1, 1, 1, 1]])
    >>> b.prompt_length
    3
    """
    pad = _require_pad(tokenizer)
    prompts = prompts if isinstance(prompts, str) else list(prompts)
    prompt_ids = encode_prompts(tokenizer, prompts, add_bos=add_bos)
    if isinstance(completions, str):
        raise TypeError("completions must be a list, got a single string; wrap it in [...]")
    completions = list(completions)
    if len(completions) != len(prompt_ids):
        raise ValueError(f"prompts and completions must have the same length, got {len(prompt_ids)} and {len(completions)}")
    eos = tokenizer.eos_token_id
    if add_eos and eos is None:
        raise ValueError("add_eos=True but the tokenizer has no eos token")
    completion_ids = []
    for i, completion in enumerate(completions):
        if isinstance(completion, str):
            ids = encode_completion(tokenizer, prompts[i], completion)  # read in context (see there)
        else:
            ids = _as_id_list(f"completions[{i}]", completion)
        completion_ids.append(ids + ([eos] if add_eos else []))
    input_ids, attention_mask = left_pad(prompt_ids, pad)
    P = input_ids.shape[1]
    width = max(len(c) for c in completion_ids)
    B = len(prompt_ids)
    tail = torch.full((B, width), pad, dtype=torch.long)
    tail_mask = torch.zeros((B, width), dtype=torch.long)
    for i, ids in enumerate(completion_ids):
        if ids:
            tail[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            tail_mask[i, : len(ids)] = 1
    batch = TokenBatch(
        input_ids=torch.cat([input_ids, tail], dim=1),
        attention_mask=torch.cat([attention_mask, tail_mask], dim=1),
        completion_mask=torch.cat([torch.zeros_like(attention_mask), tail_mask], dim=1),
        prompt_length=P,
    )
    return batch.to(device) if device is not None else batch
