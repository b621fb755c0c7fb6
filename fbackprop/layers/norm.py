"""Layer normalization over the last axis, with a learned gain γ and bias β.

Per row (one example's features, n of them): μ = mean(a), σ² = mean((a − μ)²), r = 1/√(σ² + ε),
x̂ = (a − μ) r, f p a = γ ⊙ x̂ + β. Any leading axes are batch.

The backward pass (this derivation is the project's own; ``fbackprop check`` compares it with
``jax.grad`` in float64). With g = d ⊙ γ = ∂J/∂x̂:
  ∂x̂_i/∂a_j = r (δ_ij − 1/n) − r x̂_i x̂_j / n     (μ and σ² both depend on every a_j)
  so  ∂J/∂a = r · (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂)).
The easy step to get wrong is dropping one of the two subtracted terms: ``mean(g)`` comes from
μ (the mean term), ``x̂ ⊙ mean(g ⊙ x̂)`` from σ² (the variance term). Parameters: ∂J/∂γ = Σ_rows
d ⊙ x̂, ∂J/∂β = Σ_rows d.
"""
from __future__ import annotations

import jax.numpy as jnp

from ..inputs import require_float_dtype, require_number, require_positive_int
from .base import Layer

__all__ = ["layer_norm", "normalize", "normalize_backward"]


def normalize(a, eps):
    """(x̂, r): x̂ = (a − μ) r, r = 1/√(σ² + ε), over the last axis."""
    mu = jnp.mean(a, axis=-1, keepdims=True)
    var = jnp.mean((a - mu) ** 2, axis=-1, keepdims=True)
    r = 1.0 / jnp.sqrt(var + eps)
    return (a - mu) * r, r


def normalize_backward(x_hat, r, g):
    """∂J/∂a from g = ∂J/∂x̂: r · (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂)) (module docstring)."""
    mean_term = jnp.mean(g, axis=-1, keepdims=True)                  # through μ
    var_term = x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True)   # through σ²
    return r * (g - mean_term - var_term)


def layer_norm(n: int, eps: float = 1e-5, *, dtype=jnp.float32) -> Layer:
    """Layer normalization ``f p a = γ ⊙ (a − μ)/√(σ² + ε) + β`` over the last axis.

    Args:
      n: the width of the last axis.
      eps: ε, added to the variance.
      dtype: dtype of the parameters ``init`` makes.

    Returns:
      A :class:`~fbackprop.Layer` with parameters ``{"gamma": (n,), "beta": (n,)}`` (init: ones,
      zeros), its two rules, and a fused ``backward`` sharing x̂ and r.
    """
    dtype = require_float_dtype(dtype, who="layer_norm")
    n = require_positive_int(n, "n", who="layer_norm")
    eps = require_number(eps, "eps", positive=True, who="layer_norm")

    def init(key):
        del key
        return {"gamma": jnp.ones((n,), dtype), "beta": jnp.zeros((n,), dtype)}

    def apply(p, a):
        x_hat, _ = normalize(a, eps)
        return p["gamma"] * x_hat + p["beta"]

    def param_grads(x_hat, d):
        rows = d.reshape(-1, n)
        return {"gamma": jnp.sum(rows * x_hat.reshape(-1, n), axis=0),  # Σ_rows d ⊙ x̂
                "beta": jnp.sum(rows, axis=0)}                           # Σ_rows d

    def D_input(p, a, d):
        x_hat, r = normalize(a, eps)
        return normalize_backward(x_hat, r, d * p["gamma"])  # g = d ⊙ γ

    def D_param(p, a, d):
        del p
        return param_grads(normalize(a, eps)[0], d)

    def backward(p, a, d):
        x_hat, r = normalize(a, eps)  # once for both rules
        return normalize_backward(x_hat, r, d * p["gamma"]), param_grads(x_hat, d)

    return Layer(init, apply, D_input, D_param, name=f"layer_norm({n})", backward=backward)
