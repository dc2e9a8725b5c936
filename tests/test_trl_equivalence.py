"""rlhf-edu against TRL, side by side: the first step's DPO and KTO loss agree to float precision.

TRL's ``DPOTrainer`` and ``KTOTrainer`` get the same model copy, reference model, data and settings as
``rlhf_edu.train.train_dpo`` / ``train_kto``; each library's logged loss of its first optimiser step (computed
before the update) must agree to ``rtol=1e-5``, together with the logged log-probs, implied rewards and
KTO's reference point. TRL is the optional ``trl`` extra (``pip install -e ".[trl]"``); without it the file
is skipped.

The test can fail: the reference model is a perturbed copy of the policy, so the first-step losses are far
from the trivial values of a policy equal to its reference (DPO: log 2; KTO: lambda / 2 = 0.5), and KTO's
reference point z0 is positive (not hidden by the clamp at 0); both facts are asserted.

Conventions matched, setting by setting (TRL 1.16 names on the right):

- beta: ``beta=`` on both sides, a value that is neither library's default (rlhf-edu DPO 0.3, KTO 0.1;
  TRL 0.1), so a setting that is not passed through shows.
- loss: rlhf-edu ``loss="dpo"``, ``label_smoothing=0`` = TRL ``loss_type=["sigmoid"]``, ``label_smoothing=0``,
  ``f_divergence_type="reverse_kl"`` (Rafailov et al. 2023, eq. 7); KTO: ``loss_type="kto"`` (Ethayarajh et
  al. 2024, eq. 8) with ``lambda_d = lambda_u = 1`` = ``desirable_weight = undesirable_weight = 1``.
- no extra terms: ``sft_weight=0`` (rlhf-edu's default RPO/SFT anchor off) = TRL's plain loss (no ``"sft"`` in
  ``loss_type``); ``ld_alpha=None`` and ``use_weighting=False`` (TRL's defaults).
- log-probabilities summed over the completion tokens: ``logp_reduction="sum"`` = TRL's ``.sum(dim=1)``.
- reference: copies of one reference model passed as ``ref_model`` on both sides; rlhf-edu computes its
  log-probs once up front, TRL each step (``precompute_ref_log_probs=False``): the same numbers at step 1.
- dropout: the models are built WITH dropout 0.1 and both trainers must switch it off
  (``disable_dropout=True`` on both sides, the default of both); a side that forgot would log a noisy loss.
- precision: fp32 on the CPU on both sides (TRL's configs default to ``bf16=True``: set to False).
  ``activation_checkpointing=False`` (TRL defaults ``gradient_checkpointing=True``, which changes no number
  but makes transformers 5.24 warn about the old name).
- batch: the whole data set is the first batch (DPO: 4 pairs; KTO: 2 examples), so shuffling (rlhf-edu) and
  sequential order (TRL) see the same examples; the DPO loss is a mean over pairs, order-free.
- KTO's reference point: TRL's ``KL_completion_ids`` rotate the completions by +1 within a batch (prompt i with
  completion i - 1); rlhf-edu's ``mismatched_indices`` pairs prompt i with completion i + 1 of the
  minibatch. With a batch of 2 both give the same two mismatched pairs (x0, y1), (x1, y0), whatever the
  order, so z0 is the same mean; for larger batches the two pairings differ (one cycle is the other
  reversed), though both are the paper's estimator.
- tokens: rlhf-edu's ``prompt_completion_batch`` gives ``<bos> prompt | completion <eos>`` with special ids
  added as ids (the book's character tokenizer reads text literally: ``split_special_tokens=True``). TRL
  tokenises ``prompt`` and ``prompt + completion + eos_token`` as text, adding no BOS (the tokenizer adds no
  special tokens). With the book's tokenizer TRL would therefore see NO <bos> and the five characters
  ``"<eos>"`` instead of the EOS id. So TRL gets a copy of the tokenizer with ``split_special_tokens=False``
  and prompts that start with the text ``"<bos>"``: then its ids are exactly rlhf-edu's, which the test
  checks on TRL's tokenised data set before comparing losses. Padding differs (rlhf-edu left-pads the prompt
  and counts positions over real tokens only; TRL right-pads the whole row), which leaves the positions of
  real tokens and so the log-probs unchanged.

The setup pieces (tokenizer copy, records with the "<bos>" prefix, the TRL settings, the token check, the
first-step log) live in ``rlhf_edu.train.trl_bridge``, shared with chapter 6's "The same step in TRL".
"""

