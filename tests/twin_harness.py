"""The machinery of the twin harness (``tests/test_twins.py``).

Each module ``rlhf_edu.numpy.<m>`` gets a case file ``tests/twin_cases/<m>.py`` that defines
``CASES = {"function_name": [Case(...), ...]}``. A case holds NumPy inputs; the harness runs the NumPy
reference on them and the torch twin on the same inputs converted to tensors (float64 and float32, on the
CPU and on CUDA when present) and compares:

- values: float64 to 1e-10, float32 to 1e-5 (relative and absolute);
- gradients: for the arguments named in ``Case.grad``, autograd of the twin against the NumPy analytic
  gradient ``<function>_grad`` where the reference module has one, else ``torch.autograd.gradcheck``.

Conventions the harness relies on:

- a NumPy function named ``<f>_grad`` is the analytic gradient of ``sum(<f>(...))``; it takes the same
  arguments as ``<f>`` and returns a dict ``{argument name: gradient}``; its twin is autograd, so the
  torch module need not define it;
- a reference module may declare ``NUMPY_ONLY = {"name": "why"}`` for functions that have no twin on
  purpose (e.g. a SciPy-based fit); every other public name needs a twin with the same positional
  parameter names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch


@dataclasses.dataclass
class Case:
    """One input to a function pair.

    args/kwargs: NumPy arrays, Python scalars, strings, or None. Float arrays become float tensors of the
    dtype under test; integer and boolean arrays keep their dtype.
    grad: names of the float array arguments to differentiate (positional or keyword).
    id: a short label shown in the test name.
    output: optional function mapping an output (of either tree, already converted to NumPy) to what
    is compared, for functions that return objects.
    tol: optional (rtol, atol) overriding the dtype defaults, for ill-conditioned cases.
    """

    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    grad: tuple = ()
    id: str = ""
    output: Callable[[Any], Any] | None = None
    tol: tuple | None = None


TOLERANCES = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5)}


def to_torch(x, dtype, device, requires_grad=False):
    """Convert one NumPy input to what a twin takes."""
    if isinstance(x, np.ndarray):
        if np.issubdtype(x.dtype, np.floating):
            t = torch.tensor(x, dtype=dtype, device=device)
            return t.requires_grad_(requires_grad)
        return torch.tensor(x, device=device)
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, np.ndarray) for v in x):
        return type(x)(to_torch(v, dtype, device) for v in x)
    return x


def to_numpy(x):
    """Convert a twin's output (tensor, tuple, dict, scalar, object with tensors) to NumPy."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(v) for v in x) if not hasattr(x, "_fields") else tuple(to_numpy(v) for v in x)
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: to_numpy(getattr(x, f.name)) for f in dataclasses.fields(x)}
    return x


def assert_close(got, expected, rtol, atol, where="output"):
    """Recursive comparison of nested outputs with a message that says where they differ."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), f"{where}: keys {got} vs {expected}"
        for k in expected:
            assert_close(got[k], expected[k], rtol, atol, f"{where}[{k!r}]")
        return
    if isinstance(expected, (list, tuple)) and not isinstance(expected, str):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), f"{where}: length differs"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_close(g, e, rtol, atol, f"{where}[{i}]")
        return
    if isinstance(expected, str) or expected is None:
        assert got == expected, f"{where}: {got!r} != {expected!r}"
        return
    g = np.asarray(got, dtype=float) if np.asarray(got).dtype != object else got
    e = np.asarray(expected, dtype=float) if np.asarray(expected).dtype != object else expected
    assert np.shape(g) == np.shape(e), f"{where}: shape {np.shape(g)} vs reference {np.shape(e)}"
    np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=where, equal_nan=True)
