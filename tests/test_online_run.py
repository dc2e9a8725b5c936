"""OnlineRun.collect (rlhf_edu.train.rollouts): the rollout step shared by PPO, GRPO and RLOO."""

import dataclasses

import numpy as np
import pytest
import torch

from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
from rlhf_edu.train.distributed import DataParallel
from rlhf_edu.train.prompts import draw_prompts
from rlhf_edu.train.rollouts import collect_rollouts, prepare_online_run

TOK = char_tokenizer()
PROMPTS = ["1+1=", "2+2=", "3+4=", "5+6=", "12+3="]
OPTIONS = dict(num_samples=2, max_new_tokens=4, temperature=0.9)

pytestmark = pytest.mark.usefixtures("one_thread")


def digit_share(completions, prompts):
    return np.array([sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions])


def length_tenth(completions, prompts):
    return np.array([len(c) / 10 for c in completions])


class _FakeAccelerator:
    """Process ``rank`` of ``world_size`` on the CPU: all ``DataParallel.share_items`` reads."""
    device = torch.device("cpu")

    def __init__(self, rank, world_size):
        self.process_index, self.num_processes = rank, world_size


def _run(seed=0):
    policy = tiny_causal_lm(TOK, d_model=32, n_layer=1, seed=0)
    run = prepare_online_run(policy, TOK, PROMPTS, digit_share, gold_reward_fn=length_tenth, max_new_tokens=4,
                             seed=seed, device="cpu")
    return policy, run


def _same(a, b):
    """Two ScoredRollouts hold the same prompts, completions, tokens, rewards and log-probs."""
    ra, rb = a.rollout, b.rollout
    assert ra.prompts == rb.prompts and ra.completions == rb.completions
    assert torch.equal(ra.input_ids, rb.input_ids) and torch.equal(ra.completion_mask, rb.completion_mask)
    assert torch.equal(a.rewards, b.rewards) and np.array_equal(a.gold_rewards, b.gold_rewards)
    for x, y in ((a.logp_old, b.logp_old), (a.logp_ref, b.logp_ref)):
        assert (x is None and y is None) or torch.equal(x, y)


def test_collect_is_collect_rollouts_on_a_draw_with_the_runs_streams():
    """Two steps of run.collect equal the hand-written draw + collect_rollouts with the same seeds."""
    policy, run = _run(seed=3)
    got = [run.collect(policy, TOK, 3, **OPTIONS), run.collect(policy, TOK, 2, old_logprobs=False, **OPTIONS)]
    _, by_hand = _run(seed=3)
    prompt_stream, sample_stream = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for n, batch, old in zip((3, 2), got, (True, False)):
        expected = collect_rollouts(policy, TOK, draw_prompts(by_hand.prompts, n, prompt_stream), by_hand.reward_fn,
                                    ref_model=by_hand.ref_model, generator=sample_stream,
                                    gold_reward_fn=by_hand.gold_fn, old_logprobs=old, **OPTIONS)
        _same(batch, expected)
        assert len(batch.rollout.prompts) == n * OPTIONS["num_samples"]
    assert got[1].logp_old is None and got[0].logp_ref is not None and got[0].gold_rewards is not None


@pytest.mark.parametrize("world_size", [2, 3])
def test_each_process_collects_its_slice_of_one_global_draw(world_size):
    """Under N processes: N * n_prompts prompts drawn alike on every process; process r samples slice r."""
    n_prompts = 2
    global_draw = draw_prompts(PROMPTS, n_prompts * world_size, torch.Generator().manual_seed(0))
    slices = []
    for rank in range(world_size):
        policy, run = _run()
        run = dataclasses.replace(run, parallel=DataParallel("cpu", _FakeAccelerator(rank, world_size)))
        batch = run.collect(policy, TOK, n_prompts, **OPTIONS)
        slices.append(batch.rollout.prompts[:: OPTIONS["num_samples"]])  # the prompt of each group
        # the prompt stream advanced by the global draw, alike on every process
        assert torch.equal(run.prompt_stream.get_state(), _advanced(n_prompts * world_size))
    assert [p for s in slices for p in s] == global_draw
    assert all(len(s) == n_prompts for s in slices)


def _advanced(n):
    stream = torch.Generator().manual_seed(0)
    draw_prompts(PROMPTS, n, stream)
    return stream.get_state()


def test_collect_rejects_what_the_run_supplies_and_a_bad_count():
    policy, run = _run()
    with pytest.raises(TypeError, match="generator"):
        run.collect(policy, TOK, 2, generator=torch.Generator(), **OPTIONS)
    with pytest.raises(TypeError, match="ref_model, reward_fn"):
        run.collect(policy, TOK, 2, reward_fn=digit_share, ref_model=None, **OPTIONS)
    with pytest.raises(ValueError, match="n_prompts"):
        run.collect(policy, TOK, 0, **OPTIONS)
    with pytest.raises(TypeError, match="n_prompts"):
        run.collect(policy, TOK, 1.5, **OPTIONS)
    with pytest.raises(TypeError, match="top_p"):
        run.collect(policy, TOK, 1, top_p=0.9, **OPTIONS)
    bad = dataclasses.replace(run, reward_fn=lambda c, p: np.full(len(c), np.nan))
    with pytest.raises(ValueError, match="finite"):
        bad.collect(policy, TOK, 1, **OPTIONS)
