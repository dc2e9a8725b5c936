r"""``rlhf-edu train``: any trainer of the book on a user's own model folder and JSONL records.

The book trains tiny models built from configs; this is the hand-off to a real one. ``rlhf-edu train
METHOD --model DIR --data FILE.jsonl [--steps N] [--out DIR] [options of the method]`` loads the model and
its tokenizer from ``DIR`` (anything ``from_pretrained`` loads: a checkpoint on disk, or a
``rlhf_edu.lm.save_model`` folder), reads and checks the records, trains, and writes to ``--out`` (checked
and created before the model loads; never the ``--model`` folder) the trained model with its tokenizer,
``history.json``, ``history.png`` and ``metrics.json`` (method, the file's number of records, steps,
seconds, device, dtype, the last loss/accuracy/... of the history, and the before/after numbers), and
prints before/after numbers of the policy on the last 16 prompts of the data (which it also trained on:
they are not held out; reward when there is one, exact KL to the starting model, entropy, completion
length). A policy is saved with ``save_pretrained`` and loads back with
``AutoModelForCausalLM.from_pretrained``. ``train reward`` saves a ``RewardModel`` instead (the backbone in
``backbone/``, the scalar head in ``head.safetensors``, ``rlhf_edu.json``, the tokenizer): it does not
load with ``AutoModelForCausalLM``; load it with ``rlhf_edu.lm.load_model(DIR)`` (``return_tokenizer=True``
for its tokenizer) or give the folder to ``--reward`` of an online method.

Methods and their records (one JSON object per line):

==========  ================================================  ============================================
method      trainer (chapter)                                 record fields
==========  ================================================  ============================================
sft         ``train_sft`` (0)                                 ``prompt``, ``completion``
reward      ``train_reward_model`` (1)                        ``prompt``, ``chosen``, ``rejected``
dpo         ``train_dpo`` (6; ``--loss`` ipo, slic, gpo too)  ``prompt``, ``chosen``, ``rejected``
ipo         ``train_dpo`` with ``loss="ipo"`` (7)             ``prompt``, ``chosen``, ``rejected``
simpo       ``train_simpo`` (7)                               ``prompt``, ``chosen``, ``rejected``
orpo        ``train_orpo`` (7)                                ``prompt``, ``chosen``, ``rejected``
kto         ``train_kto`` (7)                                 ``prompt``, ``completion``, ``label`` (bool)
grpo, rloo  ``train_grpo``, ``train_rloo`` (5)                ``prompt`` (needs ``--reward``)
ppo         ``train_ppo`` (4)                                 ``prompt`` (needs ``--reward``)
==========  ================================================  ============================================

The options of a method are its trainer's keyword arguments, read from the trainer's signature and the
``Args:`` section of its docstring (one source of truth: ``rlhf-edu train dpo --help`` lists ``--beta``,
``--lr``, ... with the trainer's own words) into a dataclass that ``transformers.HfArgumentParser`` parses.
Arguments that take Python objects (a reference model, evaluation prompts, callables) are not options.

``--steps N``: the online methods take N rollout-and-update steps; an offline method takes N optimizer steps
of ``--batch_size`` records each (its trainer's ``max_steps``; ``--epochs`` is then ignored), passing over the
file's records as many times as that needs, reshuffled each pass (DPO and KTO compute each record's reference
log-probs once either way). ``metrics.json``'s ``records`` is the file's number of records. Arguments that act
only with an object argument (``eval_every`` without ``eval_prompts``, PPO's ``ptx_coef`` without
``ptx_examples``) are not options either; PPO's critic starts from the reward model when ``--reward`` is a
reward-model folder of the policy's vocabulary, else from the policy. ``--reward``: a reward-model folder
(``rlhf_edu.lm.save_model`` of a ``RewardModel`` and its tokenizer, e.g. the output of ``rlhf-edu train
reward``) or ``module:function`` for a Python function ``fn(completions, prompts) -> rewards``.

Several GPUs: ``torchrun --nproc_per_node N -m rlhf_edu.cli train METHOD ...`` (or ``accelerate launch``)
runs the trainer data-parallel (``rlhf_edu.train.distributed``): ``--batch_size`` is per process, ``--steps``
counts global steps of ``N * batch_size`` records, and only the main process evaluates and writes ``--out``.
``--dtype bfloat16`` (every method) runs the forward passes in bfloat16 mixed precision (an Ampere or newer
GPU, or the CPU); the weights stay float32 (``rlhf_edu.lm.mixed_precision``).

Bad records get a ``ValueError`` naming the file and line: a line that is not a JSON object, a missing or
empty field, a label that is not true/false, a record longer than the model's context (prompt + completion,
or prompt + ``--max_new_tokens`` for the online methods), or a longest prompt and longest completion that fit
one by one but not together in the trainers' padded table (both lines named). On the command line a user's error (a bad
record, a bad option value, a model folder that does not load) is printed as ``rlhf-edu train METHOD:
error: ...`` with exit status 2; options whose trainer argument may be ``None`` take the literal ``None``
(``--std None``: Dr. GRPO). A reward-model folder is scored with its own saved tokenizer (the policy's
may have another vocabulary); PPO's critic starts from it only when the two vocabularies are the same.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import os
import re
import time
import typing
from pathlib import Path

__all__ = ["METHODS", "RECORD_FIELDS", "method_options", "read_records", "load_reward", "train_from_files"]

#: method -> (trainer name in ``rlhf_edu.train``, record kind, arguments the method fixes)
METHODS = {
    "sft": ("train_sft", "completion", {}),
    "reward": ("train_reward_model", "pair", {}),
    "dpo": ("train_dpo", "pair", {}),
    "ipo": ("train_dpo", "pair", {"loss": "ipo"}),
    "kto": ("train_kto", "label", {}),
    "simpo": ("train_simpo", "pair", {}),
    "orpo": ("train_orpo", "pair", {}),
    "grpo": ("train_grpo", "prompt", {}),
    "rloo": ("train_rloo", "prompt", {}),
    "ppo": ("train_ppo", "prompt", {}),
}
#: the fields each kind of record must have (strings, non-empty; ``label`` a JSON boolean)
RECORD_FIELDS = {
    "completion": ("prompt", "completion"),
    "pair": ("prompt", "chosen", "rejected"),
    "label": ("prompt", "completion", "label"),
    "prompt": ("prompt",),
}
ONLINE_KINDS = ("prompt",)
# Keyword arguments that are never options: objects, the launcher's own (--steps, which is the offline
# trainers' max_steps), the progress bar.
_NOT_OPTIONS = {"steps", "max_steps", "progress"}
_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str}
# Options that only act with an object argument the command line cannot pass: left out where it is one.
_NEEDS_OBJECT = {"eval_every": ("eval_prompts", "eval_pairs"), "eval_samples": ("eval_prompts",),
                 "eval_max_new_tokens": ("eval_prompts",), "ptx_coef": ("ptx_examples",)}
_EVAL_PROMPTS = 16  # the before/after table's prompts: the data's last 16 (trained on too, not held out)


def _trainer(method):
    import rlhf_edu.train as train

    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    name, kind, fixed = METHODS[method]
    return getattr(train, name), kind, fixed


def _option_type(parameter):
    """The Python type of a keyword argument an option can carry, or None (an object: not an option)."""
    ann = parameter.annotation
    if isinstance(ann, str):
        parts = [p.strip() for p in ann.split("|")]
        base = [p for p in parts if p != "None"]
        if len(base) == 1 and base[0] in _SIMPLE:
            t = _SIMPLE[base[0]]
            return typing.Optional[t] if "None" in parts else t
        return None
    default = parameter.default
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float, str)):
        return type(default)
    return None


def _docstring_args(fn) -> dict:
    """``{name: help}`` from the ``Args:`` section of ``fn``'s docstring (Google style)."""
    doc = inspect.getdoc(fn) or ""
    helps, current, indent = {}, None, None
    in_args = False
    for line in doc.splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):  # the next section ("Returns:", ...)
            break
        m = re.match(r"^(\s+)([A-Za-z_][\w, ]*):\s*(.*)$", line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            names = [n.strip() for n in m.group(2).split(",")]
            current = names
            # an entry of several arguments keeps its names: "lr, critic_lr: learning rates of ..." reads in order
            shared = f"{m.group(2).strip()}: " if len(names) > 1 else ""
            for n in names:
                helps[n] = shared + m.group(3).strip()
        elif current and line.strip():
            for n in current:
                helps[n] += " " + line.strip()
    return {n: _plain(text) for n, text in helps.items()}


def _math(m) -> str:
    text = re.sub(r"\\(?:wide)?hat\{([^}]*)\}", r"\1^", m.group(1))
    text = text.replace("\\,", " ").replace("\\;", " ")
    text = re.sub(r"\\([A-Za-z]+)", r"\1", text)
    return text.replace("{", "").replace("}", "")


def _plain(text: str) -> str:
    r"""A docstring entry as plain text for ``--help``: Sphinx roles and literals without their markup.

    >>> _plain(r"the clip :math:`\epsilon_{high}` of ``clip_eps`` (:func:`rlhf_edu.lm.generate`)")
    'the clip epsilon_high of clip_eps (rlhf_edu.lm.generate)'
    """
    text = re.sub(r":math:`([^`]*)`", _math, text)
    text = re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", text)
    return re.sub(r"``([^`]*)``", r"\1", text)


def method_options(method: str):
    """The options of ``method`` as a dataclass (one field per simple keyword argument of its trainer).

    Field names, types and defaults are the trainer's; each field's ``help`` is the trainer's docstring
    entry. Arguments the method fixes (``ipo``: ``loss="ipo"``) and object-valued ones are left out.

    >>> fields = {f.name: f for f in dataclasses.fields(method_options("dpo"))}
    >>> fields["beta"].default, fields["beta"].type
    (0.3, <class 'float'>)
    >>> "loss" in {f.name for f in dataclasses.fields(method_options("ipo"))}
    False
    """
    fn, _kind, fixed = _trainer(method)
    helps = _docstring_args(fn)
    parameters = inspect.signature(fn).parameters
    fields = []
    for name, p in parameters.items():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or name in _NOT_OPTIONS or name in fixed:
            continue
        if any(needed in parameters for needed in _NEEDS_OBJECT.get(name, ())):
            continue  # e.g. eval_every without eval_prompts, which are not an option
        typ = _option_type(p)
        if typ is None:
            continue
        help_text = (helps.get(name) or f"{fn.__name__}'s argument {name}").replace("%", "%%")
        fields.append((name, typ, dataclasses.field(default=p.default, metadata={"help": help_text})))
    return dataclasses.make_dataclass(f"{method.upper()}Options", fields)


def read_records(path, method: str, tokenizer=None, context: int | None = None,
                 max_new_tokens: int | None = None) -> list:
    """Read ``method``'s records from a JSONL file, checking every line; returns a list of dicts.

    With ``tokenizer`` and ``context`` (the model's context in tokens), a record that does not fit is an
    error too: for the methods that train on given text, ``<bos>`` + prompt + completion (each of
    ``chosen`` and ``rejected``) + ``<eos>`` as the trainers tokenize them; for the online methods, the
    prompt plus ``max_new_tokens`` sampled tokens. And the file as a whole: the trainers of given text
    tokenize every record into one table, every prompt left-padded to the longest and every completion
    right-padded to the longest, so the longest prompt and the longest completion must fit together, even from
    two different lines (both lines are named). Raises ``ValueError`` naming ``path`` and the line number
    (from 1) of the first bad record.
    """
    from rlhf_edu.lm.batching import encode_completion, encode_prompts

    _fn, kind, _fixed = _trainer(method)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data: no file {str(path)!r}")
    completions = [f for f in RECORD_FIELDS[kind] if f in ("completion", "chosen", "rejected")]
    # (tokens, -line, field) of the widest prompt and completion: max() keeps the first line of a tie
    longest = {"prompt": (0, 0, ""), "completion": (0, 0, "")}

    def check_fits(record, where, number):
        prompt_ids = encode_prompts(tokenizer, [record["prompt"]])[0]
        n = len(prompt_ids)
        longest["prompt"] = max(longest["prompt"], (n, -number, "prompt"))
        if n >= context:
            raise ValueError(f"{where}: the prompt is {n} tokens, the model's context is {context}: "
                             f"no room for a completion")
        if kind in ONLINE_KINDS and max_new_tokens is not None and n + max_new_tokens > context:
            raise ValueError(f"{where}: the prompt is {n} tokens and --max_new_tokens is {max_new_tokens}: "
                             f"{n + max_new_tokens} positions, the model's context is {context}: shorten the "
                             f"prompt or give --max_new_tokens {context - n} or less")
        for field in completions:
            m = len(encode_completion(tokenizer, record["prompt"], record[field])) + 1  # + <eos>
            longest["completion"] = max(longest["completion"], (m, -number, field))
            if n + m > context:
                raise ValueError(f"{where}: prompt + {field} (with <bos>/<eos>) is {n + m} tokens, the model's "
                                 f"context is {context}: shorten the record")

    records = []
    with path.open(encoding="utf-8-sig") as f:  # -sig: a byte-order mark before line 1 is not an error
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            for field in RECORD_FIELDS[kind]:
                if field not in record:
                    raise ValueError(f"{where}: missing field {field!r} ({method} records need "
                                     f"{', '.join(RECORD_FIELDS[kind])})")
                value = record[field]
                if field == "label":
                    if not isinstance(value, bool):
                        raise ValueError(f"{where}: 'label' must be true or false, got {value!r}")
                elif not isinstance(value, str):
                    raise ValueError(f"{where}: {field!r} must be a string, got {type(value).__name__}")
                elif not value.strip():
                    raise ValueError(f"{where}: {field!r} is empty")
            if tokenizer is not None and context is not None:
                check_fits(record, where, number)
            records.append({k: record[k] for k in RECORD_FIELDS[kind]})
    if not records:
        raise ValueError(f"{path}: no records")
    (n, p_line, _), (m, c_line, field) = longest["prompt"], longest["completion"]
    if tokenizer is not None and context is not None and n + m > context:  # m is 0 for prompt-only records
        raise ValueError(f"{path}: the longest prompt (line {-p_line}, {n} tokens with <bos>) and the longest "
                         f"{field} (line {-c_line}, {m} tokens with <eos>) need {n + m} positions together, and the "
                         f"model's context is {context}: the trainers pad every prompt to the longest and every "
                         f"completion to the longest, into one table; shorten one of them")
    return records


def _load_reward(spec: str, device=None):
    """``(fn, reward_model, its_tokenizer)`` from ``--reward``; the last two ``None`` for ``module:function``."""
    from rlhf_edu.lm import RewardModel, load_model
    from rlhf_edu.train.rollouts import as_reward_fn

    if Path(spec).is_dir():
        model, tokenizer = load_model(spec, device=device, return_tokenizer=True)
        if not isinstance(model, RewardModel):
            raise ValueError(f"reward: {spec!r} holds a {type(model).__name__}, not a RewardModel "
                             f"(save one with rlhf_edu.lm.save_model or `rlhf-edu train reward`)")
        if tokenizer is None:  # the policy's tokenizer would feed it ids of another vocabulary
            raise ValueError(f"reward: {spec!r} has no tokenizer files; the reward model reads text with its own "
                             f"tokenizer: save it with the model (rlhf_edu.lm.save_model(rm, path, tokenizer))")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return as_reward_fn(model, tokenizer, name=f"reward {spec}"), model, tokenizer
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"reward must be a reward-model folder or 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward: cannot import {spec!r} ({e})") from None
    if not callable(fn):
        raise ValueError(f"reward: {spec!r} is not callable")
    return fn, None, None


