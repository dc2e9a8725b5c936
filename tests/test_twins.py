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
        marks=[pytest.mark.cuda,
               pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")],
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


# ---------------------------------------------------------------- NaN never passes silently (issue 13)

#: (module, function, argument) whose NaN is accepted on purpose, with the reason. Everything else: a NaN
#: in any float array argument must raise ValueError in the NumPy reference and in the torch twin.
NAN_EXEMPT = {
    ("advantages", "gae", "truncation_values"): "read only where truncated is 1 (elsewhere a placeholder)",
    ("advantages", "discounted_returns", "truncation_values"): "read only where truncated is 1",
}


def _nan_params():
    params = []
    for m, name in PAIRS:
        ref_module = importlib.import_module(f"rlhf_edu.numpy.{m}")
        fns = [name] + ([f"{name}_grad"] if f"{name}_grad" in ref_module.__all__ else [])
        for fn_name in fns:
            for i, case in enumerate(_cases(m, name)[:1]):
                sig = list(inspect.signature(getattr(ref_module, fn_name)).parameters)
                slots = [(sig[j], ("args", j)) for j, a in enumerate(case.args) if _is_float_array(a)]
                slots += [(k, ("kwargs", k)) for k, a in case.kwargs.items() if _is_float_array(a)]
                for arg, where in slots:
                    if (m, name, arg) in NAN_EXEMPT:
                        continue
                    params.append(pytest.param(m, fn_name, name, i, where, id=f"{m}.{fn_name}.{arg}"))
    return params


def _is_float_array(a):
    return isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) and a.size > 0


def _with_nan(case: Case, where) -> Case:
    args, kwargs = list(case.args), dict(case.kwargs)
    kind, key = where
    holder = args if kind == "args" else kwargs
    bad = np.array(holder[key], dtype=float, copy=True)
    bad.flat[bad.size // 2] = np.nan  # an entry in the middle (the first may sit in padding)
    holder[key] = bad
    return Case(tuple(args), kwargs)


NAN_PARAMS = _nan_params()


def test_nan_exemptions_have_reasons():
    for key, reason in NAN_EXEMPT.items():
        assert isinstance(reason, str) and len(reason) > 10, key


@pytest.mark.parametrize("m,fn_name,name,i,where", NAN_PARAMS)
def test_nan_input_raises_value_error(m, fn_name, name, i, where):
    case = _with_nan(_cases(m, name)[i], where)
    ref = getattr(importlib.import_module(f"rlhf_edu.numpy.{m}"), fn_name)
    with pytest.raises(ValueError):
        with np.errstate(all="ignore"):
            _call(ref, case)
    if fn_name.endswith("_grad") or name in _numpy_only(m):
        return  # the analytic gradients and NumPy-only functions have no twin
    twin = getattr(importlib.import_module(f"rlhf_edu.torch.{m}"), fn_name)
    with pytest.raises(ValueError):
        _call(twin, case, torch.float64, "cpu")


#: Functions whose cases hold no float array: their float inputs are scalars, checked here with a NaN.
_NAN = float("nan")
NAN_SCALAR_CHECKS = {
    ("mdp", "grid_world"): lambda mod: mod.grid_world((2, 2), terminals=[(0, 0)], step_reward=_NAN),
    ("mdp", "classic_grid_world"): lambda mod: mod.classic_grid_world(gamma=_NAN),
    ("mdp", "two_by_two_world"): lambda mod: mod.two_by_two_world(step_reward=_NAN),
    ("preferences", "fit_bradley_terry"): lambda mod: mod.fit_bradley_terry(
        np.array([0, 1]), np.array([1, 0]), 2, weights=np.array([1.0, _NAN])),
}
#: Functions with no float input at all (nothing can be NaN), with the reason.
NAN_NO_FLOAT_INPUT = {
    ("preferences", "ranking_to_pairs"): "takes a ranking of item indices (integers) only",
    ("mdp", "GridLayout"): "a layout of cells and names (integers and strings), no numbers to compute with",
    ("sampling", "best_of_n_kl_bound"): "takes the integer n only (checked by check_integer)",
    ("anatomy", "llama_parameter_count"): "takes integer sizes and flags only (checked by check_integer)",
}


@pytest.mark.parametrize("key", sorted(NAN_SCALAR_CHECKS), ids=lambda k: f"{k[0]}.{k[1]}")
def test_nan_scalar_input_raises_value_error(key):
    m, name = key
    for tree in ("numpy", "torch"):
        if tree == "torch" and name in _numpy_only(m):
            continue
        with pytest.raises(ValueError):
            NAN_SCALAR_CHECKS[key](importlib.import_module(f"rlhf_edu.{tree}.{m}"))


def test_every_public_function_has_a_nan_check_or_a_reason():
    covered = {(p.values[0], p.values[2]) for p in NAN_PARAMS} | set(NAN_SCALAR_CHECKS)
    for key, reason in NAN_NO_FLOAT_INPUT.items():
        assert isinstance(reason, str) and len(reason) > 10, key
    missing = [f"{m}.{n}" for m, n in PAIRS if (m, n) not in covered and (m, n) not in NAN_NO_FLOAT_INPUT]
    assert not missing, f"no NaN check (add a case with a float array, a scalar check or a reason): {missing}"
