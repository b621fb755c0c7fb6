"""Helpers shared by the tests (nothing here ships in the package)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def plain_loop(net, cost, x, y, opt, batch_size: int, epochs: int, seed: int):
    """The trainer's minibatch mode as a plain Python loop on ``jax.grad``: each epoch shuffles
    with the next split of the run's key, then steps through subsets of ``batch_size`` (the last
    one the remainder). Returns the final parameters."""
    grad = jax.grad(fb.loss_fn(net, cost))

    @jax.jit
    def step(params, state, x, y):
        updates, state = opt.update(grad(params, x, y), state, params)
        return optax.apply_updates(params, updates), state

    x, y = jnp.asarray(x), jnp.asarray(y)
    init_key, key = jax.random.split(jax.random.PRNGKey(seed))
    params = net.init(init_key)
    state = opt.init(params)
    for _ in range(epochs):
        key, epoch_key = jax.random.split(key)
        perm = np.asarray(jax.random.permutation(epoch_key, len(x)))
        for start in range(0, len(x), batch_size):
            idx = perm[start:start + batch_size]
            params, state = step(params, state, x[idx], y[idx])
    return params


def saved_epochs(out) -> list:
    """The epochs with a complete (listed by orbax) checkpoint in the run directory ``out``,
    oldest first, whether or not each one verifies. Read-only."""
    import pathlib

    import orbax.checkpoint as ocp

    path = pathlib.Path(out).absolute() / "checkpoints"
    if not path.is_dir():
        return []
    manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True,
                                                                                create=False))
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()
