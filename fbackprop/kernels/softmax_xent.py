"""Fused row-wise softmax cross-entropy as two Pallas kernels, forward and backward.

For logits z (rows, classes) and target distributions y of the same shape, row r's loss is

    ℓ_r = logsumexp(z_r) − ⟨y_r, z_r⟩            (= −⟨y_r, log softmax z_r⟩ when Σ y_r = 1)

and, for an incoming cotangent g (rows,), the backward kernel writes

    ∂/∂z_r = g_r · (softmax(z_r) · Σ y_r − y_r),     ∂/∂y_r = g_r · (logsumexp(z_r) − z_r).

Both kernels compute in float32 (float64 for float64 inputs) and write the input dtype, so a
bfloat16 call rounds once per output, not once per operation. On CPU the kernels run in Pallas'
interpreter (``interpret=True``); on GPU/TPU they are compiled. :func:`softmax_xent_reference`
is the same loss in plain ``jax.numpy``: autodiff of it is what
:func:`fbackprop.check_custom_rules` compares the backward kernel with
(``references={softmax_xent: softmax_xent_reference}``), since autodiff cannot
reverse-differentiate a ``pallas_call`` (without a reference the sweep falls back to forward mode
where Pallas gives a JVP, as the interpreter does for this kernel, else skips the rule).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

__all__ = ["softmax_xent", "softmax_xent_reference", "BLOCK_ROWS"]

BLOCK_ROWS = 8  # rows per kernel instance


def _interpret(block_rows: int, classes: int) -> bool:
    """Interpret on CPU, and on GPU/TPU when a block is not a power of two in each dimension
    (Triton's requirement); compile otherwise."""
    def pow2(n):
        return n > 0 and n & (n - 1) == 0
    return jax.default_backend() == "cpu" or not (pow2(block_rows) and pow2(classes))


def _row_spec(rows, width):
    return pl.BlockSpec((rows, width), lambda i: (i, 0))


def _wide(dtype):
    """The dtype the kernels compute in: float32 for float32 and narrower, else ``dtype``."""
    return jnp.promote_types(dtype, jnp.float32)


def _forward_kernel(z_ref, y_ref, loss_ref):
    wide = _wide(z_ref.dtype)
    z = z_ref[...].astype(wide)
    y = y_ref[...].astype(wide)
    m = jnp.max(z, axis=1, keepdims=True)
    lse = m + jnp.log(jnp.sum(jnp.exp(z - m), axis=1, keepdims=True))
    loss_ref[...] = (lse * jnp.sum(y, axis=1, keepdims=True)
                     - jnp.sum(y * z, axis=1, keepdims=True)).astype(loss_ref.dtype)


def _backward_kernel(z_ref, y_ref, g_ref, dz_ref, dy_ref, *, planted: float):
    wide = _wide(z_ref.dtype)
    z = z_ref[...].astype(wide)
    y = y_ref[...].astype(wide)
    g = g_ref[...].astype(wide)
    m = jnp.max(z, axis=1, keepdims=True)
    e = jnp.exp(z - m)
    s = jnp.sum(e, axis=1, keepdims=True)
    lse = m + jnp.log(s)
    dz = g * (e / s * jnp.sum(y, axis=1, keepdims=True) - y)
    dz_ref[...] = (dz * (1.0 + planted)).astype(dz_ref.dtype)
    dy_ref[...] = (g * (lse - z)).astype(dy_ref.dtype)


def _block(rows: int) -> int:
    return BLOCK_ROWS if rows % BLOCK_ROWS == 0 else rows


@jax.jit  # one program per shape: the interpreted kernel is not re-dispatched op by op
def _forward(z, y):
    rows, classes = z.shape
    b = _block(rows)
    loss = pl.pallas_call(
        _forward_kernel, grid=(rows // b,),
        in_specs=[_row_spec(b, classes), _row_spec(b, classes)], out_specs=_row_spec(b, 1),
        out_shape=jax.ShapeDtypeStruct((rows, 1), z.dtype), interpret=_interpret(b, classes))(z, y)
    return loss[:, 0]


@functools.partial(jax.jit, static_argnames="planted")
def _backward(z, y, g, planted=0.0):
    rows, classes = z.shape
    b = _block(rows)
    return pl.pallas_call(
        functools.partial(_backward_kernel, planted=planted), grid=(rows // b,),
        in_specs=[_row_spec(b, classes), _row_spec(b, classes), _row_spec(b, 1)],
        out_specs=[_row_spec(b, classes), _row_spec(b, classes)],
        out_shape=[jax.ShapeDtypeStruct(z.shape, z.dtype), jax.ShapeDtypeStruct(y.shape, y.dtype)],
        interpret=_interpret(b, classes))(z, y, g[:, None].astype(z.dtype))


def _require(z, y):
    if jnp.ndim(z) != 2 or jnp.shape(z) != jnp.shape(y):
        raise ValueError(f"softmax_xent: expected logits and targets of one shape (rows, "
                         f"classes), received {jnp.shape(z)} and {jnp.shape(y)}. One-hot encode "
                         f"class ids with jax.nn.one_hot(ids, classes).")
    if jnp.result_type(z) != jnp.result_type(y):
        raise TypeError(f"softmax_xent: logits and targets must share a dtype, received "
                        f"{jnp.result_type(z).name} and {jnp.result_type(y).name}; cast one.")


def make_softmax_xent(planted: float = 0.0):
    """A ``jax.custom_vjp`` softmax cross-entropy whose backward kernel scales ∂/∂z by
    ``1 + planted`` (0 for the correct kernel; tests plant a 1% error with 0.01).

    Args:
      planted: relative error planted in the logits' gradient.

    Returns:
      ``f(z, y) -> (rows,)`` losses, a ``jax.custom_vjp`` function.
    """
    @jax.custom_vjp
    def softmax_xent(z, y):
        _require(z, y)
        return _forward(z, y)

    def fwd(z, y):
        _require(z, y)
        return _forward(z, y), (z, y)

    def bwd(res, g):
        z, y = res
        return _backward(z, y, g, planted)

    softmax_xent.defvjp(fwd, bwd)
    return softmax_xent


softmax_xent = make_softmax_xent()
softmax_xent.__doc__ = """Row-wise softmax cross-entropy of logits ``z`` and targets ``y``
(rows, classes), by a Pallas forward kernel, differentiated by a Pallas backward kernel.

Args:
  z: logits, (rows, classes), float32 or bfloat16.
  y: target distributions (e.g. one-hot), same shape and dtype.

Returns:
  the (rows,) losses logsumexp(z_r) Σ y_r − ⟨y_r, z_r⟩.
"""


def softmax_xent_reference(z, y):
    """The same loss in plain ``jax.numpy`` (autodiff differentiates it): the reference for the
    kernel's forward value and gradient.

    Args:
      z: logits, (rows, classes).
      y: targets, same shape.

    Returns:
      the (rows,) losses.
    """
    lse = jax.nn.logsumexp(z, axis=1)
    return (lse * jnp.sum(y, axis=1) - jnp.sum(y * z, axis=1)).astype(z.dtype)
