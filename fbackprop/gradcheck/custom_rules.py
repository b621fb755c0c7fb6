"""``check_custom_rules``: find every ``jax.custom_vjp``/``jax.custom_jvp`` rule a run of any JAX
function reaches and check each at the operands it actually received.

The run: ``fn`` is traced to a jaxpr and evaluated by :mod:`.jaxpr_reader`'s interpreter, which
records the concrete operands of each custom call (the first call per call site by default).
Each recorded call is then checked on its own, through :func:`~fbackprop.check_vjp` with the
sweep's :class:`~fbackprop.CheckOptions` (its dtype set to the operands'), so that a tolerance,
a reference row, an error budget or a "pass a reference" skip means what it means there:

* **reverse** — the rule (the captured call re-bound, so JAX runs the user's fwd/bwd or jvp rule)
  against ``jax.vjp`` of the rule's primal (for a custom_jvp, its primal function with the rule set
  aside): a row per operand, worst index, the JVP row;
* **reference** — with ``references={f_or_name: g}``: ``check_vjp(reference=g)``, against autodiff
  of ``g`` plus a forward row ``f(args)`` vs ``g(args)`` (a Pallas kernel, a ``pure_callback``);
* **budget** — bfloat16/float16 operands (or float32 under a lower ``matmul_precision``): the
  error budget of :mod:`.budget`, rule and autodiff (of the primal or of ``g``) each against
  float64 autodiff;
* **forward** — the one mode of the sweep's own: when the primal has no reverse mode (a
  ``while_loop`` inside, as in ``jax.experimental.ode.odeint``), ⟨u, J v⟩ from ``jax.jvp`` of
  the primal against ⟨Jᵀu, v⟩ from the rule, for ``directions`` random v per operand.

Operands that are integers, booleans or PRNG keys are held fixed (noted, not failed); the
rule's closed-over constants likewise.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import jaxpr_reader as jr
from .budget import widen
from .custom import check_vjp
from .custom_report import (
    EXPECTED,
    FAIL,
    KINK,
    OK,
    SKIPPED,
    CustomRulesReport,
    ModeReport,
    RuleCheck,
)
from .numerics import precision_for
from .options import FIELDS, CheckOptions, options_from
from .report import FAIL as ROW_FAIL
from .report import HAND_JVP, PASS, Row

__all__ = ["check_custom_rules"]

# the CheckOptions fields the sweep takes as keywords: the dtype is each call's own, `directions`
# is the sweep's (forward-mode directions; finite differences take theirs from `options`), and
# `resample` does not apply (the operands are the run's)
SWEEP_OPTIONS = FIELDS - {"dtype", "directions", "resample"}


@dataclasses.dataclass(frozen=True)
class _Sweep:
    """The sweep's own settings, beside the shared :class:`CheckOptions`."""

    calls: object
    tolerance: dict  # per-rule tolerance overrides, by rule name
    expect_mismatch: frozenset
    references: dict
    directions: int


def _name_of(key) -> str:
    if isinstance(key, str):
        return key
    for obj in (key, getattr(key, "fun", None), getattr(key, "fn", None)):
        name = getattr(obj, "__name__", None)
        if isinstance(name, str):
            return name
    raise TypeError(f"check_custom_rules: a rule is named by a string or by the function it was "
                    f"defined from, received {type(key).__name__}. Use the name the report "
                    f"prints in its 'rule' column.")


def _sweep(calls, tolerance, expect_mismatch, references, directions) -> _Sweep:
    if not (calls in ("first", "all") or (isinstance(calls, int) and not isinstance(calls, bool)
                                          and calls >= 1)):
        raise ValueError(f"check_custom_rules: calls must be 'first', 'all' or a number ≥ 1 (the "
                         f"first N calls per call site), received {calls!r}.")
    if isinstance(expect_mismatch, (str, bytes)) or callable(expect_mismatch):
        expect_mismatch = (expect_mismatch,)
    refs = {}
    for k, g in dict(references or {}).items():
        if not callable(g):
            raise TypeError(f"check_custom_rules: references maps a rule to a reference "
                            f"function, received {type(g).__name__} for {_name_of(k)!r}.")
        refs[_name_of(k)] = g
    if not isinstance(directions, int) or isinstance(directions, bool) or directions < 1:
        raise ValueError(f"check_custom_rules: directions must be an int ≥ 1, received "
                         f"{directions!r}.")
    return _Sweep(calls, {_name_of(k): _nonneg(v, "tolerance") for k, v in tolerance.items()},
                  frozenset(_name_of(k) for k in expect_mismatch or ()), refs, directions)


