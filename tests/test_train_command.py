"""``rlhf-edu train``: the book's trainers on a user's saved model and JSONL records (rlhf_edu.train.launcher)."""

import dataclasses
import json
import math
import re

import pytest
import torch

from rlhf_edu.cli import main
from rlhf_edu.lm import char_tokenizer, load_model, save_model, tiny_causal_lm
from rlhf_edu.train.launcher import METHODS, method_options, read_records, train_from_files

PAIRS = [
    {"prompt": "review: the film was", "chosen": " great fun.", "rejected": " dull."},
    {"prompt": "review: the song was", "chosen": " great.", "rejected": " dull and long."},
    {"prompt": "review: the cafe was", "chosen": " fun.", "rejected": " dull."},
]


def byte_level_bpe():
    """A byte-level BPE (the kind Qwen2, Llama 3 and GPT-2 use) trained here on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [p["prompt"] + p["chosen"] for p in PAIRS] + [p["prompt"] + p["rejected"] for p in PAIRS]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    """A Qwen2-shaped model (random weights, 2 layers) and its BPE tokenizer, saved with save_pretrained.

    The tokenizer has no pad token, like most base checkpoints: the command pads with EOS."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = byte_level_bpe()
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("qwen2")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_train_dpo_on_a_saved_qwen2_writes_a_model_that_from_pretrained_loads(qwen2_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out"
    assert main(["train", "dpo", "--model", str(qwen2_dir), "--data", str(data), "--steps", "2", "--out", str(out),
                 "--batch_size", "2", "--beta", "0.1", "--lr", "1e-2", "--sft_weight", "0", "--device", "cpu", "--quiet"]) == 0
    trained = AutoModelForCausalLM.from_pretrained(out)
    start = AutoModelForCausalLM.from_pretrained(qwen2_dir)
    moved = max((a - b).abs().max().item() for a, b in zip(trained.parameters(), start.parameters()))
    assert moved > 1e-4, "two DPO steps at lr 1e-2 left the weights where they were"
    history = json.loads((out / "history.json").read_text())
    assert len(history["rows"]) == 2
    assert history["rows"][0]["loss"] == pytest.approx(0.6931, abs=2e-3)  # policy == reference at step 0: log 2
    assert (out / "history.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["before"]["kl"] == pytest.approx(0.0, abs=1e-6) and metrics["after"]["kl"] > 0
    printed = capsys.readouterr().out
    assert "KL to start" in printed and "after" in printed


def test_dtype_bfloat16_is_an_option_of_every_method(qwen2_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    assert all(method_options(m).__dataclass_fields__["dtype"].default == "float32" for m in METHODS)
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out"
    assert main(["train", "dpo", "--model", str(qwen2_dir), "--data", str(data), "--steps", "2", "--out", str(out),
                 "--batch_size", "2", "--sft_weight", "0", "--device", "cpu", "--dtype", "bfloat16", "--quiet"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["rows"][0]["loss"] == pytest.approx(0.6931, abs=2e-3)  # log 2 in bfloat16 too
    assert next(AutoModelForCausalLM.from_pretrained(out).parameters()).dtype == torch.float32  # mixed precision
    with pytest.raises(SystemExit) as stop:  # the trainer's ValueError, as a usage error
        main(["train", "dpo", "--model", str(qwen2_dir), "--data", str(data), "--steps", "1", "--device", "cpu",
              "--dtype", "float16", "--quiet"])
    assert stop.value.code == 2


def test_grpo_with_a_reward_function_by_name(qwen2_dir, tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p["prompt"]} for p in PAIRS])
    result = train_from_files("grpo", qwen2_dir, data, out=tmp_path / "grpo", steps=2,
                              reward="rlhf_edu.tasks.sentiment:gold_reward",
                              options={"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 6, "device": "cpu",
                                       "eval_every": 100}, verbose=False)
    assert result["steps"] == 2
    assert {"reward", "kl", "length"} <= set(result["after"])
    with pytest.raises(ValueError, match="needs a reward"):
        train_from_files("grpo", qwen2_dir, data, out=tmp_path / "x", steps=1, verbose=False)
    with pytest.raises(ValueError, match="cannot import"):
        train_from_files("grpo", qwen2_dir, data, out=tmp_path / "x", steps=1, reward="no_such_module:f",
                         verbose=False)


def test_a_trained_reward_model_is_the_reward_of_an_online_run(qwen2_dir, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    train_from_files("reward", qwen2_dir, pairs, out=tmp_path / "rm", steps=1,
                     options={"batch_size": 3, "device": "cpu"}, verbose=False)
    assert type(load_model(tmp_path / "rm")).__name__ == "RewardModel"
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p["prompt"]} for p in PAIRS])
    result = train_from_files("rloo", qwen2_dir, prompts, out=tmp_path / "rloo", steps=1, reward=str(tmp_path / "rm"),
                              options={"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 4, "device": "cpu"},
                              verbose=False)
    assert result["steps"] == 1 and "reward" in result["after"]
    with pytest.raises(ValueError, match="not a RewardModel"):
        train_from_files("rloo", qwen2_dir, prompts, out=tmp_path / "x", steps=1, reward=str(qwen2_dir), verbose=False)


@pytest.mark.parametrize("line, message", [
    ("not json", "line 2: not valid JSON"),
    ('["a list"]', "line 2: expected a JSON object"),
    ('{"prompt": "x", "chosen": "y"}', "line 2: missing field 'rejected'"),
    ('{"prompt": "x", "chosen": "", "rejected": "z"}', "line 2: 'chosen' is empty"),
    ('{"prompt": "x", "chosen": 3, "rejected": "z"}', "line 2: 'chosen' must be a string"),
    ('{"prompt": "' + "review: the film was " * 14 + '", "chosen": "y", "rejected": "z"}',
     "line 2: the prompt is .* tokens, the model's context is 64"),
])
def test_a_bad_record_is_named_by_its_line(qwen2_dir, tmp_path, line, message):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(PAIRS[0]) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        train_from_files("dpo", qwen2_dir, data, out=tmp_path / "out", steps=1, verbose=False)


def test_kto_labels_must_be_booleans(tmp_path):
    data = write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "a", "completion": "b", "label": True},
                                                {"prompt": "a", "completion": "c", "label": "yes"}])
    with pytest.raises(ValueError, match="line 2: 'label' must be true or false"):
        read_records(data, "kto")
    assert read_records(write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "a", "completion": "b", "label": False,
                                                            "extra": 1}]), "kto") == [
        {"prompt": "a", "completion": "b", "label": False}]


