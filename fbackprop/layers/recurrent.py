"""A single-layer recurrent network (Jin §3.1–3.2) with backpropagation through time written by hand.

Forward (Jin eq. 26), for τ = 1 … T with h_0 = 0:

    z_τ = W_xh x_τ + W_hh h_{τ−1} + b,      h_τ = φ(z_τ)

Jin writes W_hhᵀ h and W_xhᵀ x; here the weights are stored (n_out, n_in) as everywhere in
fbackprop, so ``W_hh`` is Jin's W_hhᵀ. x has shape (batch, T, n_in); per example the formula above,
for a batch of rows ``z_τ = x_τ @ W_xhᵀ + h_{τ−1} @ W_hhᵀ + b``. The layer outputs h_T, shape
(batch, H), with ``output="last"``, or every h_τ, shape (batch, T, H), with ``output="all"``; a dense
head (Jin eq. 27) follows it in :func:`fbackprop.rnn`.

BPTT (Jin eq. 29, unrolled as a recurrence). With d_τ the delta arriving at h_τ from outside (the
head: at τ = T only for "last", at every τ for "all"), going backwards from τ = T:

    ∂J/∂h_τ = d_τ + W_hhᵀ δ_{τ+1}          (the second term is 0 at τ = T)
    δ_τ     = ∂J/∂h_τ ⊙ φ'(z_τ)             (∂J/∂z_τ)

and then, as single products over all T·batch rows (DESIGN.md's recurrent advice):
∂J/∂W_xh = Σ_τ δ_τ x_τᵀ, ∂J/∂W_hh = Σ_{τ≥2} δ_τ h_{τ−1}ᵀ, ∂J/∂b = Σ_τ δ_τ, ∂J/∂x_τ = W_xhᵀ δ_τ.
Jin's eq. 29 writes ∂h_i/∂h_{i−1} = W_hh; the chain rule gives diag(φ'(z_i)) W_hhᵀ (in his
layout) — the activation's derivative is missing there, and ``jax.grad`` agrees with it present.

Speed: the inputs of all steps are projected by one matrix product before the scan; the forward
scan carries h and emits z_τ; the reverse scan carries only ∂J/∂h (one B×H×H product per step) and
emits δ_τ; the weight gradients are formed after it. Autodiff of the same forward accumulates
∂J/∂W_hh inside its reverse loop, one extra product per step.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ..activations import get_activation
from ..inputs import require_choice, require_float_dtype, require_positive_int
from .base import Layer, Probes

__all__ = ["rnn_layer", "require_output", "require_sequence", "time_major", "batch_major",
           "shift_right"]


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
    g = get_activation(activation)
    if g.Dg is None:
        raise ValueError(f"rnn_layer: activation must be elementwise ('sigmoid', 'tanh', 'relu' or "
                         f"'identity'), received {g.name!r}.")
    require_output(output, "rnn_layer")
    last = output == "last"
    name = f"rnn({n_in}→{n_hidden}, {g.name}, {output})"

    def init(key):
        kx, kh = jax.random.split(key)
        return {"W_xh": jax.random.normal(kx, (n_hidden, n_in), dtype) / math.sqrt(n_in),
                "W_hh": jax.random.normal(kh, (n_hidden, n_hidden), dtype) / math.sqrt(n_hidden),
                "b": jnp.zeros((n_hidden,), dtype)}

    def input_projection(p, x):
        require_sequence(x, n_in, name)
        return jnp.einsum("btk,jk->tbj", x, p["W_xh"]) + p["b"]  # W_xh x_τ + b, all τ at once

    def pre_activations(p, x):
        """Every z_τ, time-major (T, batch, H), by the forward scan that carries h."""
        xz = input_projection(p, x)

        def step(h, xz_t):
            z = xz_t + h @ p["W_hh"].T  # Jin eq. 26: z_τ = W_xh x_τ + W_hh h_{τ−1} + b
            return g(z), z              # h_τ = φ(z_τ)

        h0 = jnp.zeros((x.shape[0], n_hidden), xz.dtype)
        return lax.scan(step, h0, xz)[1]

    def apply(p, x):
        z = pre_activations(p, x)
        return g(z[-1]) if last else batch_major(g(z))

    def bptt(p, x, d):
        """The reverse scan: (z, δ_τ = ∂J/∂z_τ, ∂J/∂h_τ), all time-major."""
        z = pre_activations(p, x)

        def step(dh_next, inputs):
            z_t, d_t = inputs
            dh = dh_next if d_t is None else dh_next + d_t  # ∂J/∂h_τ = d_τ + W_hhᵀ δ_{τ+1}
            delta = g.D(z_t, dh)                             # δ_τ = ∂J/∂h_τ ⊙ φ'(z_τ)
            return delta @ p["W_hh"], (delta, dh)            # W_hhᵀ δ_τ goes on to τ − 1

        # "last": d reaches h_T only, so it starts the carry; "all": it enters at every step.
        carry0, direct = (d, None) if last else (jnp.zeros_like(z[0]), time_major(d))
        _, (delta, dh) = lax.scan(step, carry0, (z, direct), reverse=True)
        return z, delta, dh

    def input_delta(p, delta):
        # ∂J/∂x_τ = W_xhᵀ δ_τ, all τ in one product
        return jnp.einsum("tbj,jk->btk", delta, p["W_xh"])

    def param_grads(x, z, delta):
        # Jin eq. 29 summed over τ, as products over T·batch rows:
        #   ∂J/∂W_xh = Σ_τ δ_τ x_τᵀ,  ∂J/∂W_hh = Σ_τ δ_τ h_{τ−1}ᵀ (h_0 = 0),  ∂J/∂b = Σ_τ δ_τ
        h_prev = shift_right(g(z))
        return {"W_xh": jnp.einsum("tbj,btk->jk", delta, x),
                "W_hh": jnp.einsum("tbj,tbk->jk", delta, h_prev),
                "b": jnp.sum(delta, axis=(0, 1))}

    def D_input(p, x, d):
        return input_delta(p, bptt(p, x, d)[1])

    def D_param(p, x, d):
        z, delta, _ = bptt(p, x, d)
        return param_grads(x, z, delta)

    def backward(p, x, d):
        # one reverse scan serves both rules
        z, delta, _ = bptt(p, x, d)
        return input_delta(p, delta), param_grads(x, z, delta)

    def time_deltas(p, x, d):
        return {"h": batch_major(bptt(p, x, d)[2])}  # ∂J/∂h_τ, (batch, T, H)

    def offset_apply(p, x, offsets):
        # the forward with offsets e_τ added to every h_τ as it is passed on: ∂J/∂e_τ = ∂J/∂h_τ
        xz = input_projection(p, x)

        def step(h, inputs):
            xz_t, e_t = inputs
            h = g(xz_t + h @ p["W_hh"].T) + e_t
            return h, h

        hs = lax.scan(step, jnp.zeros_like(xz[0]), (xz, time_major(offsets["h"])))[1]
        return hs[-1] if last else batch_major(hs)

    def kink_distance(p, x):
        return g.kink_distance(pre_activations(p, x))  # ReLU: min |z_τ| over all τ

    return Layer(init, apply, D_input, D_param, name=name, backward=backward,
                 probes=Probes(kink_distance=kink_distance, time_deltas=time_deltas,
                               offset_apply=offset_apply))
