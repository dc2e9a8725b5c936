"""Saving and loading the book's models in safetensors: plain LMs, reward models and value models.

A plain Hugging Face LM is saved with ``save_pretrained`` (``model.safetensors`` + ``config.json``), so
the folder also opens with ``AutoModelForCausalLM.from_pretrained``. A ``RewardModel`` or ``ValueModel``
is saved as its backbone's folder (``backbone/``), its head in ``head.safetensors`` and a small
``rlhf_edu.json`` saying what to rebuild. Loading gives bitwise the same outputs. Used by the trainers'
checkpoints and by chapters that reuse a trained SFT or reward model (1, 4, 5, 6).
"""

from __future__ import annotations

import contextlib
import json
import os

import torch

__all__ = ["save_model", "load_model"]

_META_FILE = "rlhf_edu.json"
_HEAD_FILE = "head.safetensors"
_BACKBONE_DIR = "backbone"
_FORMAT = 1


@contextlib.contextmanager
def _quiet_progress():
    """Hide transformers' per-shard progress bars (noise in notebooks) for the duration of a save/load."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _attn_implementation(model):
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def save_model(model, path, tokenizer=None):
    """Save ``model`` (a Hugging Face LM, ``RewardModel`` or ``ValueModel``) and optionally its tokenizer.

    ``path`` is a folder (created if needed). Weights go to safetensors; the tokenizer, if given, is saved
    in the same folder with ``save_pretrained``. Returns ``path``.

    >>> import tempfile
    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer(); model = tiny_causal_lm(tok, d_model=32, n_layer=1)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save_model(model, d, tok)
    ...     again = load_model(d)
    >>> torch.equal(again.lm_head.weight, model.lm_head.weight)
    True
    """
    from rlhf_edu.lm.heads import RewardModel, ValueModel

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    with _quiet_progress():
        if isinstance(model, (RewardModel, ValueModel)):
            from safetensors.torch import save_file

            backbone = model.backbone
            backbone.save_pretrained(os.path.join(path, _BACKBONE_DIR))
            head = {k: v.detach().contiguous().cpu() for k, v in model.head.state_dict().items()}
            save_file(head, os.path.join(path, _HEAD_FILE))
            meta = {
                "format": _FORMAT,
                "kind": type(model).__name__,
                "backbone_class": type(backbone).__name__,
                "init_std": model.init_std,
                "attn_implementation": _attn_implementation(backbone),
            }
        elif hasattr(model, "save_pretrained"):
            model.save_pretrained(path)
            meta = {
                "format": _FORMAT,
                "kind": "causal_lm",
                "model_class": type(model).__name__,
                "attn_implementation": _attn_implementation(model),
            }
        else:
            raise TypeError(
                f"model must be a Hugging Face model, RewardModel or ValueModel, got {type(model).__name__}"
            )
        with open(os.path.join(path, _META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
    return path


def _load_hf(folder, class_name, attn_implementation):
    import transformers

    cls = getattr(transformers, class_name, None) if class_name else None
    if cls is None:
        cls = transformers.AutoModelForCausalLM
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return cls.from_pretrained(folder, **kwargs)


def load_model(path, device=None, return_tokenizer=False):
    """Load what ``save_model`` saved (or any local ``save_pretrained`` folder of a causal LM).

    Returns the model in eval mode, on ``device`` if given (``"auto"``, ``"cpu"``, ``"cuda"``, ...);
    with ``return_tokenizer=True`` returns ``(model, tokenizer)`` (``None`` if no tokenizer was saved).
    Outputs are bitwise identical to the saved model's on the same device. Example in ``save_model``.
    """
    from rlhf_edu.lm.device import resolve_device
    from rlhf_edu.lm.heads import RewardModel, ValueModel

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no saved model folder at {path!r}")
    meta_file = os.path.join(path, _META_FILE)
    meta = {}
    if os.path.exists(meta_file):
        with open(meta_file, encoding="utf-8") as f:
            meta = json.load(f)
    with _quiet_progress():
        kind = meta.get("kind", "causal_lm")
        if kind in ("RewardModel", "ValueModel"):
            from safetensors.torch import load_file

            backbone = _load_hf(os.path.join(path, _BACKBONE_DIR), meta["backbone_class"], meta.get("attn_implementation"))
            cls = RewardModel if kind == "RewardModel" else ValueModel
            model = cls(backbone, init_std=meta.get("init_std"), seed=0)
            head = load_file(os.path.join(path, _HEAD_FILE))
            model.head.load_state_dict({k: v.to(model.head.weight.dtype) for k, v in head.items()})
        elif kind == "causal_lm":
            model = _load_hf(path, meta.get("model_class"), meta.get("attn_implementation"))
        else:
            raise ValueError(f"{meta_file} names an unknown kind {kind!r}")
        tokenizer = None
        if return_tokenizer and os.path.exists(os.path.join(path, "tokenizer_config.json")):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
    if device is not None:
        model = model.to(resolve_device(device))
    model.eval()
    return (model, tokenizer) if return_tokenizer else model
