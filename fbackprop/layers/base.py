"""The layer contract: a layer is Gordon's ``f p a`` together with its two Euler derivatives.

``Layer(init, apply, D_input, D_param)``:

* ``init(key)`` → the layer's parameter pytree p (pure; the key is passed in).
* ``apply(p, a)`` = ``f p a``, for ``a`` with a leading batch axis.
* ``D_input(p, a, d)`` = ``d · D(f p) a``: the delta ∂J/∂a (shape of ``a``) from the delta
  ``d`` = ∂J/∂(f p a). This is what propagates backwards.
* ``D_param(p, a, d)`` = ``d · D(λv. f v a) p``: ∂J/∂p, a pytree with the structure of ``p``.
  The backward recurrence turns it into Δp = −η · that.

Both rules receive the batch: ``d`` already carries the 1/batch factor of the mean loss, so
``D_param`` sums over the batch (offline learning averages the per-example deltas, Gordon).
The rules are written by hand; ``jax.vjp`` of ``apply`` is their automatic twin, used only to
check them.

Optional fields, for reports and checks (a layer may leave them ``None``):

* ``time_deltas(p, a, d)`` — recurrent layers: the hand-written per-time-step deltas, a dict
  ``{name: array of shape (batch, T, …)}`` such as ``{"h": ∂J/∂h_τ, "C": ∂J/∂C_τ}``, computed by
  the same backward pass as ``D_input``/``D_param``.
* ``time_deltas_ref(p, a, d)`` — their automatic twin (autodiff of an instrumented forward), for
  checking only; same dict structure.
* ``kink_distance(p, a)`` — the smallest distance, at input ``a``, of any quantity to a point where
  ``apply`` is not differentiable (a ReLU pre-activation to 0, the top two entries of a max-pool
  window to each other); ``inf`` when there is none. Finite-difference checks use it to keep
  sample points away from kinks.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

__all__ = ["Layer"]


class Layer(NamedTuple):
    """A layer ``f p a`` with its hand-written derivatives (see the module docstring).

    ``name`` labels the layer in reports and error messages; the optional fields are described in
    the module docstring.
    """

    init: Callable
    apply: Callable
    D_input: Callable
    D_param: Callable
    name: str = "layer"
    time_deltas: Optional[Callable] = None
    time_deltas_ref: Optional[Callable] = None
    kink_distance: Optional[Callable] = None
