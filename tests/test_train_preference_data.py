"""The shared layer of the offline preference trainers: records, the concatenated batch, sequence log-probs."""

import dataclasses
import doctest

import pytest
import torch
from hypothesis import given, settings, strategies as st

from rlhf_edu.lm import char_tokenizer, prompt_completion_batch, sequence_logprobs, tiny_causal_lm
from rlhf_edu.train import preference_data
from rlhf_edu.train.preference_data import (
    binary_feedback_records,
    chosen_rejected_logps,
    encode_pairs,
    frozen_logps,
    length_groups,
    pair_rows,
    preference_triples,
    ranking_records,
    take_rows,
)

TOK = char_tokenizer()
MODEL = tiny_causal_lm(TOK, d_model=32, n_layer=1, seed=3)
PROMPTS = ["review: the film was", "p:", "review: the app is"]
CHOSEN = [" great fun.", " good and the plot was nice.", " ok."]
REJECTED = [" dull.", " bad", " boring but the music was loud."]


def test_doctests():
    result = doctest.testmod(preference_data, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5 and result.failed == 0


def test_preference_triples_reads_dicts_and_tuples():
    records = [{"prompt": "a", "chosen": "b", "rejected": "c", "gold_chosen": 1.0}, ("d", "e", "f")]
    assert preference_triples(records) == (["a", "d"], ["b", "e"], ["c", "f"])


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ([], ValueError, "pairs is empty"),
        ([{"prompt": "a", "chosen": "b"}], ValueError, r"pairs\[0\] lacks.*rejected"),
        ([("a", "b")], TypeError, r"pairs\[0\]"),
        ({"prompt": "a", "chosen": "b", "rejected": "c"}, TypeError, "single dict"),
        ([("a", 3, "c")], TypeError, "chosen"),
    ],
)
def test_preference_triples_errors_name_the_argument(bad, error, match):
    with pytest.raises(error, match=match):
        preference_triples(bad)


def test_ranking_records_checks_k():
    assert ranking_records([("p", ["a", "b", "c"])]) == (["p"], [["a", "b", "c"]])
    with pytest.raises(ValueError, match="same K"):
        ranking_records([("p", ["a", "b", "c"]), ("q", ["a", "b"])])
    with pytest.raises(ValueError, match="K >= 2"):
        ranking_records([{"prompt": "p", "completions": ["a"]}])
    with pytest.raises(ValueError, match="repeats"):
        ranking_records([("p", ["a", "a"])])
    with pytest.raises(ValueError, match="rankings is empty"):
        ranking_records([])


def test_binary_feedback_records():
    prompts, comps, labels = binary_feedback_records([("p", "a", True), {"prompt": "q", "completion": "b", "label": 0}])
    assert prompts == ["p", "q"] and comps == ["a", "b"] and labels.tolist() == [True, False]
    with pytest.raises(ValueError, match=r"examples\[0\] label"):
        binary_feedback_records([("p", "a", "good")])
    with pytest.raises(ValueError, match="lacks"):
        binary_feedback_records([{"prompt": "p", "completion": "a"}])


def test_encode_pairs_layout_chosen_rows_first():
    batch = encode_pairs(TOK, PROMPTS, CHOSEN, REJECTED)
    n = len(PROMPTS)
    assert batch.input_ids.shape[0] == 2 * n
    for i in range(n):
        text_c = TOK.decode(batch.input_ids[i][batch.completion_mask[i].bool()].tolist(), skip_special_tokens=True)
        text_r = TOK.decode(batch.input_ids[n + i][batch.completion_mask[n + i].bool()].tolist(),
                            skip_special_tokens=True)
        assert text_c == CHOSEN[i] and text_r == REJECTED[i]
    # EOS is part of every completion: len(text) + 1 tokens.
    assert batch.completion_mask.sum(1).tolist() == [len(c) + 1 for c in CHOSEN + REJECTED]


def test_encode_pairs_rejects_too_long_and_mismatched():
    with pytest.raises(ValueError, match="one length"):
        encode_pairs(TOK, PROMPTS, CHOSEN, REJECTED[:2])
    small = tiny_causal_lm(TOK, d_model=32, n_layer=1, max_length=16)
    with pytest.raises(ValueError, match="pairs need .* context is 16"):
        encode_pairs(TOK, PROMPTS, CHOSEN, REJECTED, model=small)


def test_one_concatenated_pass_equals_separate_passes():
    """The TRL trick changes nothing numerically: chosen and rejected scored together or apart agree."""
    batch = encode_pairs(TOK, PROMPTS, CHOSEN, REJECTED)
    with torch.no_grad():
        chosen, rejected = chosen_rejected_logps(MODEL, batch, "sum")
        for completions, got in ((CHOSEN, chosen), (REJECTED, rejected)):
            alone = prompt_completion_batch(TOK, PROMPTS, completions)
            want = sequence_logprobs(MODEL, alone.input_ids, alone.attention_mask, alone.completion_mask)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        mean_c, mean_r = chosen_rejected_logps(MODEL, batch, "mean")
        lengths = batch.completion_mask.sum(1).float()
        torch.testing.assert_close(torch.cat([mean_c, mean_r]), torch.cat([chosen, rejected]) / lengths)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True))
