"""Pallas kernels with hand-written backward kernels, wrapped as ``jax.custom_vjp`` functions and
checked by :func:`fbackprop.check_custom_rules` against a reference implementation.

* :mod:`.softmax_xent` — fused row-wise softmax cross-entropy (``make_softmax_xent(planted)``
  builds it with an error planted in the backward kernel, for tests and the notebook).
"""
from .softmax_xent import make_softmax_xent, softmax_xent, softmax_xent_reference

__all__ = ["softmax_xent", "softmax_xent_reference", "make_softmax_xent"]
