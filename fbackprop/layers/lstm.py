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

    ∂J/∂h_τ = d_τ + W_hᵀ δ_{τ+1}                             (every gate of τ + 1 reads h_τ)
    ∂J/∂C_τ = f_{τ+1} ⊙ ∂J/∂C_{τ+1}  +  ∂J/∂h_τ ⊙ o_τ ⊙ (1 − tanh²C_τ)
    δ_o = ∂J/∂h_τ ⊙ tanh C_τ ⊙ o_τ(1 − o_τ)
    δ_i = ∂J/∂C_τ ⊙ a_τ ⊙ i_τ(1 − i_τ)
    δ_f = ∂J/∂C_τ ⊙ C_{τ−1} ⊙ f_τ(1 − f_τ)
    δ_a = ∂J/∂C_τ ⊙ i_τ ⊙ (1 − a_τ²)

with δ_τ = [δ_i, δ_f, δ_o, δ_a] = ∂J/∂(the stacked pre-activations), and after the reverse scan,
as single products over all T·batch rows: ∂J/∂W_x = Σ_τ δ_τ x_τᵀ, ∂J/∂W_h = Σ_τ δ_τ h_{τ−1}ᵀ,
∂J/∂b = Σ_τ δ_τ, ∂J/∂x_τ = W_xᵀ δ_τ.

Where Jin's eqs. 37–41 disagree with ``jax.grad``: the gates are sigmoids, so their derivatives
are i(1 − i), f(1 − f), o(1 − o), not the 1 − tanh²(z) written in eqs. 38–40; eq. 40 (W_xo) keeps
only the current step's error (h_T − y^T at every τ) instead of ∂J/∂h_τ; and the sums in eqs.
37–41 follow ∂J/∂C only along the cell path (f_T ⋯ f_{τ+1}), dropping every path through
h_{τ−1} and the recurrent weights, which the recurrence above includes.

The rules are module-level functions — :func:`lstm_cell` (one forward step), :func:`lstm_states`
(the forward scan), :func:`lstm_reverse` (the reverse scan, an :class:`LSTMReverse`),
:func:`lstm_param_grads` — and :func:`lstm_layer` only wires them into a
:class:`~fbackprop.Layer`.
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
    stacked_weight_grads,
    time_major,
)

__all__ = ["lstm_layer", "lstm_cell", "lstm_states", "lstm_reverse", "lstm_param_grads",
           "LSTMReverse", "gate_params", "GATES"]

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
    return named_gate_params(p, GATES)


def lstm_gates(zg):
    """Stacked pre-activations (…, 4H) → i, f, o (sigmoid) and a (tanh), eqs. 30–33."""
    zi, zf, zo, za = split_gates(zg, 4)
    return jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jax.nn.sigmoid(zo), jnp.tanh(za)


def lstm_cell(W_h, xz_t, h, C, e_h=None, e_C=None):
    """One forward step: (h_τ, C_τ, (i_τ, f_τ, o_τ, a_τ)) from xz_t = W_x x_τ + b, h_{τ−1} and
    C_{τ−1}. ``e_h``, ``e_C`` (optional) are offsets added to h_τ and C_τ as they are passed on."""
    i, f, o, a = lstm_gates(xz_t + h @ W_h.T)  # eqs. 30–33
    C = a * i + C * f                          # eq. 34: C_τ = a_τ ⊙ i_τ + C_{τ−1} ⊙ f_τ
    if e_C is not None:
        C = C + e_C
    h = jnp.tanh(C) * o                        # eq. 35: h_τ = tanh(C_τ) ⊙ o_τ
    if e_h is not None:
        h = h + e_h
    return h, C, (i, f, o, a)


def lstm_states(W_h, xz):
    """The forward scan carrying (h, C) from xz = W_x x_τ + b (all τ): for every τ, the state and
    the gates [h_τ, C_τ, i_τ, f_τ, o_τ, a_τ] as one array (T, batch, 6H).

    The scan emits everything as one array, so that ``apply`` (which reads only h) and the
    backward pass (which reads the rest) run the very same loop and XLA computes it once.
    (Carrying the concatenation instead of the pair makes XLA recompute the gates inside it.)
    """

    def step(carry, xz_t):
        h, C, gates = lstm_cell(W_h, xz_t, *carry)
        return (h, C), jnp.concatenate([h, C, *gates], axis=-1)

    zero = jnp.zeros((xz.shape[1], W_h.shape[1]), xz.dtype)  # h_0 = C_0 = 0
    return lax.scan(step, (zero, zero), xz)[1]


