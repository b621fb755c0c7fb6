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
:mod:`.kinks`; the settings are one :class:`~.options.CheckOptions`, and the steps shared with
``check_vjp`` and ``check_layer`` live in :mod:`.skeleton`; the result is a
:class:`~.report.GradientReport`.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..costs import get_cost
from ..inputs import (
    as_network_input,
    require_callable,
    require_finite,
    require_params,
    require_target,
)
from ..loss import astype
from ..network import Network
from .kinks import mark_kinks
from .options import FIELDS, CheckOptions, options_from
from .program import grad_core, network_core
from .report import HAND_AUTO, GradientReport
from .rows import Place, gradient_rows, layer_rows, leaf_rows
from .skeleton import Prepared, finish, judged_rows, kink_record, measured, run_program

__all__ = ["check", "check_grad"]

CHECK_OPTIONS = FIELDS - {"jvp"}
GRAD_OPTIONS = CHECK_OPTIONS - {"kink_tol", "resample"}


def _network_point(net, cost, params, x, y, dtype):
    """(params, x, y) checked and cast to ``dtype``, under the check's precision."""
    require_params(net, params)  # floating, finite, shaped like net.init's
    params = astype(params, jnp.dtype(dtype))
    x = as_network_input(x, net.input_shape, net.input_vocab)
    require_finite(x, "x", fix="fb.check needs finite inputs: a NaN or inf input makes every "
                               "layer's comparison meaningless. Clean the batch first.")
    x = x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.asarray(x)
    y = require_target(y, jax.eval_shape(net.apply, params, x), cost_name=cost.name)
    return params, x, y


def check(net: Network, cost, params, x, y, *, options: CheckOptions | None = None,
          **overrides) -> GradientReport:
    """Check every hand-written rule of ``net`` at (params, x, y) and report layer by layer.

    Per layer of the serial stack (per node of a DAG): ``D_param``, ``D_input`` and the fused
    ``backward`` against ``jax.vjp`` of the layer's ``apply`` at the delta autodiff gives it (so
    one wrong rule fails in its own layer only), the fused rule against the Euler derivatives,
    recurrent layers' ``time_deltas`` per step; the cost's ``D(C y)``; in a DAG, each delta the
    recurrence sums over several readers ("Σ of readers' deltas"); and the whole hand-written
    gradient (``manual_grad``) against ``jax.grad(loss_fn(net, cost))``, of the batch-mean loss.
    Rows name layers by index in a chain (``Row.layer`` = l), nodes by name in a DAG. A row
    passes when max|h − r| / max|r| ≤ the tolerance. Inputs near a kink are moved away
    (:mod:`.kinks`); a layer that stays at one reports mismatches as ``"kink"``.

    Args:
      net: an :class:`~fbackprop.Network`.
      cost: a cost name or :class:`~fbackprop.Cost`.
      params: the network's parameters (cast to the check's dtype).
      x: inputs, (batch, *net.input_shape) (cast to the check's dtype).
      y: targets, the shape of the network output.
      options: a :class:`~fbackprop.CheckOptions` (default ``CheckOptions()``).
      **overrides: its fields as keywords (``dtype``, ``tolerance``, ``finite_differences``,
        ``eps``, ``directions``, ``fd_elements``, ``fd_tolerance``, ``kink_tol``, ``resample``,
        ``seed``, ``jit``, ``raise_on_failure``, ``matmul_precision``, ``budget``,
        ``budget_floor``), in place of those of ``options``. In bfloat16 and float16 (and
        float32 under a lower ``matmul_precision``) rows are judged by the error budget
        (:mod:`fbackprop.gradcheck.budget`).

    Returns:
      A :class:`GradientReport`.

    Raises:
      TypeError: ``net`` is not a Network, or an option is unknown.
      GradientCheckError: with ``raise_on_failure=True``, naming the first failing layer, leaf
        and index.
    """
    if not isinstance(net, Network):
        raise TypeError(f"check: net must be an fbackprop.Network (from fb.serial or fb.mlp), "
                        f"received {type(net).__name__}. For a loss and gradient of your own, "
                        f"use fb.check_grad(loss, grad_fn, params, *args).")
    opts = options_from(options, overrides, who="check", accepts=CHECK_OPTIONS)
    cost = get_cost(cost)

    def prepare(rng):
        del rng
        point = _network_point(net, cost, params, x, y, opts.dtype)
        return Prepared(network_core, (net, cost), point, point[0], move=1)

    outcome = run_program(opts, prepare)
    rows = judged_rows(opts, outcome, lambda out: _network_rows(net, cost, opts, outcome, out))
    at_kink, kinks = kink_record(opts, outcome.found, net.keys)
    return finish(opts, GradientReport(
        subject=net.name if net.name != "serial" else repr(net), cost=cost.name,
        rows=tuple(mark_kinks(rows, at_kink)), layer_names=tuple(l.name for l in net.layers),
        node_names=net.nodes or (), kinks=kinks, **measured(opts, outcome)))


