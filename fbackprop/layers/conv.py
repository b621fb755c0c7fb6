"""The convolution layer (Jin §2.1): ``f p X = φ(X * W + b)``, 1-D or 2-D, valid, stride 1.

Convention: the forward pass is a true **convolution**, as Jin writes it (eq. 12):

    Z_o(i, j) = Σ_c Σ_{k1, k2} X_c(i − k1, j − k2) W_{o,c}(k1, k2) + b_o,      A_o = φ(Z_o)

with no padding, so the kernel stays inside the map and an n × n input with an m × m kernel gives
an (n − m + 1) × (n − m + 1) output. XLA's ``conv_general_dilated`` computes a cross-correlation
(``Σ X(i + k) W(k)``), so :func:`convolve` feeds it the kernel rotated by 180°. With indices from
0 and the output indexed by the window's first position (Jin indexes it by its last, i ∈ {m, …, n}),
``Z(i) = Σ_k X(i + m − 1 − k) W(k)``. The three hand-written rules (δ = ∂J/∂Z):

* input (what propagates): ∂J/∂X = full convolution of δ with rot180(W); since the forward already
  convolves, that is the full cross-correlation δ ⋆ W — one XLA convolution, channels swapped;
* kernel (Jin eq. 20): ∂J/∂W = δ * rot180(X), which equals rot180(X ⋆ δ): the valid
  cross-correlation of the input with the delta, rotated — only the small kernel-shaped result is
  flipped; the batch is summed inside the same XLA convolution;
* bias (Jin eq. 21): ∂J/∂b_o = Σ over the batch and every position of δ_o.

Layout is channel-first: X of shape (batch, C_in, L) or (batch, C_in, H, W); the kernel W has shape
(C_out, C_in, *kernel_size) (W[o, c] is the kernel from input channel c to output channel o, like
dense's w_jk) and b has shape (C_out,).

The rules are module-level — :func:`conv_pre_activation` (Jin eq. 12), :func:`conv_input_delta`,
:func:`conv_param_grads` (eqs. 20–21) — and :func:`conv` only wires them into a
:class:`~fbackprop.Layer`.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ..activations import get_activation
from ..inputs import require_float_dtype, require_positive_int, require_positive_ints
from .base import Layer, Probes, require_elementwise

__all__ = ["conv", "conv_pre_activation", "conv_input_delta", "conv_param_grads", "conv_specs",
           "require_conv_input", "convolve"]

_SPATIAL = {1: "H", 2: "HW"}


def conv_specs(n: int) -> tuple:
    """XLA dimension numbers for ``n`` spatial axes: (forward, input delta, kernel gradient)."""
    sp = _SPATIAL[n]
    return (("NC" + sp, "OI" + sp, "NC" + sp),   # X (b, c, …), W (o, c, …) → Z (b, o, …)
            ("NC" + sp, "IO" + sp, "NC" + sp),   # δ (b, o, …), W read as (in=o, out=c)
            ("CN" + sp, "IO" + sp, "CN" + sp))   # X as (feature=b, batch=c), δ as (in=b,
    #                                              out=o) → (o, c, …): batch summed inside


def _rot180(t, n: int):
    """Rotate the last ``n`` (spatial) axes by 180°: t(k) → t(m − 1 − k) on each."""
    return lax.rev(t, tuple(range(t.ndim - n, t.ndim)))


def _correlate(x, k, specs, padding):
    """Cross-correlation ``out(i) = Σ x(i + k) w(k)``: XLA's convolution primitive as it is."""
    n = len(specs[0]) - 2
    return lax.conv_general_dilated(x, k, (1,) * n, padding, dimension_numbers=specs)


def convolve(x, k, specs, padding):
    """True convolution ``out(i) = Σ x(i + m − 1 − k) w(k)`` (Jin eq. 12): correlate with
    rot180(k)."""
    return _correlate(x, _rot180(k, len(specs[0]) - 2), specs, padding)


def require_conv_input(a, in_channels: int, ks: tuple, who: str):
    """``a`` must be (batch, C_in, *spatial) with every spatial size at least the kernel's."""
    n = len(ks)
    spatial = tuple(a.shape[2:])
    if a.ndim != n + 2 or a.shape[1] != in_channels:
        layout = "(batch, C, L)" if n == 1 else "(batch, C, H, W)"
        raise ValueError(
            f"{who}: input must have shape {layout} with C = {in_channels} channels, "
            f"received shape {tuple(a.shape)}.")
    if any(s < k for s, k in zip(spatial, ks)):
        raise ValueError(
            f"{who}: kernel {ks} is larger than the input map {spatial} (valid convolution, "
            f"no padding). Use a smaller kernel_size or a larger input.")


