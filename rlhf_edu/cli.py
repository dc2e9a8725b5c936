"""The ``rlhf-edu`` console command.

- ``rlhf-edu demo``: the book's end-to-end run on the default tiny model (SFT -> reward model -> PPO, and
  DPO and GRPO from the same SFT model); figures, a metrics file and a table in the output folder.
- ``rlhf-edu figures``: every slide figure of the book into ``figures/``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
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