import copy
import math

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("datasets")

from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer  # noqa: E402

from rlhf_edu.lm import char_tokenizer, prompt_completion_batch, tiny_causal_lm  # noqa: E402
from rlhf_edu.train.dpo import train_dpo  # noqa: E402
from rlhf_edu.train.kto import train_kto  # noqa: E402
from rlhf_edu.train.trl_bridge import (FirstStepLog, check_trl_dpo_tokens, trl_records, trl_settings,  # noqa: E402
                                       trl_tokenizer)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # TRL 1.16 itself reads `model.is_gradient_checkpointing`, deprecated in transformers 5.24: not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

RTOL = 1e-5
TOK = char_tokenizer()
PAIRS = [  # prompts and completions of different lengths, so that padding is exercised on both sides
    {"prompt": "review: the film was", "chosen": " great fun.", "rejected": " bad and slow."},
    {"prompt": "review: the cafe is", "chosen": " lovely.", "rejected": " dull."},
    {"prompt": "review: a song", "chosen": " fresh and warm.", "rejected": " weak."},
    {"prompt": "review: the app is", "chosen": " good.", "rejected": " boring and buggy."},
]
KTO_EXAMPLES = [  # one batch of 2: one desirable, one undesirable example
    {"prompt": "review: the film was", "completion": " great fun.", "label": True},
    {"prompt": "review: the cafe is", "completion": " bad and the staff was slow.", "label": False},
]


def models():
    """``(policy, reference)``: a tiny GPT-2 with dropout 0.1 and a perturbed copy of it as the reference.

    Noise on the reference makes it sharper than the near-uniform freshly initialised policy, so on
    completions it does not favour the policy's log-prob is the larger: the implied rewards and KTO's
    reference point z0 come out positive and well away from 0.
    """
    policy = tiny_causal_lm(TOK, d_model=32, n_layer=1, dropout=0.1, seed=0)
    reference = copy.deepcopy(policy)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return policy, reference



def assert_same(ours, theirs, keys):
    """Each ``(rlhf-edu key, TRL key, comparison)`` of ``keys`` equal in the first history row and the first TRL log."""
    report = "; ".join(f"{mine} {ours[mine]:.9g} vs TRL {trls} {theirs[trls]:.9g}" for mine, trls, _ in keys)
    for mine, trls, same in keys:
        assert same(ours[mine], theirs[trls]), f"{mine} != TRL {trls}: {report}"
    print(report)




def close(ours, theirs):
    """Equal to float32 precision: ``rtol=1e-5`` (losses and summed log-probs)."""
    return math.isclose(ours, theirs, rel_tol=RTOL, abs_tol=1e-7)


def close_difference(ours, theirs):
    """Equal to float32 precision for a DIFFERENCE of summed log-probs (implied rewards, KTO's z0).

    Each sum is of order 100 nats here, whose float32 spacing is ~1e-5 and whose summation order differs
    between the libraries (padding layout), so a relative tolerance on their difference of order 1 would test
    rounding, not the formula; 1e-4 absolute is still ~50 times below what a beta off by 1 % changes, and far
    below a different mismatched pair or a missing <bos>.
    """
    return math.isclose(ours, theirs, rel_tol=RTOL, abs_tol=1e-4)


