"""The layer contract: a layer is Gordon's ``f p a`` together with its two Euler derivatives.

``Layer(init, apply, D_input, D_param, name, backward=None, probes=None,
input_vocab=None)``:

* ``init(key)`` → the layer's parameter pytree p (pure; the key is passed in).
* ``apply(p, a)`` = ``f p a``, for ``a`` with a leading batch axis.
* ``D_input(p, a, d)`` = ``d · D(f p) a``: the delta ∂J/∂a (shape of ``a``) from the delta
  ``d`` = ∂J/∂(f p a). This is what propagates backwards.
* ``D_param(p, a, d)`` = ``d · D(λv. f v a) p``: ∂J/∂p, a pytree with the structure of ``p``.
  The backward recurrence turns it into Δp = −η · that.
* ``name`` labels the layer in reports and error messages.
* ``backward(p, a, d)`` (optional) → ``(D_input(p, a, d), D_param(p, a, d))`` computed together,
  sharing the work both need (the pre-activation's δ; a recurrent layer's reverse scan, which
  then runs once per backward pass). The two Euler derivatives stay the definition: the
  recurrence uses ``backward`` when a layer provides it, and the gradient checker verifies it
  against them and against autodiff. ``layer._replace(D_param=…)`` (or ``D_input=…``) drops the
  fused rule unless a new ``backward`` is given too, so a swapped rule is the one that runs.
* ``probes`` (optional) — a :class:`Probes` holding what only checks and reports need.
* ``input_vocab`` (optional) — set by an embedding: its input is integer token ids in
  [0, input_vocab), not floats. ``D_input`` then returns zeros (the loss is not differentiable
  in a discrete id), the value ``jax.vjp``'s float0 cotangent stands for.
* A layer reading several activations (a node of :func:`~fbackprop.dag`) receives them as a
  tuple ``a`` and its ``D_input`` returns a tuple of deltas, one per input.

Both rules receive the batch: ``d`` already carries the 1/batch factor of the mean loss, so
``D_param`` sums over the batch (offline learning averages the per-example deltas, Gordon).
The rules are written by hand and nothing in ``fbackprop/layers`` calls autodiff: ``jax.vjp`` of
``apply`` is their automatic twin, and it lives in :mod:`fbackprop.gradcheck`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Layer", "Probes", "Params", "Activation", "Delta", "no_params", "no_param_grad",
           "require_elementwise"]

Params = Any       # a layer's parameter pytree p
Activation = Any   # an array a with a leading batch axis (the layer's input or output)
Delta = Any        # ∂J/∂(something), shaped like that something


class Probes(NamedTuple):
    """What checks and reports read from a layer, beyond its rules (every field optional).

    kink_distance: ``(p, a) → scalar``, the smallest distance at input ``a`` of any quantity to
      a point where ``apply`` is not differentiable (a ReLU pre-activation to 0, the top two
      entries of a max-pool window to each other); ``inf`` when there is none. Checks keep
      sample points away from kinks with it.
    time_deltas: ``(p, a, d) → {name: (batch, T, …)}``, recurrent layers' hand-written
      per-time-step deltas such as ``{"h": ∂J/∂h_τ, "C": ∂J/∂C_τ}``, from the same reverse
      scan as the rules.
    offset_apply: ``(p, a, offsets) → output``, the forward pass with ``offsets[name][:, τ]``
      added to each state named in ``time_deltas`` as it is passed on. Its derivative with
      respect to the offsets, at zero, is ``time_deltas``'s reference; the checker takes it with
      autodiff. A plain forward function: no autodiff here.
    """

    kink_distance: Callable | None = None
    time_deltas: Callable | None = None
    offset_apply: Callable | None = None


def require_elementwise(g, who: str):
    """``g`` must be an elementwise activation (one with a derivative ``Dg``); returns it."""
    if g.Dg is None:
        raise ValueError(f"{who}: activation must be elementwise ('sigmoid', 'tanh', 'relu' or "
                         f"'identity'), received {g.name!r}.")
    return g


def no_params(key) -> dict:
    """``init`` of a layer without parameters: the empty dict."""
    del key
    return {}


def no_param_grad(p, a, d) -> dict:
    """``D_param`` of a layer without parameters: the empty dict, like its params."""
    del p, a, d
    return {}


class _LayerFields(NamedTuple):
    init: Callable
    apply: Callable
    D_input: Callable
    D_param: Callable
    name: str = "layer"
    backward: Callable | None = None
    probes: Probes | None = None
    input_vocab: int | None = None


class Layer(_LayerFields):
    """A layer ``f p a`` with its hand-written derivatives (see the module docstring)."""

    __slots__ = ()

    def _replace(self, **changes) -> Layer:
        """A copy with ``changes``; swapping ``D_input`` or ``D_param`` drops the fused
        ``backward`` (it was built from the old rules) unless ``backward`` is given too."""
        if ("D_input" in changes or "D_param" in changes) and "backward" not in changes:
            changes["backward"] = None
        return super()._replace(**changes)

    @property
    def kink_distance(self) -> Callable | None:
        """``probes.kink_distance``, or ``None``."""
        return None if self.probes is None else self.probes.kink_distance

    @property
    def time_deltas(self) -> Callable | None:
        """``probes.time_deltas``, or ``None``."""
        return None if self.probes is None else self.probes.time_deltas
