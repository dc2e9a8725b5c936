"""Shared fixtures: the SFT starting points are trained once per test session, not once per test."""

import pytest
import torch


@pytest.fixture(scope="session")
def sentiment_sft():
    """``(policy, tokenizer, task, history)`` from ``rlhf_edu.train.recipes.sentiment_sft_policy`` (GPT-2).

    Trainer tests must not modify it: start from ``copy.deepcopy(policy)``.
    """
    from rlhf_edu.train.recipes import sentiment_sft_policy

    torch.set_num_threads(2)
    return sentiment_sft_policy(device="cpu", progress=False)


@pytest.fixture(scope="session")
def arithmetic_sft():
    """``(policy, tokenizer, task, history)`` from ``rlhf_edu.train.recipes.arithmetic_sft_policy`` (GPT-2)."""
    from rlhf_edu.train.recipes import arithmetic_sft_policy

    return arithmetic_sft_policy(device="cpu", progress=False)


@pytest.fixture(scope="session")
def tokenizer():
    from rlhf_edu.lm import char_tokenizer

    return char_tokenizer()


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny models run fastest that way, and do not fight the other test
    processes for the cores. Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
