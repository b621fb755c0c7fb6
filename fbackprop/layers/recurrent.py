"""A single-layer recurrent network (Jin §3.1–3.2) with backpropagation through time by hand.

Forward (Jin eq. 26), for τ = 1 … T with h_0 = 0:

    z_τ = W_xh x_τ + W_hh h_{τ−1} + b,      h_τ = φ(z_τ)

Jin writes W_hhᵀ h and W_xhᵀ x; here the weights are stored (n_out, n_in) as everywhere in
fbackprop, so ``W_hh`` is Jin's W_hhᵀ. x has shape (batch, T, n_in); per example the formula
above, for a batch of rows ``z_τ = x_τ @ W_xhᵀ + h_{τ−1} @ W_hhᵀ + b``. The layer outputs h_T,
shape (batch, H), with ``output="last"``, or every h_τ, shape (batch, T, H), with
``output="all"``; a dense head (Jin eq. 27) follows it in :func:`fbackprop.rnn`.

BPTT (Jin eq. 29, unrolled as a recurrence). With d_τ the delta arriving at h_τ from outside (the
head: at τ = T only for "last", at every τ for "all"), going backwards from τ = T:

    ∂J/∂h_τ = d_τ + W_hhᵀ δ_{τ+1}          (the second term is 0 at τ = T)
    δ_τ     = ∂J/∂h_τ ⊙ φ'(z_τ)             (∂J/∂z_τ)

and then, as single products over all T·batch rows rather than one per step:
∂J/∂W_xh = Σ_τ δ_τ x_τᵀ, ∂J/∂W_hh = Σ_{τ≥2} δ_τ h_{τ−1}ᵀ, ∂J/∂b = Σ_τ δ_τ, ∂J/∂x_τ = W_xhᵀ δ_τ.
Jin's eq. 29 writes ∂h_i/∂h_{i−1} = W_hh; the chain rule gives diag(φ'(z_i)) W_hhᵀ (in his
layout) — the activation's derivative is missing there, and ``jax.grad`` agrees with it present.

Speed: the inputs of all steps are projected by one matrix product before the scan; the forward
scan carries h and emits z_τ; the reverse scan carries only ∂J/∂h (one B×H×H product per step) and
emits δ_τ; the weight gradients are formed after it. Autodiff of the same forward accumulates
∂J/∂W_hh inside its reverse loop, one extra product per step.

The rules are module-level functions — :func:`rnn_forward` (the forward scan),
:func:`rnn_reverse` (the reverse scan, an :class:`RNNReverse`), :func:`rnn_param_grads` — and
:func:`rnn_layer` only wires them into a :class:`~fbackprop.Layer`. The helpers above them
(input checks, layout, the products outside the scans) serve the LSTM and GRU layers too.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..activations import get_activation
from ..inputs import require_choice, require_float_dtype, require_positive_int
from .base import Layer, Probes, require_elementwise

__all__ = ["rnn_layer", "rnn_forward", "rnn_reverse", "rnn_param_grads", "RNNReverse",
           "require_output", "require_sequence", "init_recurrent",
           "project_inputs", "split_gates", "named_gate_params", "stacked_weight_grads",
           "external_deltas", "sequence_input_delta", "select_output", "time_major",
           "batch_major", "shift_right"]


# Shared by the RNN, LSTM and GRU layers: input checks, layout, and the products outside the scans.

def require_output(output: str, who: str) -> str:
    """``output`` must be ``"last"`` (score h_T) or ``"all"`` (score every h_τ)."""
    return require_choice(output, ("last", "all"), "output", who=who,
                          fix="'last' scores only the final step (y of shape (batch, n_out)); "
                              "'all' scores every step (y of shape (batch, T, n_out)).")


def require_sequence(x, n_in: int, who: str):
    """x must be (batch, T, n_in) with T ≥ 1."""
    if x.ndim != 3 or x.shape[-1] != n_in:
        raise ValueError(f"{who}: input must be a batch of sequences of shape (batch, T, {n_in}), "
                         f"received shape {tuple(x.shape)}.")
    if x.shape[1] == 0:
        raise ValueError(f"{who}: the sequence needs at least one time step, received T = 0.")


def time_major(t):
    """(batch, T, …) → (T, batch, …), the layout ``lax.scan`` walks over."""
    return jnp.swapaxes(t, 0, 1)


batch_major = time_major  # the same swap, read the other way


def shift_right(t):
    """(T, batch, n) states s_1 … s_T → s_0 … s_{T−1} with s_0 = 0 (the initial state)."""
    return jnp.concatenate([jnp.zeros_like(t[:1]), t[:-1]], axis=0)


def split_gates(t, n: int, axis: int = -1) -> list:
    """Split stacked blocks (gates, or states emitted side by side) into ``n`` equal parts."""
    return jnp.split(t, n, axis=axis)


def named_gate_params(p, gates) -> dict:
    """Stacked parameters ``{"W_x", "W_h", "b"}`` split into one block per gate, named
    ``W_x<gate>``, ``W_h<gate>``, ``b_<gate>`` for each gate in ``gates`` (the stacking order)."""
    out = {}
    for stacked, prefix in (("W_x", "W_x"), ("W_h", "W_h"), ("b", "b_")):
        for gate, block in zip(gates, split_gates(p[stacked], len(gates), axis=0)):
            out[prefix + gate] = block
    return out


def init_recurrent(key, n_in: int, n_hidden: int, blocks: int, dtype, names=("W_x", "W_h", "b")):
    """Parameters of ``blocks`` stacked gates: input weights (blocks·H, n_in) and recurrent
    weights (blocks·H, H) drawn from N(0, 1/fan_in), the bias (blocks·H,) zero."""
    kx, kh = jax.random.split(key)
    rows = blocks * n_hidden
    return {names[0]: jax.random.normal(kx, (rows, n_in), dtype) / math.sqrt(n_in),
            names[1]: jax.random.normal(kh, (rows, n_hidden), dtype) / math.sqrt(n_hidden),
            names[2]: jnp.zeros((rows,), dtype)}


def project_inputs(W_x, b, x):
    """W_x x_τ + b for every τ in one product: (batch, T, n_in) → time-major (T, batch, rows)."""
    return jnp.einsum("btk,jk->tbj", x, W_x) + b


def external_deltas(d, zero, last: bool):
    """The delta from outside as the reverse scan takes it: (∂J/∂h_T to start the carry, the
    per-step deltas d_τ or ``None``). "last": d reaches h_T only, so it starts the carry; "all":
    it enters at every step."""
    return (d, None) if last else (zero, time_major(d))


def sequence_input_delta(W_x, delta):
    """∂J/∂x_τ = W_xᵀ δ_τ for every τ in one product: time-major δ → (batch, T, n_in)."""
    return jnp.einsum("tbj,jk->btk", delta, W_x)


def stacked_weight_grads(x, h_prev, delta):
    """Σ_τ δ_τ x_τᵀ, Σ_τ δ_τ h_{τ−1}ᵀ and Σ_τ δ_τ, each one product over T·batch rows."""
    return (jnp.einsum("tbj,btk->jk", delta, x), jnp.einsum("tbj,tbk->jk", delta, h_prev),
            jnp.sum(delta, axis=(0, 1)))


def select_output(hs, last: bool):
    """h_T (batch, H) for ``output="last"``, every h_τ (batch, T, H) for ``"all"``."""
    return hs[-1] if last else batch_major(hs)


# The RNN's rules.

class RNNReverse(NamedTuple):
    """What the RNN's reverse scan returns, all time-major (T, batch, H)."""

    z: Any      # z_τ, the pre-activations of the forward scan
    delta: Any  # δ_τ = ∂J/∂z_τ
    dh: Any     # ∂J/∂h_τ (total)