def test_options_are_the_trainers_keyword_arguments():
    from rlhf_edu.train import train_dpo, train_grpo

    dpo = {f.name: f for f in dataclasses.fields(method_options("dpo"))}
    assert dpo["beta"].default == 0.3 and "implicit KL" in dpo["beta"].metadata["help"]
    assert {"ref_model", "eval_prompts", "gold_reward_fn", "progress", "steps"}.isdisjoint(dpo)
    assert "loss" not in {f.name for f in dataclasses.fields(method_options("ipo"))}
    grpo = {f.name: f for f in dataclasses.fields(method_options("grpo"))}
    import inspect

    for fn, fields in ((train_dpo, dpo), (train_grpo, grpo)):
        for name, field in fields.items():
            assert inspect.signature(fn).parameters[name].default == field.default
    assert set(METHODS) == {"sft", "reward", "dpo", "ipo", "kto", "simpo", "orpo", "grpo", "rloo", "ppo"}


def test_help_lists_the_methods_options(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "kto", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--lambda_u" in text and "--beta" in text and "--data" in text
    for argv, message in ((["train"], "the following arguments are required: METHOD"),
                          (["train", "nonsense"], "unknown method 'nonsense'")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "rlhf-edu train: error: " + message in err and "sft, reward, dpo" in err
    assert main(["train", "--help"]) == 0 and "METHOD" in capsys.readouterr().out


def test_a_users_error_is_a_usage_error_not_a_traceback(qwen2_dir, tmp_path, capsys, monkeypatch):
    import rlhf_edu.train.launcher as launcher

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text(json.dumps(PAIRS[0]) + "\nnot json\n")
    cases = [
        (["--data", str(tmp_path / "missing.jsonl")], "data: no file"),
        (["--data", str(bad_line)], "line 2: not valid JSON"),
        (["--data", str(data), "--model", str(tmp_path / "no_model")], "no_model"),
        (["--data", str(data), "--beta", "-1"], "beta"),
    ]
    for extra, message in cases:
        argv = ["train", "dpo", "--model", str(qwen2_dir), "--out", str(tmp_path / "out"), "--steps", "1",
                "--device", "cpu", "--quiet", *extra]
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2, extra
        err = capsys.readouterr().err
        assert "rlhf-edu train dpo: error: " in err and message in err and "Traceback" not in err, (extra, err)

    monkeypatch.setenv("RLHF_EDU_TRACEBACK", "1")  # the user's errors with their traceback, on demand
    with pytest.raises(FileNotFoundError, match="data: no file"):
        main(["train", "dpo", "--model", str(qwen2_dir), "--data", str(tmp_path / "missing.jsonl"), "--quiet",
              "--out", str(tmp_path / "out")])
    monkeypatch.delenv("RLHF_EDU_TRACEBACK")

    def bug(*args, **kwargs):
        raise RuntimeError("a bug of the library")

    monkeypatch.setattr(launcher, "train_from_files", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # not the user's: the traceback stays
        main(["train", "dpo", "--model", str(qwen2_dir), "--data", str(data), "--quiet"])


def records_of_kind(kind):
    """PAIRS as the records a method of this kind reads (``METHODS[method][1]``)."""
    return {
        "completion": [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS],
        "pair": PAIRS,
        "label": [{"prompt": p["prompt"], "completion": p[k], "label": k == "chosen"}
                  for p in PAIRS for k in ("chosen", "rejected")],
        "prompt": [{"prompt": p["prompt"]} for p in PAIRS],
    }[kind]


@pytest.mark.parametrize("method", ["sft", "ipo", "kto", "simpo", "orpo", "ppo"])
def test_every_other_method_takes_a_step(method, qwen2_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    kind = METHODS[method][1]
    records = records_of_kind(kind)
    data = write_jsonl(tmp_path / "data.jsonl", records)
    options = {"device": "cpu"}
    options.update({"batch_size": 4, "minibatch_size": 4, "max_new_tokens": 4} if method == "ppo" else
                   {"batch_size": 2})
    result = train_from_files(method, qwen2_dir, data, out=tmp_path / method, steps=1, options=options,
                              reward="rlhf_edu.tasks.sentiment:gold_reward" if kind == "prompt" else None,
                              verbose=False)
    assert result["steps"] == 1 and result["records"] == len(records)  # the file's records
    AutoModelForCausalLM.from_pretrained(tmp_path / method)  # loads


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_on_the_gpu_in_bfloat16(method, qwen2_dir, tmp_path):
    """The scale-up path a reader takes: a saved model, JSONL records, ``--device cuda --dtype bfloat16``."""
    from transformers import AutoModelForCausalLM

    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bfloat16 (older than Ampere)")
    kind = METHODS[method][1]
    records = records_of_kind(kind)
    data = write_jsonl(tmp_path / "data.jsonl", records)
    options = {"device": "cuda", "dtype": "bfloat16"}
    options.update({"batch_size": 4, "minibatch_size": 4, "max_new_tokens": 4} if method == "ppo" else
                   {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 4, "eval_every": 100}
                   if kind == "prompt" else {"batch_size": 2})
    result = train_from_files(method, qwen2_dir, data, out=tmp_path / method, steps=2, options=options,
                              reward="rlhf_edu.tasks.sentiment:gold_reward" if kind == "prompt" else None,
                              verbose=False)
    assert result["steps"] == 2
    history = json.loads((tmp_path / method / "history.json").read_text())
    losses = [row["loss"] for row in history["rows"] if "loss" in row]
    assert losses and all(isinstance(x, float) and x == x and abs(x) < 1e6 for x in losses), losses
    # a reward model is saved as rlhf-edu's RewardModel (backbone + head), a policy as a plain causal LM
    trained = load_model(tmp_path / method) if method == "reward" else AutoModelForCausalLM.from_pretrained(tmp_path / method)
    assert all(bool(torch.isfinite(p).all()) for p in trained.parameters())
    assert next(trained.parameters()).dtype == torch.float32  # bf16 compute, float32 weights saved


@pytest.fixture(scope="module")
def char_reward_dir(tmp_path_factory):
    """A reward-model folder whose tokenizer (characters, 57 ids) is not the Qwen2 policy's (BPE, ~300 ids)."""
    from rlhf_edu.lm import RewardModel, char_tokenizer, save_model, tiny_causal_lm

    tok = char_tokenizer()
    path = tmp_path_factory.mktemp("char_rm")
    save_model(RewardModel(tiny_causal_lm(tok, d_model=16, n_layer=1), seed=0), path, tok)
    return path


def test_a_reward_folder_scores_with_its_own_tokenizer(qwen2_dir, char_reward_dir, tmp_path):
    from rlhf_edu.train.launcher import load_reward
    from rlhf_edu.train.rollouts import as_reward_fn

    rm, own = load_model(char_reward_dir, return_tokenizer=True)
    completions, prompts = [" great fun.", " dull."], ["review: the film was", "review: the cafe was"]
    expected = as_reward_fn(rm, own)(completions, prompts)
    score = load_reward(str(char_reward_dir), "cpu")
    assert list(score(completions, prompts)) == pytest.approx(list(expected), abs=1e-6)
    # an online run whose policy tokenizer has other (and more) ids than the reward model's
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p["prompt"]} for p in PAIRS])
    for method, options in (("rloo", {"group_size": 2, "prompts_per_step": 2}),
                            ("ppo", {"batch_size": 2, "minibatch_size": 2})):
        result = train_from_files(method, qwen2_dir, data, out=tmp_path / method, steps=1, reward=str(char_reward_dir),
                                  options={**options, "max_new_tokens": 4, "device": "cpu"}, verbose=False)
        assert result["steps"] == 1 and math.isfinite(result["after"]["reward"])


def test_a_reward_folder_that_cannot_read_the_rollouts_is_refused_before_training(tmp_path):
    """A GPT-2 reward model of 24 positions (a learned position table) reading the policy's tokenizer
    (characters): with prompts of up to 21 tokens, --max_new_tokens 3 cannot be scored (21 + 3 + <eos> > 24),
    so the run stops before training, naming the limit; --max_new_tokens 2 fits (and the launcher's own table
    shortens its answers to fit the reward model too). With another tokenizer a generated token may be several
    of the reward model's: the text is then refused when it comes (as_reward_fn), not up front."""
    from rlhf_edu.lm import RewardModel, char_tokenizer, save_model, tiny_causal_lm

    tok = char_tokenizer()
    policy, folder = tmp_path / "policy", tmp_path / "short_rm"
    save_model(tiny_causal_lm(tok, d_model=16, n_layer=1, seed=0), policy, tok)
    save_model(RewardModel(tiny_causal_lm(tok, d_model=16, n_layer=1, max_length=24), seed=0), folder, tok)
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p["prompt"]} for p in PAIRS])
    longest = max(len(p["prompt"]) for p in PAIRS) + 1  # characters + <bos>
    room = 24 - longest - 1
    options = {"group_size": 2, "prompts_per_step": 2, "device": "cpu"}
    with pytest.raises(ValueError, match=rf"reads at most 24 positions.*max_new_tokens <= {room}"):
        train_from_files("grpo", policy, data, out=tmp_path / "no", steps=1, reward=str(folder),
                         options={**options, "max_new_tokens": room + 1}, verbose=False)
    assert not (tmp_path / "no" / "metrics.json").exists()
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):  # the trainer's own words, not a TypeError
        train_from_files("grpo", policy, data, out=tmp_path / "zero", steps=1, reward=str(folder),
                         options={**options, "max_new_tokens": 0}, verbose=False)
    result = train_from_files("grpo", policy, data, out=tmp_path / "yes", steps=1, reward=str(folder),
                              options={**options, "max_new_tokens": room}, verbose=False)
    assert result["steps"] == 1 and math.isfinite(result["after"]["reward"])


