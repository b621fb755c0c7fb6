"""Predicted data-parallel step time and efficiency at 1, 8, 64 and 512 GPUs (docs/DISTRIBUTED.md).

No GPU was measured: the single-GPU step time is an estimate, built from what can be counted
here. For each benchmarked step of scripts/roofline.py and the larger transformer block of
scripts/bench_models.py (the hand-written gradient of one device's batch), XLA's cost analysis
on this machine gives its FLOPs, the parameters give the bytes it must touch, and the compiled
program gives the number of kernels one step launches (the operations of the program, each loop
body counted once per iteration). Then

    t_gpu  = max(FLOPs / R, bytes / B) + kernels · λ
    t_comm = 2·(N−1)/N · S / BW(N) + 2·⌈log₂ N⌉ · α      S = 4 bytes · parameters
    t_step = t_gpu + t_comm,  efficiency = t_gpu / t_step

with the GPU and network numbers below (one H100 SXM per process, 8 per node on NVLink,
InfiniBand between nodes; the bandwidth term of a ring all-reduce, the latency term of a tree,
as NCCL picks by size; no overlap of the all-reduce with the backward pass, the per-device batch
fixed as N grows). Every assumption is an argument, so a measured GPU step time or another
network can be put in.

    python scripts/scaling_model.py [--flops 30e12] [--hbm 2.5e12] [--launch-us 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from roofline import CASES, COST  # noqa: E402  (the benchmarked steps, one list)

import fbackprop as fb  # noqa: E402

GPUS = (1, 8, 64, 512)
STEPS = CASES + [("transformer 1 block V 256 D 128 T 64, batch 16",
                  lambda: fb.transformer(256, 128, 4, 1, 64), (16, 64))]
_NOT_KERNELS = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "copy",
                "after-all", "partition-id", "replica-id"}


def kernels(hlo: str) -> int:
    """How many operations one run of the compiled program ``hlo`` launches: the entry
    computation's operations, a while loop's body counted once per known iteration, a call's
    callee inlined (each fusion counts one)."""
    computations, current = {}, None
    for line in hlo.splitlines():
        line = re.sub(r"/\*.*?\*/", "", line)
        header = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header and not line.startswith(" "):
            current = header.group(2)
            computations[current] = []
            if header.group(1):
                computations["ENTRY"] = current
            continue
        op = re.search(r"= (?:\([^=]*?\)|\S+) ([a-z\-]+)\(", line) if current else None
        if op:
            computations[current].append((op.group(1), line))

    def count(name):
        n = 0
        for op, line in computations.get(name, []):
            if op in _NOT_KERNELS:
                continue
            if op == "while":
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
                body = re.search(r"body=%?([\w.\-]+)", line).group(1)
                n += (int(trips.group(1)) if trips else 1) * count(body)
            elif op == "call":
                n += count(re.search(r"to_apply=%?([\w.\-]+)", line).group(1))
            else:
                n += 1
        return n

    return count(computations["ENTRY"])


def step_counts(make, shape):
    """``(parameters, FLOPs, bytes, kernels)`` of one hand-written gradient step."""
    net = make()
    params = net.init(jax.random.PRNGKey(0))
    x = jnp.zeros(shape, jnp.float32 if net.input_vocab is None else jnp.int32)  # token ids
    y = jnp.zeros(jax.eval_shape(net.apply, params, x).shape, jnp.float32)
    compiled = jax.jit(fb.manual_grad(net, COST)).lower(params, x, y).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    n_params = sum(int(np.size(p)) for p in jax.tree.leaves(params))
    touched = 4 * 2 * n_params + x.nbytes + y.nbytes  # read parameters, write gradients, batch
    return n_params, float(analysis.get("flops", 0.0)), touched, kernels(compiled.as_text())


def predict(n_params, flops, touched, n_kernels, a):
    """The single-GPU step time and ``{N: (t_step, efficiency)}`` under the assumptions ``a``."""
    t_gpu = max(flops / a.flops, touched / a.hbm) + n_kernels * a.launch_us * 1e-6
    size = 4 * n_params
    rows = {}
    for n in GPUS:
        bandwidth = a.nvlink if n <= 8 else a.infiniband
        t_comm = (2 * (n - 1) / n * size / bandwidth
                  + 2 * math.ceil(math.log2(n)) * a.alpha_us * 1e-6) if n > 1 else 0.0
        rows[n] = (t_gpu + t_comm, t_gpu / (t_gpu + t_comm))
    return t_gpu, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flops", type=float, default=30e12,
                    help="sustained float32 FLOP/s of one GPU (H100 SXM peak 67e12)")
    ap.add_argument("--hbm", type=float, default=2.5e12,
                    help="sustained memory bandwidth, bytes/s (H100 SXM peak 3.35e12)")
    ap.add_argument("--launch-us", type=float, default=5.0,
                    help="microseconds per kernel a step launches, one after another")
    ap.add_argument("--nvlink", type=float, default=450e9,
                    help="bytes/s each way per GPU inside a node (NVLink 4)")
    ap.add_argument("--infiniband", type=float, default=50e9,
                    help="bytes/s each way per GPU between nodes (400 Gb/s NDR)")
    ap.add_argument("--alpha-us", type=float, default=5.0, help="latency per all-reduce hop")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    out = []
    for label, make, shape in STEPS:
        counts = step_counts(make, shape)
        t_gpu, rows = predict(*counts, a)
        out.append({"case": label, "parameters": counts[0], "gflop": counts[1] / 1e9,
                    "kernels": counts[3], "t_gpu_ms": t_gpu * 1e3,
                    "predicted": {n: {"step_ms": t * 1e3, "efficiency": e}
                                  for n, (t, e) in rows.items()}})
    if a.json:
        print(json.dumps(out))
        return
    print("| step (per-GPU batch) | parameters | gradient S | GFLOP | kernels | t_gpu (est.) | "
          + " | ".join(f"N = {n}" for n in GPUS) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(GPUS))
    for r in out:
        cells = " | ".join(f"{p['step_ms']:.3g} ms / {100 * p['efficiency']:.0f}%"
                           for p in r["predicted"].values())
        print(f"| {r['case']} | {r['parameters']:,} | {4 * r['parameters'] / 1e3:,.1f} kB | "
              f"{r['gflop']:.3g} | {r['kernels']} | {r['t_gpu_ms']:.3g} ms | {cells} |")


if __name__ == "__main__":
    main()
