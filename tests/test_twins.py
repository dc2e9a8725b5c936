"""The twin harness: every public NumPy reference against its PyTorch twin, values and gradients.

Pairs are found automatically from ``rlhf_edu.numpy.MODULES``; inputs come from
``tests/twin_cases/<module>.py``. See ``tests/twin_harness.py`` for the conventions.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
import torch

from rlhf_edu.numpy import MODULES
from twin_harness import TOLERANCES, Case, assert_close, to_numpy, to_torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    ),
]


def _reference_functions():
    """(module, name) for every public NumPy reference that is not itself an analytic gradient."""
    pairs = []
    for m in MODULES:
        ref = importlib.import_module(f"rlhf_edu.numpy.{m}")
        for name in ref.__all__:
            if name.endswith("_grad") and name[: -len("_grad")] in ref.__all__:
                continue
            pairs.append((m, name))
    return pairs


def _numpy_only(m):
    return getattr(importlib.import_module(f"rlhf_edu.numpy.{m}"), "NUMPY_ONLY", {})


def _cases(m, name):
    return importlib.import_module(f"twin_cases.{m}").CASES.get(name, [])


PAIRS = _reference_functions()
TWINNED = [(m, n) for m, n in PAIRS if n not in _numpy_only(m)]
CASE_PARAMS = [
    pytest.param(m, n, i, id=f"{m}.{n}[{c.id or i}]") for m, n in TWINNED for i, c in enumerate(_cases(m, n))
]
GRAD_PARAMS = [p for p in CASE_PARAMS if _cases(p.values[0], p.values[1])[p.values[2]].grad]


def test_every_module_has_functions():
    for m in MODULES:
        ref = importlib.import_module(f"rlhf_edu.numpy.{m}")
        assert ref.__all__, f"rlhf_edu.numpy.{m} exports nothing"


@pytest.mark.parametrize("m,name", PAIRS, ids=[f"{m}.{n}" for m, n in PAIRS])
def test_twin_exists_with_same_positional_arguments(m, name):
    if name in _numpy_only(m):
        reason = _numpy_only(m)[name]
        assert isinstance(reason, str) and len(reason) > 10, f"NUMPY_ONLY[{name!r}] needs a reason"
        return
    twin_module = importlib.import_module(f"rlhf_edu.torch.{m}")
    assert name in twin_module.__all__, f"rlhf_edu.torch.{m} has no twin for {name}"
    ref = getattr(importlib.import_module(f"rlhf_edu.numpy.{m}"), name)
    twin = getattr(twin_module, name)

    def positional(f):
        return [
            p.name
            for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    assert positional(twin) == positional(ref), f"{name}: positional arguments differ"


@pytest.mark.parametrize("m,name", TWINNED, ids=[f"{m}.{n}" for m, n in TWINNED])
def test_every_twin_has_a_case(m, name):
    assert _cases(m, name), f"tests/twin_cases/{m}.py has no Case for {name}"


def _call(fn, case: Case, dtype=None, device=None, grad=False):
    sig = inspect.signature(fn)
    names = list(sig.parameters)
    args, kwargs = list(case.args), dict(case.kwargs)
    leaves = {}
    if dtype is not None:
        for i, a in enumerate(args):
            want = grad and names[i] in case.grad
            args[i] = to_torch(a, dtype, device, requires_grad=want)
            if want:
                leaves[names[i]] = args[i]
        for k, a in kwargs.items():
            want = grad and k in case.grad
            kwargs[k] = to_torch(a, dtype, device, requires_grad=want)
            if want:
                leaves[k] = kwargs[k]
    return fn(*args, **kwargs), leaves


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("m,name,i", CASE_PARAMS)
def test_twin_values_match_reference(m, name, i, dtype, device):
    case = _cases(m, name)[i]
    ref = getattr(importlib.import_module(f"rlhf_edu.numpy.{m}"), name)
    twin = getattr(importlib.import_module(f"rlhf_edu.torch.{m}"), name)
    expected, _ = _call(ref, case)
    got, _ = _call(twin, case, dtype, device)
    if isinstance(got, torch.Tensor) and got.is_floating_point():
        assert got.dtype == dtype, f"{name} returned {got.dtype} for {dtype} inputs"
        assert got.device.type == device, f"{name} moved its output to {got.device}"
    got, expected = to_numpy(got), to_numpy(expected)
    if case.output is not None:
        got, expected = case.output(got), case.output(expected)
    rtol, atol = case.tol or TOLERANCES[dtype]
    if dtype == torch.float32 and case.tol is None:
        # float32 rounding grows with the size of the numbers: compare relative to their scale
        scale = max(1.0, float(np.max(np.abs(_flat(expected)))) if _flat(expected).size else 1.0)
        atol = atol * scale
    assert_close(got, expected, rtol, atol, where=name)


def _flat(x):
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        parts = [_flat(v) for v in x]
        return np.concatenate(parts) if parts else np.zeros(0)
    try:
        arr = np.asarray(x, dtype=float).ravel()
    except (TypeError, ValueError):
        return np.zeros(0)
    return arr[np.isfinite(arr)]


def _scalar_output(out):
    """Sum every floating tensor in an output, for gradients of sum(f(...))."""
    if isinstance(out, torch.Tensor):
        return out.sum() if out.is_floating_point() else 0.0
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return sum(_scalar_output(o) for o in out)
    return 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,name,i", GRAD_PARAMS)
def test_twin_gradients(m, name, i, device):
    case = _cases(m, name)[i]
    ref_module = importlib.import_module(f"rlhf_edu.numpy.{m}")
    twin = getattr(importlib.import_module(f"rlhf_edu.torch.{m}"), name)
    analytic = getattr(ref_module, f"{name}_grad", None)
    if analytic is not None:
        expected, _ = _call(analytic, case)
        out, leaves = _call(twin, case, torch.float64, device, grad=True)
        grads = torch.autograd.grad(_scalar_output(out), list(leaves.values()), allow_unused=True)
        got = {k: (g if g is not None else torch.zeros_like(leaves[k])) for k, g in zip(leaves, grads)}
        assert set(expected) == set(case.grad), f"{name}_grad returns {set(expected)}, case wants {case.grad}"
        assert_close(to_numpy(got), {k: np.asarray(v) for k, v in expected.items()}, 1e-8, 1e-10, f"grad {name}")
    else:
        _, leaves = _call(twin, case, torch.float64, device, grad=True)
        names = list(leaves)

        def f(*xs):
            sig_names = list(inspect.signature(twin).parameters)
            args = [to_torch(a, torch.float64, device) for a in case.args]
            kwargs = {k: to_torch(v, torch.float64, device) for k, v in case.kwargs.items()}
            for n, x in zip(names, xs):
                if n in kwargs or n not in sig_names[: len(args)]:
                    kwargs[n] = x
                else:
                    args[sig_names.index(n)] = x
            out = twin(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else _scalar_output(out)

        inputs = tuple(leaves.values())
        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
