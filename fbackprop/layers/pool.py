"""Non-overlapping pooling (Jin §2.2) and flattening (Jin §2.3): layers without parameters.

Layout is channel-first, (batch, C, L) or (batch, C, H, W). A pool of size (p1, p2) splits each
map into disjoint p1 × p2 windows; the map's size must be a multiple of the pool size (anything
else raises ``ValueError``: no partial windows, no silent cropping). Parameters are the empty dict.

Rules (d = ∂J/∂S, the delta at the pooled map):

* mean (Jin eq. 13, S = window average): ∂J/∂A(i, j) = d(⌊i/p1⌋, ⌊j/p2⌋) / (p1 p2) — every entry
  of a window receives its share. Jin's eq. 49 multiplies by p1 p2 instead; ``jax.grad`` agrees
  with the division.
* max (S = window maximum): the delta goes to the arg-max. At a tie — several entries equal to the
  window's maximum, where the max is not differentiable — the delta is shared equally among the
  tied entries (a valid subgradient), which is exactly what autodiff of ``jnp.max`` does, so the
  hand-written rule and ``jax.grad`` agree there too. ``kink_distance`` reports the smallest gap
  between the largest and second-largest entries of any window (0 at a tie).
* flatten (Jin eqs. 14–15): z = Z(S) joins all channels into one vector per example and
  ∂J/∂S = Z⁻¹(∂J/∂z). Jin's Z scans each channel by columns; here Z is the row-major reshape
  (channel, then row, then column), which is free in memory. Any fixed ordering gives the same
  network up to a permutation of the next layer's weight columns.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..inputs import require_positive_ints
from .base import Layer, Probes, no_param_grad, no_params

__all__ = ["mean_pool", "max_pool", "flatten", "mean_pool_forward", "mean_pool_backward",
           "max_pool_forward", "max_pool_backward", "max_pool_kink_distance"]


def mean_pool_forward(w, axes):
    """S = the mean of each window; ``w`` holds the windows, ``axes`` their within-window axes."""
    return jnp.mean(w, axis=axes)  # Jin eq. 13: S = (1/(p1 p2)) Σ_window A


def mean_pool_backward(w, d, axes):
    """∂J/∂A on the windows ``w`` from d = ∂J/∂S (expanded over ``axes``)."""
    # ∂J/∂A = upsample(d) / (p1 p2): each window entry gets an equal share (Jin eq. 49 has
    # p1 p2 as a factor where 1/(p1 p2) is meant).
    size = 1
    for ax in axes:
        size *= w.shape[ax]
    return jnp.broadcast_to(d / size, w.shape)


def max_pool_forward(w, axes):
    """S = the maximum of each window."""
    return jnp.max(w, axis=axes)  # S = max over the window


def max_pool_backward(w, d, axes):
    """∂J/∂A on the windows ``w`` from d = ∂J/∂S (expanded over ``axes``)."""
    # ∂J/∂A = d at the window's arg-max, 0 elsewhere; k tied maxima get d/k each.
    at_max = (w == jnp.max(w, axis=axes, keepdims=True)).astype(w.dtype)
    return at_max * (d / jnp.sum(at_max, axis=axes, keepdims=True))


def max_pool_kink_distance(w, axes):
    """The smallest gap between a window's largest and second-largest entry (0 at a tie; inf
    for 1-entry windows)."""
    n_win = 1
    for ax in axes:
        n_win *= w.shape[ax]
    if n_win == 1:
        return jnp.asarray(jnp.inf, w.dtype)
    keep = tuple(i for i in range(w.ndim) if i not in axes)
    flat = jnp.transpose(w, keep + axes).reshape(tuple(w.shape[i] for i in keep) + (n_win,))
    top2 = lax.top_k(flat, 2)[0]
    return jnp.min(top2[..., 0] - top2[..., 1])


def require_pool_size(pool_size) -> tuple:
    """``pool_size`` as a tuple of 1 (1-D) or 2 (2-D) positive ints; an int p means (p,)."""
    t = require_positive_ints(pool_size, "pool_size",
                              fix="Give (p,) for 1-D signals or (p1, p2) for 2-D maps.")
    if len(t) not in (1, 2):
        raise ValueError(f"pool_size must be a tuple of 1 (1-D) or 2 (2-D) positive ints, such as "
                         f"(2,) or (2, 2); received {pool_size!r}.")
    return t


def _pool_layer(pool_size, kind: str, reduce, D_input, kink_distance=None) -> Layer:
    ps = require_pool_size(pool_size)
    n = len(ps)
    name = f"{kind}_pool({'×'.join(map(str, ps))})"
    layout = "(batch, C, L)" if n == 1 else "(batch, C, H, W)"

    def windows(a):
        """(b, c, n1, n2) → (b, c, n1/p1, p1, n2/p2, p2): one axis pair per spatial axis."""
        spatial = tuple(a.shape[2:])
        if a.ndim != n + 2:
            raise ValueError(f"{name}: input must have shape {layout}, received shape "
                             f"{tuple(a.shape)}.")
        if any(s % q for s, q in zip(spatial, ps)):
            raise ValueError(
                f"{name}: the map size {spatial} is not a multiple of the pool size {ps}; "
                f"non-overlapping pooling needs whole windows. Choose a pool size that divides "
                f"the map (or a kernel size that makes the map divisible).")
        shape = tuple(a.shape[:2])
        for s, q in zip(spatial, ps):
            shape += (s // q, q)
        return a.reshape(shape)

    axes = tuple(3 + 2 * i for i in range(n))  # the within-window axes

    def apply(p, a):
        del p
        return reduce(windows(a), axes)

    def D_input_(p, a, d):
        del p
        w = windows(a)
        return D_input(w, jnp.expand_dims(d, axes), axes).reshape(a.shape)

    def kink_distance_(p, a):
        del p
        return kink_distance(windows(a), axes)

    return Layer(no_params, apply, D_input_, no_param_grad, name=name,
                 probes=None if kink_distance is None else Probes(kink_distance=kink_distance_))


def mean_pool(pool_size) -> Layer:
    """Non-overlapping mean pooling (Jin §2.2, eq. 13): S = (1/(p1 p2)) Σ_window A.

    The rule spreads the pooled delta evenly: ∂J/∂A(i, j) = d(⌊i/p1⌋, ⌊j/p2⌋) / (p1 p2). Jin's
    eq. 49 multiplies by p1 p2 instead; ``jax.grad`` agrees with the division.

    Args:
      pool_size: the window, (p,) (or the int p) for 1-D signals or (p1, p2) for 2-D maps;
        positive ints.

    Returns:
      A parameter-free :class:`~fbackprop.Layer` mapping (batch, C, L) → (batch, C, L/p) or
      (batch, C, H, W) → (batch, C, H/p1, W/p2), same dtype. Applied to an input of the wrong
      rank, or whose map size is not a multiple of the pool size, it raises ``ValueError``.

    Raises:
      ValueError: if ``pool_size`` is not 1 or 2 positive ints.
    """
    return _pool_layer(pool_size, "mean", mean_pool_forward, mean_pool_backward)


def max_pool(pool_size) -> Layer:
    """Non-overlapping max pooling: S = the maximum of each window (Jin §2.2, with max for mean).

    The rule sends the pooled delta to the window's arg-max; at a tie it is shared equally among
    the tied maxima (a valid subgradient, and what autodiff of ``jnp.max`` does). The layer's
    ``kink_distance`` probe is the smallest gap between the largest and second-largest entries
    of any window (0 at a tie; ``inf`` for 1-entry windows).

    Args:
      pool_size: the window, (p,) (or the int p) for 1-D signals or (p1, p2) for 2-D maps;
        positive ints.

    Returns:
      A parameter-free :class:`~fbackprop.Layer` mapping (batch, C, L) → (batch, C, L/p) or
      (batch, C, H, W) → (batch, C, H/p1, W/p2), same dtype. Applied to an input of the wrong
      rank, or whose map size is not a multiple of the pool size, it raises ``ValueError``.

    Raises:
      ValueError: if ``pool_size`` is not 1 or 2 positive ints.
    """
    return _pool_layer(pool_size, "max", max_pool_forward, max_pool_backward,
                       max_pool_kink_distance)


def flatten() -> Layer:
    """Flattening, Z of Jin §2.3: (batch, C, …) → (batch, C·…), row-major.

    Jin eq. 14: z = Z({S_c}) joins all channels into one vector per example; eq. 15:
    ∂J/∂S = Z⁻¹(∂J/∂z). Jin's Z scans each channel by columns; here Z is the row-major reshape
    (channel, then row, then column), the same network up to a permutation of the next layer's
    weight columns.

    Returns:
      A parameter-free :class:`~fbackprop.Layer` mapping an array (batch, d₁, …, d_k) to
      (batch, d₁·…·d_k), same dtype. Applied to an input with fewer than 2 axes it raises
      ``ValueError``.
    """

    def apply(p, a):
        del p
        if a.ndim < 2:
            raise ValueError(f"flatten: input needs a batch axis and at least one more, received "
                             f"shape {tuple(a.shape)}.")
        return a.reshape(a.shape[0], -1)  # Jin eq. 14: z = Z({S_c})

    def D_input(p, a, d):
        del p
        return d.reshape(a.shape)  # Jin eq. 15: ∂J/∂S = Z⁻¹(∂J/∂z)

    return Layer(no_params, apply, D_input, no_param_grad, name="flatten")
