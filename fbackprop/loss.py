"""The loss of a network and the whole manual pass.

The loss J is the mean over the batch of the per-example cost C y (f_N p x) (offline learning
averages the per-example deltas, Gordon), so the recurrence starts from d_L = D(C y) a_L / batch.
:func:`loss_fn` is what ``jax.grad`` differentiates for the reference; :func:`backprop` and
:func:`manual_grad` run Gordon's recurrence (:func:`fbackprop.network.backward`) on the
hand-written rules only.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .costs import get_cost
from .dtypes import narrow, stable
from .inputs import (
    as_network_input,
    require_bool,
    require_finite,
    require_mask,
    require_params,
    require_target,
)
from .network import Network, backward, forward, per_node

__all__ = ["batch_mean_cost", "loss_fn", "Backprop", "backprop", "manual_grad", "astype"]


def batch_mean_cost(cost, y, a, mask=None):
    """J = the mean over the batch of the per-example cost C y a.

    Args:
      cost: a :class:`~fbackprop.Cost`.
      y: targets, shaped like ``a``.
      a: the network output a_L, shape (batch, …); per example the cost is summed over every
        axis but the batch (a sequence's J = Σ_τ J^(τ), Jin eq. 28).
      mask: optional (batch,) weights of 1 (an example) and 0 (padding): the mean is then over
        the examples alone, padding contributing nothing. :func:`loss_fn`, :func:`backprop` and
        :func:`manual_grad` refuse another shape, and (outside ``jit``) NaN, negative weights
        or a mask of zeros.

    Returns:
      A scalar (float32 when ``a`` is bfloat16 or float16: the cost and its sum over the batch
      need float32 for stability, :mod:`fbackprop.dtypes`).
    """
    y, a = stable(y), stable(a)  # low precision: the cost and the batch sum in float32
    per_vector = cost.C(y, a)  # shape a.shape[:-1]
    if tuple(jnp.shape(per_vector)) != tuple(a.shape[:-1]):
        raise ValueError(f"cost {cost.name!r}: C(y, a) must return one cost per output vector, "
                         f"shape {tuple(a.shape[:-1])} for a of shape {tuple(a.shape)}, received "
                         f"shape {tuple(jnp.shape(per_vector))}. Reduce over the last axis only "
                         f"(e.g. jnp.sum(..., axis=-1)).")
    per_example = jnp.sum(per_vector.reshape(a.shape[0], -1), axis=1)
    if mask is None:
        return jnp.mean(per_example)
    return jnp.sum(per_example * mask) / jnp.sum(mask)


def _output_delta(cost, y, a_L, mask, scale=None):
    """d_L = D(C y) a_L / batch, the delta of the batch-mean loss (zero on masked rows), times
    the loss scale ``scale`` (fp16) when given. In bfloat16 or float16, D(C y) a_L (a softmax for
    cross-entropy) is computed in float32, scaled and divided there, and only then narrowed."""
    D = cost.D(stable(y), stable(a_L))
    if scale is not None:
        D = D * scale
    if tuple(jnp.shape(D)) != tuple(a_L.shape):
        raise ValueError(f"cost {cost.name!r}: D(y, a) must return ∂C/∂a with the shape of a, "
                         f"{tuple(a_L.shape)}, received shape {tuple(jnp.shape(D))}. Return "
                         f"one derivative per output entry.")
    if mask is None:
        return narrow(D / a_L.shape[0], a_L)
    return narrow(D * mask.reshape((-1,) + (1,) * (D.ndim - 1)) / jnp.sum(mask), a_L)


def _require_network(net, who: str):
    if not isinstance(net, Network):
        raise TypeError(f"{who}: net must be an fbackprop.Network, received "
                        f"{type(net).__name__}. Wrap a single layer with fb.serial(layer).")


def _prepare(net, cost, params, x, y, mask):
    x = as_network_input(x, net.input_shape, net.input_vocab)
    require_finite(x, "x")  # concrete arrays only: nothing under jit
    mask = require_mask(mask, x.shape[0])
    require_params(net, params)
    activations = forward(net, params, x)
    y = require_target(y, activations[-1], cost_name=cost.name)
    return activations, y, mask


def loss_fn(net: Network, cost):
    """The loss as a function: the mean over the batch of the per-example cost C y (f_N p x).

    Args:
      net: the network.
      cost: a cost name (``"mse" | "sse" | "sigmoid_cross_entropy" | "softmax_cross_entropy" |
        "logistic"``) or a :class:`~fbackprop.Cost`.

    Returns:
      ``loss(params, x, y, mask=None)`` → a scalar (``mask``: see :func:`batch_mean_cost`);
      x of shape ``(batch, *input_shape)``, y the shape of the
      output. ``jax.grad`` of it is the reference every hand-written gradient is checked against.
    """
    _require_network(net, "loss_fn")
    cost = get_cost(cost)

    def loss(params, x, y, mask=None):
        activations, y, mask = _prepare(net, cost, params, x, y, mask)
        return batch_mean_cost(cost, y, activations[-1], mask)

    return loss


class Backprop(NamedTuple):
    """Everything the manual pass computes.

    Attributes:
      loss: J, the batch mean of the per-example cost (a scalar).
      grads: ∂J/∂params, structured like params.
      deltas: (d_0, …, d_L), d_l = ∂J/∂a_l shaped like a_l; d_0 = ∂J/∂x (``None`` if not
        requested); for a DAG a dict keyed by ``"x"`` and the node names.
      activations: (a_0 = x, …, a_L); for a DAG a dict keyed like ``deltas``.
    """

    loss: Any
    grads: Any
    deltas: tuple
    activations: tuple


def backprop(net: Network, cost, *, input_grad: bool = True, recompute: bool = False):
    """The whole manual pass: forward, d_L = D(C y) a_L / batch, then Gordon's backward
    recurrence on the hand-written rules (no autodiff).

    Args:
      net: the network.
      cost: a cost name or :class:`~fbackprop.Cost`.
      input_grad: also compute d_0 = ∂J/∂x (Bradbury Table 1, step 7).
      recompute: recompute what each rule derives from its layer's input in the backward pass
        rather than keep the forward's copy alive (:func:`~fbackprop.network.backward`).

    Returns:
      ``run(params, x, y, mask=None, scale=None)`` → :class:`Backprop`; gradients are of the
      batch-mean loss (over the unmasked examples when a (batch,) 0/1 ``mask`` is given). With
      a loss scale S (``scale``, float16 training) the recurrence starts from S·d_L, so every
      delta and gradient is S times larger and does not underflow; ``loss`` stays J. In
      bfloat16 or float16 the output delta and the loss are computed in float32
      (:func:`batch_mean_cost`).

    Raises:
      ValueError, TypeError: (from ``run``) x, y or params of the wrong shape, dtype or
        structure, or a rule returning a wrongly shaped value.
    """
    _require_network(net, "backprop")
    input_grad = require_bool(input_grad, "input_grad", who="backprop")
    recompute = require_bool(recompute, "recompute", who="backprop")
    cost = get_cost(cost)

    def run(params, x, y, mask=None, scale=None):
        activations, y, mask = _prepare(net, cost, params, x, y, mask)
        a_L = activations[-1]
        d_L = _output_delta(cost, y, a_L, mask, scale)  # D(C y) a_L, averaged over the batch
        grads, deltas = backward(net, params, activations, d_L, input_grad=input_grad,
                                 recompute=recompute)
        if net.nodes is not None:
            activations = {"x": activations[0], **per_node(net, activations[1:])}
        return Backprop(batch_mean_cost(cost, y, a_L, mask), grads, deltas, activations)

    return run


def manual_grad(net: Network, cost, *, recompute: bool = False):
    """The gradient by the hand-written rules only (no ``jax.grad``, ``jax.vjp`` or other
    autodiff): Gordon's recurrence, Δp_l = −η · d_l · D(λv. f v a_{l−1}) p_l without the −η.

    Args:
      net: the network.
      cost: a cost name or :class:`~fbackprop.Cost`.
      recompute: recompute in the backward pass what the rules derive from each layer's input
        (:func:`backprop`): less temporary memory for a transformer, the same values.

    Returns:
      ``grad(params, x, y, mask=None)`` → ∂J/∂params of the batch-mean loss, structured like
      params.
    """
    _require_network(net, "manual_grad")
    run = backprop(net, cost, input_grad=False, recompute=recompute)

    def grad(params, x, y, mask=None):
        return run(params, x, y, mask).grads

    return grad


def astype(tree, dtype):
    """Cast every floating-point leaf of a pytree to ``dtype`` (e.g. params to float64).

    Args:
      tree: a pytree of arrays.
      dtype: the floating-point dtype to cast to; integer leaves are left as they are.

    Returns:
      The cast pytree.
    """
    try:
        ok = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise TypeError(f"astype: dtype must be a floating-point dtype such as jnp.float64 or "
                        f"'float32', received {dtype!r}.")
    return jax.tree.map(
        lambda t: t.astype(dtype) if jnp.issubdtype(jnp.asarray(t).dtype, jnp.floating) else t,
        tree)
