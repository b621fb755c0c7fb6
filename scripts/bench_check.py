"""Speed of ``fbackprop check``: wall time of the command, cold and warm.

Cold: a fresh process with an empty persistent compilation cache (every program is traced and
compiled). Warm: a fresh process with the cache filled by the cold run (programs are traced,
then loaded from disk). Each run is a separate process, as a user would run it, and the time
includes starting Python and importing JAX. Issue 4 asks for ``--model all --fd`` in ≤ 30 s warm.
Run:  python scripts/bench_check.py [--repeats N] [--json] [-- extra fbackprop check args]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(args, cache_dir) -> tuple[float, int]:
    env = {**os.environ, "FBACKPROP_CACHE_DIR": cache_dir}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fbackprop", "check", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - t0, proc.returncode


def bench(args, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        cold, status = run_once(args, cache)
        warm = [run_once(args, cache)[0] for _ in range(repeats)]
        entries = len(os.listdir(cache))
    uncached = [run_once(args, "")[0] for _ in range(max(1, repeats // 3))]
    return {"command": "fbackprop check " + " ".join(args), "exit_status": status,
            "cold_s": cold, "warm_s": warm, "warm_median_s": statistics.median(warm),
            "no_cache_median_s": statistics.median(uncached), "cache_entries": entries,
            "cpus": os.cpu_count(), "python": platform.python_version()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="warm runs (default 3)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    ap.add_argument("check_args", nargs="*", default=["--model", "all", "--fd"],
                    help="arguments of fbackprop check (default: --model all --fd)")
    args = ap.parse_args(argv)
    import jax  # only for the version line

    result = {**bench(args.check_args, args.repeats), "jax": jax.__version__}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['command']}  (jax {result['jax']}, python {result['python']}, "
          f"{result['cpus']} CPUs; exit status {result['exit_status']})")
    print(f"cold (empty cache):   {result['cold_s']:6.1f} s")
    print(f"warm (cache filled):  {result['warm_median_s']:6.1f} s  median of "
          f"{len(result['warm_s'])}: " + ", ".join(f"{t:.1f}" for t in result["warm_s"]))
    print(f"no cache:             {result['no_cache_median_s']:6.1f} s  "
          f"({result['cache_entries']} cache entries)")


if __name__ == "__main__":
    main()
