"""``fbackprop check``: check every built-in configuration's hand-written rules, layer by layer,
against autodiff (and finite differences with ``--fd``); print a table; exit status 1 on failure,
2 when nothing matches the selection or the usage is wrong.

``--target module:factory`` checks the user's own object instead. The protocol: ``factory()``
(called with no arguments) returns ``(obj, args)`` or ``(obj, args, options)``:

* ``obj`` an :class:`~fbackprop.Layer`: ``args = (params, a)``, checked by ``fb.check_layer``;
* ``obj`` a :class:`~fbackprop.Network`: ``args = (cost, params, x, y)``, by ``fb.check``;
* ``obj`` a ``jax.custom_vjp`` function: ``args`` are its arguments, by ``fb.check_vjp``;

and ``options`` a dict of keyword arguments for that check (``tolerance``, ``kink_tol``, …).
``--dtype`` (default float64), ``--fd``, ``--seed`` and ``--json`` apply.
"""
from __future__ import annotations

import importlib
import json
import sys

from ..costs import COSTS
from ..training.registry import MODELS as TRAINABLE
from . import SUMMARIES, any_case

# every family the trainer builds, and the residual graph network, which is checked only
MODELS = TRAINABLE + tuple(m for m in ("residual", "transformer") if m not in TRAINABLE)


def add_parser(subparsers):
    """Register ``fbackprop check`` and its options.

    Args:
      subparsers: the ``argparse`` sub-parser collection of the ``fbackprop`` command.
    """
    p = subparsers.add_parser(
        "check", help=SUMMARIES["check"],
        description="Check each built-in configuration at a random point: every layer's "
                    "hand-written D_param and D_input against jax.vjp of its forward at the "
                    "autodiff delta, the cost's derivative, and the whole gradient against "
                    "jax.grad; --fd adds central finite differences (float64). Exit status 1 "
                    "on failure, 2 when no configuration matches.")
    # The families of the training registry; one without built-in configurations is refused
    # when the command runs (exit status 2), with the families that have some.
    p.add_argument("--model", choices=MODELS + ("all",), default="all",
                   type=any_case(MODELS + ("all",)),
                   help="model family to check (default: all)")
    p.add_argument("--cost", choices=sorted(COSTS), type=any_case(COSTS),
                   help="check one cost only")
    p.add_argument("--dtype", choices=("float32", "float64"),
                   type=any_case(("float32", "float64")),
                   help="check one dtype only (default: both)")
    p.add_argument("--fd", action="store_true",
                   help="add the three-way comparison with finite differences (float64 runs)")
    p.add_argument("--seed", type=int, default=0, help="sample point seed (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--target", metavar="MODULE:FACTORY",
                   help="check your own layer, network or jax.custom_vjp function: FACTORY() in "
                        "MODULE (importable from the current directory) returns (obj, args) or "
                        "(obj, args, options); args are (params, a) for a Layer, (cost, params, "
                        "x, y) for a Network, the function's arguments for a custom_vjp")
    p.add_argument("--custom-rules", action="store_true",
                   help="with --target: FACTORY() returns (fn, args) or (fn, args, options) for "
                        "any JAX function; every jax.custom_vjp/custom_jvp rule fn(*args) "
                        "reaches is checked at the operands it received (fb.check_custom_rules)")
    p.set_defaults(func=run)


def _fmt(v):
    return "—" if v is None else f"{v:.2e}"


def _fmt_tol(v):
    return "—" if v is None else f"{v:.1e}"


def _usage_error(message: str) -> int:
    print(f"fbackprop check: {message}", file=sys.stderr)
    return 2


def _load_target(spec: str):
    """``(obj, args, options)`` from ``module:factory``; ``ValueError`` with the fix if not."""
    module_name, sep, factory_name = spec.partition(":")
    if not sep or not module_name or not factory_name:
        raise ValueError(f"--target must be MODULE:FACTORY (e.g. mychecks:make_layer), received "
                         f"{spec!r}.")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current directory import
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"--target: cannot import module {module_name!r} ({err}); run from the "
                         f"folder that holds it or add that folder to PYTHONPATH.") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ValueError(f"--target: expected a function {factory_name!r} in module "
                         f"{module_name!r}, received "
                         f"{'nothing' if factory is None else type(factory).__name__}; define "
                         f"def {factory_name}(): return obj, args.")
    got = factory()
    if not (isinstance(got, tuple) and len(got) in (2, 3) and isinstance(got[1], (tuple, list))
            and (len(got) == 2 or isinstance(got[2], dict))):
        raise ValueError(f"--target: {factory_name}() must return (obj, args) or (obj, args, "
                         f"options) with args a tuple and options a dict, received "
                         f"{type(got).__name__}"
                         f"{f' of length {len(got)}' if isinstance(got, tuple) else ''}.")
    return got[0], tuple(got[1]), dict(got[2]) if len(got) == 3 else {}


