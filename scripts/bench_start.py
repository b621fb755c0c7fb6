"""Start-up time of a new ``fbackprop train`` process, beside the floor ``python -c "import jax"``.

Each repeat runs, one after another in fresh processes: ``python -c "import jax"`` (the floor),
the default ``fbackprop train`` (an MLP on digits, 20 epochs, writing its run directory) with an
empty compilation cache, and the same command again with the cache the previous run filled. The
medians are printed with the load average before and after (on a shared machine the load
matters more than anything else here: measure when ``uptime`` shows it low).

``--importtime`` adds a ``python -X importtime`` table of the default train (cache filled): the
time each top-level package's modules took to import (their own time, summed), largest first,
which is what docs/PERFORMANCE.md shows. It covers the training process alone: matplotlib is
imported by the plot process (``python -m fbackprop.plotting``) the command starts beside it.

Run:  python scripts/bench_start.py [--repeats 5] [--importtime] [--json]
      python scripts/bench_start.py --smoke   (one repeat of a 1-epoch train: the test suite)
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLOOR = [sys.executable, "-c", "import jax"]
TARGETS = {"train_empty_s": 6.0, "train_filled_s": 3.0}  # seconds, on the 2-core machine


def train_command(out, epochs=None) -> list:
    """The default ``fbackprop train`` writing to ``out`` (``epochs`` to shorten it)."""
    cmd = [sys.executable, "-m", "fbackprop", "train", "--out", str(out), "--no-progress"]
    return cmd + (["--epochs", str(epochs)] if epochs else [])


def environment(cache_dir) -> dict:
    """The environment of the timed processes: this checkout importable, the cache in
    ``cache_dir``."""
    env = dict(os.environ, FBACKPROP_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def timed(cmd, env, cwd) -> float:
    """Wall seconds of ``cmd`` in a new process; ``RuntimeError`` with its output if it fails."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def measure(repeats: int, epochs=None) -> dict:
    """The medians (and every sample) of the floor and of the train with the cache empty and
    filled.

    Args:
      repeats: how many times each of the three is run.
      epochs: shorten the train (``None``: the default 20 epochs).

    Returns:
      ``{"floor_s", "train_empty_s", "train_filled_s", "samples", "load_before",
      "load_after"}``.
    """
    samples = collections.defaultdict(list)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for i in range(repeats):
            env = environment(tmp / f"cache{i}")  # a new, empty cache each repeat
            samples["floor_s"].append(timed(FLOOR, env, tmp))
            samples["train_empty_s"].append(timed(train_command(tmp / f"a{i}", epochs), env, tmp))
            samples["train_filled_s"].append(timed(train_command(tmp / f"b{i}", epochs), env,
                                                   tmp))
    result = {k: statistics.median(v) for k, v in samples.items()}
    return {**result, "samples": dict(samples), "load_before": load_before,
            "load_after": os.getloadavg()}


def import_table(epochs=None, top: int = 12) -> list:
    """``-X importtime`` of the default train (cache filled), summed by top-level package.

    Args:
      epochs: shorten the train (``None``: the default 20 epochs).
      top: how many packages to list (the rest summed as ``"other"``).

    Returns:
      ``[(package, self seconds, modules)]``, largest first, then ``("other", …)`` and
      ``("total", …)``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        env = environment(tmp / "cache")
        timed(train_command(tmp / "warm", epochs), env, tmp)  # fill the cache
        cmd = [sys.executable, "-X", "importtime"] + train_command(tmp / "run", epochs)[1:]
        done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
    per = collections.defaultdict(lambda: [0.0, 0])
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = (part.strip() for part in line[len("import time:"):].split("|"))
        package = name.split(".")[0].lstrip("_") or name
        per[package][0] += int(self_us) / 1e6
        per[package][1] += 1
    rows = sorted(((k, s, n) for k, (s, n) in per.items()), key=lambda r: -r[1])
    other = rows[top:]
    rows = rows[:top] + [("other", sum(r[1] for r in other), sum(r[2] for r in other))]
    return rows + [("total", sum(r[1] for r in rows), sum(r[2] for r in rows))]


def markdown(result: dict, table=None) -> str:
    """The measurements as markdown (what docs/PERFORMANCE.md shows)."""
    lines = [f"Load average {result['load_before'][0]:.2f} before, "
             f"{result['load_after'][0]:.2f} after; medians of "
             f"{len(result['samples']['floor_s'])} runs.", "",
             "| process | seconds (median) | over the floor | target | met |",
             "| --- | --- | --- | --- | --- |"]
    floor = result["floor_s"]
    for key, label in (("floor_s", '`python -c "import jax"` (the floor)'),
                       ("train_empty_s", "`fbackprop train`, compilation cache empty"),
                       ("train_filled_s", "`fbackprop train`, compilation cache filled")):
        target = TARGETS.get(key)
        met = "" if target is None else ("yes" if result[key] <= target else "**no**")
        lines.append(f"| {label} | {result[key]:.2f} | +{result[key] - floor:.2f} | "
                     f"{'' if target is None else f'≤ {target:g} s'} | {met} |")
    if table:
        lines += ["", "| package | import seconds (own time, summed) | modules |",
                  "| --- | --- | --- |"]
        lines += [f"| {name} | {seconds:.3f} | {n} |" for name, seconds, n in table]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--importtime", action="store_true", help="add the -X importtime table")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--smoke", action="store_true", help="one repeat, 1-epoch trains")
    args = parser.parse_args(argv)
    epochs = 1 if args.smoke else None
    result = measure(1 if args.smoke else args.repeats, epochs)
    table = import_table(epochs) if args.importtime or args.smoke else None
    if args.json:
        print(json.dumps({**result, "imports": table}, indent=1))
    else:
        print(markdown(result, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
