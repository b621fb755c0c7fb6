"""``fbackprop errata``: check every implemented equation of the source texts against jax.grad."""
from __future__ import annotations

import json

from . import SUMMARIES, any_case

TEXTS = ("Kamper", "Gordon", "Bradbury", "Fleuret", "Jin")


def add_parser(subparsers):
    """Register ``fbackprop errata`` and its options.

    Args:
      subparsers: the ``argparse`` sub-parser collection of the ``fbackprop`` command.
    """
    p = subparsers.add_parser(
        "errata", help=SUMMARIES["errata"],
        description="Evaluate every equation of the five source texts that fbackprop implements, "
                    "as written, at random points, and compare it with jax.grad; print which hold, "
                    "which do not, which are debatable (the literal reading fails, the intent is a "
                    "convention) and their corrected or intended forms. Exit status 1 if any "
                    "equation behaves other than the table says (a correction or intended reading "
                    "that fails, an erratum or debatable equation that holds as written, or an "
                    "equation without a correction that does not hold).")
    p.add_argument("--text", choices=TEXTS, type=any_case(TEXTS),
                   help="one text only (any case)")
    p.add_argument("--errata-only", action="store_true",
                   help="list only the equations that do not hold as written, debatable ones "
                        "included")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--markdown", action="store_true",
                     help="the table as Markdown (docs/ERRATA.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random points (default 0)")
    p.set_defaults(func=run)


def consistent(result) -> bool:
    """Whether an entry behaves as documented.

    Args:
        result: an ``errata.Result``.

    Returns:
        True when the entry has no correction and holds, or has one (an erratum, or a debatable
        entry whose correction is the intended reading) and fails as written while the
        correction holds.
    """
    if result.entry.corrected:
        return (not result.holds) and bool(result.corrected_holds)
    return result.holds


def run(args) -> int:
    """Run ``fbackprop errata``: evaluate the selected equations and print the table.

    Args:
      args: the parsed command line.

    Returns:
      The exit status: 0 when every equation behaves as the table says, else 1.
    """
    from .. import errata

    entries = [e for e in errata.REGISTRY if args.text in (None, e.text)]
    results = errata.run(entries, seed=args.seed)
    shown = [r for r in results if not (args.errata_only and r.holds)]
    ok = all(consistent(r) for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "tolerance": errata.HOLDS_TOL,
                          "counts": errata.counts(shown),
                          "equations": [r.as_dict() for r in shown]}, indent=1))
    elif args.markdown:
        print(errata.render_markdown(shown))
    else:
        print(errata.render_text(shown))
        bad = [r for r in results if not consistent(r)]
        for r in bad:
            expected = ("fails as written, correction holds" if r.entry.corrected
                        else "holds as written")
            received = (f"{'holds' if r.holds else 'does not hold'} as written"
                        + ("" if r.corrected_error is None else
                           f", correction {'holds' if r.corrected_holds else 'fails'}"))
            print(f"UNEXPECTED: {r.entry.text} {r.entry.where}: expected {expected}; "
                  f"received {received}")
    return 0 if ok else 1