def test_dpo_first_step_loss_equals_trl(tmp_path):
    beta = 0.25
    policy, reference = models()
    _, history = train_dpo(copy.deepcopy(policy), TOK, PAIRS, ref_model=copy.deepcopy(reference), beta=beta,
                           loss="dpo", label_smoothing=0.0, sft_weight=0.0, logp_reduction="sum",
                           batch_size=len(PAIRS), lr=1e-6, disable_dropout=True, seed=0, device="cpu",
                           progress=False)
    ours = history.rows[0]

    config = DPOConfig(**trl_settings("dpo", tmp_path, batch_size=len(PAIRS), beta=beta))
    data = Dataset.from_list(trl_records(PAIRS, TOK))
    log = FirstStepLog()
    trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=config,
                         train_dataset=data, processing_class=trl_tokenizer(TOK), callbacks=[log])
    # Same token ids as rlhf-edu's batch: <bos> prompt | completion <eos>.
    check_trl_dpo_tokens(TOK, PAIRS, trainer.train_dataset)
    trainer.train()
    theirs = log.logs

    assert abs(ours["loss"] - math.log(2)) > 0.05, f"trivial first-step loss {ours['loss']}: policy == reference?"
    assert_same(ours, theirs, [("chosen_logp", "logps/chosen", close), ("rejected_logp", "logps/rejected", close),
                               ("chosen_reward", "rewards/chosen", close_difference),
                               ("rejected_reward", "rewards/rejected", close_difference),
                               ("margin", "rewards/margins", close_difference), ("loss", "loss", close)])


def test_kto_first_step_loss_equals_trl(tmp_path):
    beta = 0.5
    policy, reference = models()
    _, history = train_kto(copy.deepcopy(policy), TOK, KTO_EXAMPLES, ref_model=copy.deepcopy(reference), beta=beta,
                           lambda_d=1.0, lambda_u=1.0, kl_estimate="mismatched", sft_weight=0.0,
                           logp_reduction="sum", batch_size=len(KTO_EXAMPLES), lr=1e-6, disable_dropout=True,
                           seed=0, device="cpu", progress=False)
    ours = history.rows[0]

    config = KTOConfig(**trl_settings("kto", tmp_path, batch_size=len(KTO_EXAMPLES), beta=beta))
    data = Dataset.from_list(trl_records(KTO_EXAMPLES, TOK, fields=("completion", "label")))
    log = FirstStepLog()
    trainer = KTOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=config,
                         train_dataset=data, processing_class=trl_tokenizer(TOK), callbacks=[log])
    mine = prompt_completion_batch(TOK, [r["prompt"] for r in KTO_EXAMPLES], [r["completion"] for r in KTO_EXAMPLES])
    P = mine.prompt_length
    completions = [mine.input_ids[i, P:][mine.completion_mask[i, P:] == 1].tolist() for i in range(2)]
    for i, row in enumerate(trainer.train_dataset):
        # TRL's mismatched pair for a batch of 2 = rlhf-edu's (mismatched_indices): the other completion.
        same = (mine.input_ids[i, :P][mine.attention_mask[i, :P] == 1].tolist(), completions[i], completions[1 - i])
        trls = (row["prompt_ids"], row["completion_ids"], row["KL_completion_ids"])
        assert trls == same, f"TRL tokenised example {i} as {trls} (prompt, completion, KL), rlhf-edu as {same}"
    trainer.train()
    theirs = log.logs

    assert ours["kl_reference"] > 0.1, f"z0 = {ours['kl_reference']}: the clamp at 0 would hide the KL estimate"
    assert abs(ours["loss"] - 0.5) > 0.02, f"trivial first-step loss {ours['loss']}: policy == reference?"
    # TRL logs z0 after the clamp at 0, rlhf-edu before it: the same number here, where z0 > 0.
    assert_same(ours, theirs, [("kl_reference", "kl", close_difference),
                               ("desirable_reward", "rewards/chosen", close_difference),
                               ("undesirable_reward", "rewards/rejected", close_difference), ("loss", "loss", close)])


def test_trl_bridge_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="method"):
        trl_settings("ppo", tmp_path, batch_size=2, beta=0.1)
    with pytest.raises(ValueError, match="records"):
        trl_records([], TOK)
    with pytest.raises(ValueError, match="rejected"):
        trl_records([{"prompt": "a", "chosen": "b"}], TOK)
    with pytest.raises(TypeError, match="tokenizer"):
        trl_tokenizer("not a tokenizer")
    assert TOK.split_special_tokens and not trl_tokenizer(TOK).split_special_tokens   # a copy: TOK unchanged
    wrong = [{"prompt_ids": [1], "chosen_ids": [4, 2], "rejected_ids": [5, 2]}]
    with pytest.raises(ValueError, match="TRL tokenised"):
        check_trl_dpo_tokens(TOK, PAIRS[:1], wrong)
