"""Everything that reads JAX internals for :func:`~fbackprop.check_custom_rules`, in one place.

A program is traced to a closed jaxpr (``jax.make_jaxpr``) and evaluated here, equation by
equation, by an interpreter that recurses into the sub-jaxprs that can hold a custom rule — ``jit``
(``pjit`` before 0.4.36), ``scan`` (``fori_loop`` with static bounds becomes one), ``while``
(``fori_loop`` with traced bounds), ``cond`` (``switch``), ``checkpoint``/``remat`` and the
primal of a ``custom_vjp``/``custom_jvp`` call (rules nested in rules). At each
``custom_vjp_call``/``custom_jvp_call`` equation it hands the concrete operands to a callback
before evaluating the call. Equations with no custom call inside are evaluated by ``bind``, the way
``jax.core.eval_jaxpr`` does.

What this module reads, and where JAX versions differ (the whole test suite passes with JAX
0.10.2 on Python 3.11 and with JAX 0.11.2 on Python 3.12; an unknown series is refused with a
clear error):

* the primitive names above (``jit``/``pjit``/``closed_call``, ``checkpoint``/``remat2``,
  ``custom_vjp_call``/``custom_vjp_call_jaxpr``, ``custom_jvp_call``), the same in 0.10 and
  0.11 (read from JAX's source at the 0.11.0 tag);
* closed jaxprs: 0.10 wraps a ``Jaxpr`` in a ``ClosedJaxpr``; in 0.11 ``ClosedJaxpr`` is an
  alias of ``Jaxpr``, which holds its consts (``.jaxpr`` returns itself) — both read as
  ``(value.jaxpr, value.consts)``;
* a scan's operand groups: ``num_consts``/``num_carry`` in 0.10, ``ft_in`` in 0.11;
* the parameters ``call_jaxpr``, ``num_consts``, ``bwd``, ``jvp_jaxpr_fun``/``jvp_jaxpr_thunk``,
  ``jaxpr``, ``branches``, ``cond_jaxpr``/``body_jaxpr`` and their ``*_nconsts``, ``num_carry``,
  ``length``, ``reverse``;
* ``Primitive.get_bind_params`` (re-binding a captured custom call re-runs the rule);
* ``jaxpr.debug_info.func_src_info`` (``"name at file:line"``), ``eqn.source_info`` (traceback,
  ``name_stack``) and ``source_info_util.user_frame``.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

try:  # internal modules: a JAX without them must still import fbackprop (the sweep then refuses)
    from jax._src import core, source_info_util
except ImportError:  # pragma: no cover - depends on the installed JAX
    core = source_info_util = None

__all__ = ["SUPPORTED_JAX", "require_known_jax", "trace", "CustomCall", "evaluate",
           "primal_function", "rule_function", "custom_kind", "describe_call",
           "call_site_of", "is_marker", "MARKERS"]

SUPPORTED_JAX = ((0, 10), (0, 11))

CUSTOM_VJP = frozenset({"custom_vjp_call", "custom_vjp_call_jaxpr"})
CUSTOM_JVP = frozenset({"custom_jvp_call"})
# custom_jvp rules that libraries define to refuse any tangent (equinox.nondifferentiable and
# its backward twin): values they return are held fixed where a rule receives them
MARKERS = frozenset({"_nondifferentiable", "_nondifferentiable_backward"})
CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "checkpoint", "remat", "remat2"})


def _jax_series(version: str) -> tuple:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (-1, -1)


def require_known_jax(version: str | None = None) -> None:
    """Refuse a JAX series whose internals this module has not been checked against.

    Args:
      version: a version string; ``jax.__version__`` when omitted.

    Raises:
      RuntimeError: the series is not one of :data:`SUPPORTED_JAX`, naming what is supported
        and what to do.
    """
    version = jax.__version__ if version is None else version
    known = ", ".join(f"{a}.{b}.x" for a, b in SUPPORTED_JAX)
    if _jax_series(version) not in SUPPORTED_JAX:
        raise RuntimeError(
            f"check_custom_rules reads JAX's jaxpr internals (primitive names and parameters of "
            f"custom_vjp/custom_jvp calls, jit, scan, while, cond, checkpoint), checked against "
            f"JAX {known}; received JAX {version}. Install a supported JAX, or check each rule "
            f"on its own with fb.check_vjp(f, *args), which uses only public APIs.")
    # the names this module depends on must exist in the series it accepts
    if core is None or source_info_util is None:
        raise RuntimeError(f"check_custom_rules: jax._src.core or jax._src.source_info_util "
                           f"does not import in JAX {version}; expected them in the JAX {known} "
                           f"series. Use fb.check_vjp(f, *args) for each rule instead.")
    for name in ("eval_jaxpr", "Literal", "ClosedJaxpr", "Jaxpr"):
        if not hasattr(core, name):
            raise RuntimeError(f"check_custom_rules: jax._src.core.{name} is missing in JAX "
                               f"{version}; expected it in the JAX {known} series. Use "
                               f"fb.check_vjp(f, *args) for each rule instead.")


def trace(fn: Callable, args: tuple):
    """Trace ``fn(*args)`` to a closed jaxpr; the non-array leaves of ``args`` stay static.

    Args:
      fn: any JAX function.
      args: its positional arguments (pytrees).

    Returns:
      the closed jaxpr, the output treedef, and the flat array leaves of ``args`` it takes.
    """
    leaves, treedef = jax.tree.flatten(args)
    is_array = [_is_array(x) for x in leaves]
    arrays = [x for x, a in zip(leaves, is_array) if a]

    def flat_fn(*xs):
        it = iter(xs)
        full = [next(it) if a else x for x, a in zip(leaves, is_array)]
        return fn(*jax.tree.unflatten(treedef, full))

    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*arrays)
    return closed, jax.tree.structure(out_shape), arrays


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, jnp.ndarray)) or hasattr(x, "__jax_array__") or (
        hasattr(x, "shape") and hasattr(x, "dtype"))


def custom_kind(eqn) -> str | None:
    """Which custom rule an equation calls.

    Args:
      eqn: a jaxpr equation.

    Returns:
      ``"custom_vjp"``, ``"custom_jvp"`` or ``None``.
    """
    name = eqn.primitive.name
    return "custom_vjp" if name in CUSTOM_VJP else "custom_jvp" if name in CUSTOM_JVP else None


def _sub_jaxprs(eqn):
    """The (open jaxpr, consts) pairs among ``eqn``'s parameters."""
    out = []
    for value in eqn.params.values():
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(v, core.ClosedJaxpr):
                out.append(v.jaxpr)
            elif isinstance(v, core.Jaxpr):
                out.append(v)
    return out


