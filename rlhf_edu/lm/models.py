"""Tiny causal language models built from a config (no download), and counting their parameters.

``tiny_causal_lm`` gives the GPT-2 or Llama architecture at toy size (two layers, width 128: about 420k
parameters), so every training method of the book runs on a laptop CPU in minutes. The returned object is
an ordinary ``transformers`` model: code written against it (``rlhf_edu.lm``, ``rlhf_edu.train``) runs
unchanged on a real checkpoint.

``llama_parameter_count`` is the lecture notes' parameter count of LLaMA-2 13B ("Building LLMs": embedding
32000 x 5120, attention 4 x 5120^2 per layer, SwiGLU MLP 3 x 5120 x 13824 per layer, RMSNorm 5120, a
separate output projection), written as a formula over any Llama config.
"""

from __future__ import annotations

import torch

from rlhf_edu.numpy import anatomy
from rlhf_edu.validation import check_choice, check_in_range, check_integer

__all__ = [
    "ARCHITECTURES",
    "tiny_causal_lm",
    "count_parameters",
    "context_length",
    "check_vocabulary",
    "llama_parameter_count",
    "llama2_13b_config",
    "llama2_13b_parameter_count",
]

ARCHITECTURES = ("gpt2", "llama")


def _vocab_and_special_ids(vocab_size_or_tokenizer):
    if isinstance(vocab_size_or_tokenizer, bool):
        raise TypeError("vocab_size_or_tokenizer must be an int or a tokenizer, got bool")
    if isinstance(vocab_size_or_tokenizer, int):
        size = check_integer("vocab_size_or_tokenizer", vocab_size_or_tokenizer, minimum=2)
        # No tokenizer, no special ids (GPT2Config would otherwise default to GPT-2's 50256).
        return size, {"pad_token_id": None, "bos_token_id": None, "eos_token_id": None}
    tok = vocab_size_or_tokenizer
    if not hasattr(tok, "convert_tokens_to_ids") or not hasattr(tok, "__len__"):
        raise TypeError(
            "vocab_size_or_tokenizer must be an int or a Hugging Face tokenizer, got "
            f"{type(tok).__name__}"
        )
    ids = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    # len(tokenizer) counts added tokens too, which tokenizer.vocab_size does not.
    return len(tok), ids


def tiny_causal_lm(
    vocab_size_or_tokenizer,
    arch="gpt2",
    n_layer=2,
    d_model=128,
    n_head=4,
    max_length=128,
    dropout=0.0,
    seed=0,
    *,
    d_ff=None,
    attn_implementation=None,
):
    r"""A small ``transformers`` causal LM built from a ``GPT2Config`` or ``LlamaConfig`` (no download).

    - ``arch="gpt2"``: learned absolute positions, LayerNorm, GELU MLP of width ``4 * d_model``, input and
      output embeddings tied (as in GPT-2).
    - ``arch="llama"``: rotary positions, RMSNorm, SwiGLU MLP of width ``d_ff`` (default
      ``4 * d_model``), separate output projection (as in LLaMA-2, see ``llama_parameter_count``).

    The pad, bos and eos ids are read from the tokenizer when one is given (and written in the config),
    dropout is off by default (so ``model.train()`` and ``model.eval()`` compute the same function and
    log-probabilities are reproducible), and the initial weights depend only on ``seed``: the global
    torch random stream is neither used nor advanced. The model is returned in eval mode on the CPU, like
    ``from_pretrained``; move it with ``model.to(resolve_device("auto"))``.

    Args:
        vocab_size_or_tokenizer: an int (vocabulary size) or a Hugging Face tokenizer (``len(tokenizer)``
            is used, plus its special token ids).
        arch: ``"gpt2"`` (default) or ``"llama"``.
        n_layer, d_model, n_head: depth, width and heads (``d_model`` divisible by ``n_head``).
        max_length: the context (``n_positions`` / ``max_position_embeddings``).
        dropout: the dropout probability of every dropout layer (0.0 by default).
        seed: seed of the weight initialisation.
        d_ff: MLP width of the Llama architecture (default ``4 * d_model``; GPT-2 always uses
            ``4 * d_model``).
        attn_implementation: passed to the model (``None`` keeps the transformers default, ``"sdpa"``;
            ``"eager"`` is the plain softmax(QK^T)V).

    Used by every small-model run of the book (chapters 1, 4, 5, 6, 8) and the ``make demo`` pipeline.

    >>> from rlhf_edu.lm import char_tokenizer
    >>> model = tiny_causal_lm(char_tokenizer(), d_model=32, n_layer=1)
    >>> type(model).__name__, model.config.vocab_size, model.config.pad_token_id
    ('GPT2LMHeadModel', 57, 0)
    >>> count_parameters(model)
    18688
    """
    check_choice("arch", arch, ARCHITECTURES)
    vocab_size, special_ids = _vocab_and_special_ids(vocab_size_or_tokenizer)
    n_layer = check_integer("n_layer", n_layer, minimum=1)
    d_model = check_integer("d_model", d_model, minimum=1)
    n_head = check_integer("n_head", n_head, minimum=1)
    max_length = check_integer("max_length", max_length, minimum=1)
    seed = check_integer("seed", seed, minimum=0)
    dropout = check_in_range("dropout", dropout, 0.0, 1.0, high_open=True)
    if d_model % n_head:
        raise ValueError(f"d_model must be divisible by n_head, got d_model={d_model}, n_head={n_head}")
    if arch == "llama":
        # Rotary embeddings rotate pairs of coordinates: the head dimension must be even.
        if (d_model // n_head) % 2:
            raise ValueError(f"arch='llama' needs an even head dimension d_model / n_head, got {d_model // n_head}")
    d_ff = 4 * d_model if d_ff is None else check_integer("d_ff", d_ff, minimum=1)

    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=max_length,
            n_embd=d_model,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            **special_ids,
            **extra,
        )
        cls = GPT2LMHeadModel
    else:
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=d_model,
            intermediate_size=d_ff,
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            num_key_value_heads=n_head,
            max_position_embeddings=max_length,
            attention_dropout=dropout,
            tie_word_embeddings=False,
            **special_ids,
            **extra,
        )
        cls = LlamaForCausalLM
    # A private random stream: the weights depend on `seed` only, and the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return model.eval()


