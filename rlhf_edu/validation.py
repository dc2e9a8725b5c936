"""Input checks shared by the NumPy references and the PyTorch twins.

Every public function of the book validates what a student may get wrong (shapes, probabilities that do
not sum to one, beta <= 0, empty masks) and raises a ``ValueError`` or ``TypeError`` that names the
argument, instead of returning a silently wrong number. The checks accept NumPy arrays, Python scalars
and torch tensors alike, so one implementation serves both trees.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "as_float_array",
    "check_choice",
    "check_positive",
    "check_nonnegative",
    "check_in_range",
    "check_probabilities",
    "check_same_shape",
    "check_broadcastable",
    "check_mask",
    "check_min_size",
    "check_integer",
    "check_binary",
    "check_values_in_range",
    "as_float_tensor",
    "check_finite",
    "allows_neg_inf",
    "LOGP_TOLERANCE",
    "check_logprobs",
]

#: How far above 0 a log-probability may lie before it is an error rather than float rounding: summed
#: float32 log-softmax values of a long completion can come out a few 1e-5 above the exact 0 of a token
#: of probability 1, while the mistakes this catches (a sign flip, a sum of probabilities instead of
#: log-probabilities) give values of order 1 and more.
LOGP_TOLERANCE = 1e-3


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _to_numpy(x) -> np.ndarray:
    """A read-only NumPy view of ``x`` for checking (tensors are detached and moved to the CPU)."""
    if _is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def allows_neg_inf(name: str) -> bool:
    """Whether an argument called ``name`` may hold ``-inf``: log-probabilities and logits, where ``-inf``
    means probability 0 (a masked token). Everything else must be finite.

    >>> allows_neg_inf("logp_ref"), allows_neg_inf("logits_p"), allows_neg_inf("rewards")
    (True, True, False)
    """
    return "logp" in name or "logit" in name


def check_finite(name: str, x, *, allow_neg_inf: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` if the array ``x`` holds NaN or +inf (or -inf, unless allowed).

    One ``isfinite`` reduction on the fast path (a single device sync for a tensor); the index of the
    first bad entry is looked up only when raising. Integer and boolean arrays pass. A NaN that gets
    into a loss reaches every parameter through the gradient, so the library refuses it at the door.

    >>> check_finite("rewards", [1.0, float("nan")])
    Traceback (most recent call last):
    ...
    ValueError: rewards contains NaN (first at index (1,)): every result computed from it would be NaN
    >>> check_finite("logp", [-1.0, float("-inf")], allow_neg_inf=True)   # log-prob of a masked token
    """
    if _is_tensor(x):
        import torch

        if not (x.is_floating_point() or x.is_complex()) or bool(torch.isfinite(x).all()):
            return
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.floating) or bool(np.isfinite(arr).all()):
            return
    for bad, what, why in (
        (np.isnan(arr), "NaN", "every result computed from it would be NaN"),
        (np.isposinf(arr), "+inf", "only finite values are meaningful here"),
        (None if allow_neg_inf else np.isneginf(arr), "-inf",
         "only log-probabilities and logits may be -inf (probability 0)"),
    ):
        if bad is not None and bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} contains {what} (first at index {index}): {why}")


def check_logprobs(name: str, x, *, tol: float = LOGP_TOLERANCE) -> None:
    """Raise ``ValueError`` unless every entry of ``x`` can be a log-probability: ``<= tol``, not NaN.

    ``log p <= 0`` for a probability; exactly 0 (probability 1) is valid, and values up to ``tol`` above 0
    are accepted as float rounding. A larger positive value is almost always a mistake upstream: a sign
    flip (a negative log-likelihood passed as a log-prob), or probabilities/logits passed instead of
    log-probabilities. ``-inf`` (probability 0) is allowed.

    >>> check_logprobs("policy_chosen_logps", [-3.2, 0.0])
    >>> check_logprobs("policy_chosen_logps", [12.5])
    Traceback (most recent call last):
    ...
    ValueError: policy_chosen_logps must be log-probabilities (<= 0), found 12.5 at index (0,): a sign flip (a negative log-likelihood passed as a log-prob) or probabilities/logits instead of log-probs?
    """
    check_finite(name, x, allow_neg_inf=True)
    if _is_tensor(x):
        import torch

        if not bool((x > tol).any()):
            return
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(x)
        if not bool(np.any(arr > tol)):
            return
    index = tuple(int(i) for i in np.argwhere(arr > tol)[0])
    raise ValueError(
        f"{name} must be log-probabilities (<= 0), found {float(arr[index]):.6g} at index {index}: a sign flip "
        "(a negative log-likelihood passed as a log-prob) or probabilities/logits instead of log-probs?"
    )


