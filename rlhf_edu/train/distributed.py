r"""Data parallelism: every trainer of ``rlhf_edu.train`` on N processes, through Hugging Face ``accelerate``.

Launch an unchanged training script with ``torchrun --nproc_per_node N script.py`` (or ``accelerate launch
script.py``); each trainer then builds a ``DataParallel`` from the environment (``data_parallel``) and

- **shares every global batch**: the global batch holds ``batch_size * N`` examples (``batch_size`` is per
  process, like TRL's ``per_device_train_batch_size``), drawn by the same seeded sampler on every process;
  process ``r`` takes slice ``r`` of it (``torch.tensor_split``, sizes differing by at most one);
- **averages the gradients**: the model is wrapped by ``accelerator.prepare`` (PyTorch
  ``DistributedDataParallel`` on several GPUs or on the CPU with gloo), whose backward all-reduces the
  gradients and divides by N. accelerate's FSDP and DeepSpeed configurations are untested here: sampling
  and evaluation call the unwrapped model, which needs its full parameters on every process;
- **weights unequal shares**: process ``r``'s loss, a mean over its :math:`b_r` examples, is multiplied by
  :math:`w_r = N b_r / B` (:math:`B = \sum_r b_r`), so the averaged gradient
  :math:`\frac{1}{N}\sum_r w_r \nabla \bar\ell_r = \frac{1}{B}\sum_i \nabla \ell_i` is the gradient of the
  mean over the whole global batch: 2 processes with ``batch_size=4`` take the steps of 1 process with
  ``batch_size=8`` (up to float rounding; ``tests/test_data_parallel.py``). A process whose share is empty
  (a last global batch smaller than N) computes the loss of one stand-in example with weight 0, so it still
  joins the all-reduce. SFT's ``"token_mean"`` loss, a mean over tokens rather than examples, is divided by
  the token count of the whole global batch instead (one all-reduce), with the same result;
- **reduces the logged metrics**: every process logs the same row, the mean over processes of
  :math:`w_r m_r` (the global batch's mean for per-example means); evaluation (sampling) runs on the main
  process only, so the ``eval_*`` columns (and the evaluation row after the last step) are in the main
  process's history only; only the main process shows
  progress bars (and the launcher saves only there).

The online trainers (GRPO, RLOO, PPO, ReST) draw each step's prompts from a stream seeded alike on every
process (the global draw; process ``r`` takes slice ``r``) and sample completions from a stream seeded
with ``seed + rank``, so each process samples its own. GRPO and RLOO weight each process's loss by its
share of the global rows, or tokens for a token mean (``count_weight``); KTO scores the mismatched pairs
of the global minibatch for :math:`z_0` and takes its SFT term's mean over the global batch's desirable
examples; ReST gathers the Grow step's samples so every process holds the whole dataset. What stays per
process: PPO's reward and advantage whitening (and its per-minibatch token means, so PPO on N processes
is not PPO with N times the batch), GRPO's ``scale="batch"`` std, and DAPO's redraws (each process
redraws for its own slice, so the processes' prompt streams then drift apart: each still draws uniformly).

In a single process (no ``WORLD_SIZE`` above 1 in the environment) nothing of this happens: no
``Accelerator`` is built, the shares are the whole batches with weight 1, and every trainer runs the code
it ran before, bit for bit.

Errors: a launch of several processes without ``accelerate`` installed raises ``ImportError`` saying so; a
NaN or inf loss on any process raises ``rlhf_edu.train.loop.NonFiniteLossError`` on every process
before any parameter moves (the check is all-reduced, so no process waits forever in a backward the others
skipped); a ``WORLD_SIZE`` that is not a positive integer raises ``ValueError``.

On the CPU the accelerator is ``Accelerator(cpu=True)``: under ``torchrun`` it runs MULTI_CPU with gloo and
averaged gradients, whereas a plain ``Accelerator()`` without CUDA would run each process alone.

Sources: PyTorch, "Distributed Data Parallel" (https://pytorch.org/docs/stable/notes/ddp.html: gradients
are averaged by an all-reduce during ``backward``); Hugging Face accelerate, "Accelerator"
(https://huggingface.co/docs/accelerate/package_reference/accelerator: ``prepare``, ``backward``,
``clip_grad_norm_``, ``reduce``).
"""

from __future__ import annotations

import os

import torch

from rlhf_edu.train.loop import (NonFiniteLossError, check_finite_grads, check_finite_loss, check_max_grad_norm,
                                 optimizer_step)

__all__ = ["DataParallel", "data_parallel", "launched_world_size"]


