"""Command-line arguments declared once: `gpt2dist train` (cli.py) and the per-rank `python -m gpt2dist.train`
that every launcher starts take the same flags, and every subcommand reads overrides the same way. Torch-free,
so `gpt2dist --help` and argument errors stay instant."""

from __future__ import annotations

import argparse
import sys

from gpt2dist.config.overrides import normalize_argv
from gpt2dist.errors import UserError


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML run config (see examples/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=400")
    parser.add_argument("--no-resume", action="store_true", help="start fresh; the run dir must hold no checkpoint")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (overrides, batch triple, backend) and exit without training")


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides a `train` command line means: `--no-resume` is `train.resume=false`."""
    return [*args.overrides] + (["train.resume=false"] if args.no_resume else [])


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """`argv` parsed, overrides collected wherever they stand: `--train.lr 3e-4` is `train.lr=3e-4`, and
    `key=value` items after options (`--world-size 8 a.b=1`) join the overrides. Anything else left over is
    argparse's usage error (exit 2)."""
    try:
        argv = normalize_argv(sys.argv[1:] if argv is None else list(argv))
    except UserError as exc:
        parser.error(str(exc))
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args