def _settings(options, overrides, tolerance):
    """The sweep's :class:`CheckOptions` (default ``jit=False``) and its per-rule tolerances: a
    number ``tolerance`` is the options' ``tolerance``, a dict the per-rule overrides."""
    if isinstance(tolerance, dict):
        per_rule = tolerance
    else:
        per_rule = {}
        if tolerance is not None:
            overrides = {**overrides, "tolerance": _nonneg(tolerance, "tolerance")}
    base = CheckOptions(jit=False) if options is None else options
    return options_from(base, overrides, who="check_custom_rules", accepts=SWEEP_OPTIONS), per_rule


def check_custom_rules(fn: Callable, *args, calls="first", tolerance=None, expect_mismatch=(),
                       references=None, directions: int = 4,
                       options: CheckOptions | None = None, **overrides) -> CustomRulesReport:
    """Find every ``jax.custom_vjp``/``jax.custom_jvp`` rule that ``fn(*args)`` reaches and check
    each at the operands it received in that run.

    Rules are found through ``jax.jit``, ``lax.scan``/``fori_loop``, ``while_loop``,
    ``cond``/``switch``, ``jax.checkpoint``, ``jax.vmap`` (the rule is checked batched), Flax and
    Equinox modules and inside other rules' primals. Each captured call is checked by
    :func:`~fbackprop.check_vjp` in its operands' dtype, with ``options`` (tolerances, error
    budget, finite differences, JVP row, seed, jit), or in forward mode when its primal has no
    reverse-mode autodiff.

    Args:
      fn: any JAX function (a Flax ``apply``, an Equinox model's loss, plain JAX).
      *args: its arguments (pytrees; non-array leaves are held static).
      calls: ``"first"`` (default: the first call at each call site), ``"all"``, or N (the
        first N calls per site).
      tolerance: a number for every rule (the options' ``tolerance``) or ``{rule or name:
        number}`` per rule; default that of the operands' dtype (1e-10 in float64, 1e-4 in
        float32 under matmul precision highest; the error budget in bfloat16/float16).
      expect_mismatch: rules (functions or names) whose mismatch is by design (a
        straight-through estimator): reported ``expected mismatch``, not failed.
      references: ``{rule or name: g}``: ``check_vjp(reference=g)``, with ``g`` called with the
        rule's array operands in order: needed when the primal is not differentiable (Pallas,
        ``pure_callback``).
      directions: random directions per operand in forward mode.
      options: a :class:`~fbackprop.CheckOptions` (default ``CheckOptions(jit=False)``: op by
        op, whose compiled primitives every check shares, is faster for the small operands of
        most rules); its ``dtype`` is replaced by each call's, finite differences run for
        float64 operands only.
      **overrides: its fields as keywords (``budget=``, ``seed=``, ``jit=``,
        ``raise_on_failure=``, …), except ``dtype``, ``directions`` and ``resample``.

    Returns:
      A :class:`~fbackprop.CustomRulesReport`.

    Raises:
      RuntimeError: an unsupported JAX version (the sweep reads JAX internals).
      ValueError, TypeError: a bad option; whatever ``fn(*args)`` raises, with a note.
      GradientCheckError: with ``raise_on_failure=True``, with the table.
    """
    jr.require_known_jax()
    if not callable(fn):
        raise TypeError(f"check_custom_rules: fn must be a callable JAX function, received "
                        f"{type(fn).__name__}. Pass the function and its arguments: "
                        f"fb.check_custom_rules(loss, params, x).")
    opts, per_rule = _settings(options, overrides, tolerance)
    sweep = _sweep(calls, per_rule, expect_mismatch, references, directions)
    sites, unsearched = _capture(fn, args, sweep)
    report = CustomRulesReport(
        subject=getattr(fn, "__name__", type(fn).__name__), checks=_check_all(sites, opts, sweep),
        unsearched=unsearched,
        settings={"calls": sweep.calls, "seed": opts.seed, "directions": sweep.directions,
                  "budget": opts.budget})
    return report.raise_if_failed() if opts.raise_on_failure else report


