"""Serial networks and Gordon's generic backward recurrence.

A network is the composition ``f_N p x = f_L p_L (… (f_1 p_1 x))`` of layers (Gordon, "The
Backpropagation algorithm"); its parameters are the tuple ``(p_1, …, p_L)`` (indices from 0 in
code). The backward pass is Gordon's pseudocode, for l = L … 1:

    d_L = D(C y) a_L
    Δp_l = −η · d_l · D(λv. f v a_{l−1}) p_l        (layer.D_param)
    d_{l−1} = d_l · D(f p_l) a_{l−1}               (layer.D_input)

Here d_l = ∂J/∂a_l (Gordon's d; Nielsen's δ is ∂J/∂z). The loss J is the mean over the batch of
the per-example cost, so d_L carries a factor 1/batch and every parameter gradient is the average
of the per-example gradients (offline learning, Gordon). Nothing on this path calls autodiff.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from .costs import get_cost
from .inputs import (as_float_input, require_finite, require_params, require_target,
                     require_tree_like)
from .layers.base import Layer

__all__ = ["Network", "serial", "forward", "backward", "loss_fn", "manual_grad",
           "backprop", "Backprop", "astype", "batch_mean_cost"]


@dataclasses.dataclass(frozen=True)
class Network:
    """A serial stack of :class:`~fbackprop.Layer`: ``f_N p x = f_L p_L (… (f_1 p_1 x))``
    (Gordon, "The Backpropagation algorithm"); pure functions only.

    Attributes:
      layers: the layers, first applied first.
      input_shape: one example's shape (``None`` entries match any size, e.g. a time axis);
        ``None`` disables the input-shape check.
      name: a label for reports.

    Methods:
      init(key): → the parameter tuple ``(p_1, …, p_L)``, one pytree per layer.
      apply(params, x): → f_N p x for x of shape ``(batch, *input_shape)``, floating point.
    """

    layers: tuple
    input_shape: Optional[tuple] = None
    name: str = "serial"

    def init(self, key) -> tuple:
        keys = jax.random.split(key, len(self.layers))
        return tuple(layer.init(k) for layer, k in zip(self.layers, keys))

    def apply(self, params, x):
        x = as_float_input(x, self.input_shape)
        require_params(self, params)
        return forward(self, params, x)[-1]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        return f"Network({self.name}: " + " → ".join(layer.name for layer in self.layers) + ")"


def serial(*layers: Layer, input_shape=None, name: str = "serial") -> Network:
    """Compose layers in order: ``serial(l1, l2)`` computes ``f₂ p₂ (f₁ p₁ x)`` (Gordon's
    composition of layer functions).

    Args:
      *layers: :class:`~fbackprop.Layer` objects, at least one.
      input_shape: one example's shape; when given, inputs of another shape are rejected with a
        clear message.
      name: a label for reports.

    Returns:
      A :class:`Network`.
    """
    if not layers:
        raise ValueError("serial needs at least one Layer; received none.")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"serial: argument {i} must be an fbackprop.Layer(init, apply, D_input, D_param), "
                f"received {type(layer).__name__}."
            )
    if input_shape is not None:
        input_shape = tuple(input_shape)
    return Network(tuple(layers), input_shape, name)


def forward(net: Network, params, x) -> tuple:
    """The forward pass keeping every activation: a_l = f p_l a_{l−1} (Gordon).

    Args:
      net: the network.
      params: its parameters ``(p_1, …, p_L)``.
      x: the input a_0, shape ``(batch, *input_shape)`` (not validated here; see
        :meth:`Network.apply`).

    Returns:
      ``(a_0 = x, a_1, …, a_L)``.
    """
    activations = [x]
    for l, (layer, p) in enumerate(zip(net.layers, params)):
        try:
            a = layer.apply(p, activations[-1])  # a_l = f p_l a_{l−1}
        except (TypeError, ValueError) as err:
            if l == 0:
                raise
            raise ValueError(
                f"layer {l} ({layer.name}) cannot take the output of layer {l - 1} "
                f"({net.layers[l - 1].name}), of shape {tuple(jnp.shape(activations[-1]))}: "
                f"{str(err).rstrip('.')}. The layers' widths must chain: each layer's input size must equal the "
                f"output size of the layer before it.") from err
        activations.append(a)
    return tuple(activations)


def backward(net: Network, params, activations, d_L, *, input_grad: bool = False):
    """Gordon's backward recurrence on the hand-written rules.

    Args:
      net: the network.
      params: its parameters ``(p_1, …, p_L)``.
      activations: ``(a_0 = x, …, a_L)`` from :func:`forward`.
      d_L: ∂J/∂a_L, shaped like ``a_L`` (for the batch-mean loss it carries the 1/batch).
      input_grad: also compute ``d_0`` = ∂J/∂x.

    Returns:
      ``(grads, deltas)``: ``grads[l]`` = ∂J/∂p_l with the structure of ``params[l]``;
      ``deltas[l]`` = d_l = ∂J/∂a_l for l = 0 … L (``deltas[0]`` = ∂J/∂x, Bradbury Table 1 step 7,
      only when ``input_grad``; otherwise ``None``, since no parameter needs it). A layer with a
      fused ``backward`` rule computes its two derivatives in one call.
    """
    L = len(net.layers)
    grads = [None] * L
    deltas = [None] * (L + 1)
    deltas[L] = d = d_L
    for l in reversed(range(L)):
        layer, p, a_prev = net.layers[l], params[l], activations[l]
        needs_input = l > 0 or input_grad
        if needs_input and layer.backward is not None:
            d_prev, g = layer.backward(p, a_prev, d)  # both Euler derivatives at once
        else:
            g = layer.D_param(p, a_prev, d)  # ∂J/∂p_l = d_l · D(λv. f v a_{l−1}) p_l
            d_prev = layer.D_input(p, a_prev, d) if needs_input else None  # d_l · D(f p_l) a_{l−1}
        require_tree_like(g, p, what=f"the gradient returned by D_param of layer {l} "
                                     f"({layer.name})",
                          fix="A layer's D_param must return a pytree shaped like its params.")
        grads[l] = g
        if needs_input:
            if tuple(jnp.shape(d_prev)) != tuple(a_prev.shape):
                raise ValueError(
                    f"D_input of layer {l} ({layer.name}) returned a delta of shape "
                    f"{tuple(jnp.shape(d_prev))}; it must have the shape of the layer's input, "
                    f"{tuple(a_prev.shape)}.")
            deltas[l] = d = d_prev
    return tuple(grads), tuple(deltas)


def batch_mean_cost(cost, y, a):
    """J = the mean over the batch of the per-example cost C y a.

    Args:
      cost: a :class:`~fbackprop.Cost`.
      y: targets, shaped like ``a``.
      a: the network output a_L, shape (batch, …); per example the cost is summed over every
        axis but the batch (a sequence's J = Σ_τ J^(τ), Jin eq. 28).

    Returns:
      A scalar.
    """
    per_vector = cost.C(y, a)  # shape a.shape[:-1]
    if tuple(jnp.shape(per_vector)) != tuple(a.shape[:-1]):
        raise ValueError(f"cost {cost.name!r}: C(y, a) must return one cost per output vector, "
                         f"shape {tuple(a.shape[:-1])} for a of shape {tuple(a.shape)}, received "
                         f"shape {tuple(jnp.shape(per_vector))}. Reduce over the last axis only "
                         f"(e.g. jnp.sum(..., axis=-1)).")
    return jnp.mean(jnp.sum(per_vector.reshape(a.shape[0], -1), axis=1))


def _prepare(net, cost, params, x, y):
    x = as_float_input(x, net.input_shape)
    require_finite(x, "x")  # concrete arrays only: nothing under jit
    require_params(net, params)
    activations = forward(net, params, x)
    y = require_target(y, activations[-1], cost_name=cost.name)
    return activations, y


def loss_fn(net: Network, cost):
    """The loss as a function: the mean over the batch of the per-example cost C y (f_N p x).

    Args:
      net: the network.
      cost: a cost name (``"mse" | "sse" | "sigmoid_cross_entropy" | "softmax_cross_entropy" |
        "logistic"``) or a :class:`~fbackprop.Cost`.

    Returns:
      ``loss(params, x, y)`` → a scalar; x of shape ``(batch, *input_shape)``, y the shape of the
      output. ``jax.grad`` of it is the reference every hand-written gradient is checked against.
    """
    cost = get_cost(cost)

    def loss(params, x, y):
        activations, y = _prepare(net, cost, params, x, y)
        return batch_mean_cost(cost, y, activations[-1])

    return loss


class Backprop(NamedTuple):
    """Everything the manual pass computes.

    Attributes:
      loss: J, the batch mean of the per-example cost (a scalar).
      grads: ∂J/∂params, structured like params.
      deltas: (d_0, …, d_L), d_l = ∂J/∂a_l shaped like a_l; d_0 = ∂J/∂x (``None`` if not
        requested).
      activations: (a_0 = x, …, a_L).
    """

    loss: Any
    grads: Any
    deltas: tuple
    activations: tuple


def backprop(net: Network, cost, *, input_grad: bool = True):
    """The whole manual pass: forward, d_L = D(C y) a_L / batch, then Gordon's backward
    recurrence on the hand-written rules (no autodiff).

    Args:
      net: the network.
      cost: a cost name or :class:`~fbackprop.Cost`.
      input_grad: also compute d_0 = ∂J/∂x (Bradbury Table 1, step 7).

    Returns:
      ``run(params, x, y)`` → :class:`Backprop`; gradients are of the batch-mean loss.

    Raises:
      ValueError, TypeError: (from ``run``) x, y or params of the wrong shape, dtype or
        structure, or a rule returning a wrongly shaped value.
    """
    cost = get_cost(cost)

    def run(params, x, y):
        activations, y = _prepare(net, cost, params, x, y)
        a_L = activations[-1]
        # d_L = D(C y) a_L, averaged over the batch (the loss is the batch mean).
        d_L = cost.D(y, a_L)
        if tuple(jnp.shape(d_L)) != tuple(a_L.shape):
            raise ValueError(f"cost {cost.name!r}: D(y, a) must return ∂C/∂a with the shape of a, "
                             f"{tuple(a_L.shape)}, received shape {tuple(jnp.shape(d_L))}. Return "
                             f"one derivative per output entry.")
        d_L = d_L / a_L.shape[0]
        grads, deltas = backward(net, params, activations, d_L, input_grad=input_grad)
        return Backprop(batch_mean_cost(cost, y, a_L), grads, deltas, activations)

    return run


def manual_grad(net: Network, cost):
    """The gradient by the hand-written rules only (no ``jax.grad``, ``jax.vjp`` or other
    autodiff): Gordon's recurrence, Δp_l = −η · d_l · D(λv. f v a_{l−1}) p_l without the −η.

    Args:
      net: the network.
      cost: a cost name or :class:`~fbackprop.Cost`.

    Returns:
      ``grad(params, x, y)`` → ∂J/∂params of the batch-mean loss, structured like params.
    """
    run = backprop(net, cost, input_grad=False)

    def grad(params, x, y):
        return run(params, x, y).grads

    return grad


def astype(tree, dtype):
    """Cast every floating-point leaf of a pytree to ``dtype`` (e.g. params to float64).

    Args:
      tree: a pytree of arrays.
      dtype: the floating-point dtype to cast to; integer leaves are left as they are.

    Returns:
      The cast pytree.
    """
    return jax.tree.map(
        lambda t: t.astype(dtype) if jnp.issubdtype(jnp.asarray(t).dtype, jnp.floating) else t,
        tree)
