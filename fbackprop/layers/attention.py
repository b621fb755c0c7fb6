"""Causal multi-head self-attention, forward and backward by hand.

Per example, a (T, D) rows; H heads of width d_k = D/H; weights stored (n_out, n_in) as in
:mod:`.dense`:

    [Q K V] = a W_qkvᵀ + b_qkv               split into heads (H, T, d_k) each
    S = Q Kᵀ / √d_k                           scores, (H, T, T)
    S_ij = −∞ for j > i                       the causal mask
    P = softmax(S) row by row                 (H, T, T)
    O = P V                                   (H, T, d_k), heads merged back to (T, D)
    f p a = O W_oᵀ + b_o

The backward pass, from d = ∂J/∂(f p a) (this derivation is the project's own; ``fbackprop check``
compares every rule with ``jax.grad`` in float64):

    ∂J/∂O = d W_o,  ∂J/∂W_o = dᵀ O,  ∂J/∂b_o = Σ_rows d          (dense, BP3/BP4)
    ∂J/∂P = ∂J/∂O Vᵀ,  ∂J/∂V = Pᵀ ∂J/∂O                          (the product O = P V)
    ∂J/∂S = P ⊙ (∂J/∂P − rowsum(∂J/∂P ⊙ P))                       (softmax, row by row)
    ∂J/∂Q = ∂J/∂S K / √d_k,  ∂J/∂K = ∂J/∂Sᵀ Q / √d_k               (the product S = Q Kᵀ/√d_k)

Two steps are easy to get wrong: the softmax Jacobian-transpose product needs the subtraction of
the P-weighted row sum (it is d ⊙ s − s (dᵀs), not d ⊙ s), and the 1/√d_k of the forward
scores appears again in both ∂J/∂Q and ∂J/∂K. Masked entries have P = 0, so ∂J/∂S is 0 there
without a mask in the backward. Then ∂J/∂[Q K V] → ∂J/∂W_qkv, ∂J/∂b_qkv, ∂J/∂a as for dense.

The derivation is written twice, so that the checker's fused–Euler row compares two writings
rather than a function with itself: :func:`attention_backward`, the fused rule that training
runs, as batched matrix products over (batch, head); and :func:`attention_input_delta` /
:func:`attention_param_grads`, the two Euler derivatives, index by index (``einsum`` over named
axes b, h, t, s, k), sharing :func:`attention_qkv_delta`. :func:`causal_self_attention` only
wires them into a :class:`~fbackprop.Layer`.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..inputs import require_float_dtype, require_positive_int
from .base import Layer

__all__ = ["causal_self_attention", "attention_forward", "attention_backward",
           "attention_qkv_delta", "attention_input_delta", "attention_param_grads",
           "AttentionCache", "softmax_backward", "scores_backward"]


class AttentionCache(NamedTuple):
    """What the forward pass keeps for the backward: per head Q, K, V (batch, H, T, d_k) and
    P (batch, H, T, T); O with the heads merged, (batch, T, D)."""

    Q: Any
    K: Any
    V: Any
    P: Any
    O: Any


def require_attention_input(a, d_model: int, who: str):
    """``a`` must be (batch, T, d_model)."""
    if a.ndim != 3 or a.shape[2] != d_model:
        raise ValueError(f"{who}: input must be (batch, T, {d_model}), received "
                         f"shape {tuple(a.shape)}.")


def split_heads(t, n_heads: int):
    """(B, T, D) → (B, H, T, d_k)."""
    B, T, D = t.shape
    return t.reshape(B, T, n_heads, D // n_heads).transpose(0, 2, 1, 3)


def merge_heads(t):
    """(B, H, T, d_k) → (B, T, D)."""
    B, H, T, d_k = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, T, H * d_k)


def softmax_backward(s, d):
    """∂J/∂S from d = ∂J/∂P and P = s = softmax(S) over the last axis: s ⊙ (d − Σ_j d_j s_j)."""
    return s * (d - jnp.sum(d * s, axis=-1, keepdims=True))


def scores_backward(dS, Q, K, scale):
    """(∂J/∂Q, ∂J/∂K) of S = scale · Q Kᵀ, batched over leading axes: (scale dS K, scale dSᵀ Q)."""
    return scale * dS @ K, scale * jnp.swapaxes(dS, -1, -2) @ Q


def attention_forward(p, a, n_heads: int):
    """The forward pass keeping what the backward needs: (:class:`AttentionCache`, f p a)."""
    Q, K, V = (split_heads(t, n_heads) for t in jnp.split(a @ p["W_qkv"].T + p["b_qkv"], 3,
                                                         axis=-1))  # [Q K V] = a W_qkvᵀ + b
    scale = 1.0 / math.sqrt(Q.shape[-1])
    S = scale * Q @ jnp.swapaxes(K, -1, -2)                     # S = Q Kᵀ / √d_k
    T = a.shape[1]
    causal = jnp.tril(jnp.ones((T, T), bool))
    S = jnp.where(causal, S, -jnp.inf)                          # S_ij = −∞ for j > i
    P = jnp.exp(S - jnp.max(S, axis=-1, keepdims=True))
    P = P / jnp.sum(P, axis=-1, keepdims=True)                  # softmax over each row
    O = merge_heads(P @ V)                                      # O = P V
    return AttentionCache(Q, K, V, P, O), O @ p["W_o"].T + p["b_o"]  # f p a = O W_oᵀ + b_o


def attention_backward(p, a, d, n_heads: int):
    """The fused rule: (∂J/∂a, ∂J/∂p) from one forward recomputation, as batched matrix
    products over (batch, head)."""
    D = a.shape[-1]
    (Q, K, V, P, O), _ = attention_forward(p, a, n_heads)
    d_rows, O_rows = d.reshape(-1, D), O.reshape(-1, D)
    grads = {"W_o": d_rows.T @ O_rows, "b_o": jnp.sum(d_rows, axis=0)}  # BP4, BP3
    dO = split_heads(d @ p["W_o"], n_heads)                     # ∂J/∂O = d W_o
    dP = dO @ jnp.swapaxes(V, -1, -2)                           # ∂J/∂P = ∂J/∂O Vᵀ
    dV = jnp.swapaxes(P, -1, -2) @ dO                           # ∂J/∂V = Pᵀ ∂J/∂O
    dS = softmax_backward(P, dP)                                # P ⊙ (dP − rowsum(dP ⊙ P))
    dQ, dK = scores_backward(dS, Q, K, 1.0 / math.sqrt(Q.shape[-1]))  # both carry the 1/√d_k
    dqkv = jnp.concatenate([merge_heads(dQ), merge_heads(dK), merge_heads(dV)], axis=-1)
    rows = dqkv.reshape(-1, 3 * D)
    grads["W_qkv"] = rows.T @ a.reshape(-1, D)                  # dense BP4 on [Q K V]
    grads["b_qkv"] = jnp.sum(rows, axis=0)                      # BP3
    return dqkv @ p["W_qkv"], grads                             # ∂J/∂a = ∂J/∂[QKV] W_qkv


def attention_qkv_delta(p, a, d, n_heads: int):
    """(O, ∂J/∂[Q K V]) index by index, for the Euler rules (module docstring); axes b batch,
    h head, t and s positions, k within a head."""
    c, _ = attention_forward(p, a, n_heads)
    B, T, D = a.shape
    scale = 1.0 / math.sqrt(D // n_heads)
    dO = jnp.einsum("bte,ed->btd", d, p["W_o"]).reshape(B, T, n_heads, -1)  # ∂J/∂O = d W_o
    dP = jnp.einsum("bthk,bhsk->bhts", dO, c.V)        # ∂J/∂P_ts = Σ_k ∂J/∂O_tk V_sk
    dV = jnp.einsum("bhts,bthk->bshk", c.P, dO)        # ∂J/∂V_sk = Σ_t P_ts ∂J/∂O_tk
    row = jnp.einsum("bhts,bhts->bht", dP, c.P)        # Σ_s ∂J/∂P_ts P_ts
    dS = c.P * (dP - row[..., None])                   # softmax: P_ts (∂J/∂P_ts − row_t)
    dQ = scale * jnp.einsum("bhts,bhsk->bthk", dS, c.K)  # ∂J/∂Q_tk = Σ_s ∂J/∂S_ts K_sk / √d_k
    dK = scale * jnp.einsum("bhts,bhtk->bshk", dS, c.Q)  # ∂J/∂K_sk = Σ_t ∂J/∂S_ts Q_tk / √d_k
    return c.O, jnp.concatenate([t.reshape(B, T, D) for t in (dQ, dK, dV)], axis=-1)


def attention_input_delta(p, a, d, n_heads: int):
    """``D_input``: ∂J/∂a_tk = Σ_j ∂J/∂[QKV]_tj W_qkv[j, k] (dense's BP2 on [Q K V])."""
    _, dqkv = attention_qkv_delta(p, a, d, n_heads)
    return jnp.einsum("btj,jk->btk", dqkv, p["W_qkv"])


def attention_param_grads(p, a, d, n_heads: int) -> dict:
    """``D_param``: dense's BP3/BP4 on the output projection (input O) and on [Q K V] (input a)."""
    O, dqkv = attention_qkv_delta(p, a, d, n_heads)
    return {"W_qkv": jnp.einsum("btj,btk->jk", dqkv, a), "b_qkv": jnp.sum(dqkv, axis=(0, 1)),
            "W_o": jnp.einsum("btj,btk->jk", d, O), "b_o": jnp.sum(d, axis=(0, 1))}


def causal_self_attention(d_model: int, n_heads: int, *, dtype=jnp.float32) -> Layer:
    """Causal multi-head self-attention (each position attends to itself and earlier ones).

    Args:
      d_model: the width D of the input and output, (batch, T, D).
      n_heads: H, dividing D; each head has width d_k = D/H and the scores a 1/√d_k scale.
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` with parameters ``{"W_qkv": (3D, D), "b_qkv": (3D,),
      "W_o": (D, D), "b_o": (D,)}``; ``D_input``, ``D_param`` and the fused ``backward`` are the
      derivation in the module docstring, the fused rule written apart from the Euler ones.
    """
    who = "causal_self_attention"
    dtype = require_float_dtype(dtype, who=who)
    D = require_positive_int(d_model, "d_model", who=who)
    H = require_positive_int(n_heads, "n_heads", who=who)
    if D % H:
        raise ValueError(f"causal_self_attention: n_heads must divide d_model, received "
                         f"d_model={D}, n_heads={H}. Fix: e.g. n_heads={math.gcd(D, H)}.")

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"W_qkv": jax.random.normal(k1, (3 * D, D), dtype) / math.sqrt(D),
                "b_qkv": jnp.zeros((3 * D,), dtype),
                "W_o": jax.random.normal(k2, (D, D), dtype) / math.sqrt(D),
                "b_o": jnp.zeros((D,), dtype)}

    def checked(rule):  # the rule on (p, a, …, n_heads), after the input check
        def run(p, a, *rest):
            require_attention_input(a, D, who)
            return rule(p, a, *rest, H)
        return run

    forward = checked(attention_forward)
    return Layer(init, lambda p, a: forward(p, a)[1],
                 checked(attention_input_delta), checked(attention_param_grads),
                 name=f"causal_self_attention({D}, {H} heads)",
                 backward=checked(attention_backward))
