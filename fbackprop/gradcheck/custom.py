"""``check_vjp`` (any ``jax.custom_vjp`` function) and ``check_layer`` (one layer on its own).

Both check at a random output cotangent u (seeded), i.e. the gradient of J = ⟨u, f(args)⟩, with
the rows, tolerances, kink handling, finite differences and report of :func:`~.check.check`:

* ``check_vjp(f, *args)``: the custom backward rule of ``f`` against ``jax.vjp`` of its own
  primal implementation ``f.fun``, per argument and leaf (``[i]`` in a leaf's name is the
  argument index).
* ``check_layer(layer, params, a)``: the layer's ``D_param``, ``D_input``, fused ``backward`` and
  ``time_deltas`` against ``jax.vjp`` of its ``apply``, as ``check`` does for each layer of a
  network, with the sample point moved away from kinks.

With ``jvp=True`` (the default) each adds the forward-mode row ⟨u, J v⟩ = ⟨Jᵀu, v⟩ at random u,
v: J by ``jax.jvp`` of the forward, Jᵀ the hand-written rule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..inputs import as_float_input, require_finite, require_tree_like
from ..layers.base import Layer
from ..loss import astype
from ..network import serial
from .kinks import mark_kinks
from .numerics import precision_for
from .options import FIELDS, CheckOptions, options_from
from .program import layer_core, vjp_core
from .report import HAND_REFERENCE, GradientReport
from .rows import Place, gradient_rows, jvp_row, layer_rows, leaf_rows
from .skeleton import Prepared, finish, judged_rows, kink_record, measured, run_program

__all__ = ["check_vjp", "check_layer"]

VJP_OPTIONS = FIELDS - {"resample"}


def _random_like(tree, rng: np.random.Generator, dtype):
    """Standard normal arrays shaped like the leaves of ``tree`` (shapes or arrays)."""
    return jax.tree.map(lambda t: jnp.asarray(rng.standard_normal(tuple(jnp.shape(t)))
                                              .astype(dtype)), tree)


def _require_float_leaves(args, who):
    for path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"{who}: every argument leaf must be a floating-point array, received "
                f"{jnp.result_type(leaf).name} at args{jax.tree_util.keystr(path)}. Close over "
                f"integer arguments (functools.partial) and check the function of the rest.")


def _require_custom_vjp(f, args):
    if not isinstance(f, jax.custom_vjp):
        raise TypeError(
            f"check_vjp: f must be a jax.custom_vjp function, received {type(f).__name__}. "
            f"Decorate it with @jax.custom_vjp and call f.defvjp(fwd, bwd), or wrap an "
            f"fbackprop Layer or Network with fb.as_custom_vjp; for a network use fb.check.")
    if getattr(f, "nondiff_argnums", ()):
        raise TypeError(f"check_vjp: f has nondiff_argnums={f.nondiff_argnums}, received; "
                        f"expected none. Close over those arguments (functools.partial).")
    if not args:
        raise TypeError("check_vjp: expected the arguments to call f with, received none. "
                        "Pass them after f: fb.check_vjp(f, params, x).")


def _undifferentiable(primal, point) -> str:
    """Why reverse-mode autodiff cannot differentiate ``primal`` at ``point`` ('' if it can):
    a Pallas kernel, ``pure_callback`` or FFI call fails when traced for ``jax.vjp``. The forward
    is traced first, outside the ``try``: an error there is the caller's, and propagates."""
    def pullback(*args):
        y, back = jax.vjp(primal, *args)
        return back(y)

    jax.eval_shape(primal, *point)
    try:
        jax.eval_shape(pullback, *point)
    except Exception as err:  # whatever autodiff raises, the check reports it as the reason
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"{type(err).__name__}: {first}"
    return ""


def _require_reference(f, reference, point):
    """``TypeError`` unless ``reference`` is a function returning what ``f`` returns."""
    if not callable(reference):
        raise TypeError(f"check_vjp: reference must be a function of f's arguments, received "
                        f"{type(reference).__name__}. Pass the implementation autodiff can "
                        f"differentiate, e.g. reference=lambda x: jnp.sum(x, axis=-1).")
    want, got = jax.eval_shape(f, *point), jax.eval_shape(reference, *point)
    if jax.tree.structure(want) != jax.tree.structure(got) or any(
            (w.shape, w.dtype) != (g.shape, g.dtype)
            for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got))):
        raise TypeError(f"check_vjp: reference must return what f returns.\n  expected: "
                        f"{want}\n  received: {got}\nMake the reference compute the same "
                        f"outputs as f.")


