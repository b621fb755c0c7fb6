"""The numerics of every comparison in fbackprop: tolerances, dtypes, matmul precision and the one
relative-error measure.

Error measure: for a hand-written value h and a reference r (arrays of one shape),

    max abs = max_i |h_i − r_i|,    max rel = max abs / max_i |r_i|    (= max abs when r ≡ 0),

a normwise relative error, so elements of r near zero do not inflate it; a NaN in h counts as an
infinitely wrong element. A pytree's error is the largest over its leaves. Tolerances: 1e-10 in
float64 and 1e-4 in float32, the latter computed under ``jax.default_matmul_precision("highest")``
(on Ampere/Hopper GPUs the default float32 matmul is TF32, ~3e-4 relative error, which would make
honest float32 comparisons fail). The checker, the trainer's ``checked`` gradients and the errata
table all use these functions.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TOLERANCE", "LOW_PRECISION", "FD_EPS", "FD_TOLERANCE", "FD_NOISE", "dtype_name",
           "precision_for", "error_stats", "relative_error", "tree_relative_error",
           "max_relative_error"]

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
LOW_PRECISION = ("bfloat16", "float16")  # judged by an error budget, not a tolerance

# Finite differences (float64 only): central, (J(p + εu) − J(p − εu)) / 2ε. An FD row passes when
# |FD − g·u| ≤ (FD_TOLERANCE + FD_NOISE·max(1, |J|)/ε)·scale: the second term is the rounding
# error of the two loss values divided by 2ε.
FD_EPS = 1e-5           # the step ε (a length in parameter space)
FD_TOLERANCE = 1e-6
FD_NOISE = 1e-13        # ≈ 450 float64 roundings of the loss


def dtype_name(dtype, *, low_precision: bool = False) -> str:
    """The name of a checkable dtype.

    Args:
      dtype: a dtype or its name.
      low_precision: also accept ``LOW_PRECISION`` (bfloat16, float16), which checks judge by
        an error budget (:mod:`.budget`) instead of a fixed tolerance.

    Returns:
      ``"float64"``, ``"float32"`` (or, with ``low_precision``, ``"bfloat16"``, ``"float16"``).

    Raises:
      ValueError: any other dtype.
    """
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = repr(dtype)
    known = sorted(TOLERANCE) + (list(LOW_PRECISION) if low_precision else [])
    if name not in known:
        raise ValueError(f"dtype must be one of {known}, received {name!r}.")
    return name


@contextlib.contextmanager
def precision_for(dtype, matmul: str = "highest"):
    """A context with float64 enabled for float64 checks, and the matmul precision ``matmul``
    (default the highest: no TF32 or bfloat16 passes in float32 matmuls)."""
    with contextlib.ExitStack() as stack:
        if dtype_name(dtype, low_precision=True) == "float64":
            stack.enter_context(jax.enable_x64(True))
        stack.enter_context(jax.default_matmul_precision(matmul))
        yield


def error_stats(got, ref) -> tuple[float, float, tuple]:
    """The measure above, on the host.

    Args:
      got: the hand-written value (array-like).
      ref: the reference, same shape.

    Returns:
      ``(max abs, max rel, index of the worst element)``; ``(0, 0, ())`` for empty arrays.
    """
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ref.size == 0:
        return 0.0, 0.0, ()
    diff = np.abs(got - ref)
    diff = np.where(np.isnan(diff), np.inf, diff)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    err, scale = float(diff[worst]), float(np.max(np.abs(ref)))
    return err, (err / scale if scale > 0 else err), tuple(int(i) for i in worst)


def relative_error(got, ref) -> float:
    """``max|got − ref| / max|ref|`` (the absolute error when ``ref`` is all zeros)."""
    return error_stats(got, ref)[1]


def tree_relative_error(got, ref) -> float:
    """The largest :func:`relative_error` over corresponding leaves of two pytrees;
    ``TypeError`` showing both structures when they differ."""
    if jax.tree.structure(got) != jax.tree.structure(ref):
        raise TypeError(f"cannot compare pytrees of different structure:\n  "
                        f"{jax.tree.structure(got)}\n  {jax.tree.structure(ref)}")
    return max((relative_error(g, r) for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref))),
               default=0.0)


def max_relative_error(got, ref):
    """:func:`tree_relative_error` as a traced JAX scalar, for use inside compiled programs
    (NaN in ``got`` propagates as NaN, which compares as a failure against any tolerance)."""
    errors = [jnp.zeros((), jnp.float32)]
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        if r.size == 0:
            continue
        scale = jnp.max(jnp.abs(r))
        err = jnp.max(jnp.abs(g - r))
        errors.append(jnp.where(scale > 0, err / jnp.where(scale > 0, scale, 1), err)
                      .astype(jnp.float32))
    return jnp.max(jnp.stack(errors))
