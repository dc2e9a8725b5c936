"""The loop every trainer shares: evaluate on schedule, take one step, log a row, move the progress bar.

A trainer of ``rlhf_edu.train`` is its method's step (sample or read a batch, compute the paper's loss,
update) written out in its own module; the bookkeeping around the step is the same for all of them and
lives here once:

- ``run_steps(batches, train_step, ...)`` calls ``train_step(batch)`` for each batch and logs the returned
  metrics as one history row with ``step`` and ``seconds``; every ``eval_every`` steps it first measures
  the policy (``eval_*`` columns, BEFORE that step's update) and after the last step once more (a final row
  with ``step`` = number of steps);
- ``optimizer_step`` is the update: zero the gradients, backpropagate, clip the gradient norm, step;
  it refuses a non-finite loss or gradient BEFORE the parameters change, and ``run_steps`` turns that
  into a ``NonFiniteLossError`` carrying the step number and the history so far, so a diverging run
  stops with its weights intact instead of writing NaN into every parameter.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import torch

from rlhf_edu.train.history import History
from rlhf_edu.train.progress import progress_bar
from rlhf_edu.validation import check_nonnegative, check_positive

__all__ = ["run_steps", "optimizer_step", "NonFiniteLossError", "check_finite_loss", "check_finite_grads",
           "check_optimizer_settings", "check_max_grad_norm"]


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN or inf during training; no update was made with it.

    Attributes: ``step`` (the step whose loss was not finite, or None outside ``run_steps``) and
    ``history`` (the ``History`` of the steps before it, or None), so a run can be inspected or resumed.
    """

    def __init__(self, message: str, step: int | None = None, history=None):
        super().__init__(message)
        self.step, self.history = step, history