def conv_pre_activation(p, a):
    """Z = X * W + b, a valid, stride-1 true convolution."""
    n = p["W"].ndim - 2
    # Jin eq. 12: Z_o(i) = Σ_c Σ_k X_c(i − k) W_{o,c}(k) + b_o — a true convolution
    z = convolve(a, p["W"], conv_specs(n)[0], "VALID")
    return z + p["b"].reshape((-1,) + (1,) * n)


def conv_input_delta(W, delta):
    """∂J/∂X from δ = ∂J/∂Z: the full convolution of δ with rot180(W)."""
    # full convolution of δ with rot180(W) = full cross-correlation δ ⋆ W, summed over the
    # output channels (W read with in/out swapped)
    full = [(k - 1, k - 1) for k in W.shape[2:]]
    return _correlate(delta, W, conv_specs(W.ndim - 2)[1], full)


def conv_param_grads(a, delta) -> dict:
    """∂J/∂W and ∂J/∂b from δ = ∂J/∂Z and the layer's input X, summed over the batch."""
    n = a.ndim - 2
    # Jin eq. 20: ∂J/∂W = δ * rot180(X) = rot180(X ⋆ δ), with the sum over the batch done by
    # the same convolution; Jin eq. 21: ∂J/∂b_o = Σ_{batch, i, j} δ_o(i, j).
    dW = _rot180(_correlate(a, delta, conv_specs(n)[2], "VALID"), n)
    db = jnp.sum(delta, axis=(0,) + tuple(range(2, n + 2)))
    return {"W": dW, "b": db}


def conv(in_channels: int, out_channels: int, kernel_size, activation="sigmoid", *,
         dtype=jnp.float32) -> Layer:
    """A valid, stride-1 convolution layer ``f p X = φ(X * W + b)`` (Jin eqs. 11–12).

    Args:
      in_channels: C_in, axis 1 of the input.
      out_channels: C_out, axis 1 of the output.
      kernel_size: ``(m,)`` for 1-D signals of shape (batch, C_in, L) or ``(m1, m2)`` for 2-D
        maps of shape (batch, C_in, H, W); its length fixes the dimension.
      activation: an elementwise activation (``"sigmoid" | "tanh" | "relu" | "identity"``).
      dtype: dtype of the parameters ``init`` draws.

    Returns:
      A :class:`~fbackprop.Layer` with parameters ``{"W": (C_out, C_in, *kernel_size),
      "b": (C_out,)}``; ``init`` draws W from N(0, 1/fan_in) (2/fan_in for ReLU), fan_in =
      C_in·∏kernel_size, and sets b to zero. The forward is a true convolution and the rules are
      Jin eqs. 20–21 (see the module docstring); output (batch, C_out, L − m + 1) or
      (batch, C_out, H − m1 + 1, W − m2 + 1).
    """
    dtype = require_float_dtype(dtype, who="conv")
    in_channels = require_positive_int(in_channels, "in_channels", who="conv")
    out_channels = require_positive_int(out_channels, "out_channels", who="conv")
    ks = require_positive_ints(kernel_size, "kernel_size", scalar_ok=False, who="conv",
                               fix="Give (m,) for 1-D signals or (m1, m2) for 2-D maps.")
    if len(ks) not in _SPATIAL:
        raise ValueError(f"conv: kernel_size must be a tuple of length 1 (1-D) or 2 (2-D), such "
                         f"as (3,) or (3, 3); received {kernel_size!r}.")
    g = require_elementwise(get_activation(activation), "conv")
    gain = math.sqrt(2.0) if g.name == "relu" else 1.0
    std = gain / math.sqrt(in_channels * math.prod(ks))  # N(0, gain²/fan_in)
    name = f"conv{len(ks)}d({in_channels}→{out_channels}, {'×'.join(map(str, ks))}, {g.name})"

    def init(key):
        return {"W": std * jax.random.normal(key, (out_channels, in_channels, *ks), dtype),
                "b": jnp.zeros((out_channels,), dtype)}

    def z(p, a):
        require_conv_input(a, in_channels, ks, name)
        return conv_pre_activation(p, a)

    def delta_of(p, a, d):
        return g.D(z(p, a), d)  # δ = d ⊙ φ'(Z)

    def backward(p, a, d):  # both rules from one δ
        delta = delta_of(p, a, d)
        return conv_input_delta(p["W"], delta), conv_param_grads(a, delta)

    return Layer(init, lambda p, a: g(z(p, a)),  # Jin eq. 11: A = φ(X * W + b)
                 # D_input = d · D(f p) X and D_param = d · D(λv. f v X) p, both from δ
                 lambda p, a, d: conv_input_delta(p["W"], delta_of(p, a, d)),
                 lambda p, a, d: conv_param_grads(a, delta_of(p, a, d)),
                 name=name, backward=backward,  # ReLU's kink distance: min |Z|
                 probes=Probes(kink_distance=lambda p, a: g.kink_distance(z(p, a))))
