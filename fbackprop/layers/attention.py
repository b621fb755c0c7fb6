"""Causal multi-head self-attention, forward and backward by hand.

Per example, a (T, D) rows; H heads of width d_k = D/H; weights stored (n_out, n_in) as in
:mod:`.dense`:

    [Q K V] = a W_qkvᵀ + b_qkv               split into heads (H, T, d_k) each
    S = Q Kᵀ / √d_k                           scores, (H, T, T)
    S_ij = −∞ for j > i                       the causal mask
    P = softmax(S) row by row                 (H, T, T)
    O = P V                                   (H, T, d_k), heads merged back to (T, D)
    f p a = O W_oᵀ + b_o

The backward pass (no seed text covers it; derived here), from d = ∂J/∂(f p a):

    ∂J/∂O = d W_o,  ∂J/∂W_o = dᵀ O,  ∂J/∂b_o = Σ_rows d          (dense, BP3/BP4)
    ∂J/∂P = ∂J/∂O Vᵀ,  ∂J/∂V = Pᵀ ∂J/∂O                          (the product O = P V)
    ∂J/∂S = P ⊙ (∂J/∂P − rowsum(∂J/∂P ⊙ P))                       (softmax, row by row)
    ∂J/∂Q = ∂J/∂S K / √d_k,  ∂J/∂K = ∂J/∂Sᵀ Q / √d_k               (the product S = Q Kᵀ/√d_k)

Two steps are easy to get wrong: the softmax Jacobian-transpose product needs the subtraction of
the P-weighted row sum (it is d ⊙ s − s (dᵀs), not d ⊙ s), and the 1/√d_k of the forward
scores appears again in both ∂J/∂Q and ∂J/∂K. Masked entries have P = 0, so ∂J/∂S is 0 there
without a mask in the backward. Then ∂J/∂[Q K V] → ∂J/∂W_qkv, ∂J/∂b_qkv, ∂J/∂a as for dense.

Precision: in bfloat16 or float16 the scores S, the softmax P and its backward ∂J/∂S are computed
in float32 (a row's normaliser sums up to T terms, and a probability of 1e-3 beside 0.9 is lost
in 8 significant bits); the products with V, K and Q run in the input's dtype
(:mod:`fbackprop.dtypes`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..dtypes import narrow, stable
from ..inputs import require_positive_int
from .base import Layer

__all__ = ["causal_self_attention", "softmax_backward", "scores_backward"]


def softmax_backward(s, d):
    """∂J/∂S from d = ∂J/∂P and P = s = softmax(S) over the last axis: s ⊙ (d − Σ_j d_j s_j);
    in float32 for a bfloat16 or float16 ``d``, the result in ``d``'s dtype."""
    like, s, d = d, stable(s), stable(d)
    return narrow(s * (d - jnp.sum(d * s, axis=-1, keepdims=True)), like)


def scores_backward(dS, Q, K, scale):
    """(∂J/∂Q, ∂J/∂K) of S = scale · Q Kᵀ, batched over leading axes: (scale dS K, scale dSᵀ Q)."""
    return scale * dS @ K, scale * jnp.swapaxes(dS, -1, -2) @ Q


