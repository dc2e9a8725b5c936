"""Data parallelism (rlhf_edu.train.distributed): the trainers unchanged under ``torchrun --nproc_per_node 2``.

One ``torchrun --standalone`` run of tests/data_parallel_worker.py with 2 CPU processes (gloo) and
``batch_size=4`` and, at the same time, one plain process with ``batch_size=8``: SFT, DPO, SimPO, ORPO,
KTO and the reward model must end with the same parameters (float64 models: the only difference is the
order of the sums); the processes of GRPO, RLOO and PPO must sample their own prompts and completions
(each with its own stream) while keeping identical weights, and ReST's must share one gathered Grow step.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rlhf_edu
from rlhf_edu.train.distributed import DataParallel, data_parallel

WORKER = Path(__file__).with_name("data_parallel_worker.py")
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def _environment():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    root = str(Path(rlhf_edu.__file__).resolve().parents[1])  # the rlhf_edu this test imported
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(one, two)``: the output folders of the plain process (batch 8) and of torchrun (2 x batch 4)."""
    pytest.importorskip("accelerate", reason="several processes need accelerate (the trl extra, in the lock)")
    one, two = tmp_path_factory.mktemp("one_process"), tmp_path_factory.mktemp("two_processes")
    env = _environment()
    commands = [
        [sys.executable, str(WORKER), str(one), "8"],
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(WORKER),
         str(two), "4"],
    ]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in commands]
    for proc, command in zip(procs, commands):
        try:
            output, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    return one, two


# metrics that are not the global batch's under data parallelism (documented): the reward model's
# reward_std is the mean of the processes' standard deviations; KTO's rewards are means over the desirable
# (undesirable) examples of each process, weighted by its share of all examples
NOT_GLOBAL = {"reward_model": ("reward_std",), "kto": ("reward", "margin", "desirable_reward", "undesirable_reward")}


def _same_rows(a, b):
    """The rows ``a`` and ``b`` hold the same keys and values (NaN equal to NaN)."""
    def marked(rows):
        return [{k: "NaN" if v != v else v for k, v in row.items()} for row in rows]
    return marked(a) == marked(b)


def _load(folder, name, rank=0):
    return torch.load(folder / f"{name}_rank{rank}.pt")


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("name", ["sft", "dpo", "simpo", "orpo", "kto", "reward_model"])
def test_two_processes_of_batch_4_take_the_steps_of_one_process_of_batch_8(runs, name):
    one, two = runs
    single, rank0, rank1 = _load(one, name), _load(two, name, 0), _load(two, name, 1)
    # the gradients are averaged: both processes hold the same weights, bit for bit
    assert _max_difference(rank0["params"], rank1["params"]) == 0.0
    # ... and those of one process with the global batch (19 examples: shares 4+4, 4+4, 2+1, weighted);
    # measured in float64: at most 2e-11
    assert _max_difference(single["params"], rank0["params"]) < 1e-8
    # every process logs the same rows, the metrics of the global batch
    assert _same_rows(rank0["rows"], rank1["rows"])
    assert len(single["rows"]) == len(rank0["rows"]) == 3
    for a, b in zip(single["rows"], rank0["rows"]):
        assert a.keys() == b.keys()
        for k in a:
            if k not in NOT_GLOBAL.get(name, ()):
                assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-6, abs=1e-12), k  # some are float32 means


