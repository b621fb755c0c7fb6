"""Time ``fb.check_custom_rules`` adds over one plain call of ``fn``, on a model with ten rules.

The model: nine dense tanh layers (width 64, batch 32, float32), each its own ``jax.custom_vjp``
rule with a hand-written backward, and a ``custom_jvp`` log-sum-exp loss: ten rules, ten call
sites. Measured in one process:

* ``fn eager``: one call of ``fn`` op by op (first call: each primitive compiled);
* ``fn jit, first call``: ``jax.jit(fn)`` traced, compiled and run;
* ``fn jit, warm``: a further call of the compiled ``fn`` (median of 5);
* ``sweep, cold``: ``check_custom_rules(fn, …)`` in the same process (its own primitives not yet
  compiled), and ``sweep, warm``: once more (every primitive compiled).

Run:  python scripts/bench_custom_rules.py [--json]
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

WIDTH, BATCH, LAYERS = 64, 32, 9


def make_layer_rule(i: int):
    """A dense tanh layer as a ``jax.custom_vjp`` with its hand-written backward."""
    def dense_tanh(x, w):
        return jnp.tanh(x @ w)

    def fwd(x, w):
        y = jnp.tanh(x @ w)
        return y, (x, w, y)

    def bwd(res, g):
        x, w, y = res
        d = g * (1 - y ** 2)
        return d @ w.T, x.T @ d
    dense_tanh.__name__ = f"dense_tanh_{i}"
    rule = jax.custom_vjp(dense_tanh)
    rule.defvjp(fwd, bwd)
    return rule


@jax.custom_jvp
def logsumexp_loss(h):
    return jnp.mean(jax.nn.logsumexp(h, axis=1))


@logsumexp_loss.defjvp
def _lse_jvp(primals, tangents):
    (h,), (t,) = primals, tangents
    return logsumexp_loss(h), jnp.mean(jnp.sum(jax.nn.softmax(h, axis=1) * t, axis=1))


RULES = [make_layer_rule(i) for i in range(LAYERS)]


def loss(ws, x):
    h = x
    for rule, w in zip(RULES, ws):
        h = rule(h, w)
    return logsumexp_loss(h)


def _timed(f):
    t0 = time.perf_counter()
    out = f()
    jax.block_until_ready(out)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    keys = jax.random.split(jax.random.key(0), LAYERS + 1)
    ws = [jax.random.normal(k, (WIDTH, WIDTH)) / WIDTH ** 0.5 for k in keys[:-1]]
    x = jax.random.normal(keys[-1], (BATCH, WIDTH))
    eager, _ = _timed(lambda: loss(ws, x))
    jitted = jax.jit(loss)
    first, _ = _timed(lambda: jitted(ws, x))
    warm = statistics.median(_timed(lambda: jitted(ws, x))[0] for _ in range(5))
    cold_sweep, report = _timed(lambda: fb.check_custom_rules(loss, ws, x))
    warm_sweep, _ = _timed(lambda: fb.check_custom_rules(loss, ws, x))
    result = {"jax": jax.__version__, "backend": jax.default_backend(),
              "machine": platform.machine(), "rules": LAYERS + 1,
              "call_sites": len({(c.name, c.called_at) for c in report.checks}),
              "ok": report.ok, "fn_eager_s": eager, "fn_jit_first_s": first,
              "fn_jit_warm_s": warm, "sweep_cold_s": cold_sweep, "sweep_warm_s": warm_sweep}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(report)
    print()
    for k in ("fn_eager_s", "fn_jit_first_s", "fn_jit_warm_s", "sweep_cold_s", "sweep_warm_s"):
        print(f"{k:16} {result[k]:8.3f} s")
    print(f"sweep: {cold_sweep:.2f} s cold = {cold_sweep / eager:.1f}× one eager call of fn, "
          f"{cold_sweep / first:.1f}× one first jitted call; {warm_sweep:.2f} s warm")


if __name__ == "__main__":
    main()