def test_take_rows_drops_padding_without_changing_logps(pair_ids):
    batch = encode_pairs(TOK, PROMPTS, CHOSEN, REJECTED)
    rows = pair_rows(torch.tensor(pair_ids), len(PROMPTS))
    part = take_rows(batch, rows)
    assert part.input_ids.shape[1] <= batch.input_ids.shape[1]
    assert bool(part.attention_mask[:, 0].any()) and bool(part.attention_mask[:, -1].any())  # trimmed tight
    with torch.no_grad():
        full = sequence_logprobs(MODEL, batch.input_ids, batch.attention_mask, batch.completion_mask)[rows]
        cut = sequence_logprobs(MODEL, part.input_ids, part.attention_mask, part.completion_mask)
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
    # completions still start at prompt_length
    assert bool((part.completion_mask[:, : part.prompt_length] == 0).all())


def test_rows_grouped_by_length_give_the_padded_batchs_logprobs():
    """A batch of >= 32 rows goes through the model in groups of similar length: same log-probs, less padding."""
    n = 20  # 40 rows: two groups
    prompts = [PROMPTS[i % 3] for i in range(n)]
    chosen = [CHOSEN[i % 3] + " x" * (i % 5) for i in range(n)]
    rejected = [REJECTED[(i + 1) % 3] for i in range(n)]
    batch = encode_pairs(TOK, prompts, chosen, rejected)
    order, parts = length_groups(batch, groups=2)
    assert sorted(order.tolist()) == list(range(2 * n)) and len(parts) == 2
    assert sum(ids.numel() for ids, _, _ in parts) < batch.input_ids.numel()  # less padding computed
    with torch.no_grad():
        want = sequence_logprobs(MODEL, batch.input_ids, batch.attention_mask, batch.completion_mask)
        got = torch.cat(chosen_rejected_logps(MODEL, batch, "sum"))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    for groups in (1, 3):  # any grouping, one pass included, gives the padded batch's log-probs
        with torch.no_grad():
            torch.testing.assert_close(torch.cat(chosen_rejected_logps(MODEL, batch, "sum", groups=groups)), want,
                                       atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="groups"):
        chosen_rejected_logps(MODEL, batch, "sum", groups=0)
    # rows whose real tokens have a hole are kept in place (only the all-padding columns are cut)
    holed = dataclasses.replace(batch, attention_mask=batch.attention_mask.clone())
    first = int(batch.attention_mask[0].nonzero()[0])
    holed.attention_mask[0, first + 1] = 0
    _, holed_parts = length_groups(holed, groups=2)
    assert sum(int(m.sum()) for _, m, _ in holed_parts) == int(holed.attention_mask.sum())  # no real token lost


def groups_used(monkeypatch, batch, model):
    """How many groups ``chosen_rejected_logps`` asks ``length_groups`` for by default (1: one plain pass)."""
    asked = []

    def spy(batch, groups=None, rows_per_group=None):
        asked.append(groups)
        return length_groups(batch, groups=groups, rows_per_group=rows_per_group)

    monkeypatch.setattr(preference_data, "length_groups", spy)
    with torch.no_grad():
        chosen_rejected_logps(model, batch, "sum")
    return asked[0] if asked else 1


def test_default_grouping_is_by_length_on_the_cpu_and_one_pass_for_small_batches(monkeypatch):
    n = 20
    batch = encode_pairs(TOK, [PROMPTS[i % 3] for i in range(n)], [CHOSEN[i % 3] for i in range(n)],
                         [REJECTED[i % 3] for i in range(n)])
    assert groups_used(monkeypatch, batch, MODEL) == 2  # 40 rows on the CPU: two groups
    small = encode_pairs(TOK, PROMPTS, CHOSEN, REJECTED)
    assert groups_used(monkeypatch, small, MODEL) == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_gpu_the_default_is_one_pass_with_the_cpus_logprobs(monkeypatch):
    import copy

    n = 20
    batch = encode_pairs(TOK, [PROMPTS[i % 3] for i in range(n)], [CHOSEN[i % 3] for i in range(n)],
                         [REJECTED[i % 3] for i in range(n)])
    gpu_batch = take_rows(batch, torch.arange(len(batch)), "cuda")
    gpu_model = copy.deepcopy(MODEL).to("cuda")
    assert groups_used(monkeypatch, gpu_batch, gpu_model) == 1
    with torch.no_grad():
        want = torch.cat(chosen_rejected_logps(MODEL, batch, "sum"))
        got = torch.cat(chosen_rejected_logps(gpu_model, gpu_batch, "sum"))
    torch.testing.assert_close(got.cpu(), want, atol=1e-3, rtol=1e-4)


def test_pair_rows():
    assert pair_rows(torch.tensor([2, 0]), 3).tolist() == [2, 0, 5, 3]


def test_frozen_logps_matches_and_has_no_grad():
    batch = encode_pairs(TOK, PROMPTS, CHOSEN, REJECTED)
    MODEL.train()
    out1 = frozen_logps(MODEL, batch, "sum", batch_size=1)
    out64 = frozen_logps(MODEL, batch, "mean", batch_size=64)
    assert MODEL.training  # mode restored
    assert not out1.requires_grad
    with torch.no_grad():
        want = sequence_logprobs(MODEL, batch.input_ids, batch.attention_mask, batch.completion_mask)
    torch.testing.assert_close(out1, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out64, want / batch.completion_mask.sum(1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        frozen_logps(MODEL, batch, batch_size=0)
    MODEL.eval()


def test_tokenizer_without_pad_token_is_a_clear_error():
    tok = char_tokenizer()
    tok.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        encode_pairs(tok, PROMPTS, CHOSEN, REJECTED)
