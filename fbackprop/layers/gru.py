"""The GRU layer (Cho et al. 2014, in the form of Chung et al. 2014) with its full backpropagation
through time written by hand. No text of the project covers the GRU; the derivation is below.

Forward, for τ = 1 … T with h_0 = 0 (σ the sigmoid, ⊙ the elementwise product):

    z_τ = σ(W_xz x_τ + W_hz h_{τ−1} + b_z)               update gate
    r_τ = σ(W_xr x_τ + W_hr h_{τ−1} + b_r)               reset gate
    a_τ = tanh(W_xa x_τ + W_ha (r_τ ⊙ h_{τ−1}) + b_a)    candidate h̃_τ (r applied BEFORE the product)
    h_τ = (1 − z_τ) ⊙ h_{τ−1} + z_τ ⊙ a_τ

This is Cho et al.'s reset-before-product candidate, not the cuDNN/PyTorch variant
a_τ = tanh(W_xa x_τ + b_xa + r_τ ⊙ (W_ha h_{τ−1} + b_ha)). Cho writes h_τ = z ⊙ h_{τ−1} +
(1 − z) ⊙ h̃; the form above (Chung et al. 2014) only swaps the roles of z and 1 − z.

Parameters are stored with the three blocks stacked in the order (z, r, a): ``W_x`` (3H, n_in),
``W_h`` (3H, H), ``b`` (3H,); :func:`gru_gate_params` splits them into the names above. Weights
are (n_out, n_in) as everywhere in fbackprop; a batch of rows computes ``x_τ @ W_xᵀ + …``.

BPTT. Let g_τ = ∂J/∂h_τ (total), d_τ the delta arriving at h_τ from outside, s_z, s_r, s_a the
pre-activations and δ_k = ∂J/∂s_k. Going backwards from τ = T:

    δa_τ = g_τ ⊙ z_τ ⊙ (1 − a_τ²)                     (∂h_τ/∂a_τ = z_τ)
    δz_τ = g_τ ⊙ (a_τ − h_{τ−1}) ⊙ z_τ(1 − z_τ)        (∂h_τ/∂z_τ = a_τ − h_{τ−1})
    q_τ  = W_haᵀ δa_τ                                 (∂J/∂(r_τ ⊙ h_{τ−1}))
    δr_τ = q_τ ⊙ h_{τ−1} ⊙ r_τ(1 − r_τ)
    g_{τ−1} = d_{τ−1} + (1 − z_τ) ⊙ g_τ + W_hzᵀ δz_τ + W_hrᵀ δr_τ + r_τ ⊙ q_τ

The step easy to get wrong is the reset gate inside the candidate's product: the delta must pass
W_haᵀ FIRST and be multiplied by r (towards h_{τ−1}) or by h_{τ−1} (towards r) AFTER —
r ⊙ (W_haᵀ δa), never W_haᵀ (r ⊙ δa) — and h_{τ−1} receives four terms, the direct path (1 − z)
included. After the reverse scan, with δ_τ = [δz, δr, δa] and as single products over all T·batch
rows: ∂J/∂W_x = Σ_τ δ_τ x_τᵀ, ∂J/∂b = Σ_τ δ_τ, ∂J/∂x_τ = W_xᵀ δ_τ, and for W_h the z and r
blocks read h_{τ−1} while the a block reads r_τ ⊙ h_{τ−1}: ∂J/∂W_h{z,r} = Σ_τ δ{z,r}_τ h_{τ−1}ᵀ,
∂J/∂W_ha = Σ_τ δa_τ (r_τ ⊙ h_{τ−1})ᵀ.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ..inputs import require_float_dtype, require_positive_int
from .base import Layer, Probes
from .recurrent import batch_major, require_output, require_sequence, shift_right, time_major

__all__ = ["gru_layer", "gru_gate_params", "GRU_GATES"]

GRU_GATES = ("z", "r", "a")  # the order of the stacked row blocks


def gru_gate_params(p) -> dict:
    """Split stacked GRU parameters into W_xz, W_xr, W_xa, W_hz, W_hr, W_ha, b_z, b_r, b_a."""
    out = {}
    for stacked, prefix in (("W_x", "W_x"), ("W_h", "W_h"), ("b", "b_")):
        for gate, block in zip(GRU_GATES, jnp.split(p[stacked], 3, axis=0)):
            out[prefix + gate] = block
    return out


def gru_layer(n_in: int, n_hidden: int, *, output: str = "last", dtype=jnp.float32) -> Layer:
    """The GRU layer of the module docstring (reset gate before the candidate's product), h_0 = 0.

    Args:
      n_in: features per step (the last axis of x).
      n_hidden: H, the width of h.
      output: ``"last"`` (h_T, shape (batch, H)) or ``"all"`` (every h_τ, (batch, T, H)).
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` on x of shape (batch, T, n_in) with parameters
      ``{"W_x": (3H, n_in), "W_h": (3H, H), "b": (3H,)}``, blocks stacked (z, r, a) (weights
      N(0, 1/fan_in), b zero). The rules are full BPTT by hand, one reverse scan shared by the
      fused ``backward``; ``probes.time_deltas`` gives ∂J/∂h_τ for every τ. Gradients are of
      whatever J the incoming delta belongs to (the batch mean in a network).
    """
    dtype = require_float_dtype(dtype, who="gru_layer")
    n_in = require_positive_int(n_in, "n_in", who="gru_layer")
    n_hidden = require_positive_int(n_hidden, "n_hidden", who="gru_layer")
    require_output(output, "gru_layer")
    last = output == "last"
    H = n_hidden
    name = f"gru({n_in}→{n_hidden}, {output})"

    def init(key):
        kx, kh = jax.random.split(key)
        return {"W_x": jax.random.normal(kx, (3 * H, n_in), dtype) / math.sqrt(n_in),
                "W_h": jax.random.normal(kh, (3 * H, H), dtype) / math.sqrt(H),
                "b": jnp.zeros((3 * H,), dtype)}

    def input_projection(p, x):
        require_sequence(x, n_in, name)
        return jnp.einsum("btk,jk->tbj", x, p["W_x"]) + p["b"]  # W_x x_τ + b for all τ at once

    def cell(p, xz_t, h):
        """One step: (z_τ, r_τ, a_τ, h_τ) from W_x x_τ + b and h_{τ−1}."""
        W_zr, W_a = p["W_h"][:2 * H], p["W_h"][2 * H:]
        zr = jax.nn.sigmoid(xz_t[..., :2 * H] + h @ W_zr.T)    # z_τ, r_τ
        z, r = zr[..., :H], zr[..., H:]
        a = jnp.tanh(xz_t[..., 2 * H:] + (r * h) @ W_a.T)      # a_τ: r ⊙ h_{τ−1} inside the product
        return z, r, a, h + z * (a - h)                        # h_τ = (1 − z) ⊙ h_{τ−1} + z ⊙ a_τ

    def states(p, x):
        """Forward scan carrying h; returns [h_τ, z_τ, r_τ, a_τ] for every τ as one array
        (T, batch, 4H), so that ``apply`` and the backward pass run the very same loop."""
        xz = input_projection(p, x)

        def step(h, xz_t):
            z, r, a, h = cell(p, xz_t, h)
            return h, jnp.concatenate([h, z, r, a], axis=-1)

        return lax.scan(step, jnp.zeros((x.shape[0], H), xz.dtype), xz)[1]

    def apply(p, x):
        h = states(p, x)[..., :H]
        return h[-1] if last else batch_major(h)

    def bptt(p, x, d):
        """The reverse scan; returns (h_{τ−1}, r_τ, δ_τ as ([δz, δr] (T, batch, 2H), δa
        (T, batch, H)), ∂J/∂h_τ), time-major."""
        s = states(p, x)
        h, z, r, a = (s[..., k * H:(k + 1) * H] for k in range(4))
        h_prev = shift_right(h)
        W_zr, W_a = p["W_h"][:2 * H], p["W_h"][2 * H:]
        # The local derivatives do not depend on the deltas: form them for all τ at once, outside
        # the loop, so that each reverse step is two fused expressions and two products.
        l_a = z * (1 - a * a)                  # ∂h_τ/∂s_a = z_τ ⊙ (1 − a_τ²)
        l_z = (a - h_prev) * z * (1 - z)       # ∂h_τ/∂s_z = (a_τ − h_{τ−1}) ⊙ σ'(s_z)
        l_r = h_prev * r * (1 - r)             # ∂(r_τ ⊙ h_{τ−1})/∂s_r = h_{τ−1} ⊙ σ'(s_r)

        def step(carry, inputs):
            g_next, = carry  # the part of ∂J/∂h_τ that comes from step τ + 1 (0 at τ = T)
            d_t, z_t, r_t, l_a_t, l_z_t, l_r_t = inputs
            g = g_next if d_t is None else g_next + d_t      # g_τ = ∂J/∂h_τ
            da = g * l_a_t                                    # δa_τ
            q = da @ W_a                                      # q_τ = W_haᵀ δa_τ, before r
            dzr = jnp.concatenate([g * l_z_t, q * l_r_t], axis=-1)  # δz_τ, δr_τ = q ⊙ h_{τ−1} ⊙ σ'
            # g_{τ−1} − d_{τ−1} = (1 − z) ⊙ g + W_hzᵀ δz + W_hrᵀ δr + r ⊙ q
            g_prev = g - z_t * g + dzr @ W_zr + r_t * q
            return (g_prev,), (dzr, da, g)

        zero = jnp.zeros_like(h[0])
        carry0, direct = ((d,), None) if last else ((zero,), time_major(d))
        _, (dzr, da, dh) = lax.scan(step, carry0, (direct, z, r, l_a, l_z, l_r), reverse=True)
        return h_prev, r, (dzr, da), dh

    def input_delta(p, dz):
        # ∂J/∂x_τ = W_xᵀ δ_τ (all three blocks read x_τ), all τ in one product
        return jnp.einsum("tbj,jk->btk", jnp.concatenate(dz, axis=-1), p["W_x"])

    def param_grads(x, h_prev, r, dz):
        # ∂J/∂W_x = Σ_τ δ_τ x_τᵀ, ∂J/∂b = Σ_τ δ_τ; W_h's z, r blocks read h_{τ−1}, its a block
        # reads r_τ ⊙ h_{τ−1}: one product each over T·batch rows
        dW_zr = jnp.einsum("tbj,tbk->jk", dz[0], h_prev)
        dW_a = jnp.einsum("tbj,tbk->jk", dz[1], r * h_prev)
        dz = jnp.concatenate(dz, axis=-1)
        return {"W_x": jnp.einsum("tbj,btk->jk", dz, x),
                "W_h": jnp.concatenate([dW_zr, dW_a], axis=0),
                "b": jnp.sum(dz, axis=(0, 1))}

    def D_input(p, x, d):
        return input_delta(p, bptt(p, x, d)[2])

    def D_param(p, x, d):
        h_prev, r, dz, _ = bptt(p, x, d)
        return param_grads(x, h_prev, r, dz)

    def backward(p, x, d):
        # one reverse scan serves both rules
        h_prev, r, dz, _ = bptt(p, x, d)
        return input_delta(p, dz), param_grads(x, h_prev, r, dz)

    def time_deltas(p, x, d):
        return {"h": batch_major(bptt(p, x, d)[3])}  # ∂J/∂h_τ, (batch, T, H)

    def offset_apply(p, x, offsets):
        # the forward with offsets e_τ added to every h_τ as it is passed on: ∂J/∂e_τ = ∂J/∂h_τ
        xz = input_projection(p, x)

        def step(h, inputs):
            xz_t, e_t = inputs
            h = cell(p, xz_t, h)[3] + e_t
            return h, h

        hs = lax.scan(step, jnp.zeros_like(xz[0, ..., :H]), (xz, time_major(offsets["h"])))[1]
        return hs[-1] if last else batch_major(hs)

    return Layer(init, apply, D_input, D_param, name=name, backward=backward,
                 probes=Probes(time_deltas=time_deltas, offset_apply=offset_apply))
