"""Array arguments: network inputs, targets, parameters, finiteness (see the package docstring
for the message shape). Shapes and dtypes are checked at trace time; values only for concrete
arrays, never under jit."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_float_input", "as_network_input", "require_target", "require_tree_like",
           "require_params", "shape_str", "require_finite", "require_target_values",
           "is_concrete", "require_mask"]


def shape_str(shape) -> str:
    """A shape for messages: ``"batch"`` and ``None`` (any length, printed ``T``) allowed."""
    return "(" + ", ".join("batch" if s == "batch" else ("T" if s is None else str(s))
                           for s in shape) + ("," if len(shape) == 1 else "") + ")"


def as_float_input(x, input_shape=None, *, argument: str = "x"):
    """Return ``x`` as an array after checking dtype, batch axis and per-example shape.

    Args:
      x: the network input, shape ``(batch, *input_shape)``, floating point.
      input_shape: one example's shape (``None`` entries match any size, e.g. the time axis of a
        sequence); ``None`` skips the shape check.
      argument: the name used in messages.

    Returns:
      ``x`` as a JAX/NumPy array.
    """
    if x is None:
        raise TypeError(f"{argument} must be an array of floats, shape (batch, ...), received "
                        f"None. Pass the input batch.")
    if not hasattr(x, "dtype"):
        try:
            x = jnp.asarray(x)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{argument} must be an array of floats, received "
                            f"{type(x).__name__}.") from err
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{argument} must be a floating-point array, received dtype {x.dtype}. "
            f"Convert it first, e.g. {argument}.astype(jnp.float32) (or float64 for checks)."
        )
    if x.ndim >= 1 and x.shape[0] == 0:
        raise ValueError(f"{argument} must hold at least one example, received an empty batch "
                         f"of shape {tuple(x.shape)}. Pass a batch with one or more rows.")
    if input_shape is None:
        if x.ndim < 1:
            raise ValueError(f"{argument} needs a leading batch axis, received a scalar.")
        return x
    expected = ("batch", *input_shape)
    if x.ndim != len(expected):
        hint = (f" For a single example use {argument}[None]."
                if x.ndim == len(input_shape) else "")
        raise ValueError(
            f"{argument} must have shape {shape_str(expected)}, received shape {tuple(x.shape)}."
            + hint
        )
    for axis, (want, got) in enumerate(zip(input_shape, x.shape[1:]), start=1):
        if want is not None and want != got:
            what = ("width" if axis == x.ndim - 1 else "channel count (axis 1)" if axis == 1
                    else f"size along axis {axis}")  # axis 1 is the channel axis (channel-first)
            raise ValueError(
                f"{argument} has {what} {got}, but the network expects {want}: received shape "
                f"{tuple(x.shape)}, expected {shape_str(expected)}."
            )
    return x


def as_network_input(x, input_shape=None, input_vocab=None, *, argument: str = "x"):
    """A network's input: floating point (:func:`as_float_input`), or, for a network whose
    first layer is an embedding (``input_vocab`` set), integer token ids.

    Args:
      x: shape ``(batch, *input_shape)``.
      input_shape: one example's shape (``None`` entries match any size); ``None`` skips it.
      input_vocab: the number of token ids the embedding knows, or ``None`` for float input.
      argument: the name used in messages.

    Returns:
      ``x`` as an array. Token ids are checked to lie in [0, input_vocab) when ``x`` is concrete
      (under ``jit`` no value can raise: :func:`fbackprop.embedding` clamps an out-of-range id
      into [0, input_vocab − 1], in its forward and its rule alike).
    """
    if input_vocab is None:
        return as_float_input(x, input_shape, argument=argument)
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{argument} must be an integer array of token ids in [0, {input_vocab}) "
                        f"(the network starts with an embedding), received dtype {x.dtype}. "
                        f"Fix: pass token ids, e.g. {argument}.astype(jnp.int32).")
    if input_shape is not None:  # the shape checks are the float ones
        as_float_input(jax.ShapeDtypeStruct(x.shape, jnp.float32), input_shape,
                       argument=argument)
    if not isinstance(x, jax.core.Tracer) and x.size:
        lo, hi = int(np.min(x)), int(np.max(x))
        if lo < 0 or hi >= input_vocab:
            raise ValueError(f"{argument} holds token ids in [{lo}, {hi}]; expected ids in "
                             f"[0, {input_vocab}). Fix: map tokens into the vocabulary.")
    return x


def require_target(y, a, *, cost_name: str):
    """Check the target ``y`` against the network output ``a``; return it in ``a``'s dtype.

    Args:
      y: targets, the shape of the network output ``a``; numeric. For softmax cross-entropy on
        a sequence output (batch, T, V), integer class ids (batch, T) are accepted and one-hot
        encoded (a language model's next tokens).
      a: the network output (an array or a ``jax.ShapeDtypeStruct``).
      cost_name: the cost, for messages.
    """
    if not hasattr(y, "dtype"):
        y = np.asarray(y)
    if not (jnp.issubdtype(y.dtype, jnp.number) or y.dtype == jnp.bool_):
        raise TypeError(f"y must be a numeric array shaped like the network output "
                        f"{tuple(a.shape)}, received dtype {y.dtype}. Pass the targets as "
                        f"numbers.")
    if (cost_name == "softmax_cross_entropy" and jnp.issubdtype(y.dtype, jnp.integer)
            and a.ndim == 3 and tuple(y.shape) == tuple(a.shape[:-1])):
        y = jax.nn.one_hot(y, a.shape[-1], dtype=a.dtype)  # next-token ids (batch, T) → one-hot
    if tuple(y.shape) != tuple(a.shape):
        hint = ""
        if a.ndim == 2 and y.ndim == 3 and (y.shape[0], y.shape[2]) == tuple(a.shape):
            hint = (" The network scores only the last time step (output='last'): give y for that "
                    "step, or build the model with output='all' to score every step.")
        elif a.ndim == 3 and y.ndim == 2 and tuple(y.shape) == (a.shape[0], a.shape[2]):
            hint = (f" The network scores every time step (output='all'): y needs the time axis "
                    f"(batch, T = {a.shape[1]}, {a.shape[2]}), or build the model with "
                    f"output='last' to score only the last step.")
        elif a.ndim == 3 and y.ndim == 3 and y.shape[1] != a.shape[1]:
            hint = f" y has {y.shape[1]} time steps but x has T = {a.shape[1]}."
        elif y.ndim == a.ndim - 1 and tuple(y.shape) == tuple(a.shape[:-1]):
            hint = (f" If y holds class labels, one-hot encode them: "
                    f"jax.nn.one_hot(y, {a.shape[-1]}).")
        raise ValueError(
            f"y must have the shape of the network output {tuple(a.shape)} for cost "
            f"{cost_name!r}, received shape {tuple(y.shape)}.{hint}"
        )
    if not (jnp.issubdtype(y.dtype, jnp.floating) or jnp.issubdtype(y.dtype, jnp.integer)
            or y.dtype == jnp.bool_):
        raise TypeError(f"y must be numeric, received dtype {y.dtype}.")
    require_target_values(y, cost_name)
    return y.astype(a.dtype)


def is_concrete(value) -> bool:
    """True for an array with values (not a tracer under ``jit``/``grad``/``vmap``)."""
    return not isinstance(value, jax.core.Tracer)


def _first_bad(bad: np.ndarray):
    return tuple(int(i) for i in np.argwhere(bad)[0])


def require_finite(tree, argument: str, *, fix: str = ""):
    """Raise ``ValueError`` naming the first non-finite element of any floating leaf of
    ``tree`` (NaN or ±inf). Only concrete arrays are inspected (tracers under ``jit`` pass
    untouched), so inside compiled code this costs nothing.

    Args:
      tree: an array or a pytree of arrays.
      argument: its name in messages (the leaf's path is appended).
      fix: how to correct it.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    for path, leaf in flat:
        if not is_concrete(leaf) or not hasattr(leaf, "dtype") or \
                not jnp.issubdtype(leaf.dtype, jnp.inexact):
            continue
        a = np.asarray(leaf)  # on the host: a concrete array may be closed over inside a jit
        if np.all(np.isfinite(a)):
            continue
        idx = _first_bad(~np.isfinite(a)) if a.ndim else ()
        value = a[idx] if a.ndim else a
        name = argument + jax.tree_util.keystr(path)
        raise ValueError(f"{name} must be finite, received {value} at index {idx} "
                         f"({int(np.sum(~np.isfinite(a)))} non-finite of {a.size}). "
                         + (fix or "Remove or replace the non-finite values (e.g. "
                                   "np.nan_to_num), or find where they were produced."))


# What each cost's targets must be: per cost, (test on a NumPy array → bad entries, expected, fix).
_IN_01 = (lambda y: (y < 0) | (y > 1))
_TARGETS = {
    "softmax_cross_entropy": (
        [_IN_01, lambda y: np.abs(np.sum(y, -1, keepdims=True) - 1) > 1e-3],
        "rows of probabilities (entries in [0, 1] summing to 1, e.g. one-hot)",
        "One-hot encode class labels with jax.nn.one_hot(labels, n_classes)."),
    "sigmoid_cross_entropy": (
        [_IN_01], "entries in [0, 1] (one 0/1 label per output, or a probability)",
        "Use 0/1 labels per output."),
    "logistic": (
        [lambda y: (y != -1) & (y != 1)], "labels −1 or +1",
        "Map 0/1 labels to ±1 with y = 2 * labels - 1."),
}


def require_target_values(y, cost_name: str):
    """Check the values of concrete targets ``y`` for the cost ``cost_name``: probability rows
    for softmax cross-entropy, [0, 1] entries for sigmoid cross-entropy, ±1 for the logistic
    loss; finite for every cost. Tracers (under ``jit``) pass untouched.

    Raises:
      ValueError: naming the first bad entry, the expected values and the fix.
    """
    if not is_concrete(y):
        return
    require_finite(y, "y")
    rule = _TARGETS.get(cost_name)
    if rule is None:
        return
    tests, expected, fix = rule
    a = np.asarray(y, np.float64)
    for test in tests:
        bad = np.broadcast_to(test(a), a.shape)
        if not bad.any():
            continue
        idx = _first_bad(bad)
        row = a[idx[:-1]] if a.ndim > 1 else a
        raise ValueError(f"y for cost {cost_name!r} must hold {expected}, received "
                         f"{a[idx]:g} at index {idx} (row {np.array2string(row, precision=3)}, "
                         f"sum {np.sum(row):g}). {fix}")


def require_mask(mask, batch: int):
    """Check the example weights ``mask`` of a batch of ``batch`` examples; return it as an array.

    Its shape and dtype are checked at trace time; its values (finite, ≥ 0, not all 0) only for
    a concrete array, never under ``jit``.

    Args:
      mask: ``None``, or (batch,) weights: 1 for an example, 0 for padding.
      batch: the batch size of x.

    Returns:
      ``None`` or the mask as an array.

    Raises:
      TypeError: a mask that is not a real-valued array.
      ValueError: a mask of another shape (it would broadcast and scale the loss), or holding
        NaN/inf, a negative weight, or only zeros (the mean over no example is 0/0 = NaN).
    """
    if mask is None:
        return None
    if not hasattr(mask, "dtype"):
        mask = np.asarray(mask)
    if not (jnp.issubdtype(mask.dtype, jnp.floating) or jnp.issubdtype(mask.dtype, jnp.integer)
            or mask.dtype == jnp.bool_):
        raise TypeError(f"mask must be a real array of per-example weights (1 for an example, 0 "
                        f"for padding), received dtype {mask.dtype}.")
    if tuple(mask.shape) != (batch,):
        raise ValueError(f"mask must have shape ({batch},), one weight per example of x, received "
                         f"shape {tuple(mask.shape)}. Fix: pass a 1-D mask, e.g. "
                         f"mask.reshape({batch}) (another shape would broadcast and scale J).")
    if is_concrete(mask):
        m = np.asarray(mask, np.float64)
        require_finite(m, "mask", fix="Use 1 for an example and 0 for padding.")
        if np.any(m < 0):
            raise ValueError(f"mask must hold weights ≥ 0 (1 for an example, 0 for padding), "
                             f"received {m[np.argmax(m < 0)]:g} at index {int(np.argmax(m < 0))}. "
                             f"Fix: use 0 to leave an example out.")
        if not np.any(m > 0):
            raise ValueError(f"mask must keep at least one example, received {batch} zeros (J "
                             f"would be 0/0 = NaN). Fix: set the mask of the real examples to 1, "
                             f"or pass mask=None to count every example.")
    return mask


def require_tree_like(got, expected, *, what: str, fix: str):
    """Raise ``TypeError`` when ``got`` and ``expected`` differ in pytree structure, and
    ``ValueError`` when a leaf differs in shape; the message shows both.

    ``what`` names the tree: a plain name such as ``"params"`` is followed directly by the leaf's
    path (``params['W']``); a phrase (containing a space) gets ``", leaf ['W'],"``."""
    got_def, exp_def = jax.tree.structure(got), jax.tree.structure(expected)
    if got_def != exp_def:
        raise TypeError(f"{what} has the wrong pytree structure.\n  expected: {exp_def}\n"
                        f"  received: {got_def}\n{fix}")
    got_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
    exp_leaves = jax.tree.leaves(expected)
    for (path, g), e in zip(got_leaves, exp_leaves):
        if tuple(jnp.shape(g)) != tuple(jnp.shape(e)):
            key = jax.tree_util.keystr(path)
            leaf = f"{what}, leaf {key}," if " " in what else f"{what}{key}"
            raise ValueError(f"{leaf} has shape {tuple(jnp.shape(g))}, "
                             f"expected {tuple(jnp.shape(e))}. {fix}")


@functools.lru_cache(maxsize=256)
def _param_spec(net):
    return jax.eval_shape(net.init, jax.random.PRNGKey(0))


def require_params(net, params):
    """Check that ``params`` has the structure, leaf shapes and floating dtypes of
    ``net.init(key)``, and (concrete arrays only) finite values."""
    spec = _param_spec(net)
    require_tree_like(params, spec, what="params",
                      fix="Build parameters with net.init(key), or keep the structure it returns.")
    for (path, leaf), e in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                               jax.tree.leaves(spec)):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(e.dtype, jnp.floating) and not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"params{jax.tree_util.keystr(path)} must be floating point, "
                            f"received dtype {dtype}: gradients of integer parameters are "
                            f"meaningless. Convert them, e.g. jax.tree.map(lambda a: a.astype(jnp.float32), params).")
    require_finite(params, "params")
