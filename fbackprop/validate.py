"""Input checks shared by the public functions.

Every check runs on shapes and dtypes only, so it costs nothing under ``jax.jit`` (it runs once,
at trace time). A failed check raises ``TypeError`` or ``ValueError`` saying what was expected,
what was received and how to fix it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["as_float_input", "check_params", "check_target", "check_tree_like", "lookup"]


def _shape_str(shape) -> str:
    return "(" + ", ".join("batch" if s == "batch" else ("T" if s is None else str(s))
                           for s in shape) + ("," if len(shape) == 1 else "") + ")"


def as_float_input(x, input_shape=None, *, argument: str = "x"):
    """Return ``x`` as an array after checking dtype, batch axis and per-example shape.

    ``input_shape`` is the shape of one example (``None`` entries match any size, e.g. the
    time axis of a sequence); ``None`` skips the shape check.
    """
    if not hasattr(x, "dtype"):
        try:
            x = jnp.asarray(x)
        except TypeError as err:
            raise TypeError(f"{argument} must be an array of floats, received "
                            f"{type(x).__name__}.") from err
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{argument} must be a floating-point array, received dtype {x.dtype}. "
            f"Convert it first, e.g. {argument}.astype(jnp.float32) (or float64 for checks)."
        )
    if input_shape is None:
        if x.ndim < 1:
            raise ValueError(f"{argument} needs a leading batch axis, received a scalar.")
        return x
    expected = ("batch", *input_shape)
    if x.ndim != len(expected):
        hint = (f" For a single example use {argument}[None]."
                if x.ndim == len(input_shape) else "")
        raise ValueError(
            f"{argument} must have shape {_shape_str(expected)}, received shape {tuple(x.shape)}."
            + hint
        )
    for axis, (want, got) in enumerate(zip(input_shape, x.shape[1:]), start=1):
        if want is not None and want != got:
            what = ("width" if axis == x.ndim - 1 else "channel count (axis 1)" if axis == 1
                    else f"size along axis {axis}")  # axis 1 is the channel axis (channel-first)
            raise ValueError(
                f"{argument} has {what} {got}, but the network expects {want}: received shape "
                f"{tuple(x.shape)}, expected {_shape_str(expected)}."
            )
    return x


def check_target(y, a, *, cost_name: str):
    """Check the target ``y`` against the network output ``a``; return it in ``a``'s dtype."""
    if not hasattr(y, "dtype"):
        y = jnp.asarray(y)
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
    return y.astype(a.dtype)


def check_tree_like(got, expected, *, what: str, fix: str):
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


def check_params(net, params):
    """Check that ``params`` has the structure and leaf shapes of ``net.init(key)``."""
    check_tree_like(params, _param_spec(net), what="params",
                    fix="Build parameters with net.init(key), or keep the structure it returns.")


def lookup(value, registry: dict, cls: type, *, argument: str, example: str, build_hint: str):
    """Resolve ``value`` — a name in ``registry`` or an instance of ``cls`` — or raise an error
    naming the bad value and listing the valid names."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        if value in registry:
            return registry[value]
        raise ValueError(f"unknown {argument} {value!r}; valid names are "
                         f"{', '.join(repr(k) for k in registry)} ({build_hint}).")
    raise TypeError(f"{argument} must be a name such as {example!r} or an fbackprop.{cls.__name__}, "
                    f"received {type(value).__name__}: {value!r}.")