def test_a_reward_folder_without_a_tokenizer_is_refused(char_reward_dir, tmp_path):
    import shutil

    from rlhf_edu.train.launcher import load_reward

    bare = tmp_path / "bare_rm"
    shutil.copytree(char_reward_dir, bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(ValueError, match="no tokenizer"):
        load_reward(str(bare), "cpu")


def test_out_is_checked_and_created_before_the_model_loads(qwen2_dir, tmp_path, monkeypatch):
    import rlhf_edu.lm

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    loads = []
    real_load_model = rlhf_edu.lm.load_model
    monkeypatch.setattr(rlhf_edu.lm, "load_model", lambda *a, **k: loads.append(a) or real_load_model(*a, **k))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, message in ((a_file, "exists and is not a folder"), (a_file / "out", "out: cannot create"),
                         (qwen2_dir, "is the --model folder")):
        with pytest.raises((ValueError, OSError), match=message):
            train_from_files("dpo", qwen2_dir, data, out=out, steps=1, options={"device": "cpu"}, verbose=False)
    assert loads == [], "the model was loaded before --out was checked"
    before = sorted(p.name for p in qwen2_dir.iterdir())
    with pytest.raises(SystemExit) as stop:  # --out equal to --model, written another way
        main(["train", "dpo", "--model", str(qwen2_dir), "--data", str(data), "--out", str(qwen2_dir) + "/.",
              "--device", "cpu", "--quiet"])
    assert stop.value.code == 2 and sorted(p.name for p in qwen2_dir.iterdir()) == before
    # a run that fails after --out was created leaves no empty folder behind
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1"):
        train_from_files("dpo", qwen2_dir, bad, out=tmp_path / "new" / "out", steps=1, options={"device": "cpu"},
                         verbose=False)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("method, record, message", [
    ("sft", {"prompt": "review: the film was", "completion": " dull" * 70},
     r"line 2: prompt \+ completion \(with <bos>/<eos>\) is \d+ tokens, the model's context is 64"),
    ("kto", {"prompt": "review: the film was", "completion": " dull" * 70, "label": False},
     r"line 2: prompt \+ completion .* is \d+ tokens"),
    ("dpo", {"prompt": "review: the film was", "chosen": " fun.", "rejected": " dull" * 70},
     r"line 2: prompt \+ rejected .* is \d+ tokens"),
    ("grpo", {"prompt": "review: the film was " * 10}, r"line 2: the prompt is \d+ tokens and --max_new_tokens is 32"),
])
def test_a_record_that_does_not_fit_the_context_is_named_by_its_line(method, record, message, qwen2_dir, tmp_path):
    kind = METHODS[method][1]
    data = write_jsonl(tmp_path / "data.jsonl", [records_of_kind(kind)[0], record])
    with pytest.raises(ValueError, match=message) as error:
        train_from_files(method, qwen2_dir, data, out=tmp_path / "out", steps=1, verbose=False,
                         reward="rlhf_edu.tasks.sentiment:gold_reward" if kind == "prompt" else None,
                         options={"device": "cpu", "max_new_tokens": 32} if kind == "prompt" else {"device": "cpu"})
    assert str(data) in str(error.value)
    if kind == "prompt":  # room left for fewer sampled tokens: the message says how many
        room = int(re.search(r"--max_new_tokens (\d+) or less", str(error.value)).group(1))
        train_from_files(method, qwen2_dir, data, out=tmp_path / "out", steps=1, verbose=False,
                         reward="rlhf_edu.tasks.sentiment:gold_reward",
                         options={"device": "cpu", "max_new_tokens": room, "group_size": 2, "prompts_per_step": 2})


def test_options_that_may_be_none_take_the_literal_none(qwen2_dir, tmp_path, monkeypatch, capsys):
    import rlhf_edu.train.launcher as launcher

    seen = {}
    monkeypatch.setattr(launcher, "train_from_files", lambda method, *a, options, **k: seen.update({method: options}))
    data = str(tmp_path / "data.jsonl")
    run = ["--model", str(qwen2_dir), "--data", data, "--quiet"]
    assert main(["train", "grpo", *run, "--std", "None", "--clip_eps_high", "None", "--max_grad_norm", "None"]) == 0
    assert seen["grpo"]["std"] is None and seen["grpo"]["clip_eps_high"] is None
    assert seen["grpo"]["max_grad_norm"] is None
    assert main(["train", "grpo", *run, "--std", "batch", "--clip_eps_high", "0.28"]) == 0
    assert seen["grpo"]["std"] == "batch" and seen["grpo"]["clip_eps_high"] == 0.28
    assert main(["train", "ppo", *run, "--reward_normalization", "None", "--value_clip", "None"]) == 0
    assert seen["ppo"]["reward_normalization"] is None and seen["ppo"]["value_clip"] is None
    assert main(["train", "kto", *run, "--lambda_d", "None"]) == 0 and seen["kto"]["lambda_d"] is None
    with pytest.raises(SystemExit) as stop:  # beta cannot be None
        main(["train", "dpo", *run, "--beta", "None"])
    assert stop.value.code == 2 and "invalid float value: 'None'" in capsys.readouterr().err


@pytest.mark.parametrize("method", sorted(METHODS))
def test_help_offers_only_usable_options_in_plain_text_with_defaults(method, capsys):
    with pytest.raises(SystemExit):
        main(["train", method, "--help"])
    text = capsys.readouterr().out
    options = set(re.findall(r"^  (--\w+)", text, flags=re.M))
    # options that act only with an object argument the command line cannot pass
    assert options.isdisjoint({"--eval_every", "--eval_samples", "--eval_max_new_tokens", "--ptx_coef",
                               "--critic_init", "--eval_prompts", "--ptx_examples"}), options
    assert ":math:" not in text and "``" not in text and ":func:" not in text
    # every option's entry ends with its default (ArgumentDefaultsHelpFormatter needs a help text to add it)
    entries = re.split(r"\n  (?=--)", text.split("options:", 1)[1])[1:]
    undocumented = [e.split()[0] for e in entries
                    if "(default:" not in e and e.split()[0] not in ("--model", "--data")]
    assert not undocumented, undocumented
    steps = next(e for e in entries if e.startswith("--steps"))
    if METHODS[method][1] != "prompt":
        assert "overrides --epochs" in " ".join(steps.split())
    if method == "ppo":
        assert "epsilon" not in text or "\\epsilon" not in text
        assert "beta, the KL coefficient" in " ".join(text.split())


def test_steps_beyond_the_data_report_the_files_records_and_pass_each_record_once(qwen2_dir, tmp_path, monkeypatch):
    """--steps is the trainer's max_steps: the file's records, each once in the list (DPO's reference
    log-probs once per record), as many reshuffled passes as the steps need, whole or not."""
    import rlhf_edu.train as train
    import rlhf_edu.train.dpo as dpo_module

    seen, scored = [], []
    real, real_frozen = train.train_dpo, dpo_module.frozen_logps

    def spy(policy, tokenizer, pairs, **kwargs):
        seen.append((len(pairs), kwargs.get("max_steps")))
        return real(policy, tokenizer, pairs, **kwargs)

    def frozen_spy(model, data, *args, **kwargs):
        scored.append(data.input_ids.shape[0])
        return real_frozen(model, data, *args, **kwargs)

    monkeypatch.setattr(train, "train_dpo", spy)
    monkeypatch.setattr(dpo_module, "frozen_logps", frozen_spy)
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    options = {"batch_size": 1, "device": "cpu", "sft_weight": 0.0}
    for steps in (6, 4):  # two whole passes; a pass and a third
        result = train_from_files("dpo", qwen2_dir, data, out=tmp_path / str(steps), steps=steps, options=options,
                                  verbose=False)
        assert result["steps"] == steps and result["records"] == 3 and seen[-1] == (3, steps)
        assert scored[-1] == 2 * 3, "the reference scores each record's chosen and rejected rows once"
        history = json.loads((tmp_path / str(steps) / "history.json").read_text())
        assert len(history["rows"]) == steps
        assert json.loads((tmp_path / str(steps) / "metrics.json").read_text())["records"] == 3


def test_max_steps_takes_that_many_steps_over_reshuffled_passes_in_every_offline_trainer():
    """max_steps (transformers' name) in each offline trainer: exactly that many optimiser steps, each pass
    over the data reshuffled; max_steps of two whole passes is epochs=2, step for step."""
    from rlhf_edu.lm import RewardModel
    from rlhf_edu.train import train_dpo, train_kto, train_orpo, train_reward_model, train_sft, train_simpo

    tok = char_tokenizer()
    pairs = [{"prompt": f"{i}+1=", "chosen": f"{i + 1}.", "rejected": "0."} for i in range(3)]
    labelled = [{"prompt": p["prompt"], "completion": p[k], "label": k == "chosen"} for p in pairs
                for k in ("chosen", "rejected")]
    sft = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    calls = {
        "sft": lambda m, **kw: train_sft(m, tok, sft, batch_size=2, **kw),
        "reward": lambda m, **kw: train_reward_model(RewardModel(m), tok, pairs, batch_size=2, **kw),
        "dpo": lambda m, **kw: train_dpo(m, tok, pairs, batch_size=2, **kw),
        "kto": lambda m, **kw: train_kto(m, tok, labelled, batch_size=4, **kw),
        "simpo": lambda m, **kw: train_simpo(m, tok, pairs, batch_size=2, **kw),
        "orpo": lambda m, **kw: train_orpo(m, tok, pairs, batch_size=2, **kw),
    }
    for name, call in calls.items():
        per_pass = 2  # 3 records in twos (kto: 6 records in fours)
        model = lambda: tiny_causal_lm(tok, d_model=16, n_layer=1, seed=0)  # noqa: E731
        _, odd = call(model(), max_steps=3, device="cpu", progress=False)
        assert list(odd["step"]) == [0, 1, 2] and list(odd["epoch"]) == [0, 0, 1], name
        a, by_steps = call(model(), max_steps=2 * per_pass, device="cpu", progress=False)
        b, by_epochs = call(model(), epochs=2, device="cpu", progress=False)
        assert list(by_steps["loss"]) == list(by_epochs["loss"]), name
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), name
        with pytest.raises(ValueError, match="max_steps"):
            call(model(), max_steps=0, device="cpu", progress=False)


