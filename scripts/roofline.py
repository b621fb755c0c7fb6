"""The arithmetic floors of the benchmarked cases on this device.

Measures the device's float32 matmul rate (a large square product) and its memory bandwidth (a
large copy), then, for each case, its FLOPs per step (counted by XLA's cost analysis of the
compiled hand-written step) and the bytes it must at least touch (parameters, gradients and the
batch), and prints the floor = max(FLOPs / rate, bytes / bandwidth) beside the measured median
time of the compiled step. floor / measured says how close to the hardware the step runs.
Run:  python scripts/roofline.py [--repeats N] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import fbackprop as fb

COST = "softmax_cross_entropy"
CASES = [
    # (label, network, batch input shape)
    ("digits MLP 64-64-10, batch 32", lambda: fb.mlp((64, 64, 10), "relu", "identity"), (32, 64)),
    ("MLP 784-512-256-10, batch 256", lambda: fb.mlp((784, 512, 256, 10), "relu", "identity"),
     (256, 784)),
    ("MLP 1024-2048-10, batch 1024", lambda: fb.mlp((1024, 2048, 10), "relu", "identity"),
     (1024, 1024)),
    ("CNN 1x28x28 conv 16-32 k5, batch 128",
     lambda: fb.cnn((1, 28, 28), conv_channels=(16, 32), kernel_size=5, pool_size=2, pool="max",
                    hidden=(128,), n_out=10, activation="relu"), (128, 1, 28, 28)),
    ("RNN n_in 32 H 256 T 100, batch 64", lambda: fb.rnn(32, 256, 10), (64, 100, 32)),
    ("LSTM n_in 32 H 128 T 100, batch 64", lambda: fb.lstm(32, 128, 10), (64, 100, 32)),
]


def median_time(f, *args, repeats, warmup=1):
    """Median seconds of ``f(*args)`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def device_rates(repeats: int):
    """(matmul FLOP/s, copy bytes/s), float32."""
    n = 2048
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    rate = 2 * n ** 3 / median_time(mm, a, repeats=repeats)
    big = jnp.ones((64 * 2 ** 20,), jnp.float32)  # 256 MiB
    copy = jax.jit(lambda x: x * 1.0001)
    bandwidth = 2 * big.nbytes / median_time(copy, big, repeats=repeats)  # read + write
    return rate, bandwidth


def case_row(label, make, shape, rate, bandwidth, repeats):
    net = make()
    params = net.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float32)
    out = jax.eval_shape(net.apply, params, x)
    y = jax.nn.one_hot(jnp.zeros(out.shape[:-1], jnp.int32), out.shape[-1])
    step = jax.jit(fb.manual_grad(net, COST))
    compiled = step.lower(params, x, y).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    flops = float(analysis.get("flops", 0.0))
    param_bytes = sum(np.asarray(p).nbytes for p in jax.tree.leaves(params))
    min_bytes = 2 * param_bytes + x.nbytes + y.nbytes  # read params, write grads, read batch
    floor = max(flops / rate, min_bytes / bandwidth)
    measured = median_time(step, params, x, y, repeats=repeats)
    return {"case": label, "gflop": flops / 1e9, "mbytes": min_bytes / 1e6,
            "floor_ms": floor * 1e3, "measured_ms": measured * 1e3,
            "floor_over_measured": floor / measured}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rate, bandwidth = device_rates(args.repeats)
    rows = [case_row(*c, rate, bandwidth, args.repeats) for c in CASES]
    if args.json:
        print(json.dumps({"device": str(jax.devices()[0]), "matmul_flops": rate,
                          "bandwidth": bandwidth, "rows": rows}))
        return
    print(f"device {jax.devices()[0]}: float32 matmul {rate / 1e9:.1f} GFLOP/s, copy "
          f"{bandwidth / 1e9:.1f} GB/s")
    print(f"{'hand-written gradient step':40} {'GFLOP':>8} {'MB':>8} {'floor ms':>9} "
          f"{'measured ms':>12} {'floor/meas':>10}")
    for r in rows:
        print(f"{r['case']:40} {r['gflop']:8.3f} {r['mbytes']:8.2f} {r['floor_ms']:9.3f} "
              f"{r['measured_ms']:12.3f} {r['floor_over_measured']:10.2f}")


if __name__ == "__main__":
    main()
