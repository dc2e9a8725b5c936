r"""Prompt templates for instruction tuning (SFT): the Alpaca format of the lecture notes.

Instruction tuning turns a record ``{"instruction", "input", "output"}`` into one training text: a fixed
*template* around the instruction (and the input, when there is one), then the output. The model is trained
on the output only (``train_sft(loss_on="completion")``: the template and the instruction are context, not
targets), and at inference the same template, cut after ``### Response:``, is the prompt. The template is
part of the model: one trained with it answers best when prompted with it.

:func:`alpaca_prompt` writes the prompt of Stanford Alpaca (Taori et al., 2023, ``PROMPT_DICT`` in its
``train.py``), whose preamble changes when there is an input, with one difference of layout: Alpaca's prompt
ends at ``### Response:`` and the output follows directly, where the lecture notes (and this function) start the
output on the next line, ``### Response:\n``. The lecture notes ("Building LLMs", seed 002)
print the shorter preamble of the no-input case above a record that has an input (the form of S. Raschka's
*Build a large language model (from scratch)*, 2024); :data:`NOTES_PREAMBLE` is that text.

The book's tiny models cannot use it: their alphabet has no capitals, ``#`` or newline, and their context is
128 characters, shorter than the preamble alone. Their tasks use the smallest template there is: the
instruction itself (``"review: the film was"``), followed by the response.
"""

from __future__ import annotations

__all__ = ["ALPACA_PREAMBLE", "ALPACA_PREAMBLE_WITH_INPUT", "NOTES_PREAMBLE", "alpaca_prompt"]

#: Stanford Alpaca's preamble for a record without an input.
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")
#: Stanford Alpaca's preamble for a record with an input.
ALPACA_PREAMBLE_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                              "further context. Write a response that appropriately completes the request.")
#: The preamble the lecture notes print above a record WITH an input (Alpaca's no-input preamble).
NOTES_PREAMBLE = ALPACA_PREAMBLE


def alpaca_prompt(instruction: str, input: str = "") -> str:  # noqa: A002 (the record's field is called input)
    r"""The Alpaca prompt of one record: preamble, ``### Instruction:``, optional ``### Input:``, ``### Response:``.

    Sections are separated by a blank line and each header is followed by a newline; the prompt ends with
    ``"### Response:\n"`` (the notes' layout; Alpaca's ``PROMPT_DICT`` has no newline after it), so the training text is ``alpaca_prompt(instruction, input) + output`` (plus the
    tokenizer's end token) and the loss covers ``output`` only. With an empty ``input`` the ``### Input:``
    section is left out and the shorter preamble is used.

    Raises ``TypeError`` for a non-string argument and ``ValueError`` for an empty instruction.

    >>> print(alpaca_prompt("Rewrite the following sentence using passive voice.",
    ...                     "The team achieved great results."))
    Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Rewrite the following sentence using passive voice.
    <BLANKLINE>
    ### Input:
    The team achieved great results.
    <BLANKLINE>
    ### Response:
    <BLANKLINE>
    """
    for name, value in (("instruction", instruction), ("input", input)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not instruction.strip():
        raise ValueError("instruction is empty: a record needs an instruction")
    if input:
        return (f"{ALPACA_PREAMBLE_WITH_INPUT}\n\n### Instruction:\n{instruction}\n\n"
                f"### Input:\n{input}\n\n### Response:\n")
    return f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}\n\n### Response:\n"
