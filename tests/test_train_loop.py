"""The loop every trainer shares (rlhf_edu.train.loop) and the shared pieces around it."""

import math

import numpy as np
import pytest
import torch

from rlhf_edu.train.data import epoch_minibatches, steps_per_run
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import optimizer_step, run_steps


def test_run_steps_logs_one_row_per_step_and_evaluates_on_schedule():
    calls = []

    def evaluate():
        calls.append(len(calls))
        return {"eval_reward": float(len(calls))}

    h = run_steps(range(5), lambda b: {"loss": float(b)}, history=History("t"), total=5, description="t",
                  evaluate=evaluate, eval_every=2, progress=False)
    assert h["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert h["loss"][:5].tolist() == [0, 1, 2, 3, 4] and math.isnan(h["loss"][5])
    # before steps 0, 2, 4 and once after the last step
    assert h["eval_reward"][[0, 2, 4, 5]].tolist() == [1, 2, 3, 4] and np.isnan(h["eval_reward"][[1, 3]]).all()
    assert np.all(np.diff(h["seconds"]) >= 0)


def test_run_steps_without_evaluation_has_no_final_row():
    h = run_steps(iter([1, 2]), lambda b: {"loss": b}, history=History("t"), total=2, description="t", progress=False)
    assert len(h) == 2 and "eval_reward" not in h


def test_optimizer_step_clips_the_gradient_norm():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    optimizer_step(opt, (w * torch.tensor([30.0, 40.0])).sum(), [w], max_grad_norm=1.0)
    # gradient (30, 40) has norm 50: clipped to (0.6, 0.8)
    torch.testing.assert_close(w.detach(), torch.tensor([2.4, 3.2]))
    optimizer_step(opt, (w * torch.tensor([3.0, 4.0])).sum(), [w], max_grad_norm=None)
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8]))


def test_epoch_minibatches_cover_every_example_once_per_epoch_and_repeat_with_the_seed():
    batches = list(epoch_minibatches(10, 3, 2, seed=7))
    assert len(batches) == steps_per_run(10, 3, 2) == 8
    for epoch in (0, 1):
        seen = torch.cat([idx for e, idx in batches if e == epoch])
        assert sorted(seen.tolist()) == list(range(10))
    again = list(epoch_minibatches(10, 3, 2, seed=7))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    with pytest.raises(ValueError, match="batch_size"):
        list(epoch_minibatches(10, 0, 1, seed=0))


def test_max_steps_cuts_or_extends_the_same_passes_and_refuses_what_would_never_end():
    two_passes = list(epoch_minibatches(10, 3, 2, seed=7))
    for steps in (1, 5, 8, 11):  # part of a pass, a pass and a bit, two whole passes, more than two
        batches = list(epoch_minibatches(10, 3, 1, seed=7, max_steps=steps))
        assert len(batches) == steps_per_run(10, 3, 1, max_steps=steps) == steps
        assert all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(batches, two_passes))
    assert [e for e, _ in epoch_minibatches(10, 3, 1, seed=7, max_steps=11)] == [0] * 4 + [1] * 4 + [2] * 3
    for bad, error in ((0, ValueError), (-1, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="max_steps"):
            list(epoch_minibatches(10, 3, 1, seed=7, max_steps=bad))
        with pytest.raises(error, match="max_steps"):
            steps_per_run(10, 3, 1, max_steps=bad)
