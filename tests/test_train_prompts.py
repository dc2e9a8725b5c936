"""The prompt checks and prompt draws shared by the online trainers (rlhf_edu.train.prompts)."""

import copy
import doctest

import pytest
import torch

from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
import rlhf_edu.train.prompts as prompts_module
from rlhf_edu.train.prompts import check_prompts, draw_prompts


@pytest.fixture(scope="module")
def small():
    tok = char_tokenizer()
    return tiny_causal_lm(tok, d_model=32, n_layer=1, max_length=16), tok


def test_doctests():
    assert doctest.testmod(prompts_module).failed == 0


def test_check_prompts_returns_a_list(small):
    model, tok = small
    assert check_prompts(model, tok, iter(["ab", "c"]), max_new_tokens=4) == ["ab", "c"]


def test_check_prompts_context_limit_is_exact(small):
    model, tok = small
    # <bos> + 11 characters = 12 positions; 12 + 4 = 16 fits the context of 16, 12 + 5 does not.
    assert check_prompts(model, tok, ["x" * 11], max_new_tokens=4)
    with pytest.raises(ValueError, match="prompts"):
        check_prompts(model, tok, ["x" * 11], max_new_tokens=5)
    with pytest.raises(ValueError, match="eval_prompts"):
        check_prompts(model, tok, ["short", "x" * 20], max_new_tokens=1, name="eval_prompts")


def test_check_prompts_bad_input(small):
    model, tok = small
    with pytest.raises(ValueError, match="prompts is empty"):
        check_prompts(model, tok, [], max_new_tokens=4)
    with pytest.raises(TypeError, match="single string"):
        check_prompts(model, tok, "review:", max_new_tokens=4)
    with pytest.raises(TypeError, match="prompts"):
        check_prompts(model, tok, 3, max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        check_prompts(model, tok, ["a"], max_new_tokens=0)
    no_pad = copy.deepcopy(tok)
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="tokenizer has no pad token"):
        check_prompts(model, no_pad, ["a"], max_new_tokens=4)


def test_draw_prompts_is_seeded_and_covers_the_set():
    pool = ["a", "b", "c", "d"]
    first = draw_prompts(pool, 200, torch.Generator().manual_seed(3))
    again = draw_prompts(pool, 200, torch.Generator().manual_seed(3))
    other = draw_prompts(pool, 200, torch.Generator().manual_seed(4))
    assert first == again and first != other
    assert set(first) == set(pool)  # uniform with replacement: 200 draws hit all four
    with pytest.raises(ValueError, match="n"):
        draw_prompts(pool, 0, torch.Generator())
