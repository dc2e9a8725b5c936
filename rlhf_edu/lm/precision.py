"""Mixed precision for the trainers: ``resolve_dtype`` and ``mixed_precision``.

Every trainer takes ``dtype="float32"`` (the default) or ``"bfloat16"``. With bfloat16 the forward passes
(training, reference, reward and value models, sampling) run under ``torch.autocast``: the matrix
multiplications run in bfloat16, while the weights and the optimiser state stay float32. This is what
Hugging Face ``Trainer(bf16=True)`` and ``accelerate``'s ``mixed_precision="bf16"`` do. Log-probs,
rewards and values are upcast to float32 as they leave the model (``rlhf_edu.lm.token_logprobs``,
``RewardModel``, ``ValueModel``), so the losses, advantages and KL estimates are float32 tensors.

float16 is refused: its 5 exponent bits underflow small gradients unless the loss is scaled
(``torch.amp.GradScaler``), which the trainers do not do. bfloat16 keeps float32's exponent range and
needs no scaling; on CUDA it needs an Ampere (compute capability 8.0) or newer GPU. The CPU runs it too
(slower than float32 on most CPUs: the tests use it to check the code path, not for speed).

Sources: PyTorch, "Automatic Mixed Precision" (https://pytorch.org/docs/stable/amp.html); Micikevicius et
al., "Mixed Precision Training" (2018): float32 master weights, half-precision arithmetic.
"""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "resolve_dtype", "MixedPrecision", "mixed_precision"]

#: The ``dtype`` values the trainers accept (torch.float32 and torch.bfloat16 are accepted too).
DTYPES = ("float32", "bfloat16")

_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype="float32", device="cpu") -> torch.dtype:
    """Turn ``"float32"`` / ``"bfloat16"`` (or ``torch.float32`` / ``torch.bfloat16``) into a ``torch.dtype``
    that ``device`` can compute in.

    Raises ``ValueError`` naming ``dtype`` for an unknown value, for float16 (it needs loss scaling, which
    the trainers do not do: use bfloat16), and for bfloat16 on a CUDA device without bfloat16 support
    (older than Ampere); ``TypeError`` for a value that is neither a string nor a ``torch.dtype``.

    >>> resolve_dtype("bfloat16", "cpu")
    torch.bfloat16
    >>> resolve_dtype("float16", "cpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: dtype='float16' is not supported: float16 needs loss scaling ...
    """
    name = str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype
    if not isinstance(name, str):
        raise TypeError(f"dtype must be 'float32', 'bfloat16' or a torch.dtype, got {type(dtype).__name__}")
    if name in ("float16", "half"):
        raise ValueError(f"dtype={name!r} is not supported: float16 needs loss scaling (torch.amp.GradScaler), "
                         "which the trainers do not do; use dtype='bfloat16' (same range as float32, no scaling)")
    if name not in _BY_NAME:
        raise ValueError(f"dtype must be one of {DTYPES} (or torch.float32, torch.bfloat16), got {dtype!r}")
    resolved = _BY_NAME[name]
    device = torch.device(device)
    if resolved == torch.bfloat16 and device.type == "cuda":
        with torch.cuda.device(device):
            supported = torch.cuda.is_bf16_supported(including_emulation=False)
        if not supported:
            raise ValueError(f"dtype='bfloat16' was requested but {torch.cuda.get_device_name(device)} does not "
                             "support bfloat16 (it needs compute capability 8.0, Ampere, or newer); use dtype='float32'")
    return resolved


class MixedPrecision:
    """A reusable context manager: ``torch.autocast(device_type, dtype)`` for bfloat16, nothing for float32.

    Each ``with`` enters a fresh ``torch.autocast``, so one object serves every forward pass of a run and
    nests safely. With float32 it does nothing at all: a float32 run computes exactly what it computed
    without it. Leave the ``with`` before ``backward`` (PyTorch's advice: the backward ops then run in the
    dtypes the forward ops chose). Attributes: ``dtype``, ``device_type``, ``enabled``.
    """

    def __init__(self, dtype: torch.dtype, device_type: str):
        self.dtype, self.device_type = dtype, device_type
        self.enabled = dtype != torch.float32
        self._entered = []

    def __enter__(self):
        if self.enabled:
            context = torch.autocast(self.device_type, dtype=self.dtype)
            context.__enter__()
            self._entered.append(context)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            return self._entered.pop().__exit__(*exc)
        return False

    def __repr__(self):
        return f"MixedPrecision({str(self.dtype).removeprefix('torch.')!r}, {self.device_type!r})"


def mixed_precision(dtype="float32", device="cpu") -> MixedPrecision:
    """The context the trainers run their forward passes under: ``with autocast: logp = token_logprobs(...)``.

    ``dtype`` and ``device`` as in ``resolve_dtype`` (same errors). bfloat16: autocast to bfloat16 on
    ``device``'s type (weights and optimiser state stay float32; log-probs, rewards and values come out
    float32); float32: no autocast.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm, token_logprobs
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> with mixed_precision("bfloat16", "cpu"):
    ...     lp = token_logprobs(model, torch.tensor([[1, 31, 32]]))
    >>> lp.dtype, next(model.parameters()).dtype
    (torch.float32, torch.float32)
    """
    device = torch.device(device)
    return MixedPrecision(resolve_dtype(dtype, device), device.type)
