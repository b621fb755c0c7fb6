"""Kinks: keep sample points away from where a layer is not differentiable, and report honestly
when they cannot be kept away.

A layer's ``probes.kink_distance(p, a)`` (for dense: min |z| over ReLU pre-activations) is
computed per example inside the check's program. Examples closer than ``kink_tol`` to a kink are
perturbed (x += N(0, σ_k²) noise on those examples only, σ_k = ``RESAMPLE_SCALE``·3^(k−1) in
round k, so that a dead layer can come alive) and the check is repeated, up to ``resample``
times. A layer that stays near a kink (a kink in the parameters, say, which moving x cannot
leave) has its mismatches reported with status ``"kink"``: at a kink the one-sided derivative of
a rule (ReLU'(0) = 0, as ``jax.nn.relu``) and finite differences (which see the average slope)
differ honestly, as may a user's rule and autodiff — never a failure.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .report import FAIL, FD_NOISE_STATUS, KINK

__all__ = ["KINK_TOL", "RESAMPLE_SCALE", "Resampled", "resample_away_from_kinks", "mark_kinks"]

KINK_TOL = 1e-3         # sample points closer than this to a kink are resampled
RESAMPLE_SCALE = 0.1    # std of the noise added to x in the first resampling round (×3 per round)


class Resampled(NamedTuple):
    """The outcome of :func:`resample_away_from_kinks`."""

    out: dict               # the program's outputs at the final point
    x: object               # the final input
    distance: np.ndarray    # (layers, batch): each example's distance to each layer's kinks
    rounds: int             # how many times x was perturbed
    perturbed: tuple        # the examples that were


def _distances(out, batch: int) -> np.ndarray:
    return np.stack([np.asarray(e["kink"], np.float64) if "kink" in e
                     else np.full(batch, np.inf) for e in out["layers"]])


def resample_away_from_kinks(run: Callable, x, *, kink_tol: float, resample: int,
                             rng: np.random.Generator) -> Resampled:
    """Run ``run(x)`` (the check's program at input ``x``) and perturb the examples within
    ``kink_tol`` of a kink until none is, or ``resample`` rounds have passed."""
    perturbed, rounds = set(), 0
    while True:
        out = jax.device_get(run(x))
        dist = _distances(out, x.shape[0])
        near = np.any(dist < kink_tol, axis=0)
        if not near.any() or rounds == resample or not jnp.issubdtype(x.dtype, jnp.floating):
            # (token ids cannot be perturbed)
            return Resampled(out, x, dist, rounds, tuple(sorted(perturbed)))
        rounds += 1
        perturbed |= {int(i) for i in np.flatnonzero(near)}
        noise = RESAMPLE_SCALE * 3.0 ** (rounds - 1) * rng.standard_normal(x.shape)
        mask = near.reshape((-1,) + (1,) * (x.ndim - 1))
        x = jnp.asarray(np.where(mask, np.asarray(x) + noise, np.asarray(x)), x.dtype)


def mark_kinks(rows, at_kink):
    """Failures that a kink explains become ``"kink"``: a kink layer's own rows; whole-gradient
    and FD rows when any layer is at a kink (its delta feeds every layer below it)."""
    if not at_kink:
        return rows
    note = f"at a kink (layers {at_kink}): one-sided derivatives may differ honestly"
    return [r._replace(status=KINK, note=(r.note + "; " if r.note else "") + note)
            if r.status in (FAIL, FD_NOISE_STATUS) and (r.layer in at_kink or r.layer is None
                                                        and not r.where.startswith("cost"))
            else r for r in rows]