def test_a_byte_order_mark_before_line_1_is_read(tmp_path):
    data = tmp_path / "bom.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + (json.dumps(PAIRS[0]) + "\n").encode())
    assert read_records(data, "dpo") == [PAIRS[0]]


def test_metrics_record_the_run_and_the_reward_models_accuracy(qwen2_dir, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    train_from_files("reward", qwen2_dir, pairs, out=tmp_path / "rm", steps=1,
                     options={"batch_size": 3, "device": "cpu"}, verbose=False)
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert {"loss", "accuracy"} <= set(metrics["final"]) and 0 <= metrics["final"]["accuracy"] <= 1
    assert metrics["device"] == "cpu" and metrics["dtype"] == "float32" and metrics["records"] == 3
    train_from_files("dpo", qwen2_dir, pairs, out=tmp_path / "dpo", steps=1,
                     options={"batch_size": 3, "device": "cpu"}, verbose=False)
    metrics = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    assert "loss" in metrics["final"] and "not held out" in metrics["table_prompts"]
    from rlhf_edu.train import launcher

    assert "held-out" not in launcher.__doc__ and "AutoModelForCausalLM" in launcher.__doc__
    assert "rlhf_edu.lm.load_model(DIR)" in launcher.__doc__


def test_reward_given_as_a_path_in_the_python_api_is_loaded_like_a_string(monkeypatch, tmp_path):
    import rlhf_edu.train.launcher as launcher

    seen = []

    def fake_load(spec, device):
        seen.append(spec)
        raise ValueError("stop here")

    monkeypatch.setattr(launcher, "_load_reward", fake_load)
    model_dir = tmp_path / "model"
    tok = char_tokenizer()
    save_model(tiny_causal_lm(tok, d_model=32, n_layer=1), model_dir, tok)
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "1+1="}\n')
    with pytest.raises(ValueError, match="stop here"):
        launcher.train_from_files("grpo", model_dir, data, out=tmp_path / "out", steps=1,
                                  reward=tmp_path / "reward_folder", progress=False)
    assert seen == [str(tmp_path / "reward_folder")]


