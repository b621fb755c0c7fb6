"""The LSTM layer (Jin §3.3, eqs. 30–35) with its full backpropagation through time written by hand.

Forward, for τ = 1 … T with h_0 = C_0 = 0 (σ the sigmoid, ⊙ the elementwise product):

    i_τ = σ(W_xi x_τ + W_hi h_{τ−1} + b_i)        input gate       (eq. 30)
    f_τ = σ(W_xf x_τ + W_hf h_{τ−1} + b_f)        forget gate      (eq. 31)
    o_τ = σ(W_xo x_τ + W_ho h_{τ−1} + b_o)        output gate      (eq. 32)
    a_τ = tanh(W_xa x_τ + W_ha h_{τ−1} + b_a)     candidate        (eq. 33)
    C_τ = a_τ ⊙ i_τ + C_{τ−1} ⊙ f_τ                                (eq. 34)
    h_τ = tanh(C_τ) ⊙ o_τ                                          (eq. 35)

Parameters are stored with the four gates stacked in the order (i, f, o, a), so one product
serves all of them: ``W_x`` (4H, n_in) holds W_xi, W_xf, W_xo, W_xa as row blocks, ``W_h`` (4H, H)
holds W_hi … W_ha and ``b`` (4H,) holds b_i … b_a; :func:`gate_params` splits them into Jin's
twelve names. Weights are (n_out, n_in) as everywhere in fbackprop; a batch of rows computes
``x_τ @ W_xᵀ + h_{τ−1} @ W_hᵀ + b``.

BPTT for every parameter (Jin writes out W_xa, W_xi, W_xf, W_xo and b_a, eqs. 37–41). With d_τ the
delta arriving at h_τ from outside, going backwards from τ = T, and the carries from step τ + 1:

    ∂J/∂h_τ = d_τ + W_hᵀ δz_{τ+1}                            (every gate of τ + 1 reads h_τ)
    ∂J/∂C_τ = f_{τ+1} ⊙ ∂J/∂C_{τ+1}  +  ∂J/∂h_τ ⊙ o_τ ⊙ (1 − tanh²C_τ)
    δz_o = ∂J/∂h_τ ⊙ tanh C_τ ⊙ o_τ(1 − o_τ)
    δz_i = ∂J/∂C_τ ⊙ a_τ ⊙ i_τ(1 − i_τ)
    δz_f = ∂J/∂C_τ ⊙ C_{τ−1} ⊙ f_τ(1 − f_τ)
    δz_a = ∂J/∂C_τ ⊙ i_τ ⊙ (1 − a_τ²)

and after the reverse scan, as single products over all T·batch rows: ∂J/∂W_x = Σ_τ δz_τ x_τᵀ,
∂J/∂W_h = Σ_τ δz_τ h_{τ−1}ᵀ, ∂J/∂b = Σ_τ δz_τ, ∂J/∂x_τ = W_xᵀ δz_τ.

Where Jin's eqs. 37–41 disagree with ``jax.grad``: the gates are sigmoids, so their derivatives
are i(1 − i), f(1 − f), o(1 − o), not the 1 − tanh²(z) written in eqs. 38–40; eq. 40 (W_xo) keeps
only the current step's error (h_T − y^T at every τ) instead of ∂J/∂h_τ; and the sums in eqs.
37–41 follow ∂J/∂C only along the cell path (f_T ⋯ f_{τ+1}), dropping every path through
h_{τ−1} and the recurrent weights, which the recurrence above includes.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ..inputs import require_float_dtype, require_positive_int
from .base import Layer, Probes
from .recurrent import batch_major, require_output, require_sequence, shift_right, time_major

__all__ = ["lstm_layer", "gate_params", "GATES"]

GATES = ("i", "f", "o", "a")  # the order of the stacked row blocks


def gate_params(p) -> dict:
    """Split stacked LSTM parameters into Jin's names: W_xi … W_xa, W_hi … W_ha, b_i … b_a.

    Jin §3.3 (eqs. 30–35) writes one weight matrix and bias per gate; :func:`lstm_layer` stacks
    them as row blocks in the order of ``GATES`` (i, f, o, a), so each stacked array is split
    into four equal blocks along its first axis.

    Args:
      p: an LSTM layer's parameters ``{"W_x": (4H, n_in), "W_h": (4H, H), "b": (4H,)}``.

    Returns:
      A dict of twelve arrays with the dtype of ``p``: ``"W_xi"`` … ``"W_xa"`` (H, n_in),
      ``"W_hi"`` … ``"W_ha"`` (H, H) and ``"b_i"`` … ``"b_a"`` (H,).
    """
    out = {}
    for stacked, prefix in (("W_x", "W_x"), ("W_h", "W_h"), ("b", "b_")):
        for gate, block in zip(GATES, jnp.split(p[stacked], 4, axis=0)):
            out[prefix + gate] = block
    return out


def _sigmoid(z):
    return jax.nn.sigmoid(z)


def lstm_layer(n_in: int, n_hidden: int, *, output: str = "last", dtype=jnp.float32) -> Layer:
    """The LSTM layer of Jin eqs. 30–35 (see the module docstring), h_0 = C_0 = 0.

    Args:
      n_in: features per step (the last axis of x).
      n_hidden: H, the width of h and C.
      output: ``"last"`` (h_T, shape (batch, H)) or ``"all"`` (every h_τ, (batch, T, H)).
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` on x of shape (batch, T, n_in) with parameters
      ``{"W_x": (4H, n_in), "W_h": (4H, H), "b": (4H,)}``, gates stacked (i, f, o, a) (weights
      N(0, 1/fan_in), b zero). The rules are full BPTT by hand, one reverse scan shared by the
      fused ``backward``; ``probes.time_deltas`` gives ∂J/∂h_τ and ∂J/∂C_τ for every τ.
    """
    dtype = require_float_dtype(dtype, who="lstm_layer")
    n_in = require_positive_int(n_in, "n_in", who="lstm_layer")
    n_hidden = require_positive_int(n_hidden, "n_hidden", who="lstm_layer")
    require_output(output, "lstm_layer")
    last = output == "last"
    H = n_hidden
    name = f"lstm({n_in}→{n_hidden}, {output})"

    def init(key):
        kx, kh = jax.random.split(key)
        return {"W_x": jax.random.normal(kx, (4 * H, n_in), dtype) / math.sqrt(n_in),
                "W_h": jax.random.normal(kh, (4 * H, H), dtype) / math.sqrt(H),
                "b": jnp.zeros((4 * H,), dtype)}

    def gates(zg):
        """Pre-activations (…, 4H) → i, f, o (sigmoid) and a (tanh), eqs. 30–33."""
        return (_sigmoid(zg[..., :H]), _sigmoid(zg[..., H:2 * H]), _sigmoid(zg[..., 2 * H:3 * H]),
                jnp.tanh(zg[..., 3 * H:]))

    def input_projection(p, x):
        require_sequence(x, n_in, name)
        return jnp.einsum("btk,jk->tbj", x, p["W_x"]) + p["b"]  # W_x x_τ + b for all τ at once

    def states(p, x):
        """Forward scan carrying (h, C); returns, for every τ, the state and the gates
        [h_τ, C_τ, i_τ, f_τ, o_τ, a_τ] as one array (T, batch, 6H).

        The scan emits everything as one array, so that ``apply`` (which reads only h) and the
        backward pass (which reads the rest) run the very same loop and XLA computes it once.
        (Carrying the concatenation instead of the pair makes XLA recompute the gates inside it.)
        """
        xz = input_projection(p, x)

        def step(carry, xz_t):
            h, C = carry
            i, f, o, a = gates(xz_t + h @ p["W_h"].T)  # eqs. 30–33
            C = a * i + C * f                          # eq. 34: C_τ = a_τ ⊙ i_τ + C_{τ−1} ⊙ f_τ
            h = jnp.tanh(C) * o                        # eq. 35: h_τ = tanh(C_τ) ⊙ o_τ
            return (h, C), jnp.concatenate([h, C, i, f, o, a], axis=-1)

        zero = jnp.zeros((x.shape[0], H), xz.dtype)
        return lax.scan(step, (zero, zero), xz)[1]

    def apply(p, x):
        h = states(p, x)[..., :H]
        return h[-1] if last else batch_major(h)

    def bptt(p, x, d):
        """The reverse scan; returns (h, δz_τ (T, batch, 4H), ∂J/∂h_τ, ∂J/∂C_τ), time-major."""
        s = states(p, x)
        h, C, i, f, o, a = (s[..., k * H:(k + 1) * H] for k in range(6))
        h_prev, C_prev = shift_right(h), shift_right(C)
        tanh_C = jnp.tanh(C)
        # The local derivatives do not depend on the deltas: form them for all τ at once, outside
        # the loop, so that each reverse step is one fused expression and one product.
        h_C = o * (1 - tanh_C * tanh_C)                # ∂h_τ/∂C_τ = o_τ ⊙ (1 − tanh²C_τ)   (eq. 35)
        local = jnp.concatenate([a * i * (1 - i),      # ∂C_τ/∂z_i = a_τ ⊙ σ'(z_i)          (eq. 34)
                                 C_prev * f * (1 - f),  # ∂C_τ/∂z_f = C_{τ−1} ⊙ σ'(z_f)
                                 tanh_C * o * (1 - o),  # ∂h_τ/∂z_o = tanh C_τ ⊙ σ'(z_o)     (eq. 35)
                                 i * (1 - a * a)],      # ∂C_τ/∂z_a = i_τ ⊙ (1 − a_τ²)       (eq. 34)
                                axis=-1)

        def step(carry, inputs):
            dh_next, dC_next = carry  # W_hᵀ δz_{τ+1} and f_{τ+1} ⊙ ∂J/∂C_{τ+1} (0 at τ = T)
            d_t, h_C_t, local_t, f_t = inputs
            dh = dh_next if d_t is None else dh_next + d_t          # ∂J/∂h_τ
            dC = dC_next + dh * h_C_t                               # ∂J/∂C_τ
            dz = jnp.concatenate([dC, dC, dh, dC], axis=-1) * local_t  # δz_i, δz_f, δz_o, δz_a
            return (dz @ p["W_h"], f_t * dC), (dz, dh, dC)

        zero = jnp.zeros_like(h[0])
        carry0, direct = ((d, zero), None) if last else ((zero, zero), time_major(d))
        _, (dz, dh, dC) = lax.scan(step, carry0, (direct, h_C, local, f), reverse=True)
        return h_prev, dz, dh, dC

    def input_delta(p, dz):
        # ∂J/∂x_τ = W_xᵀ δz_τ (all four gates read x_τ), all τ in one product
        return jnp.einsum("tbj,jk->btk", dz, p["W_x"])

    def param_grads(x, h_prev, dz):
        # ∂J/∂W_x = Σ_τ δz_τ x_τᵀ, ∂J/∂W_h = Σ_τ δz_τ h_{τ−1}ᵀ, ∂J/∂b = Σ_τ δz_τ: one product each
        return {"W_x": jnp.einsum("tbj,btk->jk", dz, x),
                "W_h": jnp.einsum("tbj,tbk->jk", dz, h_prev),
                "b": jnp.sum(dz, axis=(0, 1))}

    def D_input(p, x, d):
        return input_delta(p, bptt(p, x, d)[1])

    def D_param(p, x, d):
        h_prev, dz, _, _ = bptt(p, x, d)
        return param_grads(x, h_prev, dz)

    def backward(p, x, d):
        # one reverse scan serves both rules
        h_prev, dz, _, _ = bptt(p, x, d)
        return input_delta(p, dz), param_grads(x, h_prev, dz)

    def time_deltas(p, x, d):
        _, _, dh, dC = bptt(p, x, d)
        return {"h": batch_major(dh), "C": batch_major(dC)}  # ∂J/∂h_τ, ∂J/∂C_τ: (batch, T, H)

    def offset_apply(p, x, offsets):
        # the forward with offsets added to every C_τ and h_τ as they are passed on; their
        # derivatives at zero are the total derivatives ∂J/∂C_τ and ∂J/∂h_τ
        xz = input_projection(p, x)

        def step(carry, inputs):
            h, C = carry
            xz_t, eh_t, eC_t = inputs
            i, f, o, a = gates(xz_t + h @ p["W_h"].T)
            C = a * i + C * f + eC_t
            h = jnp.tanh(C) * o + eh_t
            return (h, C), h

        zero = jnp.zeros_like(xz[0, ..., :H])
        hs = lax.scan(step, (zero, zero),
                      (xz, time_major(offsets["h"]), time_major(offsets["C"])))[1]
        return hs[-1] if last else batch_major(hs)

    return Layer(init, apply, D_input, D_param, name=name, backward=backward,
                 probes=Probes(time_deltas=time_deltas, offset_apply=offset_apply))
