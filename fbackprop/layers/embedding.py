"""Token and learned positional embeddings.

``embedding``: f p x = E[x], x integer token ids (batch, T), E (vocab, d) — row x_{b,t} of E.
Its parameter gradient is a scatter-add: ∂J/∂E[v] = Σ_{b,t : x_{b,t} = v} d_{b,t} (a token that
occurs twice receives both deltas, summed — the step that is easy to get wrong is assigning
instead of adding). Equivalently ∂J/∂E = onehot(x)ᵀ d, without forming the one-hot matrix.
The input is discrete, so the loss has no derivative with respect to it: ``D_input`` returns
zeros of x's shape in d's dtype (what ``jax.vjp``'s float0 cotangent stands for).
An id outside [0, vocab) is refused with a ``ValueError`` when x is concrete (the network's input
check); under ``jit`` no value can raise, so the forward and its rule both clamp the id into
[0, vocab − 1] (a departure: ``jnp.take``'s default fills with NaN, poisoning every gradient).

``positional``: f p a = a + P[:T] for a of shape (batch, T, d), P (max_len, d) learned. ∂J/∂a = d;
∂J/∂P[t] = Σ_b d_{b,t} for t < T and 0 for the rows not used.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..inputs import require_float_dtype, require_positive_int
from .base import Layer

__all__ = ["embedding", "positional"]


def embedding(vocab_size: int, d: int, *, dtype=jnp.float32) -> Layer:
    """Token embedding: integer ids (batch, T) → vectors (batch, T, d).

    Args:
      vocab_size: the number of token ids; inputs must lie in [0, vocab_size) (refused
        outside it when concrete, clamped into it under ``jit``: the module docstring).
      d: the embedding width.
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` with parameters ``{"E": (vocab_size, d)}`` (init N(0, 1/d)) and
      ``input_vocab = vocab_size``; ``D_param`` is the scatter-add over token ids, ``D_input``
      zeros (the module docstring).
    """
    dtype = require_float_dtype(dtype, who="embedding")
    vocab_size = require_positive_int(vocab_size, "vocab_size", who="embedding")
    d_model = require_positive_int(d, "d", who="embedding")

    def init(key):
        return {"E": jax.random.normal(key, (vocab_size, d_model), dtype) / math.sqrt(d_model)}

    def ids(x):  # under jit an id cannot be refused: clamp it (the module docstring)
        return jnp.clip(x, 0, vocab_size - 1)

    def apply(p, x):
        return jnp.take(p["E"], ids(x), axis=0)  # row x of E

    def D_input(p, x, d):
        del p
        return jnp.zeros(x.shape, d.dtype)  # no derivative towards a discrete id

    def D_param(p, x, d):
        # scatter-add: ∂J/∂E[v] = Σ over positions with x = v of d (repeated ids add up)
        return {"E": jnp.zeros_like(p["E"]).at[ids(x).reshape(-1)].add(d.reshape(-1, d_model))}

    return Layer(init, apply, D_input, D_param,
                 name=f"embedding({vocab_size}→{d_model})", input_vocab=vocab_size)


def positional(max_len: int, d: int, *, dtype=jnp.float32) -> Layer:
    """Learned positional embedding: ``f p a = a + P[:T]`` for a of shape (batch, T, d).

    Args:
      max_len: the longest sequence; T ≤ max_len.
      d: the width.
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` with parameters ``{"P": (max_len, d)}`` (init N(0, 0.02²)).
    """
    dtype = require_float_dtype(dtype, who="positional")
    max_len = require_positive_int(max_len, "max_len", who="positional")
    d_model = require_positive_int(d, "d", who="positional")

    def init(key):
        return {"P": 0.02 * jax.random.normal(key, (max_len, d_model), dtype)}

    def check_length(a):
        if a.ndim != 3 or a.shape[1] > max_len or a.shape[2] != d_model:
            raise ValueError(f"positional: input must be (batch, T ≤ {max_len}, {d_model}), "
                             f"received shape {tuple(a.shape)}. Fix: shorten the sequence or "
                             f"build the model with a larger max_len.")
        return a.shape[1]

    def apply(p, a):
        return a + p["P"][:check_length(a)]

    def D_input(p, a, d):
        del p, a
        return d  # ∂(a + P)/∂a = I

    def D_param(p, a, d):
        del p
        T = check_length(a)
        # ∂J/∂P[t] = Σ_b d_{b,t} for t < T; rows T … max_len − 1 are unused: 0
        return {"P": jnp.pad(jnp.sum(d, axis=0), ((0, max_len - T), (0, 0)))}

    return Layer(init, apply, D_input, D_param, name=f"positional({max_len}, {d_model})")
