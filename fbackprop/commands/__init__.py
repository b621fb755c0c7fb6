"""Subcommands of the ``fbackprop`` command, one module each.

Each module defines ``add_parser(subparsers)``, which adds its subparser and sets ``func`` to a
function ``(args) -> exit status``. Heavy imports belong inside that function, so that
``fbackprop --help`` stays fast.
:data:`SUMMARIES` holds each subcommand's one-line help, in the order ``fbackprop --help`` lists
them: the command line builds only the subparser it runs, and names the others from here.
"""

SUMMARIES = {
    "train": "train a network with the hand-written gradients",
    "sample": "generate text with a trained character model",
    "check": "check hand-written gradients against jax.grad, layer by layer",
    "errata": "check the source texts' equations against jax.grad",
}


def any_case(choices):
    """An argparse ``type`` that maps a value to the one of ``choices`` equal to it ignoring case
    (``--text gordon`` → ``"Gordon"``); other values pass through for ``choices`` to reject."""
    by_key = {str(c).casefold(): c for c in choices}

    def convert(value: str):
        return by_key.get(value.casefold(), value)

    return convert


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, in the plural unless ``n`` is 1: ``plural(1, "epoch")`` → ``"1 epoch"``,
    ``plural(5, "feature")`` → ``"5 features"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
