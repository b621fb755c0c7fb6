"""The GRU layer (Cho et al. 2014, in the form of Chung et al. 2014) with its full backpropagation
through time written by hand. The BPTT derivation below is this project's own (the texts fbackprop
follows stop at the LSTM); ``fbackprop check`` compares it with ``jax.grad`` in float64.

Forward, for τ = 1 … T with h_0 = 0 (σ the sigmoid, ⊙ the elementwise product):

    z_τ = σ(W_xz x_τ + W_hz h_{τ−1} + b_z)               update gate
    r_τ = σ(W_xr x_τ + W_hr h_{τ−1} + b_r)               reset gate
    a_τ = tanh(W_xa x_τ + W_ha (r_τ ⊙ h_{τ−1}) + b_a)    candidate h̃_τ (r BEFORE the product)
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

The rules are module-level functions — :func:`gru_cell` (one forward step), :func:`gru_states`
(the forward scan), :func:`gru_reverse` (the reverse scan, a :class:`GRUReverse`),
:func:`gru_param_grads` — and :func:`gru_layer` only wires them into a :class:`~fbackprop.Layer`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..inputs import require_float_dtype, require_positive_int
from .base import Layer, Probes
from .recurrent import (
    batch_major,
    external_deltas,
    init_recurrent,
    named_gate_params,
    project_inputs,
    require_output,
    require_sequence,
    select_output,
    sequence_input_delta,
    shift_right,
    split_gates,
    time_major,
)

__all__ = ["gru_layer", "gru_cell", "gru_states", "gru_reverse", "gru_param_grads", "GRUReverse",
           "gru_gate_params", "GRU_GATES"]

GRU_GATES = ("z", "r", "a")  # the order of the stacked row blocks


def gru_gate_params(p) -> dict:
    """Split stacked GRU parameters into W_xz, W_xr, W_xa, W_hz, W_hr, W_ha, b_z, b_r, b_a.

    Args:
      p: a GRU layer's parameters ``{"W_x": (3H, n_in), "W_h": (3H, H), "b": (3H,)}``.

    Returns:
      A dict of nine arrays: ``"W_x<g>"`` (H, n_in), ``"W_h<g>"`` (H, H) and ``"b_<g>"`` (H,)
      for g in ``GRU_GATES`` (z, r, a).
    """
    return named_gate_params(p, GRU_GATES)


def gru_cell(W_h, xz_t, h):
    """One forward step: (z_τ, r_τ, a_τ, h_τ) from xz_t = W_x x_τ + b and h_{τ−1}."""
    H = h.shape[-1]
    W_zr, W_a = W_h[:2 * H], W_h[2 * H:]
    zr = jax.nn.sigmoid(xz_t[..., :2 * H] + h @ W_zr.T)    # z_τ, r_τ
    z, r = split_gates(zr, 2)
    a = jnp.tanh(xz_t[..., 2 * H:] + (r * h) @ W_a.T)      # a_τ: r ⊙ h_{τ−1} inside the product
    return z, r, a, h + z * (a - h)                        # h_τ = (1 − z) ⊙ h_{τ−1} + z ⊙ a_τ


def gru_states(W_h, xz):
    """The forward scan carrying h from xz = W_x x_τ + b (all τ): [h_τ, z_τ, r_τ, a_τ] for every
    τ as one array (T, batch, 4H), so that ``apply`` and the backward pass run the same loop."""

    def step(h, xz_t):
        z, r, a, h = gru_cell(W_h, xz_t, h)
        return h, jnp.concatenate([h, z, r, a], axis=-1)

    return lax.scan(step, jnp.zeros((xz.shape[1], W_h.shape[1]), xz.dtype), xz)[1]


class GRUReverse(NamedTuple):
    """What the GRU's reverse scan returns, all time-major."""

    h_prev: Any  # h_{τ−1}, (T, batch, H)
    r: Any       # the reset gate r_τ, (T, batch, H)
    delta: Any   # δ_τ = [δz, δr, δa], ∂J/∂(stacked pre-activations), (T, batch, 3H)
    dh: Any      # ∂J/∂h_τ (total), (T, batch, H)