def _network_rows(net, cost, opts, outcome, out):
    """The rows of :func:`check` from the program's outputs ``out``: per layer (node), the
    cost, the whole gradient."""
    tol, rows = outcome.tols.tol, []
    for l, e in enumerate(out["layers"]):
        rows += layer_rows(net, l, e, outcome.notes, tol, out["sums"])
    rows += leaf_rows(out["cost"]["hand"], out["cost"]["auto"], {},
                      Place(None, f"cost {cost.name}", tol), "D(C y) a_L / batch", HAND_AUTO,
                      "∂J/∂a_L")
    return rows + gradient_rows(out, outcome.notes["grad"], "∂J/∂p (whole recurrence)",
                                outcome.tols, opts.fd, outcome.plan)


def _require_gradient(loss, grad_fn, params, args):
    """``ValueError`` unless ``loss`` returns a scalar, ``TypeError`` unless ``grad_fn`` returns
    a pytree shaped like ``params``."""
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


def check_grad(loss: Callable, grad_fn: Callable, params, *args,
               options: CheckOptions | None = None, **overrides) -> GradientReport:
    """Check a hand-written ``grad_fn(params, *args)`` against ``jax.grad(loss)`` (and, with
    ``finite_differences=True``, central differences), with no :class:`~fbackprop.Layer` involved.

    Args:
      loss: ``loss(params, *args)`` → a scalar.
      grad_fn: ``grad_fn(params, *args)`` → a pytree shaped like ``params``.
      params: a pytree of arrays.
      *args: arrays (pytrees of arrays; close over anything else).
      options: a :class:`~fbackprop.CheckOptions`; floating-point leaves of params and args are
        cast to its dtype.
      **overrides: its fields as keywords, as for :func:`check` (``kink_tol`` and ``resample``
        do not apply).

    Returns:
      A :class:`GradientReport` with one row per parameter leaf, named by its pytree path; a leaf
      of the wrong shape is a failing row.

    Raises:
      TypeError: ``grad_fn`` returns the wrong pytree structure, or an option is unknown.
      GradientCheckError: with ``raise_on_failure=True`` on a failure.
    """
    for name, f in (("loss", loss), ("grad_fn", grad_fn)):
        require_callable(f, name, expected="a function of (params, *args)", who="check_grad")
    opts = options_from(options, overrides, who="check_grad", accepts=GRAD_OPTIONS)

    def prepare(rng):
        del rng
        point = astype((params, args), jnp.dtype(opts.dtype))
        _require_gradient(loss, grad_fn, *point)
        return Prepared(grad_core, (loss, grad_fn), point, point[0])

    outcome = run_program(opts, prepare)
    rows = judged_rows(opts, outcome, lambda out: gradient_rows(
        out, outcome.notes["grad"], f"∂J/∂p by {getattr(grad_fn, '__name__', 'grad_fn')}",
        outcome.tols, opts.fd, outcome.plan))
    return finish(opts, GradientReport(subject=getattr(loss, "__name__", "loss"), cost=None,
                                       rows=tuple(rows), **measured(opts, outcome)))
