"""The bridge to the rest of the JAX ecosystem: a layer or network as a ``jax.custom_vjp``.

``as_custom_vjp(obj)`` returns ``f(params, x)`` whose forward pass is ``obj.apply`` and whose
reverse-mode derivative is the hand-written one: for a :class:`~fbackprop.Layer`, its fused
``backward`` when it has one, else ``(D_input, D_param)``; for a :class:`~fbackprop.Network`,
Gordon's recurrence :func:`fbackprop.backward` started from the output cotangent ``d_L``. So
``jax.grad``, ``jax.vjp``, optax, Flax and Equinox modules that call ``f`` all run the rules
written by hand, and :func:`fbackprop.check_vjp` checks ``f`` against autodiff of its own forward.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .inputs import as_float_input, require_params
from .layers.base import Layer
from .network import Network, backward, forward

__all__ = ["as_custom_vjp"]


def _layer_vjp(layer: Layer):
    def layer_apply(params, x):
        return layer.apply(params, x)

    f = jax.custom_vjp(layer_apply)

    def fwd(params, x):
        return layer.apply(params, x), (params, x)

    def bwd(residuals, d):
        params, x = residuals
        if layer.backward is not None:
            d_x, g = layer.backward(params, x, d)   # both Euler derivatives at once
        else:
            g = layer.D_param(params, x, d)         # d · D(λv. f v x) p
            d_x = layer.D_input(params, x, d)       # d · D(f p) x
        return g, d_x

    f.defvjp(fwd, bwd)
    if layer.kink_distance is not None:
        f.kink_distance = layer.kink_distance
    return f


def _network_vjp(net: Network):
    def _activations(params, x):
        x = as_float_input(x, net.input_shape)
        require_params(net, params)
        return forward(net, params, x)

    def network_apply(params, x):
        return _activations(params, x)[-1]

    f = jax.custom_vjp(network_apply)

    def fwd(params, x):
        activations = _activations(params, x)
        return activations[-1], (params, activations)

    def bwd(residuals, d_L):
        params, activations = residuals
        # Gordon's recurrence from d_L = ∂J/∂a_L, down to d_0 = ∂J/∂x
        grads, deltas = backward(net, params, activations, d_L, input_grad=True)
        return grads, deltas[0]

    def kink_distance(params, x):
        activations = _activations(params, x)
        dists = [jnp.min(jnp.asarray(layer.kink_distance(p, a)))
                 for layer, p, a in zip(net.layers, params, activations)
                 if layer.kink_distance is not None]
        return jnp.min(jnp.stack(dists)) if dists else jnp.inf

    f.defvjp(fwd, bwd)
    if any(layer.kink_distance is not None for layer in net.layers):
        f.kink_distance = kink_distance
    return f


def as_custom_vjp(obj):
    """A layer or network as a ``jax.custom_vjp`` function that differentiates by hand.

    Args:
      obj: a :class:`~fbackprop.Layer` (e.g. ``fb.dense(4, 3, "tanh")``) or a
        :class:`~fbackprop.Network` (e.g. ``fb.mlp((4, 8, 3))``).

    Returns:
      ``f(params, x)`` (a ``jax.custom_vjp``): its value is ``obj.apply(params, x)``; under
      ``jax.vjp``/``jax.grad`` the cotangent of the output, ``d``, goes to the hand-written rules,
      which return ``(∂/∂params, ∂/∂x)``: a layer's fused ``backward`` when it has one, else
      ``D_param`` and ``D_input``; a network's :func:`fbackprop.backward` recurrence. Gradients
      have exactly the structure of ``params``. ``f.fun`` is the plain forward, the one
      :func:`fbackprop.check_vjp` differentiates by autodiff as the reference; where layers have
      kinks, ``f.kink_distance(params, x)`` gives the distance of the point to the nearest one.

    Raises:
      TypeError: ``obj`` is neither a Layer nor a Network.
    """
    if isinstance(obj, Layer):
        return _layer_vjp(obj)
    if isinstance(obj, Network):
        return _network_vjp(obj)
    raise TypeError(
        f"as_custom_vjp: expected an fbackprop.Layer or fbackprop.Network, received "
        f"{type(obj).__name__}. Build one with fb.dense(...), fb.serial(...) or fb.mlp(...); "
        f"for a function with a rule of your own, use jax.custom_vjp directly.")