def check_finite_loss(loss: torch.Tensor, what: str = "loss") -> None:
    """Raise ``NonFiniteLossError`` if the scalar ``loss`` is NaN or inf (call it before ``backward``)."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise NonFiniteLossError(f"the {what} is {float(loss.detach().reshape(-1)[0])}: not updating the model "
                                 "(a NaN/inf input, a log of 0, or a diverging run)")


def check_finite_grads(parameters) -> None:
    """Raise ``NonFiniteLossError`` (and drop the gradients) if any gradient holds NaN or inf (call it before
    ``optimizer.step()``: a finite loss can still have an infinite gradient)."""
    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return
    # The largest |gradient| is finite exactly when every gradient is: NaN and inf carry through a max, and
    # a max of finite numbers cannot overflow (the 2-norm's sum of squares can). One fused pass over the
    # gradients (torch's foreach norm) and one read: a GPU waits once per step, not once per tensor.
    largest = torch.nn.utils.get_total_norm([p.grad for p in parameters], norm_type=math.inf)
    if not bool(torch.isfinite(largest)):
        for p in parameters:
            p.grad = None
        raise NonFiniteLossError("a gradient is NaN or inf: not updating the model")


def check_max_grad_norm(max_grad_norm):
    """``None`` (no clipping) or ``max_grad_norm`` as a float; ``ValueError`` unless it is finite and > 0
    (``clip_grad_norm_`` scales the gradient by ``max_grad_norm / norm``: a negative value turns every step
    into gradient ASCENT, 0 stops learning). The one rule, for the trainers and both ``optimizer_step`` functions."""
    return None if max_grad_norm is None else check_positive("max_grad_norm", max_grad_norm, finite=True)


def check_optimizer_settings(lr, max_grad_norm=None, weight_decay=0.0) -> tuple:
    """Check a trainer's optimiser arguments before any work; return ``(lr, max_grad_norm, weight_decay)``
    as floats (``max_grad_norm`` may stay ``None``: no clipping).

    Raises ``ValueError`` naming the argument unless ``lr`` is finite and > 0 (``inf`` writes NaN into the
    weights at the first update), ``max_grad_norm`` passes ``check_max_grad_norm``, and ``weight_decay`` is finite and >= 0 (a negative one grows the weights);
    ``TypeError`` for a non-number.

    >>> check_optimizer_settings(1e-3, 1, 0)
    (0.001, 1.0, 0.0)
    >>> check_optimizer_settings(1e-3, max_grad_norm=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: max_grad_norm must be finite and > 0, got -1.0
    """
    lr = check_positive("lr", lr, finite=True)
    max_grad_norm = check_max_grad_norm(max_grad_norm)
    weight_decay = check_nonnegative("weight_decay", weight_decay, finite=True)
    return lr, max_grad_norm, weight_decay


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters, max_grad_norm: float | None):
    """``zero_grad``, ``loss.backward()``, clip the global gradient norm to ``max_grad_norm`` (None: no clip),
    ``step``. ``parameters`` are the ones to clip (those of the optimiser).

    Raises ``NonFiniteLossError`` before any parameter changes if the loss (checked before ``backward``)
    or a gradient (checked before ``step``) is NaN or inf.
    """
    check_max_grad_norm(max_grad_norm)  # a hand-written loop gets the trainers' rule too
    parameters = list(parameters)
    check_finite_loss(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    check_finite_grads(parameters)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()


def run_steps(
    batches: Iterable,
    train_step: Callable[[object], dict],
    *,
    history: History,
    total: int,
    description: str,
    evaluate: Callable[[], dict] | None = None,
    eval_every: int = 1,
    progress: bool = True,
    postfix: tuple = ("loss",),
    parallel=None,
) -> History:
    """Run ``train_step`` over ``batches`` (``total`` of them), logging one ``history`` row per step.

    Args:
        batches: what each step consumes (minibatch indices, a step number, ...).
        train_step: ``batch -> dict`` of the step's metrics (floats or 0-d tensors).
        history: the ``History`` to append to (returned).
        total, description: the progress bar's length and label.
        evaluate: ``() -> dict`` of ``eval_*`` metrics (``rlhf_edu.train.evaluation.evaluator``), or None.
        eval_every: evaluate before steps 0, ``eval_every``, ``2 * eval_every``, ... and after the last.
        progress: show a progress bar (quiet off a terminal).
        postfix: metric names shown on the bar.
        parallel: the run's ``rlhf_edu.train.distributed.DataParallel`` (None: one process). When it is
            distributed, every process logs the metrics reduced over the processes
            (``DataParallel.reduce_metrics``), and only the main process evaluates and shows the bar.

    Raises ``NonFiniteLossError`` (with ``.step`` and ``.history``) when a step's loss or gradient is not
    finite (``optimizer_step`` refused to update), naming the step.

    >>> h = run_steps(range(3), lambda b: {"loss": 1.0 / (b + 1)}, history=History("toy"), total=3,
    ...               description="toy", evaluate=lambda: {"eval_reward": 0.5}, eval_every=2, progress=False)
    >>> h["step"].tolist(), h["loss"].round(2).tolist()[:3], h["eval_reward"].tolist()
    ([0.0, 1.0, 2.0, 3.0], [1.0, 0.5, 0.33], [0.5, nan, 0.5, 0.5])
    """
    main = parallel is None or parallel.is_main
    if not main:
        evaluate = None
    bar = progress_bar(total, description, progress and main)
    start, step = time.perf_counter(), 0
    for batch in batches:
        evaluation = evaluate() if evaluate is not None and step % eval_every == 0 else {}
        try:
            metrics = train_step(batch)
        except NonFiniteLossError as exc:
            bar.close()
            held = f"the weights after step {step - 1}" if step > 0 else "its weights from before training"
            raise NonFiniteLossError(f"{description}: stopped at step {step}: {exc} (the model holds {held}; "
                                     f"error.history has the {len(history)} rows so far)",
                                     step=step, history=history) from exc
        if parallel is not None:
            metrics = parallel.reduce_metrics(metrics)
        history.log(step=step, **metrics, seconds=time.perf_counter() - start, **evaluation)
        bar.update(1)
        bar.set_postfix({k: f"{float(metrics[k]):.3f}" for k in postfix if k in metrics})
        step += 1
    bar.close()
    if evaluate is not None:
        history.log(step=step, seconds=time.perf_counter() - start, **evaluate())
    return history