def _nonneg(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise ValueError(f"check_custom_rules: {what} must be a number ≥ 0, received {v!r}.")
    return float(v)


def _capture(fn, args, sweep):
    """Run ``fn(*args)`` through the interpreter; ``(sites, unsearched)`` where sites maps a call
    site to ``[call, count, [operands, …]]`` in the order first reached."""
    try:
        closed, _, arrays = jr.trace(fn, args)
    except Exception as e:
        e.add_note("(raised while check_custom_rules was tracing fn(*args); fix fn or its "
                   "arguments: the sweep runs exactly fn(*args))")
        raise
    sites, unsearched = {}, []
    keep = 1 if sweep.calls == "first" else None if sweep.calls == "all" else sweep.calls

    def visit(call, operands):
        if call is None:  # an equation with rules inside that the interpreter cannot enter
            unsearched.append(f"{operands.primitive.name} at {jr.call_site_of(operands) or '?'}")
            return
        if jr.is_marker(call.eqn):  # equinox.nondifferentiable: refuses tangents by design
            return
        entry = sites.setdefault(call.site, [call, 0, []])
        entry[1] += 1
        if keep is None or len(entry[2]) < keep:
            # a jaxpr's consts may be NumPy arrays, which a rule run op by op could not index
            # with a tracer (odeint's adjoint does): hold every operand as a JAX array
            entry[2].append([jnp.asarray(o) if isinstance(o, np.ndarray) else o
                             for o in operands])

    try:
        jr.evaluate(closed, arrays, visit)
    except Exception as e:
        e.add_note("(raised while check_custom_rules was running fn(*args) equation by "
                   "equation)")
        raise
    return sites, tuple(dict.fromkeys(unsearched))


def _check_all(sites, opts, sweep) -> tuple:
    """Check every recorded call, each seeded by its site and call number."""
    checks = []
    for n, (call, count, recorded) in enumerate(sites.values()):
        info = jr.describe_call(call)
        for k, operands in enumerate(recorded):
            seeded = dataclasses.replace(opts, seed=opts.seed + 97 * n + k)
            checks.append(_check_one(call, (info, count, k), operands, seeded, sweep))
    return tuple(checks)


def _aval_str(x) -> str:
    dt = jnp.result_type(x)
    short = {"float32": "f32", "float64": "f64", "bfloat16": "bf16", "float16": "f16",
             "int32": "i32", "int64": "i64", "bool": "bool", "uint32": "u32"}.get(dt.name, dt.name)
    return f"{short}[{','.join(map(str, jnp.shape(x)))}]"


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _check_one(call, where, operands, opts, sweep) -> RuleCheck:
    info, count, k = where
    name = info["name"]
    base = dict(name=name, kind=call.kind, defined_at=info["defined_at"], rule=info["rule"],
                rule_at=info["rule_at"], called_at=info["called_at"], scope=info["name_stack"],
                calls=count, call=k, operands=tuple(_aval_str(x) for x in operands))
    diff_idx = [i for i, x in enumerate(operands)
                if i >= call.num_consts and _is_float(x) and i not in call.held]
    notes = [f"operand {i} ({_aval_str(x)}) has no derivative: held fixed"
             for i, x in enumerate(operands) if i >= call.num_consts and not _is_float(x)]
    if call.held:
        notes.append(f"operand(s) {list(call.held)} marked non-differentiable by the library "
                     f"(e.g. equinox's filter_custom_vjp *args): held fixed")
    if not diff_idx:
        return RuleCheck(**base, status=SKIPPED,
                         reason="; ".join(["no floating-point operand to differentiate"] + notes))
    nonfinite = [i for i in diff_idx if not isinstance(operands[i], jax.core.Tracer)
                 and not np.all(np.isfinite(np.asarray(operands[i])))]
    if nonfinite:  # check_vjp refuses NaN/inf: a comparison there would blame the rule
        return RuleCheck(**base, status=SKIPPED, reason="; ".join(
            [f"operand(s) {nonfinite} hold NaN or inf: no rule can be checked there"] + notes))
    names = (name, info["rule"])
    ref = next((sweep.references[n] for n in names if n in sweep.references), None)
    tol = next((sweep.tolerance[n] for n in names if n in sweep.tolerance), opts.tolerance)
    subject = _Subject(call, operands, diff_idx, ref)
    status, reason, mode, report = _verdict(subject, name, opts, tol, sweep.directions)
    if status == FAIL and any(n in sweep.expect_mismatch for n in names):
        status, reason = EXPECTED, "mismatch expected by design (expect_mismatch): " + reason
    return RuleCheck(**base, status=status, reason="; ".join(filter(None, [reason] + notes)),
                     mode=mode, report=report)


class _Subject:
    """One captured call as functions of its differentiable operands."""

    def __init__(self, call, operands, diff_idx, reference):
        self.call, self.operands, self.diff_idx = call, operands, diff_idx
        self.reference = reference
        self.diff = tuple(operands[i] for i in diff_idx)
        self._primal, self._rule = jr.primal_function(call), jr.rule_function(call)

    def _full(self, diff):
        full = list(self.operands)
        for i, d in zip(self.diff_idx, diff):
            full[i] = d
        return full

    def primal(self, *diff):
        return list(self._primal(*self._full(diff)))

    def rule(self, *diff):
        """The user's rule at ``diff``. The captured call is typed by the run (a kernel's inner
        ``jit`` too): the float64 pass of the error budget, whose rule values are not read, runs
        it at the captured dtypes and widens its outputs."""
        captured = [jnp.result_type(x) for x in self.diff]
        if all(jnp.result_type(d) == c for d, c in zip(diff, captured)):
            return list(self._rule(*self._full(diff)))
        out = self._rule(*self._full([d.astype(c) for d, c in zip(diff, captured)]))
        return [o.astype(diff[0].dtype) if _is_float(o) else o for o in out]

    def as_custom_vjp(self, name):
        """The captured call as a ``jax.custom_vjp`` of the differentiable operands, backward
        the user's rule (for :func:`~fbackprop.check_vjp`): its primal is :meth:`primal`, or,
        with a reference (which then stands for the primal), the call itself."""
        f = jax.custom_vjp(self.primal if self.reference is None else self.rule)
        f.defvjp(lambda *d: (self.rule(*d), d), lambda d, u: tuple(jax.vjp(self.rule, *d)[1](u)))
        f.__name__ = name
        return f

    def ref(self, *diff):
        out = self.reference(*self._full(diff)[self.call.num_consts:])
        return list(out) if isinstance(out, (tuple, list)) else [out]


def _rule_problem(subject) -> str | None:
    """Why the rule cannot run at these operands (it raises, or its output has the wrong
    structure, shape or dtype), or ``None``."""
    try:
        def pull(*d):
            out, back = jax.vjp(subject.rule, *d)
            return back(out)
        got = jax.eval_shape(pull, *subject.diff)
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"the custom rule failed: {type(e).__name__}: {text}"[:400]
    for i, (g, x) in enumerate(zip(got, subject.diff)):
        if g.shape != jnp.shape(x) or g.dtype != jnp.result_type(x):
            return (f"the custom rule's cotangent for operand {subject.diff_idx[i]} is "
                    f"{_aval_str(g)}, expected {_aval_str(x)}")
    return None


def _call_options(opts, dtype, tol) -> CheckOptions:
    """The options of one captured call: the sweep's, in the operands' dtype."""
    return dataclasses.replace(
        opts, dtype=dtype, tolerance=tol, raise_on_failure=False,
        finite_differences=opts.finite_differences and dtype == "float64",
        matmul_precision="highest" if dtype == "float64" else opts.matmul_precision)


def _verdict(subject, name, opts, tol, directions):
    """``(status, reason, mode, report)`` for one captured call."""
    problem = _rule_problem(subject)
    if problem:
        return FAIL, problem, "", None
    dtypes = {jnp.result_type(x).name for x in subject.diff}
    if len(dtypes) > 1:
        return SKIPPED, f"operands of mixed floating dtypes {sorted(dtypes)}", "", None
    opts = _call_options(opts, dtypes.pop(), tol)
    if opts.low_precision and subject.reference is None and not _runs_in_float64(subject):
        return SKIPPED, (f"{opts.dtype}: the error budget needs autodiff of the primal in "
                         f"float64, and the captured primal is typed {opts.dtype} (its "
                         f"constants, its inner jit) — pass a reference (references={{rule: "
                         f"g}})"), "", None
    try:
        report = check_vjp(subject.as_custom_vjp(name), *subject.diff, options=opts,
                           reference=None if subject.reference is None else subject.ref)
    except TypeError as e:  # the reference: wrong outputs (a failure) or not differentiable
        status = SKIPPED if "cannot differentiate" in str(e) else FAIL
        return status, str(e).splitlines()[0], "", None
    if not report.skipped:
        mode = ("budget" if opts.low_precision else
                "reverse" if subject.reference is None else "reference")
        return _status_of(report), _reason_of(report), mode, report
    if opts.low_precision or not _has_forward_mode(subject.primal, subject.diff):
        return SKIPPED, report.skipped.split(" (")[0] + " (references={rule: g})", "", None
    with precision_for(opts.dtype, opts.matmul_precision):
        report = _forward_rows(subject, name, opts, directions)
    return _status_of(report), _reason_of(report), "forward", report


def _runs_in_float64(subject) -> bool:
    """Whether the captured primal can be evaluated at float64 operands (the reference pass of
    the error budget): a jaxpr traced in low precision often cannot (typed literals)."""
    with precision_for("float64"):
        try:
            jax.eval_shape(subject.primal, *widen(subject.diff))
        except Exception:  # whatever the typed jaxpr raises: it has no float64 version
            return False
    return True


def _has_forward_mode(f, diff) -> bool:
    try:
        jax.eval_shape(lambda *d: jax.jvp(f, d, d), *diff)
    except Exception:  # whatever autodiff raises: the primal has no forward mode either
        return False
    return True


def _status_of(report) -> str:
    if any(r.status == ROW_FAIL for r in report.rows):
        return FAIL
    return KINK if any(r.status == "kink" for r in report.rows) else OK


def _reason_of(report) -> str:
    bad = [r for r in report.rows if r.status == ROW_FAIL]
    if not bad:
        return ""
    r = max(bad, key=lambda r: r.max_rel if r.max_rel == r.max_rel else np.inf)
    return (f"{r.rule} {r.leaf} ({r.pair}): max rel error {r.max_rel:.2e} > tolerance "
            f"{r.tolerance:.0e} at index {r.index}" + (f" — {r.note}" if r.note else ""))


def _random(shape, rng, dtype):
    return jnp.asarray(rng.standard_normal(tuple(shape)), dtype)


def _forward_rows(subject, name, opts, directions) -> ModeReport:
    """Forward mode: for ``directions`` random v per operand, ⟨u, J v⟩ with J from ``jax.jvp`` of
    ``primal`` against ⟨Jᵀu, v⟩ with Jᵀu from the custom ``rule``; one row per operand (the worst
    direction), relative to max(‖u‖‖J v‖, ‖Jᵀu‖‖v‖)."""
    rule, primal, diff, dtype = subject.rule, subject.primal, subject.diff, opts.dtype
    rng = np.random.default_rng(opts.seed)
    outs = jax.eval_shape(primal, *diff)
    u = [_random(o.shape, rng, dtype) for o in outs]
    vs = [[_random(jnp.shape(x), rng, dtype) for _ in range(directions)] for x in diff]
    tol = opts.tolerances(0.0).tol

    n, K = len(diff), directions
    # one batch of tangents: row i·K + k perturbs operand i along its k-th direction only
    tangents = tuple(jnp.concatenate([jnp.stack(vs[j]) if j == i else
                                      jnp.zeros((K, *jnp.shape(x)), dtype) for i in range(n)])
                     for j, x in enumerate(diff))

    @jax.jit
    def products(diff, u, tangents):
        jtu = jax.vjp(rule, *diff)[1](u)
        jv = jax.vmap(lambda *t: jax.jvp(primal, tuple(diff), t)[1])(*tangents)
        u_jv = sum(jnp.einsum("b...,...->b", a, b) for a, b in zip(jv, u))
        norm_jv = jnp.sqrt(sum(jnp.einsum("b...,b...->b", a, a) for a in jv))
        vjt = sum(jnp.einsum("b...,...->b", t, g) for t, g in zip(tangents, jtu))
        norm_v = jnp.sqrt(sum(jnp.einsum("b...,b...->b", t, t) for t in tangents))
        norm_jtu = jnp.stack([jnp.sqrt(jnp.vdot(g, g)) for g in jtu]).repeat(K)
        norm_u = jnp.sqrt(sum(jnp.vdot(a, a) for a in u))
        return jnp.stack([u_jv, vjt, jnp.maximum(norm_u * norm_jv, norm_jtu * norm_v)], axis=1)

    vals = np.asarray(jax.device_get(products(tuple(diff), u, tangents)), np.float64)
    rows = []
    for i in range(len(diff)):
        block = vals[i * directions:(i + 1) * directions]
        err = np.abs(block[:, 0] - block[:, 1])
        rel = np.where(block[:, 2] > 0, err / np.where(block[:, 2] > 0, block[:, 2], 1), err)
        w = int(np.argmax(np.nan_to_num(rel, nan=np.inf)))
        ok = bool(np.all(rel <= tol))
        rows.append(Row(None, f"⟨u, J v⟩ = ⟨Jᵀu, v⟩, {directions} random v", "forward mode",
                        f"[{i}]", HAND_JVP, float(err[w]), float(rel[w]), (w,), tol,
                        PASS if ok else ROW_FAIL,
                        "" if ok else "the rule's Jᵀ is not the transpose of jax.jvp's J"))
    return ModeReport(subject=name, cost=None, dtype=dtype, tolerance=tol, rows=tuple(rows),
                      criterion=f"forward mode: pass when |⟨u, J v⟩ − ⟨Jᵀu, v⟩| ≤ {tol:.0e} × "
                                f"max(‖u‖‖J v‖, ‖Jᵀu‖‖v‖), J by jax.jvp of the primal, Jᵀu by "
                                f"the rule",
                      layer_names=(name,))
