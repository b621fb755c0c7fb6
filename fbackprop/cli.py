"""The ``fbackprop`` command; each subcommand lives in ``fbackprop/commands/<name>.py``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__, plotting
from .commands import SUMMARIES

COMMANDS = tuple(SUMMARIES)  # modules under fbackprop.commands, in the order --help lists them


def build_parser(only=None) -> argparse.ArgumentParser:
    """The ``fbackprop`` argument parser.

    Args:
      only: build the options of this subcommand alone; every other subcommand gets just its
        name and one-line help, and its module (with JAX behind it) is not imported, so that
        ``fbackprop --help`` and ``--version`` stay fast. ``None`` builds every subcommand.

    Returns:
      The :class:`argparse.ArgumentParser`.
    """
    parser = argparse.ArgumentParser(
        prog="fbackprop",
        description="Backpropagation derived, executed and checked against jax.grad.")
    parser.add_argument("--version", action="version", version=f"fbackprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        if only is None or name == only:
            importlib.import_module(f"fbackprop.commands.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=SUMMARIES[name], add_help=False)
    return parser


def _command(argv) -> str:
    """The subcommand ``argv`` names: its first word not starting with ``-`` (the top level has
    no option that takes a value), or ``""``."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``).

    JAX's persistent compilation cache is on for every command (off with
    ``FBACKPROP_CACHE_DIR=""``), so a second run loads its compiled programs from disk instead
    of compiling them again.

    Args:
      argv: the arguments after ``fbackprop``.

    Returns:
      The exit status: 0 ok, 1 a check or run failed, 2 bad usage, 141 when the reader of the
      output went away (``fbackprop errata --markdown | head``), quietly, as a shell tool does.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command(argv)
    if command == "train" and not {"-h", "--help"} & set(argv):
        plotting.start_process()  # matplotlib's import, on another core while JAX's runs here
    try:
        args = build_parser(only=command).parse_args(argv)
        args.argv = argv  # a supervised run starts it again
        from .jax_cache import enable_compilation_cache  # after parsing: --help stays fast

        enable_compilation_cache()  # before the first compilation of this process
        status = args.func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # the reader closed the pipe: send the rest of the output nowhere, exit without a trace
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    finally:
        plotting.close_process()  # unused: the command failed before its plot


if __name__ == "__main__":
    sys.exit(main())
