"""Reproducible sample points for checks: parameters, inputs and targets drawn with NumPy from a
seed (no XLA compilation is spent on sampling)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..costs import get_cost
from .numerics import dtype_name

__all__ = ["sample_target", "sample_params", "sample_point"]


def sample_target(cost, rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """A target suited to ``cost``.

    Args:
      cost: a cost name or :class:`~fbackprop.Cost`.
      rng: the NumPy generator to draw from.
      shape: the network output's shape, e.g. (batch, n_out).
      dtype: the dtype of the result.

    Returns:
      One-hot rows for softmax cross-entropy, {0, 1} for sigmoid cross-entropy, ±1 for the
      logistic loss (Fleuret), uniform [0, 1) for the squared errors.
    """
    name = get_cost(cost).name
    if name == "softmax_cross_entropy":
        return np.eye(shape[-1], dtype=dtype)[rng.integers(0, shape[-1], shape[:-1])]
    if name == "sigmoid_cross_entropy":
        return rng.integers(0, 2, shape).astype(dtype)
    if name == "logistic":
        return np.where(rng.integers(0, 2, shape) == 1, 1.0, -1.0).astype(dtype)
    return rng.uniform(size=shape).astype(dtype)


def sample_params(net, rng: np.random.Generator, dtype):
    """Random parameters shaped like ``net.init``'s.

    Arrays of rank ≥ 2 (weights, kernels) are N(0, 1/fan-in) with fan-in the product of all but
    the first axis; vectors (biases) N(0, 0.1²), so that biases are nonzero and their rules are
    exercised.
    """
    spec = jax.eval_shape(net.init, jax.random.PRNGKey(0))

    def draw(leaf):
        shape = tuple(leaf.shape)
        scale = 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 0.1
        return jnp.asarray((scale * rng.standard_normal(shape)).astype(dtype))

    return jax.tree.map(draw, spec)


def sample_point(net, cost, batch: int, *, seed: int = 0, dtype="float64", input_shape=None):
    """A reproducible ``(params, x, y)`` for checking ``net`` with ``cost``.

    Args:
      net: an :class:`~fbackprop.Network`.
      cost: a cost name or :class:`~fbackprop.Cost`.
      batch: the number of examples.
      seed: seeds the NumPy generator.
      dtype: ``"float64"`` or ``"float32"``.
      input_shape: one example's shape; defaults to ``net.input_shape`` and must be concrete
        (give it for sequence models, whose T is free).

    Returns:
      Parameters from :func:`sample_params`, x standard normal of shape (batch, *input_shape)
      (uniform token ids for a network reading them),
      y from :func:`sample_target`.
    """
    shape = tuple(input_shape if input_shape is not None else net.input_shape or ())
    if not shape:
        raise ValueError(f"sample_point needs one example's shape to draw x, and {net!r} was "
                         f"built without one; pass input_shape=(n_in,) here (or to fb.serial / "
                         f"fb.dag when building the network), e.g. input_shape=(4,) for a first "
                         f"layer that reads 4 features.")
    if any(s is None for s in shape):
        raise ValueError(f"sample_point needs a concrete input_shape; {net!r} takes examples of "
                         f"shape {shape!r}, whose None axis (a sequence's time steps) takes any "
                         f"length; pass input_shape with a length there, e.g. "
                         f"input_shape={tuple(5 if s is None else s for s in shape)!r}.")
    dtype = np.dtype(dtype_name(dtype))
    rng = np.random.default_rng(seed)
    params = sample_params(net, rng, dtype)
    if net.input_vocab is None:
        x = jnp.asarray(rng.standard_normal((batch, *shape)).astype(dtype))
    else:  # a network starting with an embedding reads token ids
        x = jnp.asarray(rng.integers(0, net.input_vocab, (batch, *shape)), jnp.int32)
    out = jax.eval_shape(net.apply, params, x)
    y = jnp.asarray(sample_target(cost, rng, tuple(out.shape), dtype))
    return params, x, y