def check_target(obj, args: tuple, options: dict):
    """The check the ``--target`` protocol names for ``obj`` (see the module docstring).

    Args:
      obj: a Layer, Network or ``jax.custom_vjp`` function.
      args: the positional arguments of its check after ``obj``.
      options: keyword arguments of its check.

    Returns:
      The :class:`~fbackprop.GradientReport`.

    Raises:
      TypeError: ``obj`` is none of the three.
    """
    import jax

    from ..gradcheck import check, check_layer, check_vjp
    from ..layers.base import Layer
    from ..network import Network

    if isinstance(obj, Layer):
        return check_layer(obj, *args, **options)
    if isinstance(obj, Network):
        return check(obj, *args, **options)
    if isinstance(obj, jax.custom_vjp):
        return check_vjp(obj, *args, **options)
    raise TypeError(f"--target: the factory's obj must be an fbackprop.Layer, an "
                    f"fbackprop.Network or a jax.custom_vjp function, received "
                    f"{type(obj).__name__}. Wrap a plain function with jax.custom_vjp, or check "
                    f"a loss and gradient with fb.check_grad in Python.")


def run_target(args) -> int:
    """Run ``fbackprop check --target MODULE:FACTORY``: check the object the factory returns.

    Args:
      args: the parsed command line.

    Returns:
      The exit status: 0 when the check passes, 1 when it fails, 2 for a usage error.
    """
    if args.model != "all" or args.cost:
        return _usage_error("--target checks your own object; drop --model and --cost.")
    if args.fd and args.dtype == "float32":
        return _usage_error("--fd needs float64; use --dtype float64 (the default).")
    try:
        obj, call_args, options = _load_target(args.target)
        options = {"dtype": args.dtype or "float64", "seed": args.seed,
                   "finite_differences": args.fd, **options}
        report = check_target(obj, call_args, options)
    except (TypeError, ValueError) as err:
        return _usage_error(str(err))
    if args.json:
        print(json.dumps({"ok": report.ok, "target": args.target, "report": report.to_dict()},
                         indent=1))
    else:
        print(report)
    return 0 if report.ok else 1


def _print_table(rows, fd: bool):
    """The table of ``fbackprop check``: one line per (configuration, dtype), and its legend."""
    width = max(len(r["model"]) for r in rows)
    fd_col = f"  {'FD rel err':>10}  {'FD tol':>7}" if fd else ""
    print(f"{'model':{width}}  {'activation':10}  {'cost':22}  {'dtype':7}  "
          f"{'max rel err':>11}{fd_col}  {'tolerance':>9}  pass")
    for r in rows:
        fd_cells = (f"  {_fmt(r['fd_max_rel_error']):>10}  {_fmt_tol(r['fd_tolerance']):>7}"
                    if fd else "")
        note = (f"  (layers {r['failing_layers']})" if r["failing_layers"] else
                f"  (at a kink: layers {r['at_kink']})" if r["at_kink"] else "")
        print(f"{r['model']:{width}}  {r['activation']:10}  {r['cost']:22}  {r['dtype']:7}  "
              f"{_fmt(r['max_rel_error']):>11}{fd_cells}  {r['tolerance']:9.0e}  "
              f"{'yes' if r['pass'] else 'NO'}{note}")
    print("max rel err: largest max|hand − autodiff| / max|autodiff| over every layer rule, the "
          "cost and the whole gradient" + ("; FD rows in float64 only (— in float32), "
                                           "FD tol: their bound, 1e-6 plus the rounding floor "
                                           "of J(p ± εu)/2ε"
                                           if fd else ""))


def run_custom_rules(args) -> int:
    """``--target module:factory --custom-rules``: ``fb.check_custom_rules(fn, *args, **options)``
    with the factory's ``(fn, args[, options])``; ``--seed`` and ``--json`` apply."""
    from ..gradcheck import check_custom_rules

    if not args.target:
        return _usage_error("--custom-rules checks your own program: add --target "
                            "MODULE:FACTORY, FACTORY() returning (fn, args).")
    if args.model != "all" or args.cost or args.fd or args.dtype:
        return _usage_error("--custom-rules checks each rule at the operands and dtype it "
                            "received; drop --model, --cost, --fd and --dtype.")
    try:
        fn, call_args, options = _load_target(args.target)
        report = check_custom_rules(fn, *call_args, **{"seed": args.seed, **options})
    except (TypeError, ValueError) as err:
        return _usage_error(str(err))
    print(json.dumps({"ok": report.ok, "target": args.target, "report": report.to_dict()},
                     indent=1) if args.json else report)
    return 0 if report.ok else 1


def run(args) -> int:
    """Run ``fbackprop check``: every selected built-in configuration in each dtype, the
    ``--target``, or (``--custom-rules``) the target program's custom rules; print the table (or
    JSON).

    Args:
      args: the parsed command line.

    Returns:
      The exit status: 0 when every check passes, 1 on a failure, 2 when nothing matches the
      selection or the usage is wrong.
    """
    if args.custom_rules:
        return run_custom_rules(args)
    if args.target:
        return run_target(args)
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
    _print_table(rows, args.fd)
    for row, rep in failed:
        print(f"\n--- {row['model']} · {row['cost']} · {row['dtype']}: per-layer report ---")
        print(rep)
    print(f"\n{len(rows) - len(failed)}/{len(rows)} passed"
          + ("" if ok else f" — {len(failed)} FAILED"))
    return 0 if ok else 1