def _vjp_point(f, args, reference, opts):
    """``(point, why)``: the arguments cast to the check's dtype and checked, and why autodiff
    cannot differentiate f's primal ('' if it can); ``TypeError`` for a bad reference."""
    with precision_for(opts.dtype, opts.matmul_precision):
        point = astype(tuple(args), jnp.dtype(opts.dtype))
        _require_float_leaves(point, "check_vjp")
        # NaN or inf would make every row fail and blame the rule (fb.check refuses them too)
        require_finite(point, "check_vjp: args", fix="Check the rule at finite values.")
        if reference is not None:
            _require_reference(f, reference, point)
        why = _undifferentiable(f.fun if reference is None else reference, point)
    if why and reference is not None:
        raise TypeError(f"check_vjp: autodiff cannot differentiate the reference ({why}); "
                        f"expected an implementation of f in differentiable JAX operations.")
    return point, why


def _skipped(opts, name: str, why: str) -> GradientReport:
    return finish(opts, GradientReport(
        subject=name, cost=None, dtype=opts.dtype, tolerance=opts.tolerances(0.0).tol, rows=(),
        layer_names=(name,), skipped=f"primal not differentiable — pass a reference "
                                     f"(check_vjp(f, *args, reference=g); autodiff of {name}'s "
                                     f"primal raised {why})"))


def check_vjp(f, *args, reference=None, options: CheckOptions | None = None,
              **overrides) -> GradientReport:
    """Check the backward rule of a ``jax.custom_vjp`` function against autodiff of its primal,
    or of a reference implementation.

    At a random output cotangent u (seeded), ``jax.vjp(f, *args)`` (the custom rule) is compared
    with ``jax.vjp(f.fun, *args)`` (autodiff of the function ``f`` was defined from) or, given
    ``reference=g``, with ``jax.vjp(g, *args)`` plus a forward row f(args) against g(args) (pair
    ``"kernel–reference"``): for a primal autodiff cannot differentiate (a Pallas kernel,
    ``pure_callback``, an FFI call). Without a reference such a primal gives a report with
    ``status == "skipped"`` saying so, not an error. One row per argument leaf, with the measure
    and tolerances of :func:`fbackprop.check` (the error budget in low precision). With ``jvp``
    (the default) the row ⟨u, J v⟩ = ⟨Jᵀu, v⟩ is added, J from ``jax.jvp`` of the primal (or
    reference) and Jᵀu from the rule. When ``f`` has a ``kink_distance(*args)`` attribute (as
    :func:`fbackprop.as_custom_vjp` gives) and the point is within ``kink_tol`` of a kink,
    mismatches are reported as ``"kink"``, not failures.

    Args:
      f: a ``jax.custom_vjp`` function, e.g. from ``@jax.custom_vjp`` with ``f.defvjp(fwd, bwd)``
        or from :func:`fbackprop.as_custom_vjp`; no ``nondiff_argnums``.
      *args: its arguments, pytrees of floating-point arrays (cast to the check's dtype).
      reference: ``g(*args)``, an implementation of f's forward that autodiff can differentiate.
      options: a :class:`~fbackprop.CheckOptions`; finite differences are of
        J = ⟨u, f(args)⟩, and ``seed`` seeds u, v and the FD directions.
      **overrides: its fields as keywords, as for :func:`fbackprop.check`, plus ``jvp``
        (``resample`` does not apply: the point is the caller's).

    Returns:
      A :class:`~fbackprop.GradientReport`.

    Raises:
      TypeError: ``f`` is not a ``jax.custom_vjp`` function, an argument is not floating, the
        reference does not return what ``f`` returns or is not differentiable, or an option is
        unknown.
      GradientCheckError: with ``raise_on_failure=True``, naming the first failing leaf.
    """
    _require_custom_vjp(f, args)
    opts = options_from(options, overrides, who="check_vjp", accepts=VJP_OPTIONS)
    name = getattr(f, "__name__", "f")
    point, why = _vjp_point(f, args, reference, opts)
    if why:
        return _skipped(opts, name, why)
    kink_distance = getattr(f, "kink_distance", None)

    def prepare(rng):
        u = _random_like(jax.eval_shape(f.fun, *point), rng, opts.dtype)
        v = _random_like(point, rng, opts.dtype)
        distance = None if kink_distance is None else float(kink_distance(*point))
        return Prepared(vjp_core, (f, reference), (point, u, v), point, kink_distance=distance)

    outcome = run_program(opts, prepare, jvp=opts.jvp)
    rows = judged_rows(opts, outcome, lambda out: _vjp_rows(out, outcome, opts, name))
    at_kink, kinks = kink_record(opts, outcome.found, [0])
    return finish(opts, GradientReport(
        subject=name, cost=None, rows=tuple(mark_kinks(rows, at_kink)), layer_names=(name,),
        kinks=None if kink_distance is None else kinks, **measured(opts, outcome)))


def _vjp_rows(out, outcome, opts, name):
    """The rows of :func:`check_vjp` from the program's outputs ``out``."""
    rows = []
    if "forward" in out:
        rows += leaf_rows(out["forward"]["hand"], out["forward"]["auto"],
                          outcome.notes["forward"],
                          Place(None, f"{name}(args) against the reference", outcome.tols.tol),
                          "forward", HAND_REFERENCE)
    rows += gradient_rows(out, outcome.notes["grad"], f"∂⟨u, {name}⟩/∂args by the custom rule",
                          outcome.tols, opts.fd, outcome.plan)
    if opts.jvp:
        rows.append(jvp_row(out["jvp"], tol=outcome.tols.tol))
    return rows


