"""Layers without parameters that shape a graph: the sum of two activations (a residual
connection), concatenation, an elementwise activation as a layer, dropout; and ``residual``, the
sub-graph x + f(x).

A node of :func:`~fbackprop.dag` reading several activations receives them as a tuple ``a`` and
its ``D_input`` returns a tuple of deltas, one per input. When one activation feeds several nodes,
the recurrence sums what each sends back (``network.accumulate``); these layers only say what
each sends.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..activations import get_activation
from ..inputs import require_int, require_number
from .base import Layer, no_param_grad, no_params

__all__ = ["add", "concat", "elementwise", "gelu", "dropout", "residual"]


def _require_tuple(a, n, who):
    if not isinstance(a, tuple) or (n is not None and len(a) != n):
        want = f"a tuple of {n}" if n is not None else "a tuple of activations"
        got = f"a tuple of {len(a)}" if isinstance(a, tuple) else type(a).__name__
        raise ValueError(f"{who}: the node must read {want} (inputs=(…) in fb.dag), received "
                         f"{got}. Fix: list the node's inputs in the dag.")


def add() -> Layer:
    """The sum of two activations of one shape, ``f (a, b) = a + b`` (a residual connection).

    Its Jacobian towards each input is the identity, so ``D_input`` hands the incoming delta to
    both: ``(d, d)``. Where a is also read elsewhere (x in x + f(x)), the recurrence adds d to
    what the other branch sends back.

    Returns:
      A :class:`~fbackprop.Layer` with no parameters, reading a tuple ``(a, b)``.
    """

    def apply(p, a):
        del p
        _require_tuple(a, 2, "add")
        if a[0].shape != a[1].shape:
            raise ValueError(f"add: both inputs must have one shape, received {a[0].shape} and "
                             f"{a[1].shape}.")
        return a[0] + a[1]

    def D_input(p, a, d):
        del p, a
        return d, d  # ∂(a + b)/∂a = ∂(a + b)/∂b = I

    return Layer(no_params, apply, D_input, no_param_grad, name="add")


def concat(axis: int = -1) -> Layer:
    """Concatenation of several activations along ``axis`` (not the batch axis).

    ``D_input`` splits the delta at the same boundaries: input k gets its own slice.

    Args:
      axis: the axis to join along (negative counts from the end); not 0.

    Returns:
      A :class:`~fbackprop.Layer` with no parameters, reading a tuple of activations.
    """
    axis = require_int(axis, "axis", who="concat")
    if axis == 0:
        raise ValueError("concat: axis must not be 0, the batch axis; received 0. Fix: join "
                         "along a feature axis, e.g. axis=-1.")

    def apply(p, a):
        del p
        _require_tuple(a, None, "concat")
        return jnp.concatenate(a, axis=axis)

    def D_input(p, a, d):
        del p
        ends = [0]
        for t in a:
            ends.append(ends[-1] + t.shape[axis])
        return tuple(jax.lax.slice_in_dim(d, lo, hi, axis=axis % d.ndim)  # each input's slice
                     for lo, hi in zip(ends[:-1], ends[1:]))

    return Layer(no_params, apply, D_input, no_param_grad, name=f"concat(axis={axis})")


def elementwise(activation) -> Layer:
    """An activation as a layer of its own, ``f a = g(a)``: ``D_input`` is d ⊙ g'(a) (Kamper
    eq. 21; for softmax the Jacobian-transpose product).

    Args:
      activation: an activation name or :class:`~fbackprop.Activation`.

    Returns:
      A :class:`~fbackprop.Layer` with no parameters.
    """
    g = get_activation(activation)

    def apply(p, a):
        del p
        return g(a)

    def D_input(p, a, d):
        del p
        return g.D(a, d)  # d ⊙ g'(a)

    return Layer(no_params, apply, D_input, no_param_grad, name=g.name)


def gelu() -> Layer:
    """GELU as a layer, the exact form g(z) = z Φ(z) (erf, not the tanh approximation), with
    g'(z) = Φ(z) + z φ(z) (see :mod:`fbackprop.activations`)."""
    return elementwise("gelu")


def dropout(rate: float, key=None) -> Layer:
    """Inverted dropout, pure: ``f a = a ⊙ m / (1 − rate)`` with the mask m ~ Bernoulli(1 − rate)
    drawn from ``key``; with ``key=None`` (evaluation) it is the identity.

    How the key reaches it: the key is an argument of the constructor, never a parameter (it is
    not trained). A network is built for evaluation (no key); for a training step, rebuild it with
    a fresh key per step — :func:`fbackprop.with_dropout_key` does that for every dropout node,
    folding the node's index into the step's key — and differentiate that network. The mask is
    then a pure function of (key, shape), so ``apply`` and ``D_input`` see the same m.

    ``D_input`` = d ⊙ m / (1 − rate) (the same mask: a dropped unit passes no delta).

    Args:
      rate: the probability of dropping a unit, in [0, 1).
      key: a ``jax.random`` key, or ``None`` for the identity.

    Returns:
      A :class:`~fbackprop.Layer` with no parameters.
    """
    rate = require_number(rate, "rate", minimum=0.0, who="dropout")
    if rate >= 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), received {rate}. Fix: rate=0.1, say.")

    def scale(a):
        if key is None or rate == 0.0:
            return None
        keep = jax.random.bernoulli(key, 1.0 - rate, a.shape)
        return keep.astype(a.dtype) / (1.0 - rate)

    def apply(p, a):
        del p
        m = scale(a)
        return a if m is None else a * m

    def D_input(p, a, d):
        del p
        m = scale(a)
        return d if m is None else d * m  # the mask of the forward pass

    return Layer(no_params, apply, D_input, no_param_grad,
                 name=f"dropout({rate:g}{'' if key is None else ', keyed'})")


def residual(name: str, *layers: Layer, input: str = "x") -> list:
    """The sub-graph ``input + f(input)``, f the chain of ``layers``, as :func:`~fbackprop.dag`
    nodes: ``name.0 … name.{k−1}`` for f and ``name`` (an :func:`add`) for the sum.

    The input feeds both f and the sum, so its delta is d + (what f sends back): the
    fan-out sum of the recurrence, not a rule of any layer here.

    Args:
      name: the name of the output node (the sum); f's nodes are prefixed with it.
      *layers: f's layers, applied in order; at least one.
      input: the node (or ``"x"``) the block reads.

    Returns:
      A list of ``(name, layer, inputs)`` triples to splice into ``fb.dag``'s nodes.
    """
    if not layers:
        raise ValueError(f"residual {name!r} needs at least one layer for f; received none.")
    if not isinstance(name, str) or not name:
        raise ValueError(f"residual: name must be a non-empty string (the sum node's name), "
                         f"received {name!r}. E.g. residual('block0', ...).")
    nodes, prev = [], input
    for i, layer in enumerate(layers):
        nodes.append((f"{name}.{i}", layer, (prev,)))
        prev = f"{name}.{i}"
    return nodes + [(name, add(), (input, prev))]
