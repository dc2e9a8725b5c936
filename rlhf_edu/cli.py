"""The ``rlhf-edu`` console command.

- ``rlhf-edu demo``: the book's end-to-end run on the default tiny model (SFT -> reward model -> PPO, and
  DPO and GRPO from the same SFT model); figures, a metrics file and a table in the output folder.
- ``rlhf-edu figures``: every slide figure of the book into ``figures/``.
- ``rlhf-edu train METHOD --model DIR --data FILE.jsonl [--steps N] [--out DIR] [options]``: a trainer of the
  book on your own model and records (``rlhf_edu.train.launcher``); ``rlhf-edu train METHOD --help`` lists
  the method's options, read from its trainer's signature and docstring.
"""

from __future__ import annotations

import argparse
import os
import sys


_TRAIN_USAGE = "rlhf-edu train METHOD --model DIR --data FILE.jsonl [--steps N] [--out DIR] [options]"


def train_command(argv) -> int:
    """``rlhf-edu train METHOD ...``: the method's options parsed by ``transformers.HfArgumentParser``.

    A user's error (a bad option value, a missing or bad data file, a model folder that does not load: the
    ``ValueError`` and ``OSError`` the launcher and the trainers raise) ends as argparse's
    usage errors do: ``rlhf-edu train METHOD: error: <message>`` on stderr and exit status 2 (with the
    environment variable ``RLHF_EDU_TRACEBACK=1``: the traceback instead). Any other exception is a bug and
    keeps its traceback (a ``TypeError`` too: argparse has checked every value's type by then).
    """
    from transformers import HfArgumentParser

    from rlhf_edu.train.launcher import METHODS, method_options, train_from_files

    top = argparse.ArgumentParser(prog="rlhf-edu train", usage=_TRAIN_USAGE,
                                  description=f"METHOD: one of {', '.join(METHODS)}; "
                                              f"`rlhf-edu train METHOD --help` lists its options")
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            top.error(f"the following arguments are required: METHOD (one of {', '.join(METHODS)})")
        top.print_help()
        return 0
    method = argv[0]
    if method not in METHODS:
        top.error(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    options = method_options(method)
    nullable = _nullable(options)  # before HfArgumentParser, which rewrites the fields' types in place
    parser = HfArgumentParser(options, prog=f"rlhf-edu train {method}")
    _accept_none(parser, nullable)
    run = parser.add_argument_group("the run")
    run.add_argument("--model", required=True, default=argparse.SUPPRESS,
                     help="folder of the model and tokenizer (from_pretrained)")
    run.add_argument("--data", required=True, default=argparse.SUPPRESS,
                     help="JSONL records (see rlhf_edu.train.launcher)")
    run.add_argument("--steps", type=int, default=_steps_default(method), help=_steps_help(method))
    run.add_argument("--out", default=f"runs/train_{method}", help="output folder")
    run.add_argument("--reward", default=None, help="reward-model folder or module:function (online methods)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    parsed = vars(parser.parse_args(argv[1:]))  # unknown options: argparse's usage error
    launch = {k: parsed.pop(k) for k in ("model", "data", "steps", "out", "reward", "quiet")}
    trainer_options = parsed  # exactly the fields of method_options(method)
    try:
        train_from_files(method, launch["model"], launch["data"], out=launch["out"], steps=launch["steps"],
                         reward=launch["reward"], options=trainer_options, progress=not launch["quiet"])
    except (ValueError, OSError) as e:  # the user's to fix: a message, not a traceback (a TypeError is a bug)
        if os.environ.get("RLHF_EDU_TRACEBACK"):  # a library bug behind such an error: see where it came from
            raise
        parser.error(_one_line(e))
    return 0


def _steps_default(method):
    from rlhf_edu.train.launcher import ONLINE_KINDS, _trainer, _trainer_int

    fn, kind, _fixed = _trainer(method)
    return _trainer_int(fn, "steps", {}) if kind in ONLINE_KINDS else None


def _steps_help(method) -> str:
    from rlhf_edu.train.launcher import ONLINE_KINDS, METHODS

    if METHODS[method][1] in ONLINE_KINDS:
        return "rollout-and-update steps"
    return ("optimizer steps of --batch_size records each, over as many reshuffled passes over the file as they "
            "need; overrides --epochs (leave it out for --epochs passes over the records)")


def _nullable(options) -> set:
    """The options whose trainer argument may be ``None`` (``float | None``, ...)."""
    import dataclasses
    import typing

    return {f.name for f in dataclasses.fields(options) if type(None) in typing.get_args(f.type)}


def _accept_none(parser, nullable) -> None:
    """Let the ``nullable`` options take the literal ``None`` on the command line."""
    for action in parser._actions:
        if action.dest in nullable and callable(action.type):
            def convert(text, _type=action.type):
                return None if text == "None" else _type(text)

            convert.__name__ = getattr(action.type, "__name__", "value")  # argparse's "invalid float value"
            action.type = convert
            action.metavar = action.metavar or f"{action.dest.upper()}|None"


def _one_line(error) -> str:
    return str(error).strip() or type(error).__name__


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":
        return train_command(argv[1:])
    parser = argparse.ArgumentParser(prog="rlhf-edu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end RLHF on the default tiny model (a few CPU minutes)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of every random stream (default 0); same seed, same machine: same table")
    demo.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    demo.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    figures = sub.add_parser("figures", help="build the slide figures into a folder")
    figures.add_argument("--out", default="figures")
    figures.add_argument("--only", nargs="*", help="figure names (default: all)")
    sub.add_parser("train", help="a trainer of the book on your model and JSONL records (train METHOD --help)")

    args = parser.parse_args(argv)
    if args.command == "figures":
        from rlhf_edu.figures import build_figures

        build_figures(args.out, only=args.only)
        return 0
    from rlhf_edu.demo import run_demo

    run_demo(out_dir=args.out, seed=args.seed, device=args.device, quick=args.quick, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
