"""Speed guard for the CNN, RNN, LSTM, GRU and transformer: jitted hand-written gradient vs
jitted jax.grad.

Same method as bench_mlp.py (whose timing helper it imports): both sides compiled, calls
alternated one by one, median of the timed calls after warm-up, ratio = jax.grad time / manual
time (>= 0.95 means the hand-written path is not slower). Two sizes per model, one run, float32.
The transformer rows are one pre-layer-norm block with its embeddings and head, on token ids.
Run:  python scripts/bench_models.py [--repeats N] [--json] [--only cnn,rnn,lstm,gru,transformer]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_mlp import report, time_pair  # noqa: E402  (the shared timing and table)

import fbackprop as fb  # noqa: E402

COST = "softmax_cross_entropy"
SIZES = [
    # (model, size label, constructor, x shape incl. batch, what the size means)
    ("cnn", "small", lambda: fb.cnn((1, 16, 16), conv_channels=(8,), kernel_size=3, pool_size=2,
                                    hidden=(32,), n_out=10, activation="relu"),
     (64, 1, 16, 16), "1x16x16, conv 8 k3, mean pool 2, hidden 32"),
    ("cnn", "large", lambda: fb.cnn((1, 28, 28), conv_channels=(16, 32), kernel_size=5,
                                    pool_size=2, pool="max", hidden=(128,), n_out=10,
                                    activation="relu"),
     (128, 1, 28, 28), "1x28x28, conv 16-32 k5, max pool 2, hidden 128"),
    ("rnn", "small", lambda: fb.rnn(8, 64, 10), (32, 20, 8), "n_in 8, H 64, T 20"),
    ("rnn", "large", lambda: fb.rnn(32, 256, 10), (64, 100, 32), "n_in 32, H 256, T 100"),
    ("lstm", "small", lambda: fb.lstm(8, 32, 10), (32, 20, 8), "n_in 8, H 32, T 20"),
    ("lstm", "large", lambda: fb.lstm(32, 128, 10), (64, 100, 32), "n_in 32, H 128, T 100"),
    ("gru", "small", lambda: fb.gru(8, 64, 10), (32, 20, 8), "n_in 8, H 64, T 20"),
    ("gru", "large", lambda: fb.gru(32, 256, 10), (64, 100, 32), "n_in 32, H 256, T 100"),
    ("transformer", "small", lambda: fb.transformer(64, 32, 4, 1, 16), (16, 16),
     "1 block, V 64, D 32, 4 heads, T 16"),
    ("transformer", "large", lambda: fb.transformer(256, 128, 4, 1, 64), (16, 64),
     "1 block, V 256, D 128, 4 heads, T 64"),
]


def batch(net, x_shape, key):
    """A random input batch of ``x_shape`` for ``net`` (token ids for a transformer) and one-hot
    targets for its output width."""
    n_out = net.layers[-1].init(jax.random.PRNGKey(0))["b"].shape[0]
    kx, ky = jax.random.split(key)
    if net.input_vocab is None:
        x = jax.random.normal(kx, x_shape, jnp.float32)
        y = jax.nn.one_hot(jax.random.randint(ky, (x_shape[0],), 0, n_out), n_out)
    else:  # token ids in, next-token one-hot targets at every position
        x = jax.random.randint(kx, x_shape, 0, net.input_vocab)
        y = jax.nn.one_hot(jax.random.randint(ky, x_shape, 0, n_out), n_out)
    return x, y


def bench(repeats: int = 100, only=None):
    """Time every row of SIZES (or the models named in ``only``); one dict per row."""
    rows = []
    for model, size, make, x_shape, desc in SIZES:
        if only and model not in only:
            continue
        net = make()
        params = net.init(jax.random.PRNGKey(0))
        x, y = batch(net, x_shape, jax.random.PRNGKey(1))
        manual = jax.jit(fb.manual_grad(net, COST))
        auto = jax.jit(jax.grad(fb.loss_fn(net, COST)))
        m, a = time_pair(manual, auto, (params, x, y), repeats)
        rows.append({"model": model, "size": size, "shape": desc, "batch": x_shape[0],
                     "calls": repeats, "manual_ms": m * 1e3, "autodiff_ms": a * 1e3,
                     "ratio": a / m})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=100, help="timed calls per side (>= 30)")
    ap.add_argument("--only", default="",
                    help="comma-separated subset of cnn,rnn,lstm,gru,transformer")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    rows = bench(args.repeats, [s for s in args.only.split(",") if s])
    report(rows, [("model", 5, lambda r: r["model"]), ("size", 6, lambda r: r["size"]),
                  ("shape", 47, lambda r: r["shape"])], args.json)


if __name__ == "__main__":
    main()
