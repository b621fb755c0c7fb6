"""Helpers shared by the tests (nothing here ships in the package)."""
import jax

import fbackprop as fb
from fbackprop import suite


def both_grads(net, cost, *, jit: bool = True):
    """``f(params, x, y)`` → (hand-written gradient, ``jax.grad`` reference), as one program."""
    manual = fb.manual_grad(net, cost)
    reference = jax.grad(fb.loss_fn(net, cost))

    def f(params, x, y):
        return manual(params, x, y), reference(params, x, y)

    return jax.jit(f) if jit else f


def run_configs(configs, dtypes=("float64", "float32"), *, seed: int = 0) -> list:
    """One ``fbackprop check`` summary row per (configuration, dtype)."""
    return [suite.summary_row(cfg, dtype, report)
            for cfg, dtype, report in suite.check_configs(configs, dtypes, seed=seed)]
