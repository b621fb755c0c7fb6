"""Activation functions g, each written beside its derivative.

An :class:`Activation` carries ``g`` (z ↦ a, elementwise except softmax), ``Dg`` (z ↦ g'(z), the
elementwise derivative in the form the texts use) and ``D(z, d)``, the delta pulled back through
g: ``d · Dg(z)`` — for elementwise g that is ``d ⊙ g'(z)`` (Kamper eq. 21, Nielsen BP1/BP2), for
softmax the Jacobian-transpose product. Arrays carry a leading batch axis; g acts on the last axis.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.special

from .inputs import lookup

__all__ = ["Activation", "sigmoid", "tanh", "relu", "identity", "gelu", "softmax",
           "ACTIVATIONS", "get_activation"]


class Activation(NamedTuple):
    """An activation g with its derivative.

    Calling the activation applies g: ``act(z) == act.g(z)``. For elementwise g the delta is
    pulled back as ``d ⊙ g'(z)`` (Kamper eq. 21; Nielsen's BP1/BP2 via Gordon); for softmax as the
    Jacobian-transpose product. Arrays carry leading batch axes; g acts on the last axis.

    Attributes:
      name: how it is referred to (``"sigmoid"`` …).
      g: z ↦ g(z), same shape and dtype as z.
      Dg: z ↦ g'(z) elementwise, same shape and dtype as z, or ``None`` when g is not
        elementwise (softmax).
      vjp: (z, d) ↦ d · Dg(z), the delta at z given the delta d at a = g(z); z and d of the same
        shape, result of that shape.
      kinks: the points where g is not differentiable (ReLU: 0), where the derivative takes the
        documented one-sided value.
    """

    name: str
    g: Callable
    Dg: Callable | None
    vjp: Callable
    kinks: tuple = ()

    def kink_distance(self, z):
        """Smallest |z − k| over every entry of ``z`` and every kink k.

        Args:
          z: pre-activations, a floating array of any shape.

        Returns:
          A 0-d array of ``z.dtype``; ``inf`` for a smooth g.
        """
        if not self.kinks:
            return jnp.asarray(jnp.inf, z.dtype)
        return jnp.min(jnp.stack([jnp.min(jnp.abs(z - k)) for k in self.kinks]))

    def __call__(self, z):
        return self.g(z)

    def D(self, z, d):
        """``d · Dg(z)``: pull the delta ∂C/∂a back to ∂C/∂z (Kamper eq. 21).

        Args:
          z: pre-activations, (..., n).
          d: ∂C/∂a at a = g(z), the shape of ``z``.

        Returns:
          ∂C/∂z, the shape and dtype of ``z``.
        """
        return self.vjp(z, d)


def _elementwise(name: str, g: Callable, Dg: Callable, kinks: tuple = ()) -> Activation:
    # Elementwise g has a diagonal Jacobian: d·Dg(z) = d ⊙ g'(z)  (Kamper eq. 17, 21).
    return Activation(name, g, Dg, lambda z, d: d * Dg(z), kinks)


def _sigmoid(z):
    return jax.nn.sigmoid(z)


def _Dsigmoid(z):
    s = jax.nn.sigmoid(z)
    return s * (1 - s)  # σ' = σ(1 − σ)  (Gordon, "Derivative of the activation function")


def _Dtanh(z):
    t = jnp.tanh(z)
    return 1 - t * t  # tanh' = 1 − tanh²  (Jin eqs. 37–41)


def _relu(z):
    return jax.nn.relu(z)  # its autodiff derivative at 0 is 0, the same one-sided choice as below


def _Drelu(z):
    return (z > 0).astype(z.dtype)  # ReLU'(z) = 1[z > 0]; at the kink ReLU'(0) = 0, as jax.nn.relu


def _identity(z):
    return z


def _Didentity(z):
    return jnp.ones_like(z)


sigmoid = _elementwise("sigmoid", _sigmoid, _Dsigmoid)
tanh = _elementwise("tanh", jnp.tanh, _Dtanh)
relu = _elementwise("relu", _relu, _Drelu, kinks=(0.0,))
identity = _elementwise("identity", _identity, _Didentity)


def _gelu(z):
    # GELU, the exact (erf) form, not the tanh approximation: g(z) = z Φ(z) = ½ z (1 + erf(z/√2))
    return 0.5 * z * (1.0 + jax.scipy.special.erf(z / math.sqrt(2.0)))


def _Dgelu(z):
    # product rule: g'(z) = Φ(z) + z φ(z), φ(z) = exp(−z²/2)/√(2π) the normal density
    phi = jnp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return 0.5 * (1.0 + jax.scipy.special.erf(z / math.sqrt(2.0))) + z * phi


gelu = _elementwise("gelu", _gelu, _Dgelu)


def _softmax(z):
    return jax.nn.softmax(z, axis=-1)


def _softmax_vjp(z, d):
    # s = softmax(z), ∂s_i/∂z_j = s_i(δ_ij − s_j), so (Jᵀd)_j = s_j (d_j − Σ_i d_i s_i).
    s = jax.nn.softmax(z, axis=-1)
    return s * (d - jnp.sum(d * s, axis=-1, keepdims=True))


softmax = Activation("softmax", _softmax, None, _softmax_vjp)

ACTIVATIONS = {a.name: a for a in (sigmoid, tanh, relu, identity, gelu, softmax)}


def get_activation(activation, *, argument: str = "activation") -> Activation:
    """Look up an activation by name, or pass an :class:`Activation` through unchanged.

    Args:
      activation: ``"sigmoid" | "tanh" | "relu" | "identity" | "softmax"`` or an
        :class:`Activation`.
      argument: the name used for the value in error messages.

    Returns:
      The :class:`Activation`.

    Raises:
      ValueError: for an unknown name; the message lists the valid ones.
      TypeError: if ``activation`` is neither a name nor an :class:`Activation`.
    """
    return lookup(activation, ACTIVATIONS, Activation, argument=argument, example="sigmoid",
                  build_hint="or pass an fbackprop.Activation")