@pytest.mark.parametrize("name", ["grpo", "rloo", "ppo"])
def test_online_processes_sample_their_own_prompts_and_completions_and_keep_one_policy(runs, name):
    one, two = runs
    seen = [json.loads((two / f"{name}_samples_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 2  # two steps, one batch each
    for step in range(2):
        a, b = seen[0][step], seen[1][step]
        assert len(a["completions"]) == len(b["completions"]) == 8  # the batch of each process
        assert a["prompts"] != b["prompts"]  # slices 0 and 1 of one global draw
        assert a["completions"] != b["completions"]  # each process's own sampling stream
    # process 0 draws what a single process draws (seed + rank 0): the first slice of the global draw
    single = json.loads((one / f"{name}_samples_rank0.json").read_text())
    assert single[0]["prompts"] == seen[0][0]["prompts"]
    rank0, rank1 = _load(two, name, 0), _load(two, name, 1)
    assert _max_difference(rank0["params"], rank1["params"]) == 0.0
    assert _same_rows(rank0["rows"], rank1["rows"])


def test_each_process_samples_with_its_own_stream_the_first_with_the_single_process_stream(runs):
    # GRPO on a single prompt: every process samples the same prompts, so only the stream tells them apart
    one, two = runs
    single = json.loads((one / "grpo_one_prompt_samples_rank0.json").read_text())[0]  # step 0, same weights
    rank0, rank1 = (json.loads((two / f"grpo_one_prompt_samples_rank{r}.json").read_text())[0] for r in (0, 1))
    assert rank0["prompts"] == rank1["prompts"] == single["prompts"] == ["4+4="] * 8
    assert rank0["completions"] == single["completions"]  # stream seed + 0: what one process samples
    assert rank1["completions"] != rank0["completions"]  # stream seed + 1: its own


def test_rest_gathers_the_grow_step_on_every_process_and_keeps_one_policy(runs):
    one, two = runs
    seen = [json.loads((two / f"rest_samples_rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((one / "rest_samples_rank0.json").read_text())
    assert len(seen[0]) == 1 and seen[0] == seen[1]  # one Grow: every process scores the whole D_g
    assert sorted(seen[0][0]["prompts"]) == sorted(single[0]["prompts"])  # 8 prompts x 2 samples, all of them
    rank0, rank1 = _load(two, "rest", 0), _load(two, "rest", 1)
    assert _max_difference(rank0["params"], rank1["params"]) == 0.0
    assert _same_rows(rank0["rows"], rank1["rows"])


def test_a_plain_process_is_not_distributed_and_shares_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    parallel = data_parallel("cpu")
    assert parallel.accelerator is None and not parallel.distributed and parallel.is_main
    idx = torch.tensor([3, 1, 2])
    assert parallel.share(idx)[0] is idx and parallel.share(idx)[1] == 1.0
    metrics = {"loss": 1.5}
    assert parallel.reduce_metrics(metrics) is metrics
    monkeypatch.setenv("WORLD_SIZE", "zero")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        data_parallel("cpu")


class _FakeAccelerator:
    """Process ``rank`` of 2; its all-reduce adds ``other``, the value the other process contributes."""
    device, num_processes = torch.device("cpu"), 2

    def __init__(self, rank, other=0.0):
        self.process_index, self.other = rank, other

    def reduce(self, value, reduction):
        assert reduction == "sum"
        return value + self.other


@pytest.mark.parametrize("rank, size, expected, weight", [
    (0, 8, [0, 1, 2, 3], 1.0), (1, 8, [4, 5, 6, 7], 1.0),
    (0, 3, [0, 1], 4 / 3), (1, 3, [2], 2 / 3),   # unequal shares, weighted N b_r / B
    (0, 1, [0], 2.0), (1, 1, [0], 0.0),          # an empty share: a stand-in of weight 0
])
def test_each_process_takes_its_slice_of_the_global_batch_with_its_weight(rank, size, expected, weight):
    parallel = DataParallel("cpu", _FakeAccelerator(rank))
    local, w = parallel.share(torch.arange(size))
    assert local.tolist() == expected and w == pytest.approx(weight) and parallel.weight == w


@pytest.mark.parametrize("count, other, weight, total", [
    (4, 4, 1.0, 8.0),     # equal shares
    (6, 2, 1.5, 8.0),     # N c_r / C = 2 * 6 / 8: more tokens, more weight
    (0, 5, 0.0, 5.0),     # nothing to train on: weight 0, the other process carries the step
    (0, 0, 0.0, 0.0),     # nothing anywhere: no step
])
def test_a_loss_over_count_items_weighs_as_its_share_of_all_items(count, other, weight, total):
    assert DataParallel("cpu", _FakeAccelerator(0, other)).count_weight(count) == (pytest.approx(weight), total)