@functools.lru_cache(maxsize=4096)
def _contains_custom(jaxpr) -> bool:
    return any(custom_kind(e) or any(_contains_custom(j) for j in _sub_jaxprs(e))
               for e in jaxpr.eqns)


def _closed(value):
    """``(jaxpr, consts)`` of a ClosedJaxpr or an open Jaxpr (no consts)."""
    if isinstance(value, core.ClosedJaxpr):
        return value.jaxpr, value.consts
    return value, ()


@dataclasses.dataclass(frozen=True)
class CustomCall:
    """One custom-rule equation reached by the run.

    kind: ``"custom_vjp"`` or ``"custom_jvp"``; site: a key unique to the call site (the path of
    equation indices through the sub-jaxprs); eqn: the equation; num_consts: leading operands
    that are the rule's closed-over constants (not differentiated); outer: the enclosing
    equations (jit, scan, …), outermost first; held: operand positions that a library marked
    non-differentiable (:data:`MARKERS`), held fixed by the check.
    """

    kind: str
    site: tuple
    eqn: object
    num_consts: int
    outer: tuple = ()
    held: tuple = ()


def _bind(eqn, invals):
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # JAX before 0.7 returned (subfuns, params)
        subfuns, params = params
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is None:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    else:
        with ctx:
            out = eqn.primitive.bind(*subfuns, *invals, **params)
    return out if eqn.primitive.multiple_results else [out]


def evaluate(closed_jaxpr, args, visit: Callable, path: tuple = (), outer: tuple = ()):
    """Evaluate ``closed_jaxpr`` at concrete ``args``, calling ``visit(call, operands)`` at each
    custom-rule equation reached (inside jit, scan, while, cond, checkpoint and rule primals).

    Args:
      closed_jaxpr: the program (a ClosedJaxpr, or a Jaxpr without consts).
      args: its flat concrete inputs.
      visit: called with a :class:`CustomCall` and its operands before each custom call is
        evaluated, and with ``(None, eqn)`` for an equation holding rules it cannot enter.
      path, outer: where ``closed_jaxpr`` sits (used when recursing).

    Returns:
      the flat list of outputs.
    """
    jaxpr, consts = _closed(closed_jaxpr)
    return _eval(jaxpr, consts, list(args), visit, path, outer)


