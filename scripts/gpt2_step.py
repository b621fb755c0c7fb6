"""GPT-2-small's shape with the hand-written rules: build, initialise, one bfloat16 training step.

``fb.transformer(50257, 768, 12, 12, 1024)`` (GPT-2 small's vocabulary, width, heads, blocks and
context; learned positions, pre-layer-norm blocks, an untied head: 163M parameters) is built and
initialised in float32, the master weights. One step then runs the forward pass and the
hand-written backward in bfloat16 on a batch of one full-length sequence, casts the gradient to
float32 and applies an optax Adam update to the master weights. The same step with ``jax.grad`` in
bfloat16 is timed beside it (``--compare``), and model FLOP utilisation is reported against the
device's measured bfloat16 matmul rate (``--peak-tflops`` to use a nominal peak instead).

Model FLOPs per step = tokens × (6·N + 12·L·T·D): N the parameters that multiply (every matrix but
the embedding tables), L blocks, T the context, D the width — the usual count (attention scores
and their use, forward and backward, without the causal halving).

Correctness on a slice: the same widths with two blocks and a short context, hand-written vs
``jax.grad`` in float64 (relative error ≤ 1e-10), and in bfloat16 each against float32 (the error
budget: hand-written error / autodiff error).

Run:  python scripts/gpt2_step.py [--seq-len 1024] [--compare] [--json]
      python scripts/gpt2_step.py --smoke     (tiny widths; what the tests run)
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fbackprop as fb

COST = "softmax_cross_entropy"
GPT2_SMALL = {"vocab": 50257, "d_model": 768, "heads": 12, "blocks": 12, "context": 1024}
SMOKE = {"vocab": 97, "d_model": 32, "heads": 4, "blocks": 3, "context": 16}


def build(shape: dict, blocks: int | None = None, context: int | None = None):
    """The transformer of ``shape`` (optionally with fewer blocks or a shorter context)."""
    return fb.transformer(shape["vocab"], shape["d_model"], shape["heads"],
                          blocks or shape["blocks"], context or shape["context"])


def tokens(vocab: int, batch: int, length: int, seed: int = 0):
    """Random token ids (batch, length) and their next tokens as integer targets."""
    ids = jax.random.randint(jax.random.PRNGKey(seed), (batch, length + 1), 0, vocab)
    return ids[:, :-1], ids[:, 1:]


def count_params(params) -> tuple[int, int]:
    """(every parameter, the parameters that multiply: all but the embedding tables)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    total = sum(int(np.prod(v.shape)) for _, v in leaves)
    tables = sum(int(np.prod(v.shape)) for path, v in leaves
                 if any(getattr(k, "key", None) in ("embed", "pos") for k in path))
    return total, total - tables


def model_flops(params, shape: dict, n_tokens: int, context: int) -> float:
    """Model FLOPs of one training step over ``n_tokens`` tokens (see the module docstring)."""
    _, multiplying = count_params(params)
    return n_tokens * (6 * multiplying + 12 * shape["blocks"] * context * shape["d_model"])


def bf16_step(grad_fn, optimizer):
    """One mixed-precision step: bfloat16 forward and backward, float32 master weights."""
    def step(master, opt_state, x, y):
        grads = grad_fn(fb.astype(master, jnp.bfloat16), x, y)
        updates, opt_state = optimizer.update(fb.astype(grads, jnp.float32), opt_state, master)
        return optax.apply_updates(master, updates), opt_state
    return jax.jit(step)


def timed(step, *args, repeats: int) -> tuple[float, float]:
    """(seconds to compile, median seconds of ``repeats`` calls) of a jitted ``step``."""
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # first call: allocation, transfers
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.median(times))