def load_reward(spec: str, device=None):
    """A reward ``fn(completions, prompts)`` from ``--reward``: a ``RewardModel`` folder or ``"module:function"``.

    A reward-model folder is scored with the tokenizer saved in it (its own vocabulary, whatever the
    policy's), so the folder must hold one. Raises ``ValueError`` when ``spec`` is neither a folder nor
    importable, or the folder holds no reward model or no tokenizer.
    """
    return _load_reward(spec, device)[0]


def _final(history) -> dict:
    """The last logged value of the history's main columns (``train reward``: loss and accuracy)."""
    final = {}
    for key in ("loss", "accuracy", "margin", "reward", "kl"):
        if key in history:
            try:
                final[key] = history.last(key)
            except KeyError:  # never a number
                pass
    return final


def _summary(before, after) -> str:
    lines = [f"{'':<7} {'reward':>8} {'KL to start':>11} {'entropy':>8} {'length':>7}"]
    for name, row in (("before", before), ("after", after)):
        reward = row.get("reward")
        lines.append(f"{name:<7} {'-' if reward is None else f'{reward:.3f}':>8} {row.get('kl', 0.0):>11.3f} "
                     f"{row.get('entropy', float('nan')):>8.2f} {row['length']:>7.1f}")
    return "\n".join(lines)