def _eval(jaxpr, consts, args, visit, path, outer):
    env = {}

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val in zip(jaxpr.invars, args):
        env[var] = val
    marked = set()
    for i, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        if is_marker(eqn):
            marked.update(eqn.outvars)
        held = tuple(k for k, v in enumerate(eqn.invars)
                     if not isinstance(v, core.Literal) and v in marked)
        outs = _eval_eqn(eqn, invals, visit, path + (i,), outer, held)
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def is_marker(eqn) -> bool:
    """Whether an equation is a library's non-differentiable marker (:data:`MARKERS`).

    Args:
      eqn: a jaxpr equation.

    Returns:
      ``True`` for a marker defined in an installed library.
    """
    if custom_kind(eqn) != "custom_jvp":
        return False
    name, where = _src(getattr(_closed(eqn.params["call_jaxpr"])[0], "debug_info", None))
    return name in MARKERS and _is_library(where)


def _eval_eqn(eqn, invals, visit, path, outer, held=()):
    kind = custom_kind(eqn)
    inside = outer + (eqn,)
    if kind is not None:
        visit(CustomCall(kind, path, eqn, int(eqn.params.get("num_consts", 0)), outer, held),
              invals)
        inner = eqn.params["call_jaxpr"]
        if _contains_custom(_closed(inner)[0]):
            return evaluate(inner, invals, visit, path + ("primal",), inside)
        return _bind(eqn, invals)
    if not any(_contains_custom(j) for j in _sub_jaxprs(eqn)):
        return _bind(eqn, invals)
    name = eqn.primitive.name
    if name in CALLS:
        return evaluate(eqn.params["jaxpr"] if "jaxpr" in eqn.params else
                        eqn.params["call_jaxpr"], invals, visit, path, inside)
    if name == "scan":
        return _scan(eqn, invals, visit, path, inside)
    if name == "while":
        return _while(eqn, invals, visit, path, inside)
    if name == "cond":
        branches = eqn.params["branches"]
        index = int(jnp.clip(invals[0], 0, len(branches) - 1))
        return evaluate(branches[index], invals[1:], visit, path + (f"branch {index}",), inside)
    visit(None, eqn)  # a primitive with rules inside that this interpreter does not enter
    return _bind(eqn, invals)


def _scan_groups(params, invals):
    """``(consts, carry, xs)`` of a scan's operands: JAX 0.10 gives ``num_consts`` and
    ``num_carry``, JAX 0.11 a grouping ``ft_in`` (``ft_in.update(args).unpack()``)."""
    if "num_consts" in params:
        nc, ncarry = params["num_consts"], params["num_carry"]
        return invals[:nc], invals[nc:nc + ncarry], invals[nc + ncarry:]
    if "ft_in" in params:
        return tuple(list(g) for g in params["ft_in"].update(list(invals)).unpack())
    raise RuntimeError(f"check_custom_rules: a scan equation with parameters "
                       f"{sorted(params)} in JAX {jax.__version__}; expected num_consts/num_carry "
                       f"(JAX 0.10) or ft_in (0.11). Check the rules inside this scan with "
                       f"fb.check_vjp instead.")


def _scan(eqn, invals, visit, path, outer):
    p = eqn.params
    length = p["length"]
    consts, carry, xs = _scan_groups(p, invals)
    ncarry = len(carry)
    steps = range(length - 1, -1, -1) if p["reverse"] else range(length)
    ys = [None] * length
    for t in steps:
        out = evaluate(p["jaxpr"], [*consts, *carry, *(x[t] for x in xs)], visit, path, outer)
        carry, ys[t] = out[:ncarry], out[ncarry:]
    y_avals = [v.aval for v in _closed(p["jaxpr"])[0].outvars[ncarry:]]
    stacked = [jnp.stack([y[k] for y in ys]) if length else jnp.zeros((0, *a.shape), a.dtype)
               for k, a in enumerate(y_avals)]
    return [*carry, *stacked]


def _while(eqn, invals, visit, path, outer):
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, carry = invals[:cn], invals[cn:cn + bn], invals[cn + bn:]
    while bool(evaluate(p["cond_jaxpr"], [*cconsts, *carry], visit, path + ("cond",), outer)[0]):
        carry = evaluate(p["body_jaxpr"], [*bconsts, *carry], visit, path, outer)
    return carry