def launched_world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``, set by ``torchrun`` and ``accelerate
    launch``); 1 when the script was started as a plain ``python`` process.

    Raises ``ValueError`` for a ``WORLD_SIZE`` that is not a positive integer.
    """
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"the environment's WORLD_SIZE must be a positive integer, got {value!r}") from None
    if size < 1:
        raise ValueError(f"the environment's WORLD_SIZE must be a positive integer, got {size}")
    return size


_ACCELERATORS = {}


def _accelerator(cpu: bool, find_unused_parameters: bool):
    # One Accelerator per process and kind: accelerate's state is shared by the process anyway, and the
    # process group is initialised once.
    key = (cpu, find_unused_parameters)
    if key not in _ACCELERATORS:
        try:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs
        except ImportError as exc:  # an optional dependency: only a launch of several processes needs it
            raise ImportError("training on several processes (WORLD_SIZE > 1) needs Hugging Face accelerate: "
                              "pip install accelerate (or the project's 'trl' extra)") from exc

        kwargs = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
        _ACCELERATORS[key] = Accelerator(cpu=cpu, kwargs_handlers=kwargs)
    return _ACCELERATORS[key]


class DataParallel:
    """What a trainer needs to run on N processes (see the module): prepare, share, step, reduce.

    Build it with ``data_parallel(device)``. In a single process it is inert: ``prepare`` returns its
    arguments, ``share(idx)`` returns ``(idx, 1.0)``, ``optimizer_step`` is ``rlhf_edu.train.loop.
    optimizer_step`` and ``reduce_metrics`` returns its argument.

    Attributes:
        accelerator: the ``accelerate.Accelerator``, or None in a single process.
        device: where this process's model lives (``accelerator.device`` when distributed).
        world_size, rank: N and this process's index; ``is_main``: rank 0; ``distributed``: N > 1.
        weight: :math:`w_r` of the share ``share`` returned last (used by ``reduce_metrics``).
    """

    def __init__(self, device, accelerator=None):
        self.accelerator = accelerator
        if accelerator is None:
            self.device, self.world_size, self.rank = torch.device(device), 1, 0
        else:
            self.device = accelerator.device
            self.world_size, self.rank = accelerator.num_processes, accelerator.process_index
        self.weight = 1.0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def global_batch_size(self, batch_size: int) -> int:
        """Examples per optimiser step over all processes: ``batch_size * world_size``."""
        return batch_size * self.world_size

    def prepare(self, *objects):
        """The models and optimizers ``objects`` wrapped by ``accelerator.prepare`` (DDP, FSDP, ...) when
        distributed, else the objects themselves (a tuple, in the same order). Run the TRAINING forward
        passes through a returned model (its backward averages the gradients); sample and evaluate with the
        original (unwrapped) one, which holds the same parameters.

        The accelerator first drops its references to what earlier trainings of this process prepared
        (``accelerator.free_memory``), so a script that trains several models in turn does not keep them.
        """
        if not self.distributed:
            return objects
        self.accelerator.free_memory()
        prepared = self.accelerator.prepare(*objects)
        return prepared if isinstance(prepared, tuple) else (prepared,)

    def share(self, idx: torch.Tensor):
        """``(local indices, weight)``: this process's slice of the global minibatch ``idx`` and its
        :math:`w_r = N b_r / B`.

        Slice ``r`` of ``torch.tensor_split(idx, N)``; an empty slice becomes ``idx[:1]`` with weight 0
        (a stand-in that joins the gradient all-reduce without counting).

        >>> DataParallel("cpu").share(torch.arange(3))
        (tensor([0, 1, 2]), 1.0)
        """
        if not self.distributed:
            self.weight = 1.0
            return idx, 1.0
        local = torch.tensor_split(idx, self.world_size)[self.rank]
        if len(local) == 0:
            self.weight = 0.0
            return idx[:1], 0.0
        self.weight = self.world_size * len(local) / len(idx)
        return local, self.weight

    def count_weight(self, count):
        r"""``(w_r, C)`` for a loss that is a mean over this process's ``count`` items :math:`c_r` (rows,
        or tokens for a token mean): :math:`C = \sum_r c_r` over the processes (one all-reduce) and
        :math:`w_r = N c_r / C` (0 when :math:`C = 0`), so that weighting each process's loss by :math:`w_r`
        averages to the mean over all :math:`C` items. ``(1.0, count)`` in a single process.

        >>> DataParallel("cpu").count_weight(5)
        (1.0, 5.0)
        """
        count = float(count)
        if not self.distributed:
            return 1.0, count
        total = float(self.sum(count))
        return (self.world_size * count / total if total > 0 else 0.0), total

    def share_items(self, items: list) -> list:
        """This process's slice ``r`` of a list drawn alike on every process (the prompts of a global
        batch of an online trainer); the list itself in a single process.

        >>> DataParallel("cpu").share_items(["a", "b"])
        ['a', 'b']
        """
        if not self.distributed:
            return items
        local = torch.tensor_split(torch.arange(len(items)), self.world_size)[self.rank]
        return [items[i] for i in local.tolist()]

    def gather_items(self, items: list) -> list:
        """The lists ``items`` of all processes concatenated in rank order, on every process
        (``accelerate.utils.gather_object``); the list itself in a single process."""
        if not self.distributed:
            return items
        from accelerate.utils import gather_object

        return list(gather_object(list(items)))

    def sum(self, value) -> torch.Tensor:
        """The sum over processes of ``value`` (a number or tensor; float64 on this process's device)."""
        value = torch.as_tensor(value, dtype=torch.float64, device=self.device)
        return self.accelerator.reduce(value.clone(), "sum") if self.distributed else value

    def mean(self, value) -> torch.Tensor:
        """The mean over processes of ``value`` (see ``sum``)."""
        return self.sum(value) / self.world_size

    def check_finite_loss(self, loss) -> None:
        """``rlhf_edu.train.loop.check_finite_loss`` on every process at once: raises ``NonFiniteLossError``
        on EVERY process when the loss of any process is NaN or inf (one all-reduce of a flag), so no process
        waits forever in a backward the others skipped."""
        if not self.distributed:
            return check_finite_loss(loss)
        finite = float(bool(torch.isfinite(loss.detach()).all()))
        if float(self.sum(finite)) < self.world_size:
            check_finite_loss(loss)
            raise NonFiniteLossError("the loss of another process is NaN or inf: not updating the model")

    def backward(self, loss) -> None:
        """``loss.backward()``; ``accelerator.backward`` when distributed (the gradients are averaged)."""
        if self.distributed:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def clip_grad_norm_(self, parameters, max_norm: float):
        """``torch.nn.utils.clip_grad_norm_``; ``accelerator.clip_grad_norm_`` when distributed (FSDP and
        DeepSpeed clip their sharded gradients themselves)."""
        if self.distributed:
            return self.accelerator.clip_grad_norm_(parameters, max_norm)
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def optimizer_step(self, optimizer, loss, parameters, max_grad_norm, weight: float | None = None):
        """``rlhf_edu.train.loop.optimizer_step`` over the processes: backpropagate ``weight * loss``
        (default ``self.weight``) with gradients averaged across processes, clip, step.

        Raises ``NonFiniteLossError`` on EVERY process, before any parameter changes, when the loss of any
        process is NaN or inf (the check is all-reduced, so no process waits forever in a backward the
        others skipped) or when an averaged gradient is.
        """
        if not self.distributed:
            return optimizer_step(optimizer, loss, parameters, max_grad_norm)
        check_max_grad_norm(max_grad_norm)
        weight = self.weight if weight is None else weight
        parameters = list(parameters)
        self.check_finite_loss(loss)
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss * weight if weight != 1.0 else loss)
        check_finite_grads(parameters)  # the gradients are averaged: every process decides alike
        if max_grad_norm is not None:
            self.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()

    def reduce_metrics(self, metrics: dict, weight: float | None = None, sums=(), keep=("epoch", "step")) -> dict:
        """The row every process logs: each number ``m`` of ``metrics`` becomes the mean over processes of
        ``weight * m`` (default ``self.weight``: the global batch's mean of a per-example mean), or the
        plain sum over processes for the keys in ``sums`` (counts). The keys in ``keep`` (the same on every
        process) and non-numbers are kept as they are; NaN stays NaN. One all-reduce for the whole row."""
        if not self.distributed:
            return metrics
        weight = self.weight if weight is None else weight
        keys = [k for k, v in metrics.items() if k not in keep and not isinstance(v, bool)
                and (isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1))]
        values = torch.tensor([float(metrics[k]) * (1.0 if k in sums else weight) for k in keys],
                              dtype=torch.float64, device=self.device)
        values = self.sum(values)
        out = dict(metrics)
        for k, v in zip(keys, values.tolist()):
            out[k] = v if k in sums else v / self.world_size
        return out


def data_parallel(device, *, find_unused_parameters: bool = False) -> DataParallel:
    """The ``DataParallel`` of this process: distributed when the launcher started several processes
    (``launched_world_size() > 1``), with ``Accelerator(cpu=True)`` when ``device`` is the CPU and
    ``Accelerator()`` (one GPU per process, ``accelerator.device``) otherwise; inert in a single process.

    ``find_unused_parameters``: DDP's option for models some of whose parameters get no gradient (a
    reward model's unused language-model head).

    >>> data_parallel("cpu").distributed   # a plain python process
    False
    """
    device = torch.device(device)
    if launched_world_size() <= 1:
        return DataParallel(device)
    return DataParallel(device, _accelerator(device.type == "cpu", find_unused_parameters))
