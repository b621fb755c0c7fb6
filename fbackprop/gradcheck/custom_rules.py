"""``check_custom_rules``: find every ``jax.custom_vjp``/``jax.custom_jvp`` rule a run of any JAX
function reaches and check each at the operands it actually received.

The run: ``fn`` is traced to a jaxpr and evaluated by :mod:`.jaxpr_reader`'s interpreter, which
records the concrete operands of each custom call (the first call per call site by default).
Each recorded call is then checked on its own:

* **reverse** — the rule (the captured call re-bound, so JAX runs the user's fwd/bwd or jvp rule)
  against ``jax.vjp`` of the rule's primal (for a custom_jvp, its primal function with the rule set
  aside), through :func:`~fbackprop.check_vjp`: a row per operand, worst index, the JVP row;
* **forward** — when the primal has no reverse mode (a ``while_loop`` inside, as in
  ``jax.experimental.ode.odeint``): ⟨u, J v⟩ from ``jax.jvp`` of the primal against ⟨Jᵀu, v⟩
  from the rule, for ``directions`` random v per operand;
* **reference** — with ``references={f_or_name: g}``: against autodiff of ``g`` plus a forward
  row ``f(args)`` vs ``g(args)`` (a Pallas kernel, a ``pure_callback``);
* **budget** — bfloat16/float16 operands: the rule's error and autodiff's error in the same
  precision, each against a float32 reference (``g``), pass when rule ≤ budget × autodiff + floor.

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
from .numerics import TOLERANCE, error_stats, precision_for
from .report import FAIL as ROW_FAIL
from .report import HAND_AUTO, HAND_JVP, PASS, GradientReport, Row

__all__ = ["check_custom_rules", "LOW_PRECISION_TOLERANCE", "BUDGET", "BUDGET_FLOOR"]

LOW_PRECISION_TOLERANCE = {"bfloat16": 3e-2, "float16": 5e-3}  # without a reference
BUDGET, BUDGET_FLOOR = 2.0, 1e-4  # rule error ≤ BUDGET × autodiff error + BUDGET_FLOOR


@dataclasses.dataclass(frozen=True)
class _Options:
    calls: object
    tolerance: object
    expect_mismatch: frozenset
    references: dict
    directions: int
    budget: float
    seed: int
    jit: bool = False


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


def _options(calls, tolerance, expect_mismatch, references, directions, budget, seed, jit):
    if not (calls in ("first", "all") or (isinstance(calls, int) and not isinstance(calls, bool)
                                          and calls >= 1)):
        raise ValueError(f"check_custom_rules: calls must be 'first', 'all' or a number ≥ 1 (the "
                         f"first N calls per call site), received {calls!r}.")
    if isinstance(tolerance, dict):
        tolerance = {_name_of(k): _nonneg(v, "tolerance") for k, v in tolerance.items()}
    elif tolerance is not None:
        tolerance = _nonneg(tolerance, "tolerance")
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
    return _Options(calls, tolerance, frozenset(_name_of(k) for k in expect_mismatch or ()),
                    refs, directions, _nonneg(budget, "budget"), int(seed), bool(jit))


def _nonneg(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise ValueError(f"check_custom_rules: {what} must be a number ≥ 0, received {v!r}.")
    return float(v)


def _capture(fn, args, opts):
    """Run ``fn(*args)`` through the interpreter; ``(sites, unsearched)`` where sites maps a call
    site to ``[call, count, [operands, …]]`` in the order first reached."""
    try:
        closed, _, arrays = jr.trace(fn, args)
    except Exception as e:
        e.add_note("(raised while check_custom_rules was tracing fn(*args); fix fn or its "
                   "arguments: the sweep runs exactly fn(*args))")
        raise
    sites, unsearched = {}, []
    keep = 1 if opts.calls == "first" else None if opts.calls == "all" else opts.calls

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


def check_custom_rules(fn: Callable, *args, calls="first", tolerance=None, expect_mismatch=(),
                       references=None, directions: int = 4, budget: float = BUDGET,
                       seed: int = 0, jit: bool = False,
                       raise_on_failure: bool = False) -> CustomRulesReport:
    """Find every ``jax.custom_vjp``/``jax.custom_jvp`` rule that ``fn(*args)`` reaches and check
    each at the operands it received in that run.

    Rules are found through ``jax.jit``, ``lax.scan``/``fori_loop``, ``while_loop``,
    ``cond``/``switch``, ``jax.checkpoint``, ``jax.vmap`` (the rule is checked batched), Flax and
    Equinox modules and inside other rules' primals.

    Args:
      fn: any JAX function (a Flax ``apply``, an Equinox model's loss, plain JAX).
      *args: its arguments (pytrees; non-array leaves are held static).
      calls: ``"first"`` (default: the first call at each call site), ``"all"``, or N (the
        first N calls per site).
      tolerance: a number for every rule or ``{rule or name: number}``; default 1e-10 in
        float64, 1e-4 in float32 (matmul precision highest).
      expect_mismatch: rules (functions or names) whose mismatch is by design (a
        straight-through estimator): reported ``expected mismatch``, not failed.
      references: ``{rule or name: g}``: compare with autodiff of ``g`` (called with the rule's
        array operands, in order) and add a forward row; needed when the primal is not
        differentiable (Pallas, ``pure_callback``), and the float32 reference of the
        low-precision budget.
      directions: random directions per operand in forward mode.
      budget: low precision passes when the rule's error ≤ budget × autodiff's error + 1e-4.
      seed: seeds every random cotangent and direction.
      jit: compile each check as one program; the default runs it op by op, whose compiled
        primitives are shared by every check (faster for the small operands of most rules).
      raise_on_failure: raise :class:`~fbackprop.GradientCheckError` (with the table) instead of
        returning a failing report.

    Returns:
      A :class:`~fbackprop.CustomRulesReport`.

    Raises:
      RuntimeError: an unsupported JAX version (the sweep reads JAX internals).
      ValueError, TypeError: a bad option; whatever ``fn(*args)`` raises, with a note.
    """
    jr.require_known_jax()
    if not callable(fn):
        raise TypeError(f"check_custom_rules: fn must be a callable JAX function, received "
                        f"{type(fn).__name__}. Pass the function and its arguments: "
                        f"fb.check_custom_rules(loss, params, x).")
    opts = _options(calls, tolerance, expect_mismatch, references, directions, budget, seed,
                    jit)
    sites, unsearched = _capture(fn, args, opts)
    checks = []
    for n, (call, count, recorded) in enumerate(sites.values()):
        info = jr.describe_call(call)
        for k, operands in enumerate(recorded):
            checks.append(_check_one(call, info, count, k, operands, opts, opts.seed + 97 * n + k))
    report = CustomRulesReport(
        subject=getattr(fn, "__name__", type(fn).__name__), checks=tuple(checks),
        unsearched=unsearched,
        settings={"calls": opts.calls, "seed": opts.seed, "directions": opts.directions,
                  "budget": opts.budget})
    return report.raise_if_failed() if raise_on_failure else report


def _aval_str(x) -> str:
    dt = jnp.result_type(x)
    short = {"float32": "f32", "float64": "f64", "bfloat16": "bf16", "float16": "f16",
             "int32": "i32", "int64": "i64", "bool": "bool", "uint32": "u32"}.get(dt.name, dt.name)
    return f"{short}[{','.join(map(str, jnp.shape(x)))}]"


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _check_one(call, info, count, k, operands, opts, seed) -> RuleCheck:
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
    ref = opts.references.get(name) or opts.references.get(info["rule"])
    subject = _Subject(call, operands, diff_idx, ref)
    status, reason, mode, report = _verdict(subject, name, opts, seed)
    if status == FAIL and (name in opts.expect_mismatch or info["rule"] in opts.expect_mismatch):
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
        return list(self._rule(*self._full(diff)))

    def ref(self, *diff):
        out = self.reference(*self._full(diff)[self.call.num_consts:])
        return list(out) if isinstance(out, (tuple, list)) else [out]


def _differentiable(f, diff) -> str | None:
    """``"reverse"``, ``"forward"`` or ``None``: the autodiff mode ``f`` supports at ``diff``."""
    try:
        def pull(*d):
            out, back = jax.vjp(f, *d)
            return back(out)
        jax.eval_shape(pull, *diff)
        return "reverse"
    except Exception:
        pass
    try:
        jax.eval_shape(lambda *d: jax.jvp(f, d, d), *diff)
        return "forward"
    except Exception:
        return None


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


def _verdict(subject, name, opts, seed):
    """``(status, reason, mode, report)`` for one captured call."""
    problem = _rule_problem(subject)
    if problem:
        return FAIL, problem, "", None
    dtypes = {jnp.result_type(x).name for x in subject.diff}
    if len(dtypes) > 1:
        return SKIPPED, f"operands of mixed floating dtypes {sorted(dtypes)}", "", None
    dtype = dtypes.pop()
    tol = opts.tolerance.get(name) if isinstance(opts.tolerance, dict) else opts.tolerance
    if dtype in ("bfloat16", "float16"):
        return _low_precision(subject, dtype, tol, opts, seed, name)
    against = subject.ref if subject.reference is not None else subject.primal
    mode = _differentiable(against, subject.diff)
    if mode is None:
        return (SKIPPED, "primal not differentiable — pass a reference (references={rule: g})"
                if subject.reference is None else "the reference is not differentiable either",
                "", None)
    with precision_for(dtype):
        if mode == "reverse":
            report = _vjp_rows(subject.rule, against, subject.diff, dtype, tol, seed, name,
                              opts.jit)
        else:
            report = _forward_rows(subject.rule, against, subject.diff, dtype, tol, seed, name,
                                  opts.directions)
        if subject.reference is not None:
            report = dataclasses.replace(report, rows=report.rows + (
                _forward_value_row(subject, report.tolerance),))
    mode = "reference" if subject.reference is not None and mode == "reverse" else mode
    return _status_of(report), _reason_of(report), mode, report


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


def _vjp_rows(rule, primal, diff, dtype, tolerance, seed, name, jit=False) -> GradientReport:
    """The rows of :func:`~fbackprop.check_vjp` for ``rule`` (differentiated by its custom rule)
    against autodiff of ``primal``; the one place the sweep calls ``check_vjp``."""
    f = jax.custom_vjp(primal)
    f.defvjp(lambda *a: (rule(*a), a), lambda a, u: tuple(jax.vjp(rule, *a)[1](u)))
    f.__name__ = name
    return check_vjp(f, *diff, dtype=dtype, tolerance=tolerance, seed=seed, jit=jit)


def _random(shape, rng, dtype):
    return jnp.asarray(rng.standard_normal(tuple(shape)), dtype)


def _forward_rows(rule, primal, diff, dtype, tolerance, seed, name, directions) -> GradientReport:
    """Forward mode: for ``directions`` random v per operand, ⟨u, J v⟩ with J from ``jax.jvp`` of
    ``primal`` against ⟨Jᵀu, v⟩ with Jᵀu from the custom ``rule``; one row per operand (the worst
    direction), relative to max(‖u‖‖J v‖, ‖Jᵀu‖‖v‖)."""
    rng = np.random.default_rng(seed)
    outs = jax.eval_shape(primal, *diff)
    u = [_random(o.shape, rng, dtype) for o in outs]
    vs = [[_random(jnp.shape(x), rng, dtype) for _ in range(directions)] for x in diff]
    tol = TOLERANCE.get(dtype, 1e-4) if tolerance is None else tolerance

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


def _forward_value_row(subject, tol) -> Row:
    got, ref = subject.rule(*subject.diff), subject.ref(*subject.diff)
    if len(got) != len(ref):
        return Row(None, "forward value", "f(args) vs g(args)", "all outputs", "rule–reference",
                   float("nan"), float("nan"), (), tol, ROW_FAIL,
                   f"{len(got)} outputs, the reference gives {len(ref)}")
    worst = max((error_stats(np.asarray(a, np.float64), np.asarray(b, np.float64))
                 for a, b in zip(got, ref)), key=lambda s: s[1])
    return Row(None, "forward value", "f(args) vs g(args)", "all outputs", "rule–reference",
               worst[0], worst[1], worst[2], tol, PASS if worst[1] <= tol else ROW_FAIL)


def _low_precision(subject, dtype, tol, opts, seed, name):
    """bfloat16/float16: against a float32 reference's budget (with a reference) or autodiff of
    the primal in the same precision at a fixed tolerance (without)."""
    rng = np.random.default_rng(seed)
    outs = jax.eval_shape(subject.rule, *subject.diff)
    u32 = [_random(o.shape, rng, jnp.float32) for o in outs]
    u = [x.astype(o.dtype) for x, o in zip(u32, outs)]
    g_rule = jax.vjp(subject.rule, *subject.diff)[1](u)
    if subject.reference is None:
        if _differentiable(subject.primal, subject.diff) != "reverse":
            return (SKIPPED, "primal not differentiable — pass a reference "
                             "(references={rule: g})", "", None)
        tol = LOW_PRECISION_TOLERANCE[dtype] if tol is None else tol
        g_auto = jax.vjp(subject.primal, *subject.diff)[1](u)
        rows = tuple(_leaf_row(i, a, b, tol) for i, (a, b) in enumerate(zip(g_rule, g_auto)))
        report = ModeReport(subject=name, cost=None, dtype=dtype, tolerance=tol, rows=rows,
                            criterion=f"{dtype}, no reference: pass when max rel ≤ {tol:.0e} "
                                      f"against autodiff of the primal in {dtype}")
        return _status_of(report), _reason_of(report), "reverse", report
    return _budget_check(subject, u32, g_rule, opts.budget, tol, name)


def _leaf_row(i, got, ref, tol) -> Row:
    err, rel, idx = error_stats(np.asarray(got, np.float64), np.asarray(ref, np.float64))
    return Row(None, "∂⟨u, f⟩/∂args by the custom rule", "∂J/∂p", f"[{i}]", HAND_AUTO, err, rel,
               idx, tol, PASS if rel <= tol else ROW_FAIL)


def _norm_rel(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    scale = np.linalg.norm(ref)
    return float(np.linalg.norm(got - ref) / (scale if scale > 0 else 1.0))


def _budget_check(subject, u32, g_rule, budget, floor=None, name="rule"):
    """The error budget: per operand, e_rule = ‖g_rule − g₃₂‖/‖g₃₂‖ and e_auto the same for
    autodiff of the reference in ``dtype``, with g₃₂ autodiff of the reference in float32
    (matmul precision highest); pass when e_rule ≤ budget × e_auto + floor."""
    floor = BUDGET_FLOOR if floor is None else floor
    dtype = jnp.result_type(subject.diff[0]).name
    u = [x.astype(g.dtype) for x, g in zip(u32, jax.eval_shape(subject.rule, *subject.diff))]
    diff32 = [x.astype(jnp.float32) for x in subject.diff]
    g_auto = jax.vjp(subject.ref, *subject.diff)[1](u)
    with jax.default_matmul_precision("highest"):
        g_ref = jax.vjp(subject.ref, *diff32)[1](u32)
    rows = []
    for i, (r, a, t) in enumerate(zip(g_rule, g_auto, g_ref)):
        e_rule, e_auto = _norm_rel(r, t), _norm_rel(a, t)
        bound = budget * e_auto + floor
        ok = e_rule <= bound
        rows.append(Row(None, f"{dtype} error budget: ‖g − g₃₂‖/‖g₃₂‖ ≤ {budget:g}·autodiff "
                              f"+ {floor:.0e}", "∂J/∂p", f"[{i}]", "rule–float32 reference",
                        e_rule, e_rule, (), bound, PASS if ok else ROW_FAIL,
                        f"autodiff in {dtype}: {e_auto:.2e}; ratio "
                        f"{e_rule / e_auto if e_auto > 0 else float('inf'):.2f}"))
    report = ModeReport(subject=name, cost=None, dtype=dtype, tolerance=floor, criterion=(
        f"{dtype} error budget: per operand, pass when ‖g − g₃₂‖/‖g₃₂‖ of the rule ≤ "
        f"{budget:g} × that of autodiff of the reference in {dtype} + {floor:.0e}; g₃₂: "
        f"autodiff of the reference in float32, matmul precision highest"), rows=tuple(rows))
    return _status_of(report), _reason_of(report), "budget", report