def primal_function(call: CustomCall) -> Callable:
    """The rule's primal as a function of the flat operands: autodiff of it ignores the rule and
    the rules nested in it (their primals are inlined, through jit and checkpoint; a nested rule
    inside scan, while or cond keeps its rule).

    Args:
      call: a captured call.

    Returns:
      ``f(*operands) -> list of outputs``.
    """
    jaxpr, consts = _closed(call.eqn.params["call_jaxpr"])
    return lambda *ops: _eval_inlined(jaxpr, consts, ops)


def _eval_inlined(jaxpr, consts, args):
    if not _contains_custom(jaxpr):
        return core.eval_jaxpr(jaxpr, consts, *args)
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inner = (eqn.params["call_jaxpr"] if custom_kind(eqn) else
                 eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
                 if eqn.primitive.name in CALLS else None)
        outs = _bind(eqn, invals) if inner is None else _eval_inlined(*_closed(inner), invals)
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def rule_function(call: CustomCall) -> Callable:
    """The captured call re-bound: the same primal, differentiated by the custom rule.

    Args:
      call: a captured call.

    Returns:
      ``f(*operands) -> list of outputs``; ``jax.vjp``/``jax.jvp`` of it run the user's rule.
    """
    return lambda *ops: _bind(call.eqn, ops)


def _src(debug_info) -> tuple:
    """``(name, "file:line")`` from a debug info's ``func_src_info`` ("name at file:line")."""
    text = getattr(debug_info, "func_src_info", None) or ""
    name, _, where = text.partition(" at ")
    return name or "?", where or "?"


def _is_library(path: str) -> bool:
    return "site-packages" in path or "dist-packages" in path


def _wrapped_user_function(wrapped, attr: str):
    """The user's function behind a library wrapper's rule (Equinox's ``filter_custom_vjp`` keeps
    it as ``fn``/``fn_bwd`` on the object its wrappers close over), or ``None``."""
    f = getattr(wrapped, "f", None)
    for cell in getattr(f, "__closure__", None) or ():
        try:
            obj = cell.cell_contents
        except ValueError:
            continue
        user = getattr(obj, attr, None)
        if callable(user) and hasattr(user, "__code__"):
            return user
    return None


def _function_src(fn) -> tuple:
    code = fn.__code__
    return fn.__name__, f"{code.co_filename}:{code.co_firstlineno}"


def describe_call(call: CustomCall) -> dict:
    """Names and places of a captured call.

    Args:
      call: a captured call.

    Returns:
      a dict: ``name`` and ``defined_at`` of the primal, ``rule`` and ``rule_at`` (the bwd or jvp
      function), ``called_at`` (the innermost frame of the call outside JAX and installed
      libraries or, when there is none, of the enclosing equations) and ``name_stack`` (outer
      scopes first). Rules wrapped by a library (Equinox) are named by the user's functions.
    """
    p = call.eqn.params
    name, defined = _src(getattr(_closed(p["call_jaxpr"])[0], "debug_info", None))
    rule = p.get("bwd") if call.kind == "custom_vjp" else (
        p.get("jvp_jaxpr_fun") or p.get("jvp_jaxpr_thunk"))
    rule_name, rule_at = _src(getattr(rule, "debug_info", None))
    if _is_library(defined) and _wrapped_user_function(rule, "fn") is not None:
        name, defined = _function_src(_wrapped_user_function(rule, "fn"))
        bwd = _wrapped_user_function(rule, "fn_bwd")
        if bwd is not None:
            rule_name, rule_at = _function_src(bwd)
    called = next(filter(None, map(call_site_of, (*call.outer, call.eqn)[::-1])), "?")
    stack = "/".join(filter(None, (str(e.source_info.name_stack)
                                   for e in (*call.outer, call.eqn))))
    return {"name": name, "defined_at": defined, "rule": rule_name, "rule_at": rule_at,
            "called_at": called, "name_stack": stack}


def call_site_of(eqn) -> str | None:
    """Where the user's code issued an equation.

    Args:
      eqn: a jaxpr equation.

    Returns:
      ``file:line`` of the innermost frame outside JAX and installed libraries (else outside
      JAX), or ``None`` when the traceback has none.
    """
    tb = eqn.source_info.traceback
    if tb is None:
        return None
    frames = list(source_info_util.user_frames(tb))
    frame = next((f for f in frames if not _is_library(f.file_name)),
                 frames[0] if frames else None)
    return None if frame is None else f"{frame.file_name}:{frame.start_line}"
