"""A character-level tokenizer built offline, wrapped as a Hugging Face fast tokenizer.

One token per character keeps the tiny models of the book small (a vocabulary of about sixty) and makes
every token visible: ``"12+35=47"`` is eight tokens, and a completion of forty characters is forty
actions of the policy. Wrapping it as a ``transformers`` tokenizer means the rest of ``rlhf_edu.lm`` only
uses the standard interface (``tokenizer(text)``, ``pad_token_id``, ``decode``), so the same code runs with
GPT-2's or Llama's real tokenizer.

Used by every small-model run of the book (reward model in chapter 1, PPO in chapter 4, GRPO and RLOO in
chapter 5, DPO in chapter 6, ReST and best-of-N in chapter 8).
"""

from __future__ import annotations

from rlhf_edu.validation import check_integer

__all__ = ["DEFAULT_ALPHABET", "SPECIAL_TOKENS", "char_tokenizer"]

#: Lowercase letters, digits, space and ``.,!?'+-*=:;()<>/``: enough for the sentiment reviews
#: ("review: the film was great fun.") and the arithmetic task ("12+35=47") of ``rlhf_edu.tasks``.
DEFAULT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'+-*=:;()<>/"

#: Special tokens, in id order: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3.
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def char_tokenizer(alphabet=DEFAULT_ALPHABET, model_max_length=128, padding_side="left"):
    r"""A character-level ``transformers.PreTrainedTokenizerFast``: one token per character of ``alphabet``.

    Ids: the four ``SPECIAL_TOKENS`` first (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3), then the
    characters of ``alphabet`` in order (id ``4 + i`` for ``alphabet[i]``); any other character maps to
    ``<unk>``. Built with the ``tokenizers`` library (a BPE model with no merges, so every character is
    its own token) and a ``Fuse`` decoder, so ``decode`` joins the characters back with no spaces in
    between: ``decode(encode(s)) == s`` for every ``s`` written in the alphabet.

    Text is read character by character even where it spells a special token (``"<eos>"`` in a text is
    five tokens, never the EOS id), so special ids only enter a batch on purpose. Calling the tokenizer
    adds no special tokens (``tokenizer("ab")["input_ids"] == [4, 5]``): the helpers
    that need ``<bos>`` / ``<eos>`` (``generate``, ``prompt_completion_batch``) add them explicitly, and
    they do the same for any Hugging Face tokenizer.

    Padding side: ``"left"`` by default, because a batch of prompts for generation must end at the same
    column so that the next token of every row is sampled in the same step. The helpers of ``rlhf_edu.lm``
    pad by themselves and never depend on this setting; it only matters if you call ``tokenizer.pad`` or
    ``tokenizer(..., padding=True)`` yourself.

    Args:
        alphabet: the characters of the vocabulary (a string of distinct characters).
        model_max_length: the context length stored in the tokenizer (match the model's ``max_length``).
        padding_side: ``"left"`` (default) or ``"right"``.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``pad_token``, ``bos_token``, ``eos_token`` and ``unk_token`` set;
        ``len(tokenizer) == 4 + len(alphabet)`` (57 for the default alphabet). It saves with
        ``save_pretrained(folder)`` and loads back with ``AutoTokenizer.from_pretrained(folder)``.

    Example (the arithmetic task)::

        >>> tok = char_tokenizer()
        >>> ids = tok("12+35=47")["input_ids"]
        >>> ids
        [31, 32, 46, 33, 35, 49, 34, 37]
        >>> tok.decode(ids)
        '12+35=47'
        >>> tok.decode([1] + ids + [2], skip_special_tokens=True)
        '12+35=47'
        >>> len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
        (57, 0, 1, 2)
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    if not isinstance(alphabet, str) or len(alphabet) == 0:
        raise TypeError(f"alphabet must be a non-empty string of characters, got {alphabet!r}")
    if len(set(alphabet)) != len(alphabet):
        dupes = sorted({c for c in alphabet if alphabet.count(c) > 1})
        raise ValueError(f"alphabet has repeated characters: {dupes}")
    check_integer("model_max_length", model_max_length, minimum=1)
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")

    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + list(alphabet))}
    # BPE without merges = one token per character; unknown characters become <unk> one by one.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=False))
    # The default decoder would join tokens with spaces ("h e l l o"); Fuse concatenates them.
    backend.decoder = decoders.Fuse()
    pad, bos, eos, unk = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        padding_side=padding_side,
        model_max_length=model_max_length,
        # "a ." must stay "a ." (the default clean-up would glue the period to the word).
        clean_up_tokenization_spaces=False,
        # Text is always characters: a review that contains "<eos>" is five tokens, not the EOS id.
        split_special_tokens=True,
    )