def train_from_files(method: str, model_dir, data, *, out="runs/train", steps: int | None = None, reward=None,
                     options=None, verbose: bool = True, progress: bool = False) -> dict:
    """Train ``method`` on the model of ``model_dir`` with the records of ``data``; write to ``out``.

    ``options``: a ``method_options(method)`` instance or a dict of trainer keyword arguments; ``verbose``
    prints the before/after table, ``progress`` shows the trainer's progress bar. Returns a dict
    with the before/after evaluation (policy methods), the output paths and the seconds taken.
    """
    from rlhf_edu.lm import resolve_device
    from rlhf_edu.train.distributed import data_parallel

    fn, kind, fixed = _trainer(method)
    if options is None:
        options = {}
    elif dataclasses.is_dataclass(options):
        options = dataclasses.asdict(options)
    options = dict(options)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    # under torchrun / accelerate launch: this process's device; only the main process evaluates and writes
    parallel = data_parallel(resolve_device(options.get("device", "auto")))
    options["device"] = parallel.device
    say = print if verbose and parallel.is_main else (lambda *a: None)

    if kind in ONLINE_KINDS and reward is None:
        raise ValueError(f"{method} samples completions and needs a reward: give --reward DIR or module:function")
    out, created = _prepare_out(out, model_dir, reward)  # before the model loads: a bad --out costs no run
    try:
        return _train(method, fn, kind, fixed, model_dir, data, out, steps, reward, options, parallel, say, progress)
    except BaseException:
        if parallel.is_main:  # nothing written: leave none of the empty folders it created behind
            for folder in created:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise


def _prepare_out(out, model_dir, reward):
    """``(out, created)``: ``--out`` checked and created (``created``: the folders made, innermost first).

    ``--out`` must not be the model's (or reward model's) folder, nor a file, and must be writable.
    """
    out = Path(out)
    for what, folder in (("model", model_dir), ("reward", reward)):
        if isinstance(folder, (str, os.PathLike)) and Path(folder).is_dir() and out.resolve() == Path(folder).resolve():
            raise ValueError(f"out: {str(out)!r} is the --{what} folder; writing there would overwrite the input "
                             f"{what}: choose another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} exists and is not a folder")
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"out: cannot create the folder {str(out)!r} ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"out: the folder {str(out)!r} is not writable")
    return out, created


def _trainer_int(fn, name: str, options: dict):
    """The trainer argument ``name`` as given in ``options`` (else ``fn``'s default) when it is a positive
    int, else ``None`` (a bad value is left for the trainer to name)."""
    value = options[name] if name in options else inspect.signature(fn).parameters[name].default
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _steps_run(history) -> int:
    """Optimiser steps taken: the last logged step + 1 (a trainer may log only every ``log_every``-th step)."""
    if len(history) and "step" in history:
        return int(history["step"][-1]) + 1
    return len(history)


def _train(method, fn, kind, fixed, model_dir, data, out, steps, reward, options, parallel, say, progress):
    import matplotlib.pyplot as plt

    from rlhf_edu.lm import RewardModel, context_length, load_model, save_model
    from rlhf_edu.lm.batching import encode_prompts
    from rlhf_edu.plotting import plot_history
    from rlhf_edu.train.evaluation import evaluate_policy
    from rlhf_edu.train.rollouts import check_reward_model_room, frozen_copy, reward_model_room

    device = parallel.device
    model, tokenizer = load_model(model_dir, device=device, return_tokenizer=True)
    if tokenizer is None:
        raise ValueError(f"model: {str(model_dir)!r} has no tokenizer files (save one with the model)")
    if tokenizer.pad_token is None:  # usual for base checkpoints: pad with EOS (padding is masked everywhere)
        tokenizer.pad_token = tokenizer.eos_token
    max_new_tokens = _trainer_int(fn, "max_new_tokens", options) if kind in ONLINE_KINDS else None
    records = read_records(data, method, tokenizer, context_length(model), max_new_tokens=max_new_tokens)
    say(f"rlhf-edu train {method}: {len(records)} records from {data}, model {model_dir} on {device}")

    from_folder_or_function = isinstance(reward, (str, os.PathLike))  # a Path from the Python API too
    reward_fn, reward_model, reward_tokenizer = (_load_reward(str(reward), device) if from_folder_or_function
                                                 else (reward, None, None))

    table_prompts = [r["prompt"] for r in records[-_EVAL_PROMPTS:]]  # also trained on: not held out
    start = frozen_copy(model)
    # the table's completions: up to 32 tokens, fewer when the longest of its prompts leaves less room
    room = context_length(model) or 10**9
    eval_tokens = min(32, room - max(len(ids) for ids in encode_prompts(tokenizer, table_prompts)))
    if reward_model is not None:  # a reward model that cannot read past its context: check before any work
        name = f"reward {reward}"
        if kind in ONLINE_KINDS and max_new_tokens is not None:  # a bad value: the trainer names it
            check_reward_model_room(reward_model, reward_tokenizer, [r["prompt"] for r in records], max_new_tokens,
                                    name)
        table_room = reward_model_room(reward_model, reward_tokenizer, table_prompts)  # the table is scored too
        if table_room is not None:
            eval_tokens = max(1, min(eval_tokens, table_room))
    evaluate = (lambda policy: evaluate_policy(policy, tokenizer, table_prompts, reward_fn, ref_model=start,
                                               max_new_tokens=eval_tokens, seed=2024))
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()

    kwargs = {**options, **fixed, "progress": progress}
    if method == "reward":
        target = RewardModel.from_pretrained_lm(model, seed=options.get("seed", 0))
        for p in target.parameters():
            p.requires_grad_(True)
        before = None
    else:
        target = model
        before = evaluate(start) if parallel.is_main else None
    if kind in ONLINE_KINDS:  # train_from_files has checked that a reward was given
        prompts = [r["prompt"] for r in records]
        if steps is not None:
            kwargs["steps"] = steps
        if method == "ppo" and reward_model is not None and reward_tokenizer.get_vocab() == tokenizer.get_vocab():
            # InstructGPT's critic: a copy of the reward model, which reads the policy's token ids (same vocabulary)
            from rlhf_edu.lm import ValueModel

            kwargs["value_model"] = ValueModel.from_reward_model(reward_model)
        args = (target, tokenizer, prompts, reward_fn)
    else:
        if steps is not None:
            kwargs["max_steps"] = steps  # every offline trainer takes it
        if reward_fn is not None and "reward_fn" in inspect.signature(fn).parameters:
            kwargs["reward_fn"] = reward_fn
        args = (target, tokenizer, records)
    t0 = time.perf_counter()
    trained, history = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0

    if not parallel.is_main:  # the other processes hold the same weights and history: nothing to write
        return {"method": method, "records": len(records), "steps": _steps_run(history), "seconds": seconds,
                "out": str(out)}
    save_model(trained, out, tokenizer)
    history.save_json(out / "history.json")
    keys = [k for k in ("loss", "reward", "kl", "accuracy") if k in history and not all(map(math.isnan, history[k]))]
    fig = plot_history(history, keys=keys or ("loss",))
    fig.savefig(out / "history.png", dpi=100)
    plt.close(fig)  # a script that trains many times would keep every figure open
    result = {"method": method, "records": len(records), "steps": _steps_run(history), "seconds": seconds,
              "out": str(out), "device": str(device), "dtype": str(options.get("dtype", "float32")),
              "final": _final(history)}
    if before is not None:
        result["table_prompts"] = (f"the last {len(table_prompts)} prompts of {data} "
                                   f"(trained on too: not held out)")
        after = evaluate(trained)
        result.update(before={k: v for k, v in before.items() if k != "examples"},
                      after={k: v for k, v in after.items() if k != "examples"})
        say(f"\non the last {len(table_prompts)} prompts of the data (trained on too):")
        say(_summary(before, after))
    (out / "metrics.json").write_text(json.dumps(result, indent=1, default=str))
    say(f"\n{_steps_run(history)} steps in {seconds:.0f} s; wrote {out}/ (model, history.json, history.png, metrics.json)")
    return result
