"""Subcommands of the ``fbackprop`` command, one module each.

Each module defines ``add_parser(subparsers)``, which adds its subparser and sets ``func`` to a
function ``(args) -> exit status``. Heavy imports belong inside that function, so that
``fbackprop --help`` stays fast.
"""


def any_case(choices):
    """An argparse ``type`` that maps a value to the one of ``choices`` equal to it ignoring case
    (``--text gordon`` → ``"Gordon"``); other values pass through for ``choices`` to reject."""
    by_key = {str(c).casefold(): c for c in choices}

    def convert(value: str):
        return by_key.get(value.casefold(), value)

    return convert
