"""Hand the book's models and preference data to TRL with the same conventions, so both compute the same numbers.

TRL (von Werra et al., 2020; ``DPOTrainer``, ``KTOTrainer``) and ``rlhf_edu.train`` implement the same losses
(DPO: Rafailov et al. 2023, eq. 7; KTO: Ethayarajh et al. 2024, eq. 8), but their defaults differ: bf16 in TRL,
where do the special tokens come from, an SFT term on by default in ``train_dpo``. The pieces here set TRL up so
that its first optimiser step logs the same loss as ``train_dpo`` / ``train_kto`` (to float32 precision);
``tests/test_trl_equivalence.py`` checks it and lists every convention, and chapter 6 shows it. TRL is the
optional ``trl`` extra (``pip install -e ".[trl]"``); only :func:`trl_settings` and :class:`FirstStepLog`'s
users need it.

Tokens: ``rlhf_edu.lm.prompt_completion_batch`` builds ``<bos> prompt | completion <eos>`` with the special ids
added as ids. TRL tokenises ``prompt`` and ``prompt + completion + eos_token`` as text and adds no BOS. So TRL
gets a tokenizer copy that reads ``"<bos>"`` / ``"<eos>"`` in text as the special ids
(:func:`trl_tokenizer`) and prompts that start with the BOS text (:func:`trl_records`); then its token ids are
exactly the book's (:func:`check_trl_dpo_tokens` verifies it on TRL's tokenised data set).
"""

import copy

from transformers import TrainerCallback

from rlhf_edu.lm import prompt_completion_batch

__all__ = ["trl_tokenizer", "trl_records", "trl_settings", "check_trl_dpo_tokens", "FirstStepLog"]


def trl_tokenizer(tokenizer):
    """A copy of ``tokenizer`` that reads special tokens written in text (``"<bos>"``) as their ids.

    The book's character tokenizer reads ``"<eos>"`` in a text as five characters
    (``split_special_tokens=True``); TRL appends ``tokenizer.eos_token`` to the completion *as text*, so it
    needs ``split_special_tokens=False``. The original tokenizer is not changed.

    Args:
        tokenizer: a Hugging Face tokenizer (e.g. ``rlhf_edu.lm.char_tokenizer()``).

    Returns:
        A deep copy with ``split_special_tokens = False``.

    Raises:
        TypeError: if ``tokenizer`` has no ``split_special_tokens`` attribute.

    Example::

        >>> from rlhf_edu.lm import char_tokenizer
        >>> tok = char_tokenizer()
        >>> len(tok("<eos>")["input_ids"]), trl_tokenizer(tok)("<eos>")["input_ids"]
        (5, [2])
    """
    if not hasattr(tokenizer, "split_special_tokens"):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    tok = copy.deepcopy(tokenizer)
    tok.split_special_tokens = False
    return tok


def trl_records(records, tokenizer, fields=("chosen", "rejected")):
    """The records as TRL reads them: ``prompt`` prefixed with the BOS text, and the given ``fields``.

    Args:
        records: dicts with a ``"prompt"`` key and every key of ``fields`` (e.g. the book's preference pairs,
            which also carry gold rewards: those are dropped).
        tokenizer: the book's tokenizer; its ``bos_token`` (``"<bos>"``) is put in front of each prompt.
        fields: the other keys to keep: ``("chosen", "rejected")`` for DPO, ``("completion", "label")`` for KTO.

    Returns:
        A list of dicts with keys ``"prompt"`` and ``fields``, ready for ``datasets.Dataset.from_list``.

    Raises:
        ValueError: if ``records`` is empty or a record lacks a key.

    Example::

        >>> from rlhf_edu.lm import char_tokenizer
        >>> trl_records([{"prompt": "a", "chosen": "b", "rejected": "c", "gold": 1.0}], char_tokenizer())
        [{'prompt': '<bos>a', 'chosen': 'b', 'rejected': 'c'}]
    """
    records = list(records)
    if not records:
        raise ValueError("records must not be empty")
    out = []
    for i, rec in enumerate(records):
        missing = [k for k in ("prompt", *fields) if k not in rec]
        if missing:
            raise ValueError(f"records[{i}] lacks the key(s) {missing}")
        out.append({"prompt": tokenizer.bos_token + rec["prompt"], **{k: rec[k] for k in fields}})
    return out