def rnn_forward(W_hh, xz, g):
    """Every z_τ, time-major (T, batch, H), by the forward scan that carries h, from
    xz = W_xh x_τ + b (all τ)."""

    def step(h, xz_t):
        z = xz_t + h @ W_hh.T  # Jin eq. 26: z_τ = W_xh x_τ + W_hh h_{τ−1} + b
        return g(z), z         # h_τ = φ(z_τ)

    return lax.scan(step, jnp.zeros(xz.shape[1:], xz.dtype), xz)[1]


def rnn_reverse(W_hh, z, d, g, last: bool) -> RNNReverse:
    """BPTT's reverse scan (Jin eq. 29 with φ' restored) from the pre-activations z."""

    def step(dh_next, inputs):
        z_t, d_t = inputs
        dh = dh_next if d_t is None else dh_next + d_t  # ∂J/∂h_τ = d_τ + W_hhᵀ δ_{τ+1}
        delta = g.D(z_t, dh)                             # δ_τ = ∂J/∂h_τ ⊙ φ'(z_τ)
        return delta @ W_hh, (delta, dh)                 # W_hhᵀ δ_τ goes on to τ − 1

    carry0, direct = external_deltas(d, jnp.zeros_like(z[0]), last)
    _, (delta, dh) = lax.scan(step, carry0, (z, direct), reverse=True)
    return RNNReverse(z, delta, dh)


