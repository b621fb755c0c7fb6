"""Speed guard: jitted hand-written gradient vs jitted jax.grad on a few MLP sizes.

Times both sides in the same run, alternating calls one by one, and prints the median of
>= 30 calls after warm-up for each, and the ratio jax.grad time / manual time (>= 0.95 means
the hand-written path is not slower). Run:  python scripts/bench_mlp.py [--repeats N] [--json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import fbackprop as fb

SIZES = [
    # (name, layer widths, batch)
    ("small", (64, 128, 10), 128),
    ("medium", (784, 512, 256, 10), 256),
    ("deep", (256, 256, 256, 256, 256, 10), 512),
    ("wide", (1024, 2048, 10), 1024),
]


def time_pair(f, g, args, repeats):
    """Median seconds of ``f(*args)`` and ``g(*args)``, calls alternated one by one so that
    machine noise hits both sides alike; compile and first runs stay out of the numbers."""
    for fn in (f, g, f, g):
        jax.block_until_ready(fn(*args))
    tf, tg = [], []
    for _ in range(repeats):
        for fn, times in ((f, tf), (g, tg)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - t0)
    return statistics.median(tf), statistics.median(tg)


def bench(repeats: int = 30, cost: str = "softmax_cross_entropy", activation: str = "relu"):
    rows = []
    for name, sizes, batch in SIZES:
        net = fb.mlp(sizes, activation, output_activation="identity")
        params = net.init(jax.random.PRNGKey(0))
        kx, ky = jax.random.split(jax.random.PRNGKey(1))
        x = jax.random.normal(kx, (batch, sizes[0]), jnp.float32)
        y = jax.nn.one_hot(jax.random.randint(ky, (batch,), 0, sizes[-1]), sizes[-1])
        manual = jax.jit(fb.manual_grad(net, cost))
        auto = jax.jit(jax.grad(fb.loss_fn(net, cost)))
        m, a = time_pair(manual, auto, (params, x, y), repeats)
        rows.append({"model": name, "sizes": list(sizes), "batch": batch, "calls": repeats,
                     "manual_ms": m * 1e3, "autodiff_ms": a * 1e3, "ratio": a / m})
    return rows


def report(rows, columns, as_json: bool = False):
    """Print ``rows`` as JSON or as a table whose leading ``columns`` are (header, width, row ↦
    text), followed by the timing columns every benchmark shares."""
    if as_json:
        print(json.dumps({"device": str(jax.devices()[0]), "jax": jax.__version__, "rows": rows}))
        return
    print(f"device: {jax.devices()[0]}  jax {jax.__version__}  python {platform.python_version()}")
    print(" ".join(f"{h:{w}}" for h, w, _ in columns)
          + f" {'batch':>5} {'manual ms':>10} {'jax.grad ms':>12} {'ratio':>6}")
    for r in rows:
        print(" ".join(f"{text(r):{w}}" for _, w, text in columns)
              + f" {r['batch']:5d} {r['manual_ms']:10.3f} {r['autodiff_ms']:12.3f}"
              + f" {r['ratio']:6.2f}")
    print("ratio = jax.grad time / manual time (median); >= 0.95 means manual is not slower")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=100, help="timed calls per side (>= 30)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    report(bench(args.repeats), [("model", 8, lambda r: r["model"]),
                                 ("sizes", 26, lambda r: str(tuple(r["sizes"])))], args.json)


if __name__ == "__main__":
    main()