def trl_settings(method, output_dir, *, batch_size, beta, lr=1e-6, seed=0):
    """Keyword arguments of ``trl.DPOConfig`` / ``trl.KTOConfig`` that match ``train_dpo`` / ``train_kto``.

    One logged optimiser step; fp32 on the CPU (TRL defaults to ``bf16=True``); dropout off (as ``train_dpo``);
    no truncation; reference log-probs computed at the step (at step 1 the same numbers as ``train_dpo``'s
    up-front ones). DPO: the paper's sigmoid loss with no label smoothing, no SFT term (pass ``sft_weight=0``
    to ``train_dpo``), no weighting. KTO: ``lambda_d = lambda_u = 1``, sequential batches.

    Args:
        method: ``"dpo"`` or ``"kto"``.
        output_dir: a folder for TRL's (unused) outputs.
        batch_size: pairs (DPO) or examples (KTO) per step: use the whole data set, so that both libraries'
            first batch holds the same examples.
        beta: the KL coefficient, passed to both libraries.
        lr: the learning rate (the first step's loss is logged before the update, so it does not matter).
        seed: TRL's seed.

    Returns:
        A dict for ``DPOConfig(**settings)`` or ``KTOConfig(**settings)``.

    Raises:
        ValueError: if ``method`` is not ``"dpo"`` or ``"kto"``.

    Example::

        >>> s = trl_settings("dpo", "/tmp/trl", batch_size=4, beta=0.3)
        >>> s["bf16"], s["loss_type"], s["beta"]
        (False, ['sigmoid'], 0.3)
    """
    common = dict(output_dir=str(output_dir), per_device_train_batch_size=batch_size, max_steps=1, beta=beta,
                  learning_rate=lr, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False,
                  activation_checkpointing=False, dataloader_num_workers=0, disable_dropout=True,
                  precompute_ref_log_probs=False, max_length=None, seed=seed, disable_tqdm=True)
    if method == "dpo":
        return dict(common, loss_type=["sigmoid"], label_smoothing=0.0, f_divergence_type="reverse_kl",
                    ld_alpha=None, use_weighting=False)
    if method == "kto":
        return dict(common, loss_type="kto", desirable_weight=1.0, undesirable_weight=1.0,
                    train_sampling_strategy="sequential")
    raise ValueError(f"method must be 'dpo' or 'kto', got {method!r}")


def check_trl_dpo_tokens(tokenizer, records, trl_rows):
    """Raise unless TRL tokenised every pair exactly as ``prompt_completion_batch`` does.

    Compares, record by record, the book's ``<bos> prompt`` ids and the ids of each completion with its
    ``<eos>`` against TRL's ``prompt_ids``, ``chosen_ids`` and ``rejected_ids``.

    Args:
        tokenizer: the book's tokenizer (not the :func:`trl_tokenizer` copy).
        records: the book's preference pairs (dicts with ``prompt``, ``chosen``, ``rejected``).
        trl_rows: ``DPOTrainer(...).train_dataset``, in the same order.

    Raises:
        ValueError: naming the first record whose ids differ, with both tokenisations.
    """
    for rec, row in zip(records, trl_rows, strict=True):
        batch = prompt_completion_batch(tokenizer, [rec["prompt"]] * 2, [rec["chosen"], rec["rejected"]])
        P = batch.prompt_length
        ours = (batch.input_ids[0, :P].tolist(),
                *(batch.input_ids[i, P:][batch.completion_mask[i, P:] == 1].tolist() for i in (0, 1)))
        theirs = (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])
        if ours != theirs:
            raise ValueError(f"TRL tokenised {rec} as {theirs}, rlhf-edu as {ours}")


class FirstStepLog(TrainerCallback):
    """A ``transformers`` callback that keeps the first logged record with a loss (``logging_steps=1``: step 1's).

    TRL logs the loss of a step computed before the optimiser update, like ``History.rows[0]`` of the book's
    trainers. After ``trainer.train()``, ``callback.logs`` is that dict (``None`` if nothing was logged).
    """

    def __init__(self):
        self.logs = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.logs is None and logs is not None and "loss" in logs:
            self.logs = dict(logs)