def rnn_param_grads(x, g, rev: RNNReverse) -> dict:
    """Jin eq. 29 summed over τ: ∂J/∂W_xh = Σ_τ δ_τ x_τᵀ, ∂J/∂W_hh = Σ_τ δ_τ h_{τ−1}ᵀ (h_0 = 0),
    ∂J/∂b = Σ_τ δ_τ."""
    W_xh, W_hh, b = stacked_weight_grads(x, shift_right(g(rev.z)), rev.delta)
    return {"W_xh": W_xh, "W_hh": W_hh, "b": b}


def rnn_offset_apply(p, x, offsets, g, last: bool):
    """The forward with offsets e_τ added to every h_τ as it is passed on: ∂J/∂e_τ = ∂J/∂h_τ."""
    xz = project_inputs(p["W_xh"], p["b"], x)

    def step(h, inputs):
        xz_t, e_t = inputs
        h = g(xz_t + h @ p["W_hh"].T) + e_t
        return h, h

    hs = lax.scan(step, jnp.zeros_like(xz[0]), (xz, time_major(offsets["h"])))[1]
    return select_output(hs, last)


def rnn_layer(n_in: int, n_hidden: int, activation="tanh", *, output: str = "last",
              dtype=jnp.float32) -> Layer:
    """The recurrent layer h_τ = φ(W_xh x_τ + W_hh h_{τ−1} + b), h_0 = 0 (Jin eq. 26).

    Args:
      n_in: features per step (the last axis of x).
      n_hidden: H, the state width.
      activation: φ, elementwise (``"sigmoid" | "tanh" | "relu" | "identity"``).
      output: ``"last"`` (h_T, shape (batch, H)) or ``"all"`` (every h_τ, (batch, T, H)).
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` on x of shape (batch, T, n_in) with parameters
      ``{"W_xh": (H, n_in), "W_hh": (H, H), "b": (H,)}`` (weights N(0, 1/fan_in), b zero).
      ``D_input``/``D_param``/``backward`` are BPTT by hand (one reverse ``lax.scan``; see the
      module docstring); ``probes.time_deltas`` gives ∂J/∂h_τ for every τ.
    """
    dtype = require_float_dtype(dtype, who="rnn_layer")
    n_in = require_positive_int(n_in, "n_in", who="rnn_layer")
    n_hidden = require_positive_int(n_hidden, "n_hidden", who="rnn_layer")
    g = require_elementwise(get_activation(activation), "rnn_layer")
    last = require_output(output, "rnn_layer") == "last"
    name = f"rnn({n_in}→{n_hidden}, {g.name}, {output})"

    def init(key):
        return init_recurrent(key, n_in, n_hidden, 1, dtype, names=("W_xh", "W_hh", "b"))

    def forward(p, x):
        require_sequence(x, n_in, name)
        return rnn_forward(p["W_hh"], project_inputs(p["W_xh"], p["b"], x), g)

    def apply(p, x):
        z = forward(p, x)
        return g(z[-1]) if last else batch_major(g(z))

    def reverse(p, x, d):
        return rnn_reverse(p["W_hh"], forward(p, x), d, g, last)

    def backward(p, x, d):  # one reverse scan serves both rules
        rev = reverse(p, x, d)
        return sequence_input_delta(p["W_xh"], rev.delta), rnn_param_grads(x, g, rev)

    return Layer(
        init, apply, name=name, backward=backward,
        D_input=lambda p, x, d: sequence_input_delta(p["W_xh"], reverse(p, x, d).delta),
        D_param=lambda p, x, d: rnn_param_grads(x, g, reverse(p, x, d)),
        probes=Probes(
            kink_distance=lambda p, x: g.kink_distance(forward(p, x)),  # ReLU: min |z_τ|
            time_deltas=lambda p, x, d: {"h": batch_major(reverse(p, x, d).dh)},
            offset_apply=lambda p, x, offsets: rnn_offset_apply(p, x, offsets, g, last)))