def check_layer(layer: Layer, params, a, *, options: CheckOptions | None = None,
                **overrides) -> GradientReport:
    """Check one layer's hand-written rules at a random incoming delta (seeded).

    The rows are those :func:`fbackprop.check` gives each layer of a network — ``D_param``,
    ``D_input`` and the fused ``backward`` against ``jax.vjp`` of ``apply``, the fused rule
    against the Euler derivatives, ``time_deltas`` per step — here at a random delta u in place
    of the autodiff one, plus (``jvp=True``) the forward-mode row and (``finite_differences``)
    central differences of J = ⟨u, f p a⟩ for the rule the recurrence runs. Examples of ``a``
    within ``kink_tol`` of a kink (``layer.kink_distance``) are perturbed, up to ``resample``
    rounds, as in :func:`fbackprop.check`; a layer still at a kink reports mismatches as
    ``"kink"``.

    Args:
      layer: an :class:`~fbackprop.Layer`.
      params: its parameters (``layer.init(key)`` or your own), cast to the check's dtype.
      a: its input, with a leading batch axis, cast to the check's dtype.
      options: a :class:`~fbackprop.CheckOptions`.
      **overrides: its fields as keywords, as for :func:`check_vjp`, plus ``resample``.

    Returns:
      A :class:`~fbackprop.GradientReport` whose rows have ``layer=0``.

    Raises:
      TypeError: ``layer`` is not a Layer, ``a`` is not floating, or an option is unknown.
      ValueError: ``a`` is an empty batch or has no batch axis, or does not fit the layer, or
        ``a`` or ``params`` hold NaN or inf (every row would fail and blame the rule).
      GradientCheckError: with ``raise_on_failure=True``, naming the first failing rule.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_layer: layer must be an fbackprop.Layer, received "
                        f"{type(layer).__name__}. For a network use fb.check(net, cost, params, "
                        f"x, y); for a jax.custom_vjp function, fb.check_vjp(f, *args).")
    opts = options_from(options, overrides, who="check_layer")

    require_tree_like(params, jax.eval_shape(layer.init, jax.random.PRNGKey(0)),
                      what="check_layer: params",
                      fix="Pass layer.init(key) or a tree shaped like it.")

    def prepare(rng):
        p, x = astype((params, jnp.asarray(a)), jnp.dtype(opts.dtype))
        _require_float_leaves((x,), "check_layer")
        u = _random_like(_layer_output(layer, p, x), rng, opts.dtype)
        v = _random_like((p, x), rng, opts.dtype)
        return Prepared(layer_core, layer, (p, x, u, v), (p, x), move=1)

    outcome = run_program(opts, prepare, jvp=opts.jvp)
    rows = judged_rows(opts, outcome, lambda out: _layer_rows_of(layer, opts, outcome, out))
    at_kink, kinks = kink_record(opts, outcome.found, [0])
    return finish(opts, GradientReport(
        subject=layer.name, cost=None, rows=tuple(mark_kinks(rows, at_kink)),
        layer_names=(layer.name,), kinks=kinks, **measured(opts, outcome)))


def _layer_output(layer, p, x):
    """The output spec of ``layer`` at ``(p, x)`` after checking x (a non-empty batch) and both
    for NaN/inf; a raw JAX shape error becomes a ``ValueError`` naming ``a``."""
    as_float_input(x, argument="check_layer: a")  # an empty batch would check nothing
    for what, tree in (("params", p), ("a", x)):  # NaN would fail every row
        require_finite(tree, f"check_layer: {what}", fix="Check the rule at finite values.")
    try:
        return jax.eval_shape(layer.apply, p, x)
    except TypeError as err:  # a raw JAX shape error: the input does not fit the layer
        raise ValueError(f"check_layer: a of shape {x.shape} does not fit {layer.name}: "
                         f"{str(err).rstrip('.')}. Give a the shape the layer expects, with a "
                         f"leading batch axis.") from err


def _layer_rows_of(layer, opts, outcome, out):
    """The rows of :func:`check_layer` from the program's outputs ``out``."""
    tol = outcome.tols.tol
    rows = layer_rows(serial(layer), 0, out["layers"][0], outcome.notes, tol, {},
                      in_network=False)
    if opts.fd is not None:
        rule = "backward" if layer.backward is not None else "D_param, D_input"
        rows += [r._replace(layer=0) for r in gradient_rows(
            out, outcome.notes.get((0, "backward"), {}),
            f"layer 0: {layer.name}, ∂⟨u, f p a⟩ by {rule}", outcome.tols, opts.fd,
            outcome.plan)]
    if opts.jvp:
        rows.append(jvp_row(out["jvp"], tol=tol, layer=0))
    return rows
