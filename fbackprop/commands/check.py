"""``fbackprop check``: check every built-in configuration's hand-written rules, layer by layer,
against autodiff (and finite differences with ``--fd``); print a table; exit status 1 on failure,
2 when nothing matches the selection."""
from __future__ import annotations

import json
import sys

from ..costs import COSTS

MODELS = ("mlp", "cnn", "rnn", "lstm", "residual", "transformer")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "check", help="check hand-written gradients against jax.grad, layer by layer",
        description="Check each built-in configuration at a random point: every layer's "
                    "hand-written D_param and D_input against jax.vjp of its forward at the "
                    "autodiff delta, the cost's derivative, and the whole gradient against "
                    "jax.grad; --fd adds central finite differences (float64). Exit status 1 "
                    "on failure, 2 when no configuration matches.")
    p.add_argument("--model", choices=MODELS + ("all",), default="all",
                   help="model family to check (default: all)")
    p.add_argument("--cost", choices=sorted(COSTS), help="check one cost only")
    p.add_argument("--dtype", choices=("float32", "float64"),
                   help="check one dtype only (default: both)")
    p.add_argument("--fd", action="store_true",
                   help="add the three-way comparison with finite differences (float64 runs)")
    p.add_argument("--seed", type=int, default=0, help="sample point seed (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _fmt(v):
    return "—" if v is None else f"{v:.2e}"


def run(args) -> int:
    from ..jax_cache import enable_compilation_cache

    enable_compilation_cache()  # before the first compilation of this process
    from .. import suite

    configs = suite.builtin_configs()
    if args.model != "all":
        configs = [c for c in configs if c.model == args.model]
        if not configs:
            have = sorted({c.model for c in suite.builtin_configs()})
            print(f"fbackprop check: there are no built-in configurations for model "
                  f"{args.model!r} yet; models with configurations: {', '.join(have)}. "
                  f"Choose one of those with --model, or --model all.", file=sys.stderr)
            return 2
    if args.cost:
        configs = [c for c in configs if c.cost == args.cost]
        if not configs:
            print(f"fbackprop check: no {args.model} configuration uses cost {args.cost!r}; "
                  f"drop --cost or choose another model.", file=sys.stderr)
            return 2
    if args.fd and args.dtype == "float32":
        print("fbackprop check: --fd needs float64 (finite differences drown in float32 "
              "rounding); use --dtype float64, or no --dtype (FD then runs in the float64 "
              "checks only).", file=sys.stderr)
        return 2
    dtypes = (args.dtype,) if args.dtype else ("float64", "float32")
    results = [(suite.summary_row(cfg, dtype, rep), rep) for cfg, dtype, rep in
               suite.check_configs(configs, dtypes, finite_differences=args.fd,
                                     seed=args.seed)]
    rows = [row for row, _ in results]
    failed = [(row, rep) for row, rep in results if not row["pass"]]
    ok = not failed
    if args.json:
        print(json.dumps({"ok": ok, "rows": rows,
                          "failures": [rep.to_dict() for _, rep in failed]}, indent=1))
        return 0 if ok else 1
    width = max(len(r["model"]) for r in rows)
    fd_col = f"  {'FD rel err':>10}" if args.fd else ""
    print(f"{'model':{width}}  {'activation':10}  {'cost':22}  {'dtype':7}  "
          f"{'max rel err':>11}{fd_col}  {'tolerance':>9}  pass")
    for r in rows:
        fd = f"  {_fmt(r['fd_max_rel_error']):>10}" if args.fd else ""
        note = (f"  (layers {r['failing_layers']})" if r["failing_layers"] else
                f"  (at a kink: layers {r['at_kink']})" if r["at_kink"] else "")
        print(f"{r['model']:{width}}  {r['activation']:10}  {r['cost']:22}  {r['dtype']:7}  "
              f"{_fmt(r['max_rel_error']):>11}{fd}  {r['tolerance']:9.0e}  "
              f"{'yes' if r['pass'] else 'NO'}{note}")
    print("max rel err: largest max|hand − autodiff| / max|autodiff| over every layer rule, the "
          "cost and the whole gradient" + (f"; FD rows in float64 only (— in float32)"
                                           if args.fd else ""))
    for row, rep in failed:
        print(f"\n--- {row['model']} · {row['cost']} · {row['dtype']}: per-layer report ---")
        print(rep)
    print(f"\n{len(rows) - len(failed)}/{len(rows)} passed"
          + ("" if ok else f" — {len(failed)} FAILED"))
    return 0 if ok else 1
