"""The ``fbackprop`` command.

    fbackprop check [--dtype float32|float64] [--cost NAME] [--json]

``check`` verifies the hand-written gradients of every built-in configuration against
``jax.grad`` and prints a table; the exit status is 1 if any row fails.
"""
from __future__ import annotations

import argparse
import json
import sys

from .costs import COSTS


def _check(args) -> int:
    from . import verify

    configs = verify.builtin_configs()
    if args.cost:
        configs = [c for c in configs if c.cost == args.cost]
    dtypes = (args.dtype,) if args.dtype else ("float64", "float32")
    rows = verify.run_configs(configs, dtypes)
    ok = all(r["pass"] for r in rows)
    if args.json:
        print(json.dumps({"ok": ok, "rows": rows}, indent=1))
    else:
        width = max(len(r["model"]) for r in rows)
        print(f"{'model':{width}}  {'activation':10}  {'cost':22}  {'dtype':7}  "
              f"{'max rel err':>11}  {'tolerance':>9}  pass")
        for r in rows:
            print(f"{r['model']:{width}}  {r['activation']:10}  {r['cost']:22}  {r['dtype']:7}  "
                  f"{r['max_rel_error']:11.2e}  {r['tolerance']:9.0e}  "
                  f"{'yes' if r['pass'] else 'NO'}")
        failed = sum(not r["pass"] for r in rows)
        print(f"\n{len(rows) - failed}/{len(rows)} passed"
              + ("" if ok else f" — {failed} FAILED"))
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fbackprop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    check = sub.add_parser("check", help="verify hand-written gradients against jax.grad")
    check.add_argument("--dtype", choices=("float32", "float64"),
                       help="check one dtype only (default: both)")
    check.add_argument("--cost", choices=sorted(COSTS), help="check one cost only")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=_check)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
