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

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..inputs import (as_float_input, require_finite, require_int, require_number,
                      require_tree_like)
from ..layers.base import Layer
from ..loss import astype
from ..network import serial
from .check import _bound, _layer_rows, _settings, _tolerances
from .fd import fd_inputs, fd_settings, fd_summary
from .kinks import KINK_TOL, mark_kinks, resample_away_from_kinks
from .numerics import FD_EPS, dtype_name, precision_for
from .program import layer_core, program, spec, vjp_core
from .report import GradientReport
from .rows import gradient_rows, jvp_row

__all__ = ["check_vjp", "check_layer"]


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


def _finish(report: GradientReport, raise_on_failure: bool) -> GradientReport:
    return report.raise_if_failed() if raise_on_failure else report


def check_vjp(f, *args, dtype="float64", jvp: bool = True, finite_differences: bool = False,
              tolerance: Optional[float] = None, eps: float = FD_EPS, directions: int = 16,
              fd_elements: int = 8, fd_tolerance: Optional[float] = None,
              kink_tol: float = KINK_TOL, seed: int = 0, jit: bool = True,
              raise_on_failure: bool = False) -> GradientReport:
    """Check the backward rule of a ``jax.custom_vjp`` function against autodiff of its primal.

    At a random output cotangent u (seeded), ``jax.vjp(f, *args)`` (the custom rule) is compared
    with ``jax.vjp(f.fun, *args)`` (autodiff of the function ``f`` was defined from), one row per
    argument leaf, with the measure and tolerances of :func:`fbackprop.check`.

    Args:
      f: a ``jax.custom_vjp`` function, e.g. from ``@jax.custom_vjp`` with ``f.defvjp(fwd, bwd)``
        or from :func:`fbackprop.as_custom_vjp`; no ``nondiff_argnums``.
      *args: its arguments, pytrees of floating-point arrays (cast to ``dtype``).
      dtype: ``"float64"`` (tolerance 1e-10) or ``"float32"`` (1e-4).
      jvp: add the row ⟨u, J v⟩ = ⟨Jᵀu, v⟩ with J from ``jax.jvp(f.fun, …)`` and Jᵀu from the
        custom rule, at random u and v.
      finite_differences, eps, directions, fd_elements, fd_tolerance: central differences of
        J = ⟨u, f(args)⟩ (float64 only), as for :func:`fbackprop.check`.
      tolerance: override the bound of the hand–autodiff rows (a number ≥ 0).
      kink_tol: when ``f`` has a ``kink_distance(*args)`` attribute (functions from
        :func:`fbackprop.as_custom_vjp` of layers with kinks do) and the point is closer than
        this to a kink, mismatches are reported as ``"kink"``, not failures.
      seed: seeds u, v and the FD directions.
      jit: compile the check as one program (cached per shapes).
      raise_on_failure: raise instead of returning a failing report.

    Returns:
      A :class:`~fbackprop.GradientReport`.

    Raises:
      TypeError: ``f`` is not a ``jax.custom_vjp`` function, or an argument is not floating.
      GradientCheckError: with ``raise_on_failure=True``, naming the first failing leaf.
    """
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
    name = getattr(f, "__name__", "f")
    dtype = dtype_name(dtype)
    fd = fd_settings(dtype, finite_differences, eps, directions, fd_elements)
    tolerance, fd_tolerance = _bound(tolerance, "tolerance"), _bound(fd_tolerance, "fd_tolerance")
    kink_tol = require_number(kink_tol, "kink_tol", minimum=0)
    rng = np.random.default_rng(require_int(seed, "seed", minimum=0))
    with precision_for(dtype):
        args = astype(tuple(args), jnp.dtype(dtype))
        _require_float_leaves(args, "check_vjp")
        # NaN or inf would make every row fail and blame the rule (fb.check refuses them too)
        require_finite(args, "check_vjp: args", fix="Check the rule at finite values.")
        u = _random_like(jax.eval_shape(f.fun, *args), rng, dtype)
        v = _random_like(args, rng, dtype)
        plan, V, rand_idx = fd_inputs(fd, args, rng)
        call = (args, u, v, jnp.asarray(V, dtype), jnp.asarray(rand_idx))
        fn, notes = program(vjp_core, (f, fd, plan, bool(jvp)), spec(call), jit)
        out = jax.device_get(fn(*call))
        kink_distance = getattr(f, "kink_distance", None)
        distance = float(kink_distance(*args)) if kink_distance is not None else float("inf")
    tol, fd_rtol, fd_tol = _tolerances(dtype, tolerance, fd, fd_tolerance, out["loss"])
    rows = gradient_rows(out, notes["grad"], tol=tol, fd=fd, fd_tol=fd_tol, plan=plan,
                         where=f"∂⟨u, {name}⟩/∂args by the custom rule")
    if jvp:
        rows.append(jvp_row(out["jvp"], tol=tol))
    at_kink = [0] if distance < kink_tol else []
    report = GradientReport(
        subject=name, cost=None, dtype=dtype, tolerance=tol,
        rows=tuple(mark_kinks(rows, at_kink)), layer_names=(name,),
        fd=fd_summary(fd, (fd_rtol, fd_tol)),
        kinks=None if kink_distance is None else {
            "kink_tol": kink_tol, "distance": [distance], "resampled": 0,
            "perturbed_examples": [], "at_kink": at_kink},
        loss=float(out["loss"]))
    return _finish(report, raise_on_failure)


