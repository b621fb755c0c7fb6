"""Verification of the hand-written rules against ``jax.grad``: error measures, reproducible
sample points and the built-in configurations (per-layer checks are :mod:`fbackprop.checker`).

Error measure: for each parameter leaf, the normwise relative error
``max|manual − reference| / max|reference|`` (the absolute error when the reference is all
zeros); a configuration's error is the largest over its leaves. Tolerances: ``1e-10`` in float64
and ``1e-4`` in float32, the latter computed under ``jax.default_matmul_precision("highest")`` so
that TF32 matmuls on GPUs do not cause false failures.

Sample points are random but reproducible (NumPy generator seeded by ``seed``): parameters shaped
like the network's, with nonzero biases; inputs standard normal; targets drawn to suit the cost.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .costs import get_cost
from .network import Network, loss_fn, manual_grad, mlp

__all__ = ["TOLERANCE", "error_stats", "relative_error", "tree_relative_error", "sample_point",
           "sample_target", "sample_params", "both_grads", "Config", "builtin_configs",
           "run_configs"]

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def _dtype_name(dtype) -> str:
    name = jnp.dtype(dtype).name
    if name not in TOLERANCE:
        raise ValueError(f"dtype must be one of {sorted(TOLERANCE)}, received {name!r}.")
    return name


@contextlib.contextmanager
def precision_for(dtype):
    """float64 enabled for float64 checks; highest matmul precision for float32 ones."""
    with contextlib.ExitStack() as stack:
        if _dtype_name(dtype) == "float64":
            stack.enter_context(jax.enable_x64(True))
        stack.enter_context(jax.default_matmul_precision("highest"))
        yield


def error_stats(got, ref) -> tuple[float, float, tuple]:
    """``(max|got − ref|, max|got − ref| / max|ref|, index of the worst element)``.

    The relative error is normwise: the largest absolute difference over the largest reference
    magnitude (the absolute error when ``ref`` is all zeros), so that elements of ``ref`` near zero
    do not inflate it. A NaN in ``got`` counts as an infinitely wrong element."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ref.size == 0:
        return 0.0, 0.0, ()
    diff = np.abs(got - ref)
    diff = np.where(np.isnan(diff), np.inf, diff)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    err, scale = float(diff[worst]), float(np.max(np.abs(ref)))
    return err, (err / scale if scale > 0 else err), tuple(int(i) for i in worst)


def relative_error(got, ref) -> float:
    """``max|got − ref| / max|ref|`` (absolute error if ``ref`` is all zeros)."""
    return error_stats(got, ref)[1]


def tree_relative_error(got, ref) -> float:
    """Largest :func:`relative_error` over corresponding leaves of two pytrees."""
    if jax.tree.structure(got) != jax.tree.structure(ref):
        raise TypeError(f"cannot compare pytrees of different structure:\n  "
                        f"{jax.tree.structure(got)}\n  {jax.tree.structure(ref)}")
    return max((relative_error(g, r) for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref))),
               default=0.0)


