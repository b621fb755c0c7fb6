"""Subcommands of the ``fbackprop`` command, one module each.

Each module defines ``add_parser(subparsers)``, which adds its subparser and sets ``func`` to a
function ``(args) -> exit status``. Heavy imports belong inside that function, so that
``fbackprop --help`` stays fast.
"""