def as_float_array(name: str, x, *, finite: bool = True, allow_neg_inf: bool | None = None) -> np.ndarray:
    """``np.asarray(x, dtype=float)`` that names the argument when ``x`` is not numeric or not finite.

    With ``finite=True`` (the default) NaN and +inf raise ``ValueError``, and so does -inf unless
    ``allow_neg_inf`` (default: ``allows_neg_inf(name)``, i.e. log-probs and logits). ``finite=False``
    leaves the check to the caller (e.g. padding that may hold anything).

    >>> as_float_array("p", [0.5, 0.5])
    array([0.5, 0.5])
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if finite:
        check_finite(name, arr, allow_neg_inf=allows_neg_inf(name) if allow_neg_inf is None else allow_neg_inf)
    return arr


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(repr, choices))}, got {value!r}")


def _check_real_scalar(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if _is_tensor(value) and value.numel() == 1:
            return float(value)
        if isinstance(value, np.ndarray) and value.size == 1:
            return float(value)
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_positive(name: str, value, *, finite: bool = False) -> float:
    """Raise ``ValueError`` unless the scalar ``value`` is > 0 (e.g. ``beta``); with ``finite=True`` also
    unless it is finite (a learning rate of ``inf`` would write NaN into the weights)."""
    v = _check_real_scalar(name, value)
    if not v > 0 or (finite and v == float("inf")):
        raise ValueError(f"{name} must be {'finite and ' if finite else ''}> 0, got {value}")
    return v


def check_nonnegative(name: str, value, *, finite: bool = False) -> float:
    """Raise ``ValueError`` unless the scalar ``value`` is >= 0 (and finite, with ``finite=True``)."""
    v = _check_real_scalar(name, value)
    if not v >= 0 or (finite and v == float("inf")):
        raise ValueError(f"{name} must be {'finite and ' if finite else ''}>= 0, got {value}")
    return v


def check_in_range(name: str, value, low, high, *, low_open=False, high_open=False) -> float:
    """Raise ``ValueError`` unless ``low <= value <= high`` (open ends on request)."""
    v = _check_real_scalar(name, value)
    ok_low = v > low if low_open else v >= low
    ok_high = v < high if high_open else v <= high
    if not (ok_low and ok_high):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lb}{low}, {high}{hb}, got {value}")
    return v


def check_integer(name: str, value, minimum=None) -> int:
    """Raise ``TypeError`` unless ``value`` is an integer, ``ValueError`` if below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_probabilities(name: str, p, axis: int = -1, atol: float = 1e-6) -> None:
    """Raise ``ValueError`` unless ``p`` holds distributions along ``axis``.

    Entries must be finite and non-negative and sum to 1 within ``atol`` (float32 inputs get at least
    1e-5, since their rounding alone can exceed 1e-6).
    """
    arr = _to_numpy(p)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (a distribution), got a scalar")
    if arr.shape[axis] == 0:
        raise ValueError(f"{name} is empty along axis {axis}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(arr < 0):
        raise ValueError(f"{name} has negative probabilities (min {arr.min():.3g})")
    if arr.dtype == np.float32 or arr.dtype == np.float16:
        atol = max(atol, 1e-5 if arr.dtype == np.float32 else 1e-3)
    sums = arr.sum(axis=axis)
    bad = np.abs(sums - 1.0) > atol
    if np.any(bad):
        worst = sums[bad].flat[0] if np.ndim(sums) else float(sums)
        raise ValueError(f"{name} must sum to 1 along axis {axis}; found a sum of {worst:.6g}")


def _shape(x):
    if _is_tensor(x):
        return tuple(x.shape)
    return np.shape(x)


def check_same_shape(**arrays) -> tuple:
    """Raise ``ValueError`` unless all the named arrays have one shape; return that shape.

    >>> check_same_shape(logp=np.zeros(3), logp_ref=np.zeros(3))
    (3,)
    """
    shapes = {k: _shape(v) for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shapes must match: {desc}")
    return next(iter(shapes.values())) if shapes else ()


def check_broadcastable(**arrays) -> tuple:
    """Raise ``ValueError`` unless the named arrays broadcast together; return the broadcast shape."""
    shapes = {k: _shape(v) for k, v in arrays.items() if v is not None}
    try:
        return np.broadcast_shapes(*shapes.values())
    except ValueError:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shapes do not broadcast: {desc}") from None


def check_mask(name: str, mask, *, per_row: bool = False) -> None:
    """Raise ``ValueError`` unless ``mask`` holds only 0/1 and is not all zero.

    With ``per_row=True`` every row (all axes but the last) must keep at least one element, as needed
    when a loss divides by each sequence's length.
    """
    arr = _to_numpy(mask)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0 and 1 (or booleans)")
    if not np.any(arr):
        raise ValueError(f"{name} is all zero: no element would contribute")
    if per_row and arr.ndim >= 1:
        rows = arr.reshape(-1, arr.shape[-1]).sum(axis=-1)
        if np.any(rows == 0):
            raise ValueError(f"{name} has a row with no ones: row {int(np.argmin(rows))} would divide by zero")


def check_min_size(name: str, x, minimum: int, axis: int = -1) -> None:
    """Raise ``ValueError`` unless ``x`` has at least ``minimum`` entries along ``axis``."""
    shape = _shape(x)
    if len(shape) == 0:
        raise ValueError(f"{name} must have at least one axis, got a scalar")
    if shape[axis] < minimum:
        raise ValueError(f"{name} needs at least {minimum} entries along axis {axis}, got {shape[axis]}")


def check_binary(name: str, x) -> None:
    """Raise ``ValueError`` unless ``x`` holds only 0/1 or booleans (e.g. KTO's ``desirable`` flags).

    Unlike ``check_mask``, an all-zero array is fine (a batch may hold only undesirable examples).

    >>> check_binary("desirable", [True, False])
    """
    arr = _to_numpy(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be booleans or 0/1 numbers, got dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0 and 1 (or booleans)")


def check_values_in_range(name: str, x, low=-np.inf, high=np.inf, *, low_open=False, high_open=False) -> None:
    """Raise ``ValueError`` unless every entry of the array ``x`` lies in ``[low, high]`` (open ends on request).

    NaN is always rejected. E.g. sequence lengths ``(0, inf)``, mean log-probabilities ``(-inf, 0]``.

    >>> check_values_in_range("lengths", [3, 5], 0, np.inf, low_open=True)
    """
    arr = _to_numpy(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN")
    ok_low = arr > low if low_open else arr >= low
    ok_high = arr < high if high_open else arr <= high
    bad = ~(ok_low & ok_high)
    if np.any(bad):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        worst = arr[bad].flat[0]
        raise ValueError(f"{name} must lie in {lb}{low}, {high}{hb} everywhere; found {worst:.6g}")


def as_float_tensor(name: str, x, like=None, *, finite: bool = True, allow_neg_inf: bool | None = None):
    """The twins' ``as_float_array``: ``x`` as a floating torch tensor, naming the argument if it is not numeric.

    A floating tensor passes through untouched (same device, dtype and autograd graph). Anything else
    (Python numbers, lists, NumPy arrays, integer or boolean tensors) is converted: to the dtype and
    device of the tensor ``like`` when given (so ``margin=0.5`` follows ``r_chosen``), else to float64 for
    NumPy/Python input (as ``as_float_array`` would) and the default float dtype for integer tensors.
    ``finite`` and ``allow_neg_inf`` as in ``as_float_array`` (NaN and inf raise ``ValueError``).

    >>> import torch
    >>> as_float_tensor("margin", 0.5, like=torch.zeros(2, dtype=torch.float32))
    tensor(0.5000)
    """
    import torch

    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real, got dtype {x.dtype}")
        if x.is_floating_point():
            if finite:
                check_finite(name, x, allow_neg_inf=allows_neg_inf(name) if allow_neg_inf is None else allow_neg_inf)
            return x
        dtype = like.dtype if like is not None and like.is_floating_point() else torch.get_default_dtype()
        return x.to(dtype=dtype, device=like.device if like is not None else x.device)
    arr = as_float_array(name, x, finite=finite, allow_neg_inf=allow_neg_inf)
    if like is not None:
        dtype = like.dtype if like.is_floating_point() else None
        return torch.as_tensor(arr, dtype=dtype, device=like.device)
    return torch.as_tensor(arr)
