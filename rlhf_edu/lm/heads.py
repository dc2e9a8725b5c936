r"""Scalar heads on a language model: the reward model :math:`r_\phi(x, y)` and the PPO critic :math:`V(s_t)`.

A reward model is the LM with its vocabulary projection replaced by one linear unit read at the last
token (InstructGPT, Ouyang et al. 2022; chapter 1 trains it with the Bradley-Terry loss). The value model
of PPO has the same unit at every position (chapter 4), and is initialised from the reward model.

Both read the last layer's hidden states through ``output_hidden_states=True``, the one interface every
Hugging Face model shares, so the backbone may be any causal LM (``GPT2LMHeadModel``,
``LlamaForCausalLM``, ...) or its base model (``GPT2Model``, ...).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from rlhf_edu.lm.batching import position_ids_from_mask

__all__ = ["RewardModel", "ValueModel", "last_token_index"]


def last_token_index(attention_mask):
    """Column of the last real (mask 1) token of each row: ``(B, T)`` mask to ``(B,)`` long.

    Works for left padding (always ``T - 1``), right padding (``length - 1``) and any mix. A row with no
    real token raises ``ValueError``.

    >>> last_token_index(torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]]))
    tensor([3, 1])
    """
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 2:
        raise ValueError("attention_mask must be a (B, T) tensor")
    real = attention_mask != 0
    if not bool(real.any(dim=1).all()):
        row = int((~real.any(dim=1)).nonzero()[0, 0])
        raise ValueError(f"attention_mask row {row} has no real token: there is no last token to read")
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    # The largest column index among the real tokens.
    return torch.where(real, columns, torch.full_like(columns, -1)).max(dim=1).values


def _hidden_size(backbone):
    """The width of the last hidden state ``backbone`` returns: the input width of the head.

    Not ``config.hidden_size``: OPT models shaped like opt-350m project their last hidden state from
    ``hidden_size`` (1024) to ``word_embed_proj_dim`` (512) before returning it. A causal LM's output
    projection reads exactly that state, so its input width is the answer; a base model (no output
    projection) returns its states in the width of its token embeddings (OPT's ``project_in`` /
    ``project_out`` pair included); the config's width is the last resort.
    """
    config = getattr(backbone, "config", None)
    if config is None:
        raise TypeError(f"backbone must be a Hugging Face model with a .config, got {type(backbone).__name__}")
    for getter in ("get_output_embeddings", "get_input_embeddings"):
        try:
            layer = getattr(backbone, getter)()
        except (AttributeError, NotImplementedError):
            continue
        if isinstance(layer, nn.Linear):
            return layer.in_features
        if isinstance(layer, nn.Embedding):
            return layer.embedding_dim
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("word_embed_proj_dim", "hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the hidden size in {type(config).__name__} (no hidden_size / n_embd / d_model)")


def _backbone_dtype_device(backbone):
    for p in backbone.parameters():
        if p.dtype.is_floating_point:
            return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


def _float32(scores):
    # bfloat16/float16 scores (autocast, or a model loaded in half precision) leave the head as float32,
    # like the log-probs of rlhf_edu.lm.token_logprobs: the losses and advantages built on them are float32.
    return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores


class _ScalarHead(nn.Module):
    """Backbone + ``nn.Linear(hidden, 1)``; subclasses choose which positions to read."""

    def __init__(self, backbone, init_std=None, seed=None):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module (a Hugging Face model), got {type(backbone).__name__}")
        hidden = _hidden_size(backbone)
        # 1/sqrt(d+1): the head initialisation of OpenAI's lm-human-preferences (Ziegler et al., 2019).
        self.init_std = 1.0 / math.sqrt(hidden + 1) if init_std is None else float(init_std)
        if not self.init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.backbone = backbone
        dtype, device = _backbone_dtype_device(backbone)
        self.head = nn.Linear(hidden, 1, device=device, dtype=dtype)
        if seed is None:
            nn.init.normal_(self.head.weight, std=self.init_std)
        else:  # a private stream: the caller's random state is untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                nn.init.normal_(self.head.weight, std=self.init_std)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        """The backbone's config."""
        return self.backbone.config

    def hidden_states(self, input_ids, attention_mask=None):
        """Last-layer hidden states ``(B, T, H)``, with padding-safe position ids."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if tuple(attention_mask.shape) != tuple(input_ids.shape) or input_ids.ndim != 2:
            raise ValueError(
                f"input_ids and attention_mask must both be (B, T), got {tuple(input_ids.shape)} and "
                f"{tuple(attention_mask.shape)}"
            )
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1]
        if hidden.shape[-1] != self.head.in_features:
            raise ValueError(
                f"{type(self.backbone).__name__} returns hidden states of width {hidden.shape[-1]} but the head "
                f"reads {self.head.in_features}: build the head on the backbone it will run on"
            )
        return hidden


class RewardModel(_ScalarHead):
    r"""Reward model :math:`r_\phi(x, y) = w^\top h_L(\text{last real token}) + b`: a scalar per sequence.

    Wraps ``backbone`` (shared, not copied; use ``from_pretrained_lm`` for a copy) and adds
    ``head = nn.Linear(d, 1)``, :math:`d` the width of the hidden state the backbone returns (not always
    ``config.hidden_size``: opt-350m returns 512 of its 1024), with weights drawn from
    :math:`\mathcal N(0, \text{init\_std}^2)` (default :math:`1/\sqrt{d+1}`, as in Ziegler et al. 2019) and
    bias 0. ``forward(input_ids, attention_mask)`` returns ``(B,)``: the head applied to the last layer's
    hidden state at each row's last real token, so left and right padding give the same reward (float32
    even from a bfloat16 forward pass: ``rlhf_edu.lm.mixed_precision``; ``ValueModel`` too). Trained
    with the Bradley-Terry loss in chapter 1; scores rollouts in chapters 4, 5 and 8.

    Args:
        backbone: any Hugging Face causal LM or base model.
        init_std: std of the head's initial weights (default ``1/sqrt(d + 1)``).
        seed: seed of the head's initialisation (``None``: torch's global stream).

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> rm = RewardModel(tiny_causal_lm(char_tokenizer(), d_model=32, n_layer=1), seed=0)
    >>> rm(torch.tensor([[1, 5, 6], [0, 1, 5]]), torch.tensor([[1, 1, 1], [0, 1, 1]])).shape
    torch.Size([2])
    """

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.hidden_states(input_ids, attention_mask)
        last = last_token_index(attention_mask)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return _float32(self.head(hidden[rows, last]).squeeze(-1))

    @classmethod
    def from_pretrained_lm(cls, lm, init_std=None, seed=None):
        """A reward model on a deep copy of ``lm`` (the SFT model, as in InstructGPT); ``lm`` is untouched."""
        return cls(copy.deepcopy(lm), init_std=init_std, seed=seed)


class ValueModel(_ScalarHead):
    r"""Value model (PPO's critic) :math:`V(s_t) = w^\top h_L(t) + b` at every position: ``(B, T)``.

    Same structure as ``RewardModel`` but the head is read at every position; padding positions are set
    to 0. ``values[:, t]`` is the value of the state after token ``t``; with the rollout layout of
    ``generate``, the values of the states from which completion token ``t`` is chosen are
    ``values[:, t - 1]`` (the trainer's job). Chapter 4 (PPO with GAE).

    ``ValueModel.from_reward_model(rm)`` copies the reward model's backbone and head: the usual
    initialisation of the critic (InstructGPT), so the first value estimates are already on the reward's
    scale.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> vm = ValueModel(tiny_causal_lm(char_tokenizer(), d_model=32, n_layer=1), seed=0)
    >>> vm(torch.tensor([[0, 1, 5]]), torch.tensor([[0, 1, 1]]))[0, 0].item()
    0.0
    """

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.hidden_states(input_ids, attention_mask)
        values = _float32(self.head(hidden).squeeze(-1))
        return torch.where(attention_mask != 0, values, torch.zeros_like(values))

    @classmethod
    def from_reward_model(cls, reward_model):
        """A critic initialised from ``reward_model``: deep copies of its backbone and head weights."""
        if not isinstance(reward_model, RewardModel):
            raise TypeError(f"reward_model must be a RewardModel, got {type(reward_model).__name__}")
        critic = cls(copy.deepcopy(reward_model.backbone), init_std=reward_model.init_std, seed=0)
        critic.head.load_state_dict(reward_model.head.state_dict())
        return critic
