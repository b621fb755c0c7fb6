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

from ..layers.base import Layer
from ..loss import astype
from ..network import serial
from .kinks import mark_kinks
from .options import FIELDS, CheckOptions, options_from
from .program import layer_core, vjp_core
from .report import GradientReport
from .rows import gradient_rows, jvp_row, layer_rows
from .skeleton import Prepared, finish, kink_record, measured, run_program

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


def check_vjp(f, *args, options: CheckOptions | None = None, **overrides) -> GradientReport:
    """Check the backward rule of a ``jax.custom_vjp`` function against autodiff of its primal.

    At a random output cotangent u (seeded), ``jax.vjp(f, *args)`` (the custom rule) is compared
    with ``jax.vjp(f.fun, *args)`` (autodiff of the function ``f`` was defined from), one row per
    argument leaf, with the measure and tolerances of :func:`fbackprop.check`. With ``jvp`` (the
    default) the row ⟨u, J v⟩ = ⟨Jᵀu, v⟩ is added, J from ``jax.jvp(f.fun, …)`` and Jᵀu from the
    custom rule, at random u and v. When ``f`` has a ``kink_distance(*args)`` attribute
    (functions from :func:`fbackprop.as_custom_vjp` of layers with kinks do) and the point is
    closer than ``kink_tol`` to a kink, mismatches are reported as ``"kink"``, not failures.

    Args:
      f: a ``jax.custom_vjp`` function, e.g. from ``@jax.custom_vjp`` with ``f.defvjp(fwd, bwd)``
        or from :func:`fbackprop.as_custom_vjp`; no ``nondiff_argnums``.
      *args: its arguments, pytrees of floating-point arrays (cast to the check's dtype).
      options: a :class:`~fbackprop.CheckOptions`; finite differences are of
        J = ⟨u, f(args)⟩, and ``seed`` seeds u, v and the FD directions.
      **overrides: its fields as keywords, as for :func:`fbackprop.check`, plus ``jvp``
        (``resample`` does not apply: the point is the caller's).

    Returns:
      A :class:`~fbackprop.GradientReport`.

    Raises:
      TypeError: ``f`` is not a ``jax.custom_vjp`` function, an argument is not floating, or an
        option is unknown.
      GradientCheckError: with ``raise_on_failure=True``, naming the first failing leaf.
    """
    _require_custom_vjp(f, args)
    opts = options_from(options, overrides, who="check_vjp", accepts=VJP_OPTIONS)
    name = getattr(f, "__name__", "f")
    kink_distance = getattr(f, "kink_distance", None)

    def prepare(rng):
        point = astype(tuple(args), jnp.dtype(opts.dtype))
        _require_float_leaves(point, "check_vjp")
        u = _random_like(jax.eval_shape(f.fun, *point), rng, opts.dtype)
        v = _random_like(point, rng, opts.dtype)
        distance = None if kink_distance is None else float(kink_distance(*point))
        return Prepared(vjp_core, f, (point, u, v), point, kink_distance=distance)

    outcome = run_program(opts, prepare, jvp=opts.jvp)
    rows = gradient_rows(outcome.out, outcome.notes["grad"],
                         f"∂⟨u, {name}⟩/∂args by the custom rule", outcome.tols, opts.fd,
                         outcome.plan)
    if opts.jvp:
        rows.append(jvp_row(outcome.out["jvp"], tol=outcome.tols.tol))
    at_kink, kinks = kink_record(opts, outcome.found, [0])
    return finish(opts, GradientReport(
        subject=name, cost=None, rows=tuple(mark_kinks(rows, at_kink)), layer_names=(name,),
        kinks=None if kink_distance is None else kinks, **measured(opts, outcome)))


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
      GradientCheckError: with ``raise_on_failure=True``, naming the first failing rule.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_layer: layer must be an fbackprop.Layer, received "
                        f"{type(layer).__name__}. For a network use fb.check(net, cost, params, "
                        f"x, y); for a jax.custom_vjp function, fb.check_vjp(f, *args).")
    opts = options_from(options, overrides, who="check_layer")

    def prepare(rng):
        p, x = astype((params, jnp.asarray(a)), jnp.dtype(opts.dtype))
        _require_float_leaves((x,), "check_layer")
        u = _random_like(jax.eval_shape(layer.apply, p, x), rng, opts.dtype)
        v = _random_like((p, x), rng, opts.dtype)
        return Prepared(layer_core, layer, (p, x, u, v), (p, x), move=1)

    outcome = run_program(opts, prepare, jvp=opts.jvp)
    out, tol = outcome.out, outcome.tols.tol
    rows = layer_rows(serial(layer), 0, out["layers"][0], outcome.notes, tol, {},
                      in_network=False)
    if opts.fd is not None:
        rule = "backward" if layer.backward is not None else "D_param, D_input"
        rows += [r._replace(layer=0) for r in gradient_rows(
            out, outcome.notes.get((0, "backward"), {}),
            f"layer 0: {layer.name}, ∂⟨u, f p a⟩ by {rule}", outcome.tols, opts.fd, outcome.plan)]
    if opts.jvp:
        rows.append(jvp_row(out["jvp"], tol=tol, layer=0))
    at_kink, kinks = kink_record(opts, outcome.found, [0])
    return finish(opts, GradientReport(
        subject=layer.name, cost=None, rows=tuple(mark_kinks(rows, at_kink)),
        layer_names=(layer.name,), kinks=kinks, **measured(opts, outcome)))
