"""Every fault of a multi-process ``fbackprop train`` run, injected for real on 127.0.0.1: the
exit status of each process, how long it took to end, and the one line it said.

    python scripts/distributed_faults.py                    # JAX's defaults: the docs' table
    python scripts/distributed_faults.py --heartbeat-timeout 5 --connect-timeout 5

prints the markdown table of docs/DISTRIBUTED.md (*Failures*). The faults run at the same time,
each in its own run directory; tests/test_distributed.py runs them with small timeouts and checks
each bound: an end within the heartbeat (a lost process) or the connect timeout (a process that
finds no others) + 10 s, measured from the fault (the kill, or the moment a process says it
waits for the others: Python and JAX have started), a non-zero status, and one line of
fbackprop's, no C++ trace.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TRAIN = [sys.executable, "-m", "fbackprop", "train", "--data", "xor", "--batch-size", "8",
         "--no-progress"]


class Fault:
    """One fault: how it is made, and which process's end is measured."""

    def __init__(self, name, make, bound):
        self.name, self.make, self.bound = name, make, bound


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return env


class Runs:
    """Starts the processes of the faults and kills whatever is left (by process group)."""

    def __init__(self, root, heartbeat: int, connect: int, env=None):
        self.root, self.heartbeat, self.connect = pathlib.Path(root), heartbeat, connect
        self.env, self.started = env or _env(), []

    def start(self, run, i, n=2, out=None, epochs=1000, coordinator=None):
        """Process ``i`` of ``n`` of the run ``run`` (a name: the directory and the port)."""
        args = TRAIN + ["--epochs", str(epochs), "--out", str(self.root / (out or run)),
                        "--coordinator", coordinator, "--num-processes", str(n),
                        "--process-id", str(i), "--heartbeat-timeout", str(self.heartbeat),
                        "--connect-timeout", str(self.connect)]
        proc = subprocess.Popen(args, env=self.env, start_new_session=True, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.joining = None  # when it said it waits for the others (Python and JAX started)
        self.started.append(proc)
        threading.Thread(target=_read_stdout, args=(proc,), daemon=True).start()
        return proc

    def pair(self, run, **kw):
        coordinator = f"127.0.0.1:{_free_port()}"
        return [self.start(run, i, coordinator=coordinator, **kw) for i in (0, 1)]

    def close(self):
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()


def _read_stdout(proc):
    for line in proc.stdout:
        if proc.joining is None and " joining the others" in line:
            proc.joining = time.monotonic()


def _training(runs, run, timeout=180):
    """Both processes of ``run``, once they train (process 0 wrote the first epoch's metrics)."""
    procs = runs.pair(run)
    deadline = time.monotonic() + timeout
    while not (runs.root / run / "metrics.jsonl").exists():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"{run}: the processes did not start training")
        time.sleep(0.05)
    return procs


def _kill(victim):
    def make(runs, run):
        procs = _training(runs, run)
        procs[victim].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        return procs[1 - victim], lambda: killed
    return make


def _alone(i):
    def make(runs, run):
        proc = runs.start(run, i, coordinator=f"127.0.0.1:{_free_port()}")
        return proc, lambda: proc.joining
    return make


def _differ(flag):
    def make(runs, run):
        coordinator = f"127.0.0.1:{_free_port()}"
        procs = [runs.start(run, 0, coordinator=coordinator),
                 runs.start(run, 1, coordinator=coordinator,
                            **({"n": 3} if flag == "n" else {"out": run + "-other"}))]
        # both end; process 1's end is measured, from when both waited for the other
        return procs[1], lambda: max(p.joining for p in procs)
    return make


FAULTS = [
    Fault("process 0 (the coordinator) killed", _kill(0), "heartbeat"),
    Fault("process 1 killed", _kill(1), "heartbeat"),
    Fault("process 0 started alone", _alone(0), "connect"),
    Fault("process 1 started alone", _alone(1), "connect"),
    Fault("--num-processes 2 and 3", _differ("n"), "connect"),
    Fault("different --out", _differ("out"), "connect"),
]


def _one(runs, fault, results):
    run = "run-" + "".join(c if c.isalnum() else "-" for c in fault.name)
    try:
        proc, since = fault.make(runs, run)
        proc.wait(timeout=runs.heartbeat + runs.connect + 120)
        seconds = time.monotonic() - since()
        stderr = proc.stderr.read().replace(str(runs.root), "runs")  # a temporary directory
        results[fault.name] = dict(status=proc.returncode, seconds=seconds, stderr=stderr)
    except Exception as err:  # reported in the table, failed by the tests
        results[fault.name] = dict(status=None, seconds=None, stderr=f"{type(err).__name__}: "
                                                                      f"{err}")


def run_faults(root, heartbeat: int, connect: int, env=None, faults=None) -> dict:
    """Inject the faults at once; ``{name: {status, seconds, stderr}}``.

    Args:
      root: a directory for the run directories.
      heartbeat: ``--heartbeat-timeout`` of every process.
      connect: ``--connect-timeout`` of every process.
      env: the processes' environment (default: this one, CPU, unbuffered).
      faults: the :class:`Fault` s to inject (default :data:`FAULTS`, all of them).

    Returns:
      For each fault, the measured process's exit status, the seconds from the fault to its
      end, and its standard error.
    """
    runs, results = Runs(root, heartbeat, connect, env), {}
    try:
        threads = [threading.Thread(target=_one, args=(runs, f, results))
                   for f in (FAULTS if faults is None else faults)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        runs.close()
    return results


def table(results, heartbeat: int, connect: int) -> str:
    """The markdown table of ``results``."""
    rows = ["| fault | exit status | ended after (s) | bound (s) | what it says |",
            "| --- | ---: | ---: | ---: | --- |"]
    for f in FAULTS:
        r = results[f.name]
        bound = (heartbeat if f.bound == "heartbeat" else connect) + 10
        lines = [line for line in r["stderr"].splitlines() if line.strip()]
        said = lines[-1] if lines else ""
        seconds = "—" if r["seconds"] is None else f"{r['seconds']:.1f}"
        rows.append(f"| {f.name} | {r['status']} | {seconds} | {bound} | "
                    f"`{said.replace('|', '/')}` |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heartbeat-timeout", type=int, default=30)
    parser.add_argument("--connect-timeout", type=int, default=60)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        results = run_faults(root, a.heartbeat_timeout, a.connect_timeout)
    print(table(results, a.heartbeat_timeout, a.connect_timeout))


if __name__ == "__main__":
    main()