def gru_reverse(W_h, states, d, last: bool) -> GRUReverse:
    """BPTT's reverse scan (module docstring) from the forward scan's ``states``."""
    h, z, r, a = split_gates(states, 4)
    H = h.shape[-1]
    h_prev = shift_right(h)
    W_zr, W_a = W_h[:2 * H], W_h[2 * H:]
    # The local derivatives do not depend on the deltas: form them for all τ at once, outside
    # the loop, so that each reverse step is two fused expressions and two products.
    l_a = z * (1 - a * a)                  # ∂h_τ/∂s_a = z_τ ⊙ (1 − a_τ²)
    l_z = (a - h_prev) * z * (1 - z)       # ∂h_τ/∂s_z = (a_τ − h_{τ−1}) ⊙ σ'(s_z)
    l_r = h_prev * r * (1 - r)             # ∂(r_τ ⊙ h_{τ−1})/∂s_r = h_{τ−1} ⊙ σ'(s_r)

    def step(carry, inputs):
        g_next, = carry  # the part of ∂J/∂h_τ that comes from step τ + 1 (0 at τ = T)
        d_t, z_t, r_t, l_a_t, l_z_t, l_r_t = inputs
        g = g_next if d_t is None else g_next + d_t      # g_τ = ∂J/∂h_τ
        delta_a = g * l_a_t                               # δa_τ
        q = delta_a @ W_a                                 # q_τ = W_haᵀ δa_τ, before r
        delta_zr = jnp.concatenate([g * l_z_t, q * l_r_t], axis=-1)  # δz_τ, δr_τ = q ⊙ h_{τ−1} ⊙ σ'
        # g_{τ−1} − d_{τ−1} = (1 − z) ⊙ g + W_hzᵀ δz + W_hrᵀ δr + r ⊙ q
        g_prev = g - z_t * g + delta_zr @ W_zr + r_t * q
        return (g_prev,), (delta_zr, delta_a, g)

    dh_T, direct = external_deltas(d, jnp.zeros_like(h[0]), last)
    _, (delta_zr, delta_a, dh) = lax.scan(step, (dh_T,), (direct, z, r, l_a, l_z, l_r),
                                          reverse=True)
    return GRUReverse(h_prev, r, jnp.concatenate([delta_zr, delta_a], axis=-1), dh)


def gru_param_grads(x, rev: GRUReverse) -> dict:
    """∂J/∂W_x = Σ_τ δ_τ x_τᵀ, ∂J/∂b = Σ_τ δ_τ; W_h's z, r blocks read h_{τ−1}, its a block reads
    r_τ ⊙ h_{τ−1}: ∂J/∂W_h{z,r} = Σ_τ δ{z,r}_τ h_{τ−1}ᵀ, ∂J/∂W_ha = Σ_τ δa_τ (r_τ ⊙ h_{τ−1})ᵀ."""
    H = rev.h_prev.shape[-1]
    dW_zr = jnp.einsum("tbj,tbk->jk", rev.delta[..., :2 * H], rev.h_prev)
    dW_a = jnp.einsum("tbj,tbk->jk", rev.delta[..., 2 * H:], rev.r * rev.h_prev)
    return {"W_x": jnp.einsum("tbj,btk->jk", rev.delta, x),
            "W_h": jnp.concatenate([dW_zr, dW_a], axis=0),
            "b": jnp.sum(rev.delta, axis=(0, 1))}


def gru_offset_apply(p, x, offsets, last: bool):
    """The forward with offsets e_τ added to every h_τ as it is passed on: ∂J/∂e_τ = ∂J/∂h_τ."""
    xz = project_inputs(p["W_x"], p["b"], x)

    def step(h, inputs):
        xz_t, e_t = inputs
        h = gru_cell(p["W_h"], xz_t, h)[3] + e_t
        return h, h

    h0 = jnp.zeros((xz.shape[1], p["W_h"].shape[1]), xz.dtype)
    return select_output(lax.scan(step, h0, (xz, time_major(offsets["h"])))[1], last)


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
    last = require_output(output, "gru_layer") == "last"
    name = f"gru({n_in}→{n_hidden}, {output})"

    def states(p, x):
        require_sequence(x, n_in, name)
        return gru_states(p["W_h"], project_inputs(p["W_x"], p["b"], x))

    def reverse(p, x, d):
        return gru_reverse(p["W_h"], states(p, x), d, last)

    def backward(p, x, d):  # one reverse scan serves both rules
        rev = reverse(p, x, d)
        return sequence_input_delta(p["W_x"], rev.delta), gru_param_grads(x, rev)

    return Layer(
        lambda key: init_recurrent(key, n_in, n_hidden, 3, dtype),
        lambda p, x: select_output(split_gates(states(p, x), 4)[0], last),
        lambda p, x, d: sequence_input_delta(p["W_x"], reverse(p, x, d).delta),
        lambda p, x, d: gru_param_grads(x, reverse(p, x, d)),
        name=name, backward=backward,
        probes=Probes(
            time_deltas=lambda p, x, d: {"h": batch_major(reverse(p, x, d).dh)},  # ∂J/∂h_τ
            offset_apply=lambda p, x, offsets: gru_offset_apply(p, x, offsets, last)))
