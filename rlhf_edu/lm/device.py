"""Where the tensors live and how the random streams start: ``resolve_device`` and ``set_seed``.

Every trainer and chapter of the book takes ``device="auto"`` (CUDA when present, else the CPU) and a
``seed``, so a run on a laptop CPU and on a GPU is the same code.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from rlhf_edu.validation import check_integer

__all__ = ["resolve_device", "set_seed"]


def resolve_device(device="auto"):
    """Turn ``"auto"`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:1"`` / a ``torch.device`` into a ``torch.device``.

    ``"auto"`` picks CUDA when ``torch.cuda.is_available()`` and the CPU otherwise. Asking for CUDA on a
    machine without it raises a ``ValueError`` that says so (instead of failing later, deep in a forward).
    Used by every trainer (``device="auto"``) and the small-model runs of chapters 1, 4, 5, 6 and 8.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from exc
    if not isinstance(device, torch.device):
        raise TypeError(f"device must be a string or a torch.device, got {type(device).__name__}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available; use device='auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def set_seed(seed):
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Call it once at the top of a notebook or script; the book's functions that sample take their own
    ``seed`` / ``generator`` as well, so their results do not depend on what ran before. Returns ``seed``.

    >>> set_seed(0)
    0
    >>> a = torch.rand(2); _ = set_seed(0); torch.equal(a, torch.rand(2))
    True
    """
    seed = check_integer("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed
