"""The mechanism behind every ``rlhf_edu.exercises.check_<name>``.

A checker runs the student's function and the library's reference (the solution lives in the library,
never in the notebook) on edge-case inputs and on random inputs from a fixed seed, and prints either a pass
message or the first failing input with the expected and the received output. It never raises on a wrong
answer (a notebook must keep running); a function that raises ``NotImplementedError`` (the stub that the
student edition, ``make student``, puts in place of a solution) is reported as not done yet rather than wrong.
It returns an :class:`ExerciseResult` that is truthy when passed.

Each chapter's checkers are written with :func:`make_checker`::

    check_bt_prob = make_checker(
        "bt_prob", reference=rn.bradley_terry_prob,
        edge_cases=[((0.0, 0.0), {})],
        random_case=lambda rng: ((rng.normal(size=5), rng.normal(size=5)), {}),
    )
    check_bt_prob(lambda a, b: 1 / (1 + np.exp(b - a)))   # prints "PASS bt_prob: 23 checks"
"""

from __future__ import annotations

import dataclasses
import traceback
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["ExerciseResult", "make_checker", "compare_outputs", "prediction_result"]


@dataclasses.dataclass
class ExerciseResult:
    """What a checker found: ``passed``, how many checks ran, and the message it printed."""

    name: str
    passed: bool
    n_checks: int
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:  # a notebook shows the message, not a dataclass dump
        return self.message


def _to_numpy(x):
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_numpy(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    return x


def compare_outputs(got, expected, rtol=1e-6, atol=1e-8) -> str | None:
    """None when ``got`` matches ``expected`` (nested tuples/dicts of arrays), else why not."""
    got, expected = _to_numpy(got), _to_numpy(expected)
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"expected a dict with keys {sorted(expected)}, got {type(got).__name__} {got!r:.80}"
        for k in expected:
            why = compare_outputs(got[k], expected[k], rtol, atol)
            if why:
                return f"[{k!r}]: {why}"
        return None
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a tuple of {len(expected)} items, got {type(got).__name__}"
        for i, (g, e) in enumerate(zip(got, expected)):
            why = compare_outputs(g, e, rtol, atol)
            if why:
                return f"item {i}: {why}"
        return None
    try:
        g = np.asarray(got, dtype=float)
    except (TypeError, ValueError):
        return f"expected numbers, got {type(got).__name__}"
    e = np.asarray(expected, dtype=float)
    if g.shape != e.shape:
        return f"shape {g.shape}, expected shape {e.shape}"
    if not np.allclose(g, e, rtol=rtol, atol=atol, equal_nan=True):
        return "values differ"
    return None


def _fmt(x, limit=300) -> str:
    x = _to_numpy(x)
    with np.printoptions(precision=6, suppress=False, threshold=20):
        s = repr(x)
    return s if len(s) <= limit else s[:limit] + " ..."


def make_checker(
    name: str,
    reference: Callable[..., Any],
    random_case: Callable[[np.random.Generator], tuple[tuple, dict]],
    edge_cases: Sequence[tuple[tuple, dict]] = (),
    n_random: int = 20,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    hint: str = "",
    expected_errors: Sequence[tuple[tuple, dict, type]] = (),
) -> Callable[..., ExerciseResult]:
    """Build ``check_<name>(student_fn, seed=0, verbose=True)``.

    ``edge_cases`` and ``random_case(rng)`` give ``(args, kwargs)``; the reference's output on them is the
    answer. ``expected_errors`` are ``(args, kwargs, ExceptionType)`` inputs on which a careful solution
    raises (e.g. probabilities that do not sum to one); ``hint`` is printed after a failure.
    """

    def check(student_fn: Callable[..., Any], seed: int = 0, verbose: bool = True) -> ExerciseResult:
        if not callable(student_fn):
            raise TypeError(f"check_{name} expects your function, got {type(student_fn).__name__}")
        rng = np.random.default_rng(seed)
        cases = [("edge case", a, k) for a, k in edge_cases]
        cases += [("random case", *random_case(rng)) for _ in range(n_random)]
        n = 0
        for label, args, kwargs in cases:
            expected = reference(*args, **kwargs)
            try:
                got = student_fn(*args, **kwargs)
            except NotImplementedError:  # the student edition's stub: not started, not wrong
                return _not_done(name, verbose)
            except Exception as exc:  # the student's bug, reported with the input that triggered it
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                return _fail(name, n, label, args, kwargs, f"raised {tb}", expected, None, hint, verbose)
            why = compare_outputs(got, expected, rtol, atol)
            if why:
                return _fail(name, n, label, args, kwargs, why, expected, got, hint, verbose)
            n += 1
        for args, kwargs, error in expected_errors:
            try:
                student_fn(*args, **kwargs)
            except error:
                n += 1
                continue
            except Exception as exc:
                why = f"raised {type(exc).__name__}, expected {error.__name__}"
                return _fail(name, n, "bad input", args, kwargs, why, None, None, hint, verbose)
            why = f"returned normally; a careful solution raises {error.__name__} here"
            return _fail(name, n, "bad input", args, kwargs, why, None, None, hint, verbose)
        message = f"PASS {name}: {n} checks (edge cases, random inputs{', bad inputs' if expected_errors else ''})"
        if verbose:
            print(message)
        return ExerciseResult(name, True, n, message)

    check.__name__ = f"check_{name}"
    check.__doc__ = (
        f"Check your implementation of {name} against ``{reference.__module__}.{reference.__name__}``.\n\n"
        "Prints PASS or the first failing input with expected vs got; returns an ExerciseResult."
    )
    return check


def _not_done(name, verbose) -> ExerciseResult:
    """The result of a function that still raises NotImplementedError (the student edition's stub)."""
    message = (
        f"NOT DONE YET {name}: your function still raises NotImplementedError; replace the lines "
        "`# YOUR CODE HERE` and `raise NotImplementedError()` with your solution and run the cell again."
    )
    if verbose:
        print(message)
    return ExerciseResult(name, False, 0, message)


def prediction_result(name, n, verbose, miss=None) -> ExerciseResult:
    """The result of a predict-then-run checker: PASS after ``n`` matching numbers, or, with ``miss`` =
    ``(where, your prediction, the run's value, the likely misconception)``, FAIL at the first number missed."""
    if miss is None:
        passed, message = True, f"PASS {name}: all {n} numbers match the run"
    else:
        where, got, want, why = miss
        passed = False
        message = "\n".join([f"FAIL {name} after {n} correct numbers: {where}", f"  your prediction: {got:.4g}",
                             f"  the run gives:   {want:.4g}", f"  likely misconception: {why}"])
    if verbose:
        print(message)
    return ExerciseResult(name, passed, n, message)


def _fail(name, n, label, args, kwargs, why, expected, got, hint, verbose) -> ExerciseResult:
    lines = [f"FAIL {name} after {n} passing checks: {why}", f"  on this {label}:"]
    lines += [f"    arg {i}: {_fmt(a)}" for i, a in enumerate(args)]
    lines += [f"    {k} = {_fmt(v)}" for k, v in kwargs.items()]
    if expected is not None:
        lines.append(f"  expected: {_fmt(expected)}")
    if got is not None:
        lines.append(f"  got:      {_fmt(got)}")
    if hint:
        lines.append(f"  hint: {hint}")
    message = "\n".join(lines)
    if verbose:
        print(message)
    return ExerciseResult(name, False, n, message)
