"""Memory of one training step, hand-written rules vs jax.grad, from XLA's compiled memory analysis.

For each model family at a small and a large size (the transformer at three), one jitted training
step — gradient, then an optax Adam update of the parameters — is lowered and compiled twice: once
with ``fb.manual_grad`` (the hand-written rules) and once with ``jax.grad`` of the same loss, and
so is the gradient function alone. XLA's ``memory_analysis()`` of each compiled program gives the
bytes of its temporary buffers (activations, deltas and workspace kept alive), of its arguments and
of its outputs. Nothing is executed: the table is exact for the compiler that built it.

Goal: hand-written ≤ autodiff in temporary bytes on every row (argument and output bytes are the
parameters, optimizer state and batch, the same on both sides). The rows that miss are explained in
docs/PERFORMANCE.md.

Run:  python scripts/bench_memory.py [--only mlp,cnn,...] [--json] [--smoke]
``--smoke`` builds every row at tiny sizes (the test suite runs it so).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys

import jax
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_models import SIZES as MODEL_SIZES  # noqa: E402  (scripts/ is not a package)
from bench_models import batch  # noqa: E402
from roofline import median_time  # noqa: E402

import fbackprop as fb  # noqa: E402

COST = "softmax_cross_entropy"

# (model, size label, constructor, x shape incl. batch, what the size means): bench_models.py's
# rows (its one-block "large" transformer aside), two MLPs, and two deeper transformers
MLP_SIZES = [
    ("mlp", "small", lambda: fb.mlp((64, 64, 10), "relu", "identity"), (32, 64),
     "64-64-10"),
    ("mlp", "large", lambda: fb.mlp((1024, 2048, 2048, 10), "relu", "identity"), (256, 1024),
     "1024-2048-2048-10"),
]
DEEP_TRANSFORMERS = [
    ("transformer", "medium", lambda: fb.transformer(256, 128, 4, 2, 64), (16, 64),
     "2 blocks, V 256, D 128, 4 heads, T 64"),
    ("transformer", "large", lambda: fb.transformer(512, 256, 8, 4, 128), (8, 128),
     "4 blocks, V 512, D 256, 8 heads, T 128"),
]
SIZES = (MLP_SIZES + [r for r in MODEL_SIZES if (r[0], r[1]) != ("transformer", "large")]
         + DEEP_TRANSFORMERS)

# --smoke: the same families at tiny sizes, so that the test suite builds every row in seconds
SMOKE = [
    ("mlp", "tiny", lambda: fb.mlp((4, 8, 3), "relu", "identity"), (4, 4), "4-8-3"),
    ("cnn", "tiny", lambda: fb.cnn((1, 8), conv_channels=(2,), kernel_size=3, pool_size=2,
                                   hidden=(4,), n_out=3, activation="relu"), (4, 1, 8), "1x8"),
    ("rnn", "tiny", lambda: fb.rnn(2, 4, 3), (4, 3, 2), "n_in 2, H 4, T 3"),
    ("lstm", "tiny", lambda: fb.lstm(2, 4, 3), (4, 3, 2), "n_in 2, H 4, T 3"),
    ("gru", "tiny", lambda: fb.gru(2, 4, 3), (4, 3, 2), "n_in 2, H 4, T 3"),
    ("transformer", "tiny", lambda: fb.transformer(8, 8, 2, 1, 4), (2, 4), "V 8, D 8, T 4"),
]


def memory(fn, *args) -> dict:
    """XLA's memory analysis of ``jax.jit(fn)`` compiled for ``args`` (only their shapes and dtypes
    are used; nothing runs).

    Returns:
      ``{"temp": bytes, "argument": bytes, "output": bytes}`` of the compiled program.
    """
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    if analysis is None:  # a backend without memory analysis
        raise RuntimeError(f"XLA's memory analysis is not available on {jax.devices()[0]}")
    return {"temp": int(analysis.temp_size_in_bytes),
            "argument": int(analysis.argument_size_in_bytes),
            "output": int(analysis.output_size_in_bytes)}


def training_step(grad_fn, optimizer):
    """``(params, opt_state, x, y) -> (params, opt_state)``: ``grad_fn``, then ``optimizer``."""
    def step(params, opt_state, x, y):
        updates, opt_state = optimizer.update(grad_fn(params, x, y), opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    return step


def measure(rows, repeats: int = 0):
    """One dict per row of ``rows``: the model, its size, and for each side (``manual``,
    ``recompute``: the hand-written rules with ``recompute=True``, ``autodiff``) the bytes of
    the gradient alone (``grad``) and of the whole step (``step``); with ``repeats`` > 0 also the
    median seconds of the step (``step_s``)."""
    out = []
    optimizer = optax.adam(1e-3)
    for model, size, make, x_shape, desc in rows:
        net = make()
        params = net.init(jax.random.PRNGKey(0))
        x, y = batch(net, x_shape, jax.random.PRNGKey(1))
        opt_state = optimizer.init(params)
        row = {"model": model, "size": size, "shape": desc, "batch": x_shape[0]}
        for side, grad_fn in (("manual", fb.manual_grad(net, COST)),
                              ("recompute", fb.manual_grad(net, COST, recompute=True)),
                              ("autodiff", jax.grad(fb.loss_fn(net, COST)))):
            step = training_step(grad_fn, optimizer)
            row[side] = {"grad": memory(grad_fn, params, x, y),
                         "step": memory(step, params, opt_state, x, y)}
            if repeats:
                row[side]["step_s"] = median_time(jax.jit(step), params, opt_state, x, y,
                                                  repeats=repeats, warmup=2)
        for part in ("grad", "step"):
            for side in ("manual", "recompute"):
                key = f"{part}_temp_ratio" + ("" if side == "manual" else "_recompute")
                row[key] = row[side][part]["temp"] / max(row["autodiff"][part]["temp"], 1)
        out.append(row)
    return out


def _size(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number ≥ 1."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def table(rows) -> str:
    """The rows as a markdown table (ratio = hand-written temporary bytes / jax.grad's)."""
    lines = [f"device: {jax.devices()[0]}  jax {jax.__version__}  python "
             f"{platform.python_version()}", "",
             "| model | size | shape | batch | gradient temp: hand | recompute | jax.grad "
             "| ratio | ratio, recompute | step temp: hand | recompute | jax.grad | ratio "
             "| ratio, recompute | step arguments | step outputs |",
             "| --- | --- | --- |" + " ---: |" * 13]
    for r in rows:
        m, c, a = r["manual"], r["recompute"], r["autodiff"]
        cells = [r["model"], r["size"], r["shape"], str(r["batch"])]
        for part in ("grad", "step"):
            cells += [_size(m[part]["temp"]), _size(c[part]["temp"]), _size(a[part]["temp"]),
                      f"{r[part + '_temp_ratio']:.2f}", f"{r[part + '_temp_ratio_recompute']:.2f}"]
        cells += [_size(m["step"]["argument"]), _size(m["step"]["output"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "temp = XLA's temporary buffers of the compiled program; gradient = the gradient "
              "function alone, step = gradient + Adam update; recompute = the hand-written rules "
              "with recompute=True; ratio = hand-written / jax.grad (≤ 1: the hand-written rules "
              "need no more scratch memory)"]
    if "step_s" in rows[0]["manual"]:
        lines += ["", "| model | size | step s: hand | recompute | jax.grad | recompute / hand |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['model']} | {r['size']} | {r['manual']['step_s']:.4f} | "
                  f"{r['recompute']['step_s']:.4f} | {r['autodiff']['step_s']:.4f} | "
                  f"{r['recompute']['step_s'] / r['manual']['step_s']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated subset of model families")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (what the tests run)")
    ap.add_argument("--time", type=int, default=0, metavar="REPEATS",
                    help="also time each step (median of REPEATS calls)")
    args = ap.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    rows = [r for r in (SMOKE if args.smoke else SIZES) if not only or r[0] in only]
    result = measure(rows, args.time)
    if args.json:
        print(json.dumps({"device": str(jax.devices()[0]), "jax": jax.__version__,
                          "rows": result}))
    else:
        print(table(result))
    return result


if __name__ == "__main__":
    main()
