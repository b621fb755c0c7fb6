"""The fully connected layer as Gordon's neuron: ``f p a = g(W a + b)``.

Notation (Gordon, "Two neuron per layer example", after Nielsen): ``W`` is stored as
(n_out, n_in) so ``W[j, k]`` is w_jk, the weight from neuron k of layer l−1 to neuron j of layer
l; ``z`` is the weighted input, ``a`` an activation, ``d`` = ∂J/∂(output) the incoming delta and
``delta`` = ∂J/∂z (Nielsen's δ). Where the texts use one column vector per example, the code
holds a batch of row vectors: per example z = W a + b, in code ``z = a @ W.T + b``. Any number of
leading axes is allowed (a sequence of hidden states, say); they are all treated as batch.
Indices run from 0.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..activations import get_activation
from ..inputs import require_bool, require_float_dtype, require_positive_int
from .base import Layer, Probes

__all__ = ["dense", "dense_pre_activation", "dense_input_delta", "dense_param_grads"]


def _rows(t):
    """Collapse every leading axis into one batch axis: (..., n) → (N, n)."""
    return t.reshape(-1, t.shape[-1])


def dense_pre_activation(p, a, bias: bool = True):
    """The weighted input z = W a + b (per example; a batch of rows gives ``a @ Wᵀ + b``)."""
    z = a @ p["W"].T  # z_j = Σ_k w_jk a_k (+ b_j)  (Gordon; Kamper eq. 10; Bradbury eq. 28)
    return z + p["b"] if bias else z


def dense_input_delta(W, delta):
    """BP2: d_prev = Wᵀ δ (per example; a batch of rows gives δ W)."""
    return delta @ W  # d_prev = Wᵀ δ  (Kamper eq. 24)


def dense_param_grads(a, delta, bias: bool = True) -> dict:
    """BP4 and BP3 from δ = ∂J/∂z and the layer's input a, summed over every batch row."""
    # BP4: ∂J/∂w_jk = δ_j a_k → dW = Σ_batch δ aᵀ, one matrix product δᵀ·a over all batch
    # rows (Kamper eq. 23).  BP3: ∂J/∂b_j = δ_j → db = Σ_batch δ (Kamper eq. 22).
    rows = _rows(delta)
    grads = {"W": rows.T @ _rows(a)}
    if bias:
        grads["b"] = jnp.sum(rows, axis=0)
    return grads


def dense(n_in: int, n_out: int, activation="sigmoid", *, bias: bool = True,
          dtype=jnp.float32) -> Layer:
    """A dense layer ``f p a = g(W a + b)`` (or ``g(W a)`` with ``bias=False``, as Bradbury's net).

    Args:
      n_in: input width (the last axis of ``a``; any leading axes are batch).
      n_out: output width.
      activation: ``"sigmoid" | "tanh" | "relu" | "identity" | "softmax"`` or an
        :class:`~fbackprop.Activation`.
      bias: ``False`` drops b.
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` with parameters ``{"W": (n_out, n_in), "b": (n_out,)}``;
      ``init`` draws W from N(0, 1/n_in) (2/n_in for ReLU) and sets b to zero. ``D_input``,
      ``D_param`` and the fused ``backward`` are BP1–BP4 (Gordon, Kamper eqs. 21–24).
    """
    dtype = require_float_dtype(dtype, who="dense")
    n_in = require_positive_int(n_in, "n_in", who="dense")
    n_out = require_positive_int(n_out, "n_out", who="dense")
    bias = require_bool(bias, "bias", who="dense", fix="Pass bias=False to drop b.")
    g = get_activation(activation)
    gain = math.sqrt(2.0) if g.name == "relu" else 1.0

    def init(key):
        W = gain / math.sqrt(n_in) * jax.random.normal(key, (n_out, n_in), dtype)
        return {"W": W, "b": jnp.zeros((n_out,), dtype)} if bias else {"W": W}

    def z(p, a):
        return dense_pre_activation(p, a, bias)

    def delta_of(p, a, d):
        return g.D(z(p, a), d)  # BP1: δ = d ⊙ g'(z)  (Kamper eq. 21)

    def backward(p, a, d):  # both rules from one δ
        delta = delta_of(p, a, d)
        return dense_input_delta(p["W"], delta), dense_param_grads(a, delta, bias)

    return Layer(init, lambda p, a: g(z(p, a)),  # a^l = g(z^l)  (Kamper eq. 11)
                 # D_input = d · D(f p) a and D_param = d · D(λv. f v a) p, both from BP1's δ
                 lambda p, a, d: dense_input_delta(p["W"], delta_of(p, a, d)),
                 lambda p, a, d: dense_param_grads(a, delta_of(p, a, d), bias),
                 name=f"dense({n_in}→{n_out}, {g.name}{'' if bias else ', no bias'})",
                 backward=backward,  # ReLU's kink distance: min |z|
                 probes=Probes(kink_distance=lambda p, a: g.kink_distance(z(p, a))))
