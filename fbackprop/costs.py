"""Costs ``C y a`` (Gordon's curried cost: target y first, network output a second), each beside
its hand-written derivative ``D(C y) a``.

A :class:`Cost` works on the last axis: ``C(y, a)`` returns one number per output vector (shape
``a.shape[:-1]``) and ``D(y, a)`` returns ∂C/∂a with the shape of ``a``. The loss of a batch is
the mean over the batch (leading axis) of the per-example cost, where an example's cost sums over
every other axis (for sequences scored at every step, J = Σ_τ J^(τ), Jin eq. 28).

Costs marked ``on_logits`` take the pre-activation of the output layer (use
``output_activation="identity"``) and are written in a numerically stable form: finite loss and
finite gradient even at logits of ±1e4 (log σ(x) = −softplus(−x); log-softmax via logsumexp).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from .inputs import lookup, require_callable

__all__ = ["Cost", "mse", "sse", "sigmoid_cross_entropy", "softmax_cross_entropy", "logistic",
           "COSTS", "get_cost"]


class Cost(NamedTuple):
    """A cost ``C y a`` with its derivative ``D(C y) a``.

    Gordon's curried cost (Gordon, "Cost function"): the target y first, the network output a
    second; ``D(C y)`` is the derivative with respect to a (Gordon, "Derivative of the cost
    function"). Both work on the last axis; y and a have the same shape (..., n).

    Attributes:
      name: how it is referred to (``"mse"`` …).
      C: (y, a) ↦ per-vector cost, shape ``a.shape[:-1]``.
      D: (y, a) ↦ ∂C/∂a, shape of ``a``; written by hand, never by autodiff.
      on_logits: True when ``a`` is meant to be a logit (pre-activation), False when it is an
        output.
    """

    name: str
    C: Callable
    D: Callable
    on_logits: bool = False


# mse: C y a = ½‖y − a‖²  (Gordon, "Cost function"; Bradbury §3.2 E_n = ½(z − y)²)
def _mse(y, a):
    return 0.5 * jnp.sum((y - a) ** 2, axis=-1)


def _Dmse(y, a):
    return a - y  # D(λv. ½(u − v)²) = λv. v − u  (Gordon, "Derivative of the cost function")


# sse: J = ‖y − ŷ‖², no ½  (Kamper eq. 14)
def _sse(y, a):
    return jnp.sum((y - a) ** 2, axis=-1)


def _Dsse(y, a):
    return 2 * (a - y)  # δ_aL = −2(y − a_L)  (Kamper eq. 15)


# Sigmoid cross-entropy on logits z, multi-label targets y ∈ {0, 1}  (Jin eq. 6):
# −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y·z, stable for any z.
def _sigmoid_ce(y, z):
    return jnp.sum(jax.nn.softplus(z) - y * z, axis=-1)


def _Dsigmoid_ce(y, z):
    return jax.nn.sigmoid(z) - y  # σ(z) − y  (Jin eq. 42, last line, with the σ' cancelled)


# Softmax cross-entropy on logits z, one-hot or probability targets y:
# −Σ_c y_c log softmax(z)_c = Σ_c y_c (logsumexp(z) − z_c).
def _softmax_ce(y, z):
    return -jnp.sum(y * jax.nn.log_softmax(z, axis=-1), axis=-1)


def _Dsoftmax_ce(y, z):
    # ∂/∂z_j = softmax(z)_j · Σ_c y_c − y_j, which is softmax(z) − y when y sums to one.
    return jax.nn.softmax(z, axis=-1) * jnp.sum(y, axis=-1, keepdims=True) - y


# Logistic loss on a score z with labels y ∈ {−1, +1}  (Fleuret, "logistic regression"):
# −log σ(y·z) = softplus(−y·z).
def _logistic(y, z):
    return jnp.sum(jax.nn.softplus(-y * z), axis=-1)


def _Dlogistic(y, z):
    return -y * jax.nn.sigmoid(-y * z)  # ∂/∂z = −y σ(−y z)  (Fleuret's u_n)


mse = Cost("mse", _mse, _Dmse)
sse = Cost("sse", _sse, _Dsse)
sigmoid_cross_entropy = Cost("sigmoid_cross_entropy", _sigmoid_ce, _Dsigmoid_ce, on_logits=True)
softmax_cross_entropy = Cost("softmax_cross_entropy", _softmax_ce, _Dsoftmax_ce, on_logits=True)
logistic = Cost("logistic", _logistic, _Dlogistic, on_logits=True)

COSTS = {c.name: c for c in (mse, sse, sigmoid_cross_entropy, softmax_cross_entropy, logistic)}


def get_cost(cost) -> Cost:
    """Look up a cost by name, or pass a :class:`Cost` through unchanged.

    Args:
      cost: ``"mse" | "sse" | "sigmoid_cross_entropy" | "softmax_cross_entropy" | "logistic"``
        or a :class:`Cost`.

    Returns:
      The :class:`Cost`.

    Raises:
      ValueError: for an unknown name; the message lists the valid ones.
      TypeError: if ``cost`` is neither a name nor a :class:`Cost`.
    """
    cost = lookup(cost, COSTS, Cost, argument="cost", example="mse",
                  build_hint="or build one with fbackprop.Cost(name, C, D)")
    for field in ("C", "D"):
        require_callable(getattr(cost, field), f"Cost.{field}", who=f"cost {cost.name!r}",
                         expected="a function (y, a) → " + ("the cost per output vector"
                                                            if field == "C" else "∂C/∂a"))
    return cost
