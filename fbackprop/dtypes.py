"""Low-precision floats, and float32 where a rule needs it for stability.

Mixed precision (``fb.train(precision="bf16" | "fp16")``, :mod:`fbackprop.training.optim`) runs
the forward pass and the hand-written backward in bfloat16 or float16. A few steps lose too much
there, as llm.c also finds: a softmax or a log-sum-exp over many entries (8 significant bits
cannot hold a probability of 1e-3 next to one of 0.9), the mean and variance of a layer norm
(a sum of many squares), and the loss summed over a batch. Those steps widen their operands with
:func:`stable` and narrow their result back with :func:`narrow`; each says so in its docstring.
In float32 and float64 both are the identity.
"""
from __future__ import annotations

import jax.numpy as jnp

__all__ = ["LOW_PRECISION", "is_low_precision", "stable", "narrow"]

LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def is_low_precision(dtype) -> bool:
    """Whether ``dtype`` is bfloat16 or float16.

    Args:
      dtype: a dtype, or an array (its dtype is read).

    Returns:
      ``True`` for bfloat16 and float16.
    """
    return jnp.dtype(getattr(dtype, "dtype", dtype)) in LOW_PRECISION


def stable(x):
    """``x`` in float32 when it is bfloat16 or float16, else unchanged (float32, float64,
    integers).

    Args:
      x: an array.

    Returns:
      The array, widened to float32 only from a low precision.
    """
    return x.astype(jnp.float32) if is_low_precision(x) else x


def narrow(x, like):
    """``x`` back in ``like``'s dtype when that is bfloat16 or float16, else unchanged.

    Args:
      x: the array a widened step computed.
      like: the array (or dtype) whose low precision the result returns to.

    Returns:
      The array, in ``like``'s dtype only when that is a low precision.
    """
    dtype = jnp.dtype(getattr(like, "dtype", like))
    return x.astype(dtype) if dtype in LOW_PRECISION else x