def check_layer(layer: Layer, params, a, *, dtype="float64", jvp: bool = True,
                finite_differences: bool = False, tolerance: Optional[float] = None,
                eps: float = FD_EPS, directions: int = 16, fd_elements: int = 8,
                fd_tolerance: Optional[float] = None, kink_tol: float = KINK_TOL,
                resample: int = 5, seed: int = 0, jit: bool = True,
                raise_on_failure: bool = False) -> GradientReport:
    """Check one layer's hand-written rules at a random incoming delta (seeded).

    The rows are those :func:`fbackprop.check` gives each layer of a network — ``D_param``,
    ``D_input`` and the fused ``backward`` against ``jax.vjp`` of ``apply``, the fused rule
    against the Euler derivatives, ``time_deltas`` per step — here at a random delta u in place
    of the autodiff one, plus (``jvp=True``) the forward-mode row and (``finite_differences``)
    central differences of J = ⟨u, f p a⟩ for the rule the recurrence runs.

    Args:
      layer: an :class:`~fbackprop.Layer`.
      params: its parameters (``layer.init(key)`` or your own), cast to ``dtype``.
      a: its input, with a leading batch axis, cast to ``dtype``.
      dtype, jvp, finite_differences, tolerance, eps, directions, fd_elements, fd_tolerance,
        seed, jit, raise_on_failure: as for :func:`check_vjp`.
      kink_tol, resample: examples of ``a`` within ``kink_tol`` of a kink
        (``layer.kink_distance``) are perturbed, up to ``resample`` rounds, as in
        :func:`fbackprop.check`; a layer still at a kink reports mismatches as ``"kink"``.

    Returns:
      A :class:`~fbackprop.GradientReport` whose rows have ``layer=0``.

    Raises:
      TypeError: ``layer`` is not a Layer, or ``a`` is not floating.
      ValueError: ``a`` is an empty batch or has no batch axis, or ``a`` or ``params`` hold
        NaN or inf (every row would fail and blame the rule).
      GradientCheckError: with ``raise_on_failure=True``, naming the first failing rule.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_layer: layer must be an fbackprop.Layer, received "
                        f"{type(layer).__name__}. For a network use fb.check(net, cost, params, "
                        f"x, y); for a jax.custom_vjp function, fb.check_vjp(f, *args).")
    dtype, fd, resample, tolerance, fd_tolerance, kink_tol = _settings(
        dtype, finite_differences, eps, directions, fd_elements, resample, tolerance,
        fd_tolerance, kink_tol)
    rng = np.random.default_rng(require_int(seed, "seed", minimum=0))
    require_tree_like(params, jax.eval_shape(layer.init, jax.random.PRNGKey(0)),
                      what="check_layer: params",
                      fix="Pass layer.init(key) or a tree shaped like it.")
    with precision_for(dtype):
        params, a = astype((params, jnp.asarray(a)), jnp.dtype(dtype))
        _require_float_leaves((a,), "check_layer")
        as_float_input(a, argument="check_layer: a")  # an empty batch would check nothing
        for what, tree in (("params", params), ("a", a)):  # NaN would fail every row
            require_finite(tree, f"check_layer: {what}", fix="Check the rule at finite values.")
        try:
            out_spec = jax.eval_shape(layer.apply, params, a)
        except TypeError as err:  # a raw JAX shape error: the input does not fit the layer
            raise ValueError(f"check_layer: a of shape {a.shape} does not fit {layer.name}: "
                             f"{str(err).rstrip('.')}. Give a the shape the layer expects, "
                             f"with a leading batch axis.") from err
        u = _random_like(out_spec, rng, dtype)
        v = _random_like((params, a), rng, dtype)
        plan, V, rand_idx = fd_inputs(fd, (params, a), rng)
        V, rand_idx = jnp.asarray(V, dtype), jnp.asarray(rand_idx)
        fn, notes = program(layer_core, (layer, fd, plan, bool(jvp)),
                            spec((params, a, u, v, V, rand_idx)), jit)
        found = resample_away_from_kinks(lambda a_: fn(params, a_, u, v, V, rand_idx), a,
                                         kink_tol=kink_tol, resample=resample, rng=rng)
    out, dist = found.out, found.distance
    tol, fd_rtol, fd_tol = _tolerances(dtype, tolerance, fd, fd_tolerance, out["loss"])
    rows = _layer_rows(serial(layer), 0, out["layers"][0], notes, tol, {}, in_network=False)
    if fd is not None:
        rule = "backward" if layer.backward is not None else "D_param, D_input"
        rows += [r._replace(layer=0) for r in gradient_rows(
            out, notes.get((0, "backward"), {}), tol=tol, fd=fd, fd_tol=fd_tol, plan=plan,
            where=f"layer 0: {layer.name}, ∂⟨u, f p a⟩ by {rule}")]
    if jvp:
        rows.append(jvp_row(out["jvp"], tol=tol, layer=0))
    at_kink = [0] if np.min(dist[0], initial=np.inf) < kink_tol else []
    report = GradientReport(
        subject=layer.name, cost=None, dtype=dtype, tolerance=tol,
        rows=tuple(mark_kinks(rows, at_kink)), layer_names=(layer.name,),
        fd=fd_summary(fd, (fd_rtol, fd_tol)),
        kinks={"kink_tol": kink_tol, "distance": [float(np.min(dist[0], initial=np.inf))],
               "resampled": found.rounds, "perturbed_examples": list(found.perturbed),
               "at_kink": at_kink},
        loss=float(out["loss"]))
    return _finish(report, raise_on_failure)
