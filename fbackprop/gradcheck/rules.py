"""Hand-written rules called at trace time, and the automatic twins they are checked against.

A rule that raises, or returns the wrong structure or shape, must not crash the whole check: it
becomes NaNs plus a note, and the report shows a failing row naming it. The autodiff references
of a layer's rules and probes live here, not in the layer files: ``jax.vjp`` of the layer's
``apply`` (for ``D_input``/``D_param``/``backward``) and of its ``probes.offset_apply`` (for
``time_deltas``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["call_rule", "layer_reference", "time_deltas_reference"]


def _nan_like(ref):
    return jax.tree.map(lambda r: jnp.full(jnp.shape(r), jnp.nan, jnp.result_type(r)), ref)


def call_rule(rule, ref, *args):
    """Call a hand-written rule at trace time; return (value shaped like ``ref``, notes).

    A rule that raises, or returns the wrong structure, becomes NaNs plus a note ``{"*": why}``;
    a leaf of the wrong shape becomes NaNs plus a note under its path. The report then shows a
    failing row instead of the whole check crashing.
    """
    try:
        got = rule(*args)
    except Exception as err:  # a user's rule may raise anything; it becomes a failing row
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return _nan_like(ref), {"*": f"raised {type(err).__name__}: {first}"}
    if jax.tree.structure(got) != jax.tree.structure(ref):
        return _nan_like(ref), {"*": f"returned structure {jax.tree.structure(got)}, expected "
                                     f"{jax.tree.structure(ref)}"}
    notes, leaves = {}, []
    for (path, g), r in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(ref)):
        if tuple(jnp.shape(g)) != tuple(jnp.shape(r)):
            hint = (" (transposed?)" if len(jnp.shape(g)) == 2
                    and tuple(jnp.shape(g)) == tuple(jnp.shape(r))[::-1] else
                    " (not summed over the batch?)" if len(jnp.shape(g)) == len(jnp.shape(r)) + 1
                    and tuple(jnp.shape(g))[1:] == tuple(jnp.shape(r)) else "")
            notes[jax.tree_util.keystr(path)] = (f"returned shape {tuple(jnp.shape(g))}, expected "
                                                 f"{tuple(jnp.shape(r))}{hint}")
            leaves.append(jnp.full(jnp.shape(r), jnp.nan, jnp.result_type(r)))
        else:
            leaves.append(jnp.asarray(g, jnp.result_type(r)))
    return jax.tree.unflatten(jax.tree.structure(ref), leaves), notes


def layer_reference(layer, p, a, d):
    """``(∂J/∂p, ∂J/∂a)`` by ``jax.vjp`` of ``layer.apply`` at the incoming delta ``d``: the
    automatic twin of ``D_param``, ``D_input`` and ``backward``. Towards an integer input (token
    ids) autodiff's cotangent is float0; its twin here is zeros in ``d``'s dtype."""
    _, vjp = jax.vjp(layer.apply, p, a)
    ref_p, ref_a = vjp(d)
    return ref_p, jax.tree.map(lambda r, t: jnp.zeros(jnp.shape(t), jnp.result_type(d))
                               if r.dtype == jax.dtypes.float0 else r, ref_a, a)


def time_deltas_reference(layer, p, a, d):
    """The automatic twin of ``layer.probes.time_deltas``: ``jax.vjp`` of
    ``probes.offset_apply`` with respect to the state offsets, at zero, applied to ``d``.

    Returns a dict shaped like ``time_deltas(p, a, d)``: the total derivative of J with respect
    to each state at each time step, ``(batch, T, …)``."""
    probes = layer.probes
    spec = jax.eval_shape(probes.time_deltas, p, a, d)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), spec)
    _, vjp = jax.vjp(lambda offsets: probes.offset_apply(p, a, offsets), zeros)
    return vjp(d)[0]
