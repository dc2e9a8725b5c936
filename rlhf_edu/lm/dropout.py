r"""Dropout off for RLHF: the policy a loss differentiates must be the function that sampled, or the reference.

Dropout makes a model in train mode a random function. Supervised learning can live with that; RLHF
cannot, because its losses compare the policy with a copy of itself: DPO and KTO compare
:math:`\log\pi_\theta` (train mode) with :math:`\log\pi_{ref}` (eval mode), PPO and GRPO the ratio
:math:`\pi_\theta / \pi_{\theta_{old}}` with :math:`\pi_{\theta_{old}}` recorded in eval mode. With dropout
0.1 (the default of GPT-2's and OPT's configs) DPO's loss at step 0, where :math:`\pi_\theta = \pi_{ref}`, is
not :math:`\log 2` but dropout noise (0.6757 on GPT-2), and so are its logged margins and accuracies; PPO's
first ratio is not 1. Production libraries switch dropout off (TRL's ``disable_dropout=True``); every
trainer of ``rlhf_edu.train`` does the same by default (its ``disable_dropout`` option) with
``disable_dropout_in_model``.

Hugging Face models keep their dropout in three places, and all three must go:

- ``torch.nn.Dropout`` modules (GPT-2's ``attn_dropout``, ``resid_dropout``; GPT-NeoX, Phi, Bloom, ...);
- float rates stored on a module and applied with ``nn.functional.dropout`` or passed to attention
  (``attention_dropout`` of Llama, Mistral, Qwen, Gemma; OPT's ``dropout`` and ``layerdrop``; Falcon's and
  Bloom's ``hidden_dropout``; MPT's ``attn_dropout_p``), which no ``nn.Dropout`` search finds;
- the config, which some models read at every forward (Falcon's ``self.config.hidden_dropout``).

Other train-mode noise goes the same way: layer drop (``layerdrop``, skipping whole layers) and a
mixture-of-experts router's jitter (Mixtral's ``router_jitter_noise``).
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["dropout_rates", "disable_dropout_in_model"]

#: Names of the float attributes and config fields that hold a train-mode noise rate: ``dropout``,
#: ``attention_dropout``, ``resid_pdrop``, ``layerdrop``, ``drop_path_rate``, ``router_jitter_noise``, ...
_NOISE_NAME = re.compile(r"drop|jitter", re.IGNORECASE)

_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _is_rate(name, value):
    return (not name.startswith("_") and isinstance(value, float) and not isinstance(value, bool)
            and _NOISE_NAME.search(name) is not None)


def _configs(model):
    """Every config object reachable from ``model``'s modules, sub-configs (``text_config``, ...) included."""
    seen, stack = {}, [m.config for m in model.modules() if _is_config(getattr(m, "config", None))]
    while stack:
        config = stack.pop()
        if id(config) in seen:
            continue
        seen[id(config)] = config
        stack.extend(v for v in vars(config).values() if _is_config(v))
    return list(seen.values())


def _is_config(obj):
    # Duck-typed: a transformers PretrainedConfig (or a sub-config) without importing transformers here.
    return obj is not None and hasattr(obj, "to_dict") and hasattr(obj, "model_type")


def _noise_sites(model, configs=True):
    """``(owner, attribute, label)`` of every place ``model`` keeps a train-mode noise rate (zero or not):
    its modules, and with ``configs`` its configs."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    sites = []
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, _DROPOUT_MODULES):
            sites.append((module, "p", f"{prefix}p"))
        for name, value in vars(module).items():
            if _is_rate(name, value):
                sites.append((module, name, f"{prefix}{name}"))
    for i, config in enumerate(_configs(model) if configs else ()):
        for name, value in vars(config).items():
            if _is_rate(name, value):
                sites.append((config, name, f"config[{i}]:{type(config).__name__}.{name}"))
    return sites


def dropout_rates(model):
    """Every nonzero dropout (or other train-mode noise) rate held by a module of ``model``: ``{where: rate}``.

    ``where`` is the module's path and the attribute (``"transformer.h.0.attn.attn_dropout.p"``,
    ``"model.decoder.layers.0.dropout"``): the ``p`` of ``torch.nn.Dropout`` modules and the float
    attributes named ``*drop*`` / ``*jitter*`` that modules apply themselves. Empty when the model in train
    mode computes the same function as in eval mode, as far as dropout goes. Config fields are not listed
    (a GPT-2 config always carries ``summary_first_dropout``, which only its double-heads model uses);
    ``disable_dropout_in_model`` zeroes them too.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> dropout_rates(tiny_causal_lm(char_tokenizer(), d_model=32, n_layer=1))   # the book's models: none
    {}
    >>> noisy = tiny_causal_lm(char_tokenizer(), d_model=32, n_layer=1, dropout=0.1)
    >>> dropout_rates(noisy)["transformer.h.0.attn.resid_dropout.p"]
    0.1
    """
    return {label: float(getattr(owner, name)) for owner, name, label in _noise_sites(model, configs=False)
            if getattr(owner, name) != 0}


def disable_dropout_in_model(model):
    r"""Set every dropout rate of ``model`` to 0, in place; returns ``model``.

    Zeroes the ``p`` of every ``torch.nn.Dropout`` module, every float rate a module keeps as an
    attribute whose name contains ``drop`` or ``jitter`` (``attention_dropout``, ``layerdrop``,
    ``router_jitter_noise``, ...), and the same fields of the model's config (and sub-configs), which some
    models read at each forward and ``save_pretrained`` writes. Afterwards ``dropout_rates(model) == {}``
    and ``model.train()`` computes the same function as ``model.eval()``, while staying in train mode for
    everything else (gradient checkpointing, for one, only runs in train mode). TRL's
    ``disable_dropout_in_model`` only does the first of the three, which misses the dropout of Llama-style
    attention and all of OPT's.

    Every trainer of ``rlhf_edu.train`` calls it on the policy and the reference (and PPO's critic, the
    reward model of ``train_reward_model``) unless given ``disable_dropout=False``. The change is
    permanent, like TRL's: a model trained that way is saved with dropout 0.

    >>> import torch
    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm, token_logprobs
    >>> model = tiny_causal_lm(char_tokenizer(), d_model=32, n_layer=1, dropout=0.1).train()
    >>> ids = torch.tensor([[1, 31, 32, 46, 33]])
    >>> torch.equal(token_logprobs(model, ids), token_logprobs(model, ids))   # dropout: a random function
    False
    >>> dropout_rates(disable_dropout_in_model(model))
    {}
    >>> model.training, torch.equal(token_logprobs(model, ids), token_logprobs(model.eval(), ids))
    (True, True)
    """
    for owner, name, _ in _noise_sites(model):
        setattr(owner, name, 0.0)
    return model
