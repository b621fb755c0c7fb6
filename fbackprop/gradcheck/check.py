"""``check`` and ``check_grad``: the public entry points of gradient checking.

``check(net, cost, params, x, y)`` compares, in one compiled program (:mod:`.program`):

1. **Per layer, at the autodiff delta**: each layer's ``D_param``, ``D_input`` and fused
   ``backward`` against ``jax.vjp`` of its ``apply`` at the delta autodiff gives it — so a wrong
   rule fails in its own layer only, never in the layers below — and the fused rule against the
   two Euler derivatives; recurrent layers' ``time_deltas`` per time step; the cost's ``D(C y)``.
2. **Whole gradient**: ``manual_grad`` (the full backward recurrence) against
   ``jax.grad(loss_fn(net, cost))``, per parameter leaf.
3. **Finite differences** (float64, optional), with a three-way verdict (:mod:`.fd`).

Every row uses the one error measure and tolerance of :mod:`.numerics`; kinks are handled by
:mod:`.kinks`; the result is a :class:`~.report.GradientReport`.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..costs import get_cost
from ..inputs import (as_network_input, require_callable, require_finite, require_int,
                      require_number, require_params, require_target)
from ..loss import astype
from ..network import Network
from .fd import fd_inputs, fd_settings, fd_summary
from .kinks import KINK_TOL, mark_kinks, resample_away_from_kinks
from .numerics import FD_EPS, FD_NOISE, FD_TOLERANCE, TOLERANCE, dtype_name, precision_for
from .program import grad_core, network_core, program, spec
from .report import FUSED_EULER, HAND_AUTO, GradientReport
from .rows import gradient_rows, leaf_rows, time_rows

__all__ = ["check", "check_grad"]

_INPUT = "∂J/∂a (input)"


def _tolerances(dtype, tolerance, fd, fd_tolerance, loss):
    """(tol, FD rtol, FD tolerance): the FD tolerance adds the rounding floor of J(p ± εu)."""
    tol = TOLERANCE[dtype] if tolerance is None else tolerance
    fd_rtol = FD_TOLERANCE if fd_tolerance is None else fd_tolerance
    fd_tol = fd_rtol + (FD_NOISE * max(1.0, abs(float(loss))) / fd.eps if fd else 0.0)
    return tol, fd_rtol, fd_tol


def _bound(value, argument):
    return require_number(value, argument, minimum=0, allow_none=True)


def _settings(dtype, finite_differences, eps, directions, fd_elements, resample, tolerance,
              fd_tolerance, kink_tol):
    """The checked settings shared by :func:`check` and ``check_layer``: (dtype name, FD plan,
    resampling rounds, tolerance, FD tolerance, kink tolerance)."""
    dtype = dtype_name(dtype)
    return (dtype, fd_settings(dtype, finite_differences, eps, directions, fd_elements),
            require_int(resample, "resample", minimum=0), _bound(tolerance, "tolerance"),
            _bound(fd_tolerance, "fd_tolerance"), require_number(kink_tol, "kink_tol", minimum=0))


def _layer_rows(net, l, e, notes, tol, sums, *, in_network=True):
    """The rows of node ``l`` (layer ``l`` of a chain): its rules and probes against autodiff,
    its fused rule against autodiff and against the Euler derivatives, and, where its output
    feeds several nodes, the recurrence's sum of their deltas against autodiff.
    ``in_network``: a node reading only x is the first of a network, whose ``D_input`` feeds no
    parameter gradient (``False`` for a layer checked on its own)."""
    layer, key = net.layers[l], net.keys[l]
    where = f"layer {l}: {layer.name}" if net.nodes is None else f"node {key}: {layer.name}"
    common = dict(layer=key, where=where, tol=tol)
    rows = leaf_rows(e["hand_p"], e["ref_p"], notes[(l, "D_param")], rule="D_param",
                     pair=HAND_AUTO, **common)
    reads_x_only = all(s == 0 for s in net.sources[l])
    rows += [r._replace(note=r.note or ("only affects ∂J/∂x, not the parameter gradients"
                                        if reads_x_only and in_network else ""))
             for r in leaf_rows(e["hand_a"], e["ref_a"], notes[(l, "D_input")], rule="D_input",
                                pair=HAND_AUTO, leaf_name=_INPUT, **common)]
    if "fused" in e:
        why = notes[(l, "backward")]
        (f_a, f_p), euler = e["fused"], (e["hand_a"], e["hand_p"])
        for ref, pair in (((e["ref_a"], e["ref_p"]), HAND_AUTO), (euler, FUSED_EULER)):
            rows += leaf_rows(f_p, ref[1], why, rule="backward", pair=pair, **common)
            rows += leaf_rows(f_a, ref[0], why, rule="backward", pair=pair, leaf_name=_INPUT,
                              **common)
    if "time_ref" in e:
        rows += time_rows(e["time_hand"], e["time_ref"], notes[(l, "time")], **common)
    if l in sums:  # Kamper §3: the delta of a shared activation is the sum over its readers
        rows += leaf_rows(sums[l]["hand"], sums[l]["auto"], {}, rule="Σ of readers' deltas",
                          pair=HAND_AUTO, leaf_name="∂J/∂a (output)", **common)
    return rows


def check(net: Network, cost, params, x, y, *, dtype="float64", finite_differences: bool = False,
          tolerance: Optional[float] = None, eps: float = FD_EPS, directions: int = 16,
          fd_elements: int = 8, fd_tolerance: Optional[float] = None, kink_tol: float = KINK_TOL,
          resample: int = 5, seed: int = 0, jit: bool = True,
          raise_on_failure: bool = False) -> GradientReport:
    """Check every hand-written rule of ``net`` at (params, x, y) and report layer by layer.

    Per layer of the serial stack (per node of a DAG), ``D_param``, ``D_input`` and (when the layer has one) the
    fused ``backward`` are compared with ``jax.vjp`` of the layer's ``apply`` at the same incoming
    delta, the one autodiff computes, so that one wrong rule fails in its layer only; the fused
    rule is also compared with the Euler derivatives, recurrent layers' ``time_deltas`` with
    their autodiff twin per step, the cost's ``D(C y)`` with autodiff, and the whole hand-written
    gradient (``manual_grad``) with ``jax.grad(loss_fn(net, cost))``. In a DAG, the delta of
    each activation read by several nodes, as the recurrence sums it, is compared with autodiff
    too (a row "Σ of readers' deltas" at that node). Rows of a chain name layers by index
    (``Row.layer`` = l, "layer l: …"); rows of a DAG name nodes (``Row.layer`` = the node name,
    "node name: …"), and so does ``failing_layers``. Gradients are of the batch-mean loss.

    Per row: max abs = max_i |h_i − r_i|, max rel = max abs / max_i |r_i|; pass when
    max rel ≤ ``tolerance``.

    Args:
      net: an :class:`~fbackprop.Network`.
      cost: a cost name or :class:`~fbackprop.Cost`.
      params: the network's parameters (cast to ``dtype``).
      x: inputs, (batch, *net.input_shape) (cast to ``dtype``).
      y: targets, the shape of the network output.
      dtype: ``"float64"`` (default; tolerance 1e-10) or ``"float32"`` (1e-4, under the highest
        matmul precision).
      finite_differences: add central differences (float64 only), step ``eps``, along
        ``directions`` random unit directions and ``fd_elements`` elements per leaf (the worst
        by |hand − autodiff| and random ones), with a verdict naming the pair of hand-written /
        autodiff / FD that disagrees. FD rows pass within ``fd_tolerance`` (default
        ``FD_TOLERANCE``) + ``FD_NOISE``·max(1, |J|)/eps.
      tolerance, fd_tolerance: override the bounds (numbers ≥ 0).
      kink_tol, resample: examples within ``kink_tol`` of a kink (``Layer.kink_distance``) get
        x perturbed, up to ``resample`` rounds (see :mod:`fbackprop.gradcheck.kinks`); a layer
        still at a kink has its mismatches reported as ``"kink"``, not as failures.
      seed: seeds the perturbations and the FD directions.
      jit: compile the check as one program (cached per shapes).
      raise_on_failure: raise instead of returning a failing report.

    Returns:
      A :class:`GradientReport`.

    Raises:
      GradientCheckError: with ``raise_on_failure=True``, naming the first failing layer, leaf
        and index.
    """
    if not isinstance(net, Network):
        raise TypeError(f"check: net must be an fbackprop.Network (from fb.serial or fb.mlp), "
                        f"received {type(net).__name__}. For a loss and gradient of your own, "
                        f"use fb.check_grad(loss, grad_fn, params, *args).")
    cost = get_cost(cost)
    dtype, fd, resample, tolerance, fd_tolerance, kink_tol = _settings(
        dtype, finite_differences, eps, directions, fd_elements, resample, tolerance,
        fd_tolerance, kink_tol)
    rng = np.random.default_rng(require_int(seed, "seed", minimum=0))
    with precision_for(dtype):
        require_params(net, params)  # floating, finite, shaped like net.init's
        params = astype(params, jnp.dtype(dtype))
        x = as_network_input(x, net.input_shape, net.input_vocab)
        require_finite(x, "x", fix="fb.check needs finite inputs: a NaN or inf input makes every "
                                   "layer's comparison meaningless. Clean the batch first.")
        x = x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.asarray(x)
        y = require_target(y, jax.eval_shape(net.apply, params, x), cost_name=cost.name)
        plan, V, rand_idx = fd_inputs(fd, params, rng)
        V, rand_idx = jnp.asarray(V, dtype), jnp.asarray(rand_idx)
        fn, notes = program(network_core, (net, cost, fd, plan),
                            spec((params, x, y, V, rand_idx)), jit)
        found = resample_away_from_kinks(lambda x_: fn(params, x_, y, V, rand_idx), x,
                                         kink_tol=kink_tol, resample=resample, rng=rng)
    out, dist = found.out, found.distance
    tol, fd_rtol, fd_tol = _tolerances(dtype, tolerance, fd, fd_tolerance, out["loss"])
    at_kink = [k for k, d in zip(net.keys, dist) if np.min(d, initial=np.inf) < kink_tol]

    rows = []
    for l, e in enumerate(out["layers"]):
        rows += _layer_rows(net, l, e, notes, tol, out["sums"])
    rows += leaf_rows(out["cost"]["hand"], out["cost"]["auto"], {}, layer=None,
                      where=f"cost {cost.name}", rule="D(C y) a_L / batch", pair=HAND_AUTO,
                      tol=tol, leaf_name="∂J/∂a_L")
    rows += gradient_rows(out, notes["grad"], tol=tol, fd=fd, fd_tol=fd_tol, plan=plan,
                          where="∂J/∂p (whole recurrence)")
    report = GradientReport(
        subject=net.name if net.name != "serial" else repr(net), cost=cost.name, dtype=dtype,
        tolerance=tol, rows=tuple(mark_kinks(rows, at_kink)),
        layer_names=tuple(l.name for l in net.layers), node_names=net.nodes or (), fd=fd_summary(fd, (fd_rtol, fd_tol)),
        kinks={"kink_tol": kink_tol, "distance": [float(np.min(d, initial=np.inf)) for d in dist],
               "resampled": found.rounds, "perturbed_examples": list(found.perturbed),
               "at_kink": at_kink},
        loss=float(out["loss"]))
    return report.raise_if_failed() if raise_on_failure else report


def check_grad(loss: Callable, grad_fn: Callable, params, *args, dtype="float64",
               finite_differences: bool = False, tolerance: Optional[float] = None,
               eps: float = FD_EPS, directions: int = 16, fd_elements: int = 8,
               fd_tolerance: Optional[float] = None, seed: int = 0, jit: bool = True,
               raise_on_failure: bool = False) -> GradientReport:
    """Check a hand-written ``grad_fn(params, *args)`` against ``jax.grad(loss)`` (and, with
    ``finite_differences=True``, central differences), with no :class:`~fbackprop.Layer` involved.

    Args:
      loss: ``loss(params, *args)`` → a scalar.
      grad_fn: ``grad_fn(params, *args)`` → a pytree shaped like ``params``.
      params: a pytree of arrays.
      *args: arrays (pytrees of arrays; close over anything else).
      dtype, finite_differences, tolerance, eps, directions, fd_elements, fd_tolerance, seed,
        jit, raise_on_failure: as for :func:`check`. Floating-point leaves of params and args
        are cast to ``dtype``.

    Returns:
      A :class:`GradientReport` with one row per parameter leaf, named by its pytree path; a leaf
      of the wrong shape is a failing row.

    Raises:
      TypeError: ``grad_fn`` returns the wrong pytree structure.
      GradientCheckError: with ``raise_on_failure=True`` on a failure.
    """
    for name, f in (("loss", loss), ("grad_fn", grad_fn)):
        require_callable(f, name, expected="a function of (params, *args)", who="check_grad")
    dtype = dtype_name(dtype)
    fd = fd_settings(dtype, finite_differences, eps, directions, fd_elements)
    tolerance, fd_tolerance = _bound(tolerance, "tolerance"), _bound(fd_tolerance, "fd_tolerance")
    with precision_for(dtype):
        params, args = astype((params, args), jnp.dtype(dtype))
        value = jax.eval_shape(loss, params, *args)
        if getattr(value, "shape", None) != ():
            raise ValueError(f"check_grad: loss must return a scalar, received shape "
                             f"{getattr(value, 'shape', type(value).__name__)}.")
        got = jax.eval_shape(grad_fn, params, *args)
        if jax.tree.structure(got) != jax.tree.structure(params):
            raise TypeError(f"check_grad: grad_fn returned the wrong pytree structure.\n"
                            f"  expected: {jax.tree.structure(params)}\n"
                            f"  received: {jax.tree.structure(got)}\n"
                            f"grad_fn must return a gradient shaped like params.")
        rng = np.random.default_rng(require_int(seed, "seed", minimum=0))
        plan, V, rand_idx = fd_inputs(fd, params, rng)
        call = (params, args, jnp.asarray(V, dtype), jnp.asarray(rand_idx))
        fn, notes = program(grad_core, (loss, grad_fn, fd, plan), spec(call), jit)
        out = jax.device_get(fn(*call))
    tol, fd_rtol, fd_tol = _tolerances(dtype, tolerance, fd, fd_tolerance, out["loss"])
    rows = gradient_rows(out, notes["grad"], tol=tol, fd=fd, fd_tol=fd_tol, plan=plan,
                         where=f"∂J/∂p by {getattr(grad_fn, '__name__', 'grad_fn')}")
    report = GradientReport(subject=getattr(loss, "__name__", "loss"), cost=None, dtype=dtype,
                            tolerance=tol, rows=tuple(rows), fd=fd_summary(fd, (fd_rtol, fd_tol)),
                            loss=float(out["loss"]))
    return report.raise_if_failed() if raise_on_failure else report