def count_parameters(model, trainable_only=False):
    """Number of parameters of a ``torch.nn.Module`` (tied weights counted once).

    With ``trainable_only=True`` only those with ``requires_grad`` count (e.g. after freezing a backbone).

    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # .parameters() already yields a tied tensor once.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def context_length(model_or_config):
    """The maximum number of positions of a Hugging Face model (or config): its context length.

    Reads ``max_position_embeddings`` (Llama and most models), ``n_positions`` or ``n_ctx`` (GPT-2),
    ``max_sequence_length`` or ``max_seq_len`` (MPT, whose ALiBi bias is precomputed for that many positions).
    ``generate`` refuses prompts that do not fit. Returns ``None`` if the config names none.

    >>> from transformers import GPT2Config
    >>> context_length(GPT2Config(n_positions=128))
    128
    """
    config = getattr(model_or_config, "config", model_or_config)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "max_seq_len"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_vocabulary(model, tokenizer) -> None:
    """Raise ``ValueError`` when ``tokenizer`` produces token ids that ``model`` has no embedding for.

    The ids text is encoded to (the base vocabulary, ``0 .. tokenizer.vocab_size - 1``) and the pad, BOS
    and EOS ids the book's batches add must all be rows of the model's input embedding. More rows than
    tokens is fine (Qwen2 pads its 151,665 tokens to 151,936 rows); added special tokens that text never
    produces may lie beyond the rows (Gemma 3's image token sits at id 262,144 of a 262,144-row
    embedding) and are not counted. Without this check a tokenizer with a larger vocabulary than the
    model's (another family's, or one whose tokens were added without ``resize_token_embeddings``) fails
    deep inside the embedding with ``IndexError: index out of range in self`` (on a GPU, a device-side
    assert). A foreign tokenizer whose ids all fit is not detected. A reward or value model
    (``rlhf_edu.lm.RewardModel``) is checked through its backbone; a model that exposes no input
    embedding is not checked.

    >>> from rlhf_edu.lm import char_tokenizer, tiny_causal_lm
    >>> tok = char_tokenizer()
    >>> check_vocabulary(tiny_causal_lm(tok, d_model=32, n_layer=1), tok)   # built for it: nothing to say
    >>> small = tiny_causal_lm(tok, d_model=32, n_layer=1); small.resize_token_embeddings(40)  # doctest: +ELLIPSIS
    Embedding(40, 32...)
    >>> check_vocabulary(small, tok)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the tokenizer's vocabulary has 57 tokens but the model's input embedding has 40 rows: ids ...
    """
    module = model if hasattr(model, "get_input_embeddings") else getattr(model, "backbone", model)
    try:
        rows = module.get_input_embeddings().num_embeddings
    except (AttributeError, NotImplementedError):  # no input embedding to compare with
        return
    base = getattr(tokenizer, "vocab_size", None)
    n = base if isinstance(base, int) else len(tokenizer)
    special = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("pad", "bos", "eos")}
    if n > rows:
        raise ValueError(
            f"the tokenizer's vocabulary has {n} tokens but the model's input embedding has {rows} rows: ids "
            f"{rows}..{n - 1} have no embedding (is the tokenizer another model's? after adding tokens, call "
            "model.resize_token_embeddings(len(tokenizer)))"
        )
    for name, i in special.items():
        if isinstance(i, int) and i >= rows:
            raise ValueError(
                f"the tokenizer's {name} token has id {i} but the model's input embedding has {rows} rows (is the "
                "tokenizer another model's? after adding tokens, call model.resize_token_embeddings(len(tokenizer)))"
            )


_LLAMA_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


def llama_parameter_count(config=None, *, breakdown=False, **fields):
    r"""Parameter count of a Llama model read from its config: ``rlhf_edu.numpy.anatomy.llama_parameter_count``
    (the formula, part by part, with the notes' slips named; appendix A1) applied to the config's sizes.

    Args:
        config: a ``transformers.LlamaConfig`` (or any object with the fields below); or ``None`` and the
            fields as keywords: ``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
            ``num_attention_heads``, ``intermediate_size`` (required), ``num_key_value_heads``,
            ``head_dim``, ``tie_word_embeddings`` (False), ``attention_bias`` (False), ``mlp_bias``
            (False). Keywords override the config's fields.
        breakdown: return a dict of the parts (``embedding``, ``attention``, ``mlp``, ``norms``,
            ``lm_head``, ``per_layer``, ``total``) instead of the total.

    Checked against ``count_parameters`` of real ``LlamaForCausalLM`` modules in the tests.

    >>> llama_parameter_count(vocab_size=32000, hidden_size=5120, num_hidden_layers=40,
    ...                       num_attention_heads=40, intermediate_size=13824)
    13015864320
    """
    values = {}
    for name in _LLAMA_FIELDS + ("num_key_value_heads", "head_dim", "tie_word_embeddings", "attention_bias", "mlp_bias"):
        if name in fields:
            values[name] = fields.pop(name)
        elif config is not None and getattr(config, name, None) is not None:
            values[name] = getattr(config, name)
    if fields:
        raise TypeError(f"llama_parameter_count got unexpected keyword(s): {sorted(fields)}")
    for name in _LLAMA_FIELDS:
        if name not in values:
            raise ValueError(f"llama_parameter_count needs {name} (from config or as a keyword)")
        check_integer(name, values[name], minimum=1)
    return anatomy.llama_parameter_count(
        values["vocab_size"], values["hidden_size"], values["num_hidden_layers"], values["intermediate_size"],
        values["num_attention_heads"], values.get("num_key_value_heads", values["num_attention_heads"]),
        bool(values.get("tie_word_embeddings", False)), breakdown, head_dim=values.get("head_dim"),
        attention_bias=bool(values.get("attention_bias", False)), mlp_bias=bool(values.get("mlp_bias", False)),
    )


def llama2_13b_config():
    """The ``LlamaConfig`` of LLaMA-2 13B as given in the lecture notes (weights are never built).

    Vocabulary 32000, width 5120, 40 layers, 40 heads of dimension 128, SwiGLU width 13824, context 4096,
    untied output projection. Build it on the meta device to inspect its shapes for free:
    ``with torch.device("meta"): LlamaForCausalLM(llama2_13b_config())``.

    >>> llama2_13b_config().intermediate_size
    13824
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000,
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )


def llama2_13b_parameter_count(breakdown=False):
    """Parameters of LLaMA-2 13B: 13,015,864,320 (``llama_parameter_count(llama2_13b_config())``).

    The breakdown the notes walk through: embedding 163,840,000; per layer 317,204,480 (attention
    104,857,600 + MLP 212,336,640 + norms 10,240); 40 layers 12,688,179,200; final norm 5,120; output
    projection 163,840,000.

    >>> llama2_13b_parameter_count()
    13015864320
    >>> llama2_13b_parameter_count(breakdown=True)["per_layer"]
    317204480
    """
    return llama_parameter_count(llama2_13b_config(), breakdown=breakdown)
