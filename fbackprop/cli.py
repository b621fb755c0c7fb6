"""The ``fbackprop`` command; each subcommand lives in ``fbackprop/commands/<name>.py``."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("train", "check", "errata")  # modules under fbackprop.commands, in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbackprop",
        description="Backpropagation derived, executed and checked against jax.grad.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"fbackprop.commands.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run the ``fbackprop`` command; returns its exit status. JAX's persistent compilation
    cache is on for every command (off with ``FBACKPROP_CACHE_DIR=""``), so a second run
    loads its compiled programs from disk instead of compiling them again."""
    args = build_parser().parse_args(argv)
    from .jax_cache import enable_compilation_cache  # after parsing, so --help stays fast

    enable_compilation_cache()  # before the first compilation of this process
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
