"""Training throughput on 1, 2 and 4 processes of this machine (CPU, gloo collectives).

Each run trains the same model with the same global batch and seed; the table shows the steady
epoch time (the median over epochs after the first, which includes compilation), samples per
second in all and per process, and the largest parameter difference from the 1-process run.

    python scripts/bench_distributed.py [--data digits] [--epochs 10] [--batch-size 32]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

WORKER = textwrap.dedent("""
    import json, sys, numpy as np, jax
    import fbackprop as fb
    data, epochs, batch, n, i, coordinator, out = sys.argv[1:8]
    n, i = int(n), int(i)
    dist = None if n == 1 else dict(coordinator=coordinator, num_processes=n, process_id=i)
    r = fb.train("mlp", data, epochs=int(epochs), batch_size=int(batch), distributed=dist)
    np.savez(out, *[np.asarray(leaf) for leaf in jax.tree.leaves(r.params)])
    print("RESULT", json.dumps({"seconds": [h["seconds"] for h in r.history],
                                "n_train": len(r.data.x_train)}))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(n, args, tmp):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, args.data, str(args.epochs),
                               str(args.batch_size), str(n), str(i), coordinator,
                               f"{tmp}/p{n}-{i}.npz"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for i in range(n)]
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            if p.returncode:
                raise SystemExit(f"{n} processes: a process failed:\n{stderr[-3000:]}")
            results.append(json.loads(stdout.split("RESULT ", 1)[1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    seconds = float(np.median(results[0]["seconds"][1:]))  # epochs after the compiling one
    params = []
    for i in range(n):
        with np.load(f"{tmp}/p{n}-{i}.npz") as z:
            params.append([z[f"arr_{k}"] for k in range(len(z.files))])
    return seconds, results[0]["n_train"], params


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--processes", default="1,2,4")
    args = ap.parse_args()
    print(f"mlp on {args.data}, global batch {args.batch_size}, {args.epochs} epochs, "
          f"{os.cpu_count()} CPU cores, one CPU device per process")
    print("| processes | epoch (s) | samples/s | samples/s per process | max abs Δparam vs 1 "
          "process (all processes) |")
    print("|---:|---:|---:|---:|---:|")
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(k) for k in args.processes.split(",")):
            seconds, n_train, params = run(n, args, tmp)
            reference = params[0] if reference is None else reference
            diff = max(float(np.max(np.abs(a - b))) for p in params
                       for a, b in zip(p, reference))
            rate = n_train / seconds
            print(f"| {n} | {seconds:.4f} | {rate:,.0f} | {rate / n:,.0f} | {diff:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