def sample_target(cost, rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """A target suited to ``cost``: one-hot for softmax CE, {0,1} for sigmoid CE, ±1 for the
    logistic loss, uniform [0, 1) for squared errors."""
    name = get_cost(cost).name
    if name == "softmax_cross_entropy":
        return np.eye(shape[-1], dtype=dtype)[rng.integers(0, shape[-1], shape[:-1])]
    if name == "sigmoid_cross_entropy":
        return rng.integers(0, 2, shape).astype(dtype)
    if name == "logistic":
        return np.where(rng.integers(0, 2, shape) == 1, 1.0, -1.0).astype(dtype)
    return rng.uniform(size=shape).astype(dtype)


def sample_params(net: Network, rng: np.random.Generator, dtype):
    """Random parameters shaped like ``net.init``'s: arrays of rank ≥ 2 (weights, kernels) are
    N(0, 1/fan-in) with fan-in the product of all but the first axis; vectors (biases) N(0, 0.1²).
    Drawn with NumPy so that no XLA compilation is spent on sampling."""
    spec = jax.eval_shape(net.init, jax.random.PRNGKey(0))

    def draw(leaf):
        shape = tuple(leaf.shape)
        if len(shape) >= 2:
            scale = 1.0 / math.sqrt(math.prod(shape[1:]))
        else:
            scale = 0.1
        return jnp.asarray((scale * rng.standard_normal(shape)).astype(dtype))

    return jax.tree.map(draw, spec)


def sample_point(net: Network, cost, batch: int, *, seed: int = 0, dtype="float64",
                 input_shape=None):
    """Reproducible (params, x, y) for checking ``net`` with ``cost``: parameters from
    :func:`sample_params`, x standard normal, y from :func:`sample_target`.

    ``input_shape`` (one example's shape) defaults to ``net.input_shape``; it must be concrete.
    """
    shape = tuple(input_shape if input_shape is not None else net.input_shape or ())
    if not shape or any(s is None for s in shape):
        raise ValueError(f"sample_point needs a concrete input_shape for {net!r}, got {shape!r}.")
    dtype = np.dtype(_dtype_name(dtype))
    rng = np.random.default_rng(seed)
    params = sample_params(net, rng, dtype)
    x = jnp.asarray(rng.standard_normal((batch, *shape)).astype(dtype))
    out = jax.eval_shape(net.apply, params, x)
    y = jnp.asarray(sample_target(cost, rng, tuple(out.shape), dtype))
    return params, x, y


def both_grads(net: Network, cost, *, jit: bool = True):
    """``f(params, x, y)`` → (manual gradient, ``jax.grad`` reference), compiled as one program."""
    manual = manual_grad(net, cost)
    reference = jax.grad(loss_fn(net, cost))

    def f(params, x, y):
        return manual(params, x, y), reference(params, x, y)

    return jax.jit(f) if jit else f


class Config(NamedTuple):
    """One built-in configuration checked by ``fbackprop check``."""

    model: str          # family, e.g. "mlp"
    label: str          # architecture, e.g. "mlp(5-7-4-3, tanh/identity)"
    activation: str
    cost: str
    make: Callable      # () -> Network
    batch: int = 4
    input_shape: tuple | None = None  # one example's shape when the network's has None (any T)


def builtin_configs() -> list[Config]:
    """MLPs: every activation × every cost, depths 1–4 with differing widths, bias on and off."""
    configs = []
    shapes = [(5, 7, 4, 3), (3, 2), (6, 5, 4, 3, 2)]
    for act in ("sigmoid", "tanh", "relu", "identity"):
        for i, cost in enumerate(("mse", "sse", "sigmoid_cross_entropy", "softmax_cross_entropy",
                                  "logistic")):
            sizes = shapes[i % len(shapes)]
            out = act if cost in ("mse", "sse") else "identity"
            bias = (i + len(act)) % 3 != 0

            def make(sizes=sizes, act=act, out=out, bias=bias):
                return mlp(sizes, act, out, bias=bias)

            configs.append(Config("mlp", make().name, act, cost, make, batch=1 + ((i + 1) % 2) * 4))
    configs.append(Config("mlp", mlp((4, 6, 3), "tanh", "softmax").name, "tanh", "mse",
                          lambda: mlp((4, 6, 3), "tanh", "softmax")))
    from .models import model_configs  # CNN, RNN and LSTM rows (issue 3)
    configs += model_configs()
    return configs


def run_configs(configs, dtypes=("float64", "float32"), *, seed: int = 0) -> list[dict]:
    """Verify each configuration in each dtype; one result row per (configuration, dtype):
    :func:`fbackprop.checker.summary_row` of :func:`fbackprop.check` (per layer and whole)."""
    from .checker import check_configs, summary_row  # the checker builds on this module

    return [summary_row(cfg, dtype, report)
            for cfg, dtype, report in check_configs(configs, dtypes, seed=seed)]
