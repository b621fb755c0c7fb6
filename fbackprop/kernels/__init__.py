"""Pallas kernels with hand-written backward kernels, wrapped as ``jax.custom_vjp`` functions and
checked by :func:`fbackprop.check_custom_rules` against a reference implementation.

* :mod:`.softmax_xent` — fused row-wise softmax cross-entropy.
"""
from .softmax_xent import softmax_xent, softmax_xent_reference

__all__ = ["softmax_xent", "softmax_xent_reference"]