class LSTMReverse(NamedTuple):
    """What the LSTM's reverse scan returns, all time-major."""

    h_prev: Any  # h_{τ−1}, (T, batch, H)
    delta: Any   # δ_τ = [δ_i, δ_f, δ_o, δ_a], ∂J/∂(stacked pre-activations), (T, batch, 4H)
    dh: Any      # ∂J/∂h_τ (total), (T, batch, H)
    dC: Any      # ∂J/∂C_τ (total), (T, batch, H)


def lstm_reverse(W_h, states, d, last: bool) -> LSTMReverse:
    """BPTT's reverse scan (module docstring) from the forward scan's ``states``."""
    h, C, i, f, o, a = split_gates(states, 6)
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
        dh_next, dC_next = carry  # W_hᵀ δ_{τ+1} and f_{τ+1} ⊙ ∂J/∂C_{τ+1} (0 at τ = T)
        d_t, h_C_t, local_t, f_t = inputs
        dh = dh_next if d_t is None else dh_next + d_t             # ∂J/∂h_τ
        dC = dC_next + dh * h_C_t                                  # ∂J/∂C_τ
        delta = jnp.concatenate([dC, dC, dh, dC], axis=-1) * local_t  # δ_i, δ_f, δ_o, δ_a
        return (delta @ W_h, f_t * dC), (delta, dh, dC)

    zero = jnp.zeros_like(h[0])
    dh_T, direct = external_deltas(d, zero, last)
    _, (delta, dh, dC) = lax.scan(step, (dh_T, zero), (direct, h_C, local, f), reverse=True)
    return LSTMReverse(h_prev, delta, dh, dC)


def lstm_param_grads(x, rev: LSTMReverse) -> dict:
    """∂J/∂W_x = Σ_τ δ_τ x_τᵀ, ∂J/∂W_h = Σ_τ δ_τ h_{τ−1}ᵀ, ∂J/∂b = Σ_τ δ_τ: one product each."""
    W_x, W_h, b = stacked_weight_grads(x, rev.h_prev, rev.delta)
    return {"W_x": W_x, "W_h": W_h, "b": b}


def lstm_offset_apply(p, x, offsets, last: bool):
    """The forward with offsets added to every C_τ and h_τ as they are passed on; their
    derivatives at zero are the total derivatives ∂J/∂C_τ and ∂J/∂h_τ."""
    xz = project_inputs(p["W_x"], p["b"], x)

    def step(carry, inputs):
        h, C, _ = lstm_cell(p["W_h"], inputs[0], *carry, e_h=inputs[1], e_C=inputs[2])
        return (h, C), h

    zero = jnp.zeros((xz.shape[1], p["W_h"].shape[1]), xz.dtype)
    hs = lax.scan(step, (zero, zero),
                  (xz, time_major(offsets["h"]), time_major(offsets["C"])))[1]
    return select_output(hs, last)


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
    last = require_output(output, "lstm_layer") == "last"
    name = f"lstm({n_in}→{n_hidden}, {output})"

    def states(p, x):
        require_sequence(x, n_in, name)
        return lstm_states(p["W_h"], project_inputs(p["W_x"], p["b"], x))

    def reverse(p, x, d):
        return lstm_reverse(p["W_h"], states(p, x), d, last)

    def backward(p, x, d):  # one reverse scan serves both rules
        rev = reverse(p, x, d)
        return sequence_input_delta(p["W_x"], rev.delta), lstm_param_grads(x, rev)

    def time_deltas(p, x, d):
        rev = reverse(p, x, d)
        return {"h": batch_major(rev.dh), "C": batch_major(rev.dC)}  # (batch, T, H) each

    return Layer(
        lambda key: init_recurrent(key, n_in, n_hidden, 4, dtype),
        lambda p, x: select_output(split_gates(states(p, x), 6)[0], last),
        lambda p, x, d: sequence_input_delta(p["W_x"], reverse(p, x, d).delta),
        lambda p, x, d: lstm_param_grads(x, reverse(p, x, d)),
        name=name, backward=backward,
        probes=Probes(time_deltas=time_deltas,
                      offset_apply=lambda p, x, offsets: lstm_offset_apply(p, x, offsets, last)))