def bf16_matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """The device's measured bfloat16 matmul rate (FLOP/s) on an n×n product."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    _, seconds = timed(jax.jit(lambda a: a @ a), a, repeats=repeats)
    return 2 * n ** 3 / seconds


def _rel(a, b) -> float:
    """max |a − b| / max |b| over every leaf, in float64 (or float32 without x64)."""
    errs = jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u.astype(v.dtype) - v))
                                           / jnp.maximum(jnp.max(jnp.abs(v)), 1e-30)), a, b)
    return max(jax.tree.leaves(errs))


def check_slice(shape: dict, context: int, seed: int = 0) -> dict:
    """Two blocks of ``shape`` at a short ``context``: hand-written vs jax.grad in float64, and
    the bfloat16 error of each against float32."""
    net = build(shape, blocks=2, context=context)
    x, y = tokens(shape["vocab"], 1, context, seed)
    manual, auto = fb.manual_grad(net, COST), jax.grad(fb.loss_fn(net, COST))
    with jax.enable_x64(True):
        p64 = fb.astype(net.init(jax.random.PRNGKey(seed)), jnp.float64)
        f64 = _rel(jax.jit(manual)(p64, x, y), jax.jit(auto)(p64, x, y))
    p32 = net.init(jax.random.PRNGKey(seed))
    with jax.default_matmul_precision("highest"):
        ref = jax.jit(auto)(p32, x, y)
    p16 = fb.astype(p32, jnp.bfloat16)
    hand_err = _rel(jax.jit(manual)(p16, x, y), ref)
    auto_err = _rel(jax.jit(auto)(p16, x, y), ref)
    return {"slice": f"2 blocks, context {context}", "float64_rel_error": f64,
            "bf16_hand_error": hand_err, "bf16_autodiff_error": auto_err,
            "bf16_error_ratio": hand_err / max(auto_err, 1e-30)}


def run(shape: dict, seq_len: int, compare: bool, repeats: int, slice_len: int,
        peak_tflops: float | None, batch: int = 1) -> dict:
    """Build, initialise and step the model of ``shape``; see the module docstring."""
    t0 = time.perf_counter()
    net = build(shape, context=seq_len)
    master = net.init(jax.random.PRNGKey(0))
    jax.block_until_ready(master)
    init_s = time.perf_counter() - t0
    optimizer = optax.adam(3e-4)
    opt_state = optimizer.init(master)
    x, y = tokens(shape["vocab"], batch, seq_len)
    row = {"model": shape, "context": seq_len, "batch": batch, "params": count_params(master)[0],
           "build_init_s": init_s, "device": str(jax.devices()[0])}
    sides = [("manual", fb.manual_grad(net, COST))]
    if compare:
        sides.append(("autodiff", jax.grad(fb.loss_fn(net, COST))))
    flops = model_flops(master, shape, batch * seq_len, seq_len)
    peak = peak_tflops * 1e12 if peak_tflops else bf16_matmul_rate()
    row["peak_tflops"], row["peak_source"] = peak / 1e12, ("given" if peak_tflops else "measured")
    for name, grad_fn in sides:
        compile_s, step_s = timed(bf16_step(grad_fn, optimizer), master, opt_state, x, y,
                                  repeats=repeats)
        row[name] = {"compile_s": compile_s, "step_s": step_s, "mfu": flops / step_s / peak}
    if compare:
        row["ratio"] = row["autodiff"]["step_s"] / row["manual"]["step_s"]
    row["check"] = check_slice(shape, slice_len)
    return row


def summary(row: dict) -> str:
    """A short markdown table of ``row``."""
    lines = [f"{row['device']}, jax {jax.__version__}: {row['params'] / 1e6:.1f}M parameters, "
             f"context {row['context']}, built and initialised in {row['build_init_s']:.1f} s",
             "", "| gradient | compile s | step s | MFU (bf16, peak "
             f"{row['peak_tflops']:.1f} TFLOP/s {row['peak_source']}) |",
             "| --- | ---: | ---: | ---: |"]
    for name in ("manual", "autodiff"):
        if name in row:
            r = row[name]
            lines.append(f"| {name} | {r['compile_s']:.1f} | {r['step_s']:.3f} | "
                         f"{100 * r['mfu']:.1f}% |")
    c = row["check"]
    lines += ["", f"slice ({c['slice']}): hand-written vs jax.grad in float64 "
              f"{c['float64_rel_error']:.1e}; bf16 error vs float32, hand "
              f"{c['bf16_hand_error']:.1e}, jax.grad {c['bf16_autodiff_error']:.1e}, "
              f"ratio {c['bf16_error_ratio']:.2f}"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=None, help="tokens in the batch of one "
                    "(default: the model's context, 1024)")
    ap.add_argument("--compare", action="store_true", help="also time jax.grad's bf16 step")
    ap.add_argument("--repeats", type=int, default=1, help="timed steps after the first")
    ap.add_argument("--slice-len", type=int, default=32, help="context of the checked slice")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="nominal bf16 peak for MFU (default: the measured matmul rate)")
    ap.add_argument("--smoke", action="store_true", help="tiny widths (the tests run this)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    shape = SMOKE if args.smoke else GPT2_SMALL
    row = run(shape, args.seq_len or shape["context"], args.compare, args.repeats,
              min(args.slice_len, shape["context"]), args.peak_tflops)
    print(json.dumps(row) if args.json else summary(row))
    return row


if __name__ == "__main__":
    main()