def test_steps_reported_are_the_steps_taken_not_the_rows_logged():
    from rlhf_edu.train.history import History
    from rlhf_edu.train.launcher import _steps_run

    history = History("sft")
    for step in (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99):  # --steps 100 --log_every 10: train_sft logs the last
        history.log(step=step, loss=1.0)
    assert len(history) == 11 and _steps_run(history) == 100
    assert _steps_run(History("empty")) == 0


@pytest.mark.parametrize("method, fields", [("sft", ("completion",)), ("kto", ("completion",)),
                                            ("dpo", ("chosen", "rejected"))])
def test_records_that_fit_alone_but_not_in_one_padded_table_are_named_by_both_lines(method, fields, qwen2_dir,
                                                                                    tmp_path):
    """Each record fits the context (64), but the trainers pad every prompt to the longest and every completion to
    the longest, into one table: the longest prompt (line 1) and the longest completion (line 3) need more than 64
    positions together. Without the file-level check the trainer refused the table without naming a line."""
    from transformers import AutoTokenizer

    from rlhf_edu.lm import context_length, load_model
    from rlhf_edu.train.launcher import read_records

    kind = METHODS[method][1]
    base = records_of_kind(kind)[0]
    long_prompt = {**base, "prompt": "review: the film was " * 4}
    long_completion = {**base, **{f: " dull and slow" * 6 for f in fields}}
    data = write_jsonl(tmp_path / "data.jsonl", [long_prompt, base, long_completion])
    tok = AutoTokenizer.from_pretrained(qwen2_dir)
    context = context_length(load_model(qwen2_dir))
    sizes = [(len(tok(r["prompt"]).input_ids), len(tok(r[fields[-1]]).input_ids)) for r in (long_prompt, long_completion)]
    assert all(p + c + 2 <= context for p, c in sizes) and sizes[0][0] + sizes[1][1] + 2 > context, sizes
    with pytest.raises(ValueError, match=rf"longest prompt \(line 1, \d+ tokens with <bos>\) and the longest "
                                         rf"{fields[-1] if method == 'dpo' else 'completion'} \(line 3"):
        read_records(data, method, tok, context)
    with pytest.raises(ValueError, match=r"line 1.*line 3") as error:
        train_from_files(method, qwen2_dir, data, out=tmp_path / "out", steps=1, verbose=False, options={"device": "cpu"})
    assert str(data) in str(error.value)
    assert len(read_records(data, method, tok, context=None)) == 3   # no model given: no length check
