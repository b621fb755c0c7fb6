"""``fbackprop check``: verify hand-written gradients against jax.grad and print a table."""
from __future__ import annotations

import json

from ..costs import COSTS


def add_parser(subparsers):
    p = subparsers.add_parser("check", help="verify hand-written gradients against jax.grad",
                              description="Verify every built-in configuration's hand-written "
                                          "gradient against jax.grad; exit status 1 on failure.")
    p.add_argument("--dtype", choices=("float32", "float64"),
                   help="check one dtype only (default: both)")
    p.add_argument("--cost", choices=sorted(COSTS), help="check one cost only")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import verify

    configs = verify.builtin_configs()
    if args.cost:
        configs = [c for c in configs if c.cost == args.cost]
    dtypes = (args.dtype,) if args.dtype else ("float64", "float32")
    rows = verify.run_configs(configs, dtypes)
    ok = all(r["pass"] for r in rows)
    if args.json:
        print(json.dumps({"ok": ok, "rows": rows}, indent=1))
        return 0 if ok else 1
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':{width}}  {'activation':10}  {'cost':22}  {'dtype':7}  "
          f"{'max rel err':>11}  {'tolerance':>9}  pass")
    for r in rows:
        print(f"{r['model']:{width}}  {r['activation']:10}  {r['cost']:22}  {r['dtype']:7}  "
              f"{r['max_rel_error']:11.2e}  {r['tolerance']:9.0e}  "
              f"{'yes' if r['pass'] else 'NO'}")
    failed = sum(not r["pass"] for r in rows)
    print(f"\n{len(rows) - failed}/{len(rows)} passed" + ("" if ok else f" — {failed} FAILED"))
    return 0 if ok else 1