def causal_self_attention(d_model: int, n_heads: int, *, dtype=jnp.float32) -> Layer:
    """Causal multi-head self-attention (each position attends to itself and earlier ones).

    Args:
      d_model: the width D of the input and output, (batch, T, D).
      n_heads: H, dividing D; each head has width d_k = D/H and the scores a 1/√d_k scale.
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` with parameters ``{"W_qkv": (3D, D), "b_qkv": (3D,),
      "W_o": (D, D), "b_o": (D,)}``; ``D_input``, ``D_param`` and the fused ``backward`` are the
      derivation in the module docstring, sharing one forward recomputation.
    """
    D = require_positive_int(d_model, "d_model", who="causal_self_attention")
    H = require_positive_int(n_heads, "n_heads", who="causal_self_attention")
    if D % H:
        raise ValueError(f"causal_self_attention: n_heads must divide d_model, received "
                         f"d_model={D}, n_heads={H}. Fix: e.g. n_heads={math.gcd(D, H)}.")
    d_k = D // H
    scale = 1.0 / math.sqrt(d_k)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"W_qkv": jax.random.normal(k1, (3 * D, D), dtype) / math.sqrt(D),
                "b_qkv": jnp.zeros((3 * D,), dtype),
                "W_o": jax.random.normal(k2, (D, D), dtype) / math.sqrt(D),
                "b_o": jnp.zeros((D,), dtype)}

    def heads(t):  # (B, T, D) → (B, H, T, d_k)
        B, T, _ = t.shape
        return t.reshape(B, T, H, d_k).transpose(0, 2, 1, 3)

    def merge(t):  # (B, H, T, d_k) → (B, T, D)
        B, _, T, _ = t.shape
        return t.transpose(0, 2, 1, 3).reshape(B, T, D)

    def check_input(a):
        if a.ndim != 3 or a.shape[2] != D:
            raise ValueError(f"causal_self_attention: input must be (batch, T, {D}), received "
                             f"shape {tuple(a.shape)}.")

    def attend(p, a):
        """The forward pass keeping what the backward needs."""
        check_input(a)
        qkv = a @ p["W_qkv"].T + p["b_qkv"]                        # [Q K V] = a W_qkvᵀ + b
        Q, K, V = (heads(t) for t in jnp.split(qkv, 3, axis=-1))
        S = scale * stable(Q @ jnp.swapaxes(K, -1, -2))             # S = Q Kᵀ / √d_k
        T = a.shape[1]
        causal = jnp.tril(jnp.ones((T, T), bool))
        S = jnp.where(causal, S, -jnp.inf)                          # S_ij = −∞ for j > i
        P = jnp.exp(S - jnp.max(S, axis=-1, keepdims=True))
        P = P / jnp.sum(P, axis=-1, keepdims=True)                  # softmax over each row
        O = merge(narrow(P, V) @ V)                                 # O = P V
        return (Q, K, V, P, O), O @ p["W_o"].T + p["b_o"]           # f p a = O W_oᵀ + b_o

    def apply(p, a):
        return attend(p, a)[1]

    def backward(p, a, d):
        (Q, K, V, P, O), _ = attend(p, a)
        d_rows, O_rows = d.reshape(-1, D), O.reshape(-1, D)
        grads = {"W_o": d_rows.T @ O_rows, "b_o": jnp.sum(d_rows, axis=0)}  # BP4, BP3
        dO = heads(d @ p["W_o"])                                    # ∂J/∂O = d W_o
        dP = dO @ jnp.swapaxes(V, -1, -2)                           # ∂J/∂P = ∂J/∂O Vᵀ
        dV = jnp.swapaxes(narrow(P, dO), -1, -2) @ dO               # ∂J/∂V = Pᵀ ∂J/∂O
        dS = softmax_backward(P, dP)                                # P ⊙ (dP − rowsum(dP ⊙ P))
        dQ, dK = scores_backward(dS, Q, K, scale)                   # both carry the 1/√d_k
        dqkv = jnp.concatenate([merge(dQ), merge(dK), merge(dV)], axis=-1)
        rows = dqkv.reshape(-1, 3 * D)
        grads["W_qkv"] = rows.T @ a.reshape(-1, D)                  # dense BP4 on [Q K V]
        grads["b_qkv"] = jnp.sum(rows, axis=0)                      # BP3
        return dqkv @ p["W_qkv"], grads                             # ∂J/∂a = ∂J/∂[QKV] W_qkv

    def D_input(p, a, d):
        return backward(p, a, d)[0]

    def D_param(p, a, d):
        return backward(p, a, d)[1]

    return Layer(init, apply, D_input, D_param, name=f"causal_self_attention({D}, {H} heads)",
                 backward=backward)
