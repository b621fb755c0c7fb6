"""Speed of the compiled-epoch trainer against a per-step jitted Python loop.

Both sides train the same network on the same data with the same optimizer, shuffle, and steps,
and evaluate train and test accuracy once per epoch:

* compiled epoch: the trainer's own epoch function, one jitted call per epoch (shuffle,
  ``lax.scan`` over the minibatches, remainder step, evaluation) — it also checks every step for
  non-finite values, which the loop does not;
* per-step loop: a jitted step (gradient + optax update) called from Python once per minibatch,
  the batch gathered on the device by a jitted index, plus a jitted evaluation per epoch.

Compilation stays out of the numbers (one warm-up epoch each); epochs are alternated one by one
so that machine noise hits both alike; the median epoch time gives samples/s, and the ratio is
loop time / compiled time (> 1: the compiled epoch is faster).
Run:  python scripts/bench_train.py [--epochs N] [--json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fbackprop as fb
from fbackprop import training
from fbackprop.training import epoch as training_epoch

CASES = [
    # (name, data, mode, batch size, hidden)
    ("digits minibatch", "digits", "minibatch", 32, (64,)),
    ("digits online", "digits", "online", 1, (64,)),
    ("mnist1d minibatch", "mnist1d", "minibatch", 100, (100, 100)),
]


def _setup(data, mode, batch, hidden):
    ds = fb.data.load(data)
    net = training.build_model("mlp", ds, hidden)
    cost = fb.get_cost(training.COST_FOR_TASK[ds.task])
    arrays = {"x_train": training.shape_inputs(ds.x_train, net.input_shape),
              "y_train": training.targets(ds, ds.y_train),
              "x_test": training.shape_inputs(ds.x_test, net.input_shape),
              "y_test": training.targets(ds, ds.y_test)}
    arrays = {k: jax.device_put(np.asarray(v, np.float32)) for k, v in arrays.items()}
    setup = training_epoch.EpochSetup(net, cost, "adam", 1e-3, None, len(ds.x_train), batch,
                                      "manual", 1, 1e-4, ds.task)
    return setup, arrays


def compiled_epoch(setup, arrays):
    epoch = jax.jit(training_epoch.epoch_function(setup))

    def run(params, opt_state, key, index):
        params, opt_state, metrics, _ = epoch(params, opt_state, key, index, arrays)
        return params, opt_state, metrics

    return run


def per_step_loop(setup, arrays):
    value_and_grad = training_epoch.gradient_source(setup.net, setup.cost, "manual")
    evaluate = fb.loss_fn(setup.net, setup.cost)
    optimizer = setup.make_optimizer()

    @jax.jit
    def step(params, opt_state, idx):
        x, y = arrays["x_train"][idx], arrays["y_train"][idx]
        loss, grads = value_and_grad(params, x, y, jnp.ones(idx.shape, jnp.float32))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluation(params):
        metrics = {"test_loss": evaluate(params, arrays["x_test"], arrays["y_test"])}
        for split in ("train", "test"):
            metrics[f"{split}_accuracy"] = training_epoch.accuracy(
                setup.task, setup.net.apply(params, arrays[f"x_{split}"]), arrays[f"y_{split}"])
        return metrics

    permutation = jax.jit(lambda key: jax.random.permutation(key, setup.n_train))
    B = setup.batch_size
    starts = range(0, setup.n_train, B)

    def run(params, opt_state, key, index):
        del index
        perm = permutation(key)
        batches = [perm[s:s + B] for s in starts]
        for idx in batches:
            params, opt_state, _ = step(params, opt_state, idx)
        return params, opt_state, evaluation(params)

    return run


def bench(epochs: int):
    rows = []
    for name, data, mode, batch, hidden in CASES:
        setup, arrays = _setup(data, mode, batch, hidden)
        params = setup.net.init(jax.random.PRNGKey(0))
        sides = {"compiled": compiled_epoch(setup, arrays), "loop": per_step_loop(setup, arrays)}
        state = {k: (params, setup.make_optimizer().init(params)) for k in sides}
        times = {k: [] for k in sides}
        key = jax.random.PRNGKey(1)
        for e in range(epochs + 1):  # epoch 0 compiles and warms up
            key, epoch_key = jax.random.split(key)
            for side, run in sides.items():
                t0 = time.perf_counter()
                p, o, metrics = run(*state[side], epoch_key, jnp.asarray(e, jnp.int32))
                jax.block_until_ready((p, metrics))
                if e:
                    times[side].append(time.perf_counter() - t0)
                state[side] = (p, o)
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree.leaves(state["compiled"][0]), jax.tree.leaves(state["loop"][0])))
        steps = -(-setup.n_train // batch)
        c, l = statistics.median(times["compiled"]), statistics.median(times["loop"])
        rows.append({"case": name, "n_train": setup.n_train, "batch": batch, "steps": steps,
                     "compiled_ms": c * 1e3, "loop_ms": l * 1e3,
                     "compiled_samples_s": setup.n_train / c, "loop_samples_s": setup.n_train / l,
                     "ratio": l / c, "max_param_difference": diff})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="timed epochs per side (after warm-up)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    rows = bench(args.epochs)
    if args.json:
        print(json.dumps({"device": str(jax.devices()[0]), "jax": jax.__version__, "rows": rows}))
        return
    print(f"device: {jax.devices()[0]}  jax {jax.__version__}  python {platform.python_version()}"
          f"  ({args.epochs} epochs per side, medians)")
    print(f"{'case':18} {'steps':>5} {'compiled ms':>11} {'loop ms':>9} {'compiled samples/s':>18} "
          f"{'loop samples/s':>14} {'ratio':>6} {'max |Δp|':>9}")
    for r in rows:
        print(f"{r['case']:18} {r['steps']:5d} {r['compiled_ms']:11.2f} {r['loop_ms']:9.2f} "
              f"{r['compiled_samples_s']:18,.0f} {r['loop_samples_s']:14,.0f} {r['ratio']:6.1f} "
              f"{r['max_param_difference']:9.1e}")
    print("ratio = per-step loop time / compiled epoch time (median per epoch); max |Δp| compares "
          "the parameters both sides reached")


if __name__ == "__main__":
    main()
