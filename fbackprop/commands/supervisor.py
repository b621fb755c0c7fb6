"""One process of a multi-process ``fbackprop train`` run, watched so that every fault ends it
with one line and an exit status.

JAX's coordination service ends a process that loses its peers (a peer died, process 0's
service is gone, or the processes never met within the connect timeout) by aborting it from a
C++ thread: SIGABRT and a C++ stack trace, which nothing inside the process can catch. So the
command runs the training in a child process (the same command line, with
:data:`WORKER` set) and reads the child's standard error: the child's own lines pass through,
JAX's C++ log lines are held back (``--verbose`` shows them), and when the child is ended by a
signal the supervisor prints the one line that names the cause and the fix, and exits with
status 3. The child stops itself when its supervisor is gone (a killed process 0 must stop its
training, not leave it running).

This module is the one place that reads the text of JAX's C++ log messages
(:data:`_CPP_LOG`, :func:`_cause`); an unknown message is reported as it is.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

WORKER = "FBACKPROP_DISTRIBUTED_WORKER"
LOST = 3  # the exit status of a multi-process fault (the others are train's)

# A C++ log line (absl): severity, date, time, thread, file:line]
_CPP_LOG = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w./-]+:\d+\]")
# Lines of a C++ crash report that follow the log line: the stack, the terminate handler
_CRASH = (b"*** Check failure", b"    @ ", b"terminate called", b"  what():")
_TRACE = (b"Traceback (most recent call last)", b"Exception in thread")
# A library's error logged through Python's logging (orbax's failed background save)
_PY_LOG = re.compile(rb"^(ERROR|CRITICAL):(absl|orbax|jax)[\w.]*:")
_OURS = (b"fbackprop", b"\r")


def supervise(argv, spec, out, verbose: bool) -> int:
    """Run ``fbackprop`` with ``argv`` in a child process and turn its end into an exit status.

    Args:
      argv: the command line after ``fbackprop`` (``["train", ...]``).
      spec: the run's checked ``Distributed`` (for the message), or ``"auto"``.
      out: the run directory, named in the message as where to resume from.
      verbose: pass JAX's C++ log lines and every traceback through as they come.

    Returns:
      The child's exit status when it exited, else :data:`LOST` after printing why it was
      ended, or 128 + the signal when it was killed from outside.
    """
    env = {**os.environ, WORKER: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "fbackprop", *argv], env=env,
                             stderr=subprocess.PIPE)
    # Ctrl-C reaches the child too (same process group): it reports and exits 130 itself.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
    relayed = _relay(child.stderr, sys.stderr.buffer, verbose)
    status = child.wait()
    if not relayed.said and (status >= 0 or -status not in (signal.SIGABRT, signal.SIGSEGV)):
        sys.stderr.buffer.write(relayed.trace)  # neither its line nor JAX's abort: this says why
        sys.stderr.flush()
    if status >= 0:
        return status
    if relayed.said:  # the child reported the fault itself (DistributedError), then ended
        return LOST
    if -status not in (signal.SIGABRT, signal.SIGSEGV):
        print(f"fbackprop train: error: the training process was ended by "
              f"{signal.Signals(-status).name}.", file=sys.stderr, flush=True)
        return 128 - status
    print(f"fbackprop train: error: {_cause(relayed.log, spec, out)}",
          file=sys.stderr, flush=True)
    return LOST


class Relayed(NamedTuple):
    """What :func:`_relay` held back of the child's standard error."""

    log: bytes  # JAX's C++ log lines and crash report
    trace: bytes  # Python tracebacks and libraries' error logs, shown at the end unless JAX
    # then aborted the child
    said: bool  # whether the child printed its own error line


def _relay(source, sink, verbose: bool) -> Relayed:
    """Copy the child's standard error to ``sink`` as it comes, holding back JAX's C++ log
    lines and Python tracebacks (a background thread's, e.g. orbax's barrier that failed when
    a peer died, printed just before JAX's abort); with ``verbose``, everything passes."""
    held = {"log": bytearray(), "trace": bytearray()}
    said, pending, kind = False, b"", "show"
    fd = source.fileno()
    while chunk := os.read(fd, 65536):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            kind = _kind(line, kind)
            said |= line.startswith(b"fbackprop train: error:")
            if kind != "show" and not verbose:
                held[kind] += line + b"\n"
            else:
                sink.write(line + b"\n")
        if b"\r" in pending and kind == "show":  # a progress bar: show it before its line ends
            shown, _, pending = pending.rpartition(b"\r")
            sink.write(shown + b"\r")
        sink.flush()
    if pending:
        sink.write(pending)
        sink.flush()
    return Relayed(bytes(held["log"]), bytes(held["trace"]), said)


def _kind(line: bytes, previous: str) -> str:
    """``"log"`` for a line of a C++ log message (its first line, or a line after one: gRPC
    details, task lists, the crash report), ``"trace"`` for a Python traceback or a
    library's logged error (absl, orbax, jax), ``"show"`` for
    the rest: the lines after a log or a traceback belong to it until one of fbackprop's own
    lines, a progress bar or a warning."""
    if _CPP_LOG.match(line) or line.startswith(_CRASH):
        return "log"
    if line.startswith(_TRACE) or _PY_LOG.match(line):
        return "trace"
    if previous != "show" and not line.startswith(_OURS) and b"Warning:" not in line:
        return previous
    return "show"


def _cause(held: bytes, spec, out) -> str:
    """The one line for a child that JAX's coordination service aborted, from its log."""
    text = held.decode(errors="replace")
    auto = isinstance(spec, str)
    who = "this process" if auto else f"process {spec.process_id} of {spec.num_processes}"
    n = "all the" if auto else f"all {spec.num_processes}"
    if "RegisterTask" in text:
        where = ("" if auto else f" at {spec.coordinator} within the "
                                 f"{spec.initialization_timeout} s of --connect-timeout")
        return (f"{who} could not join the others{where} ({_reason(text)}). Start {n} "
                f"processes with the same --coordinator and --num-processes and each its own "
                f"--process-id, within --connect-timeout of each other; process 0 runs on the "
                f"coordinator's host.")
    return (f"{who} lost the other processes ({_reason(text)}): another process died (see its "
            f"log) or the network between them failed. The last complete checkpoint is in "
            f"{out}; restart {n} processes with --resume to continue from it.")


_REASONS = (("stopped sending heartbeats", "a process stopped sending heartbeats"),
            ("Socket closed", "the connection to process 0's coordination service closed"),
            ("DEADLINE_EXCEEDED", "the coordination service timed out"),
            ("Connection refused", "process 0's coordination service refused the connection"),
            ("UNAVAILABLE", "process 0's coordination service is unreachable"))


def _reason(text: str) -> str:
    """JAX's reason in a few words: a known phrase, else its fatal log line as it is."""
    for phrase, reason in _REASONS:
        if phrase in text:
            return reason
    fatal = [line for line in text.splitlines() if line.startswith("F")] or text.splitlines()
    return (fatal[0].split("] ", 1)[-1][:200] if fatal else "JAX aborted it, no message")


def start_worker(spec):
    """In the child of :func:`supervise`: say that this process now waits for the others, and
    end it when the supervisor is gone (it was killed) instead of training on alone (a daemon
    thread checks every 0.2 s).

    Args:
      spec: the run's checked ``Distributed``, or ``"auto"``.

    Returns:
      Nothing.
    """
    if isinstance(spec, str):
        print("fbackprop train: joining the other processes of the cluster", flush=True)
    else:
        print(f"fbackprop train: process {spec.process_id} of {spec.num_processes} joining the "
              f"others at {spec.coordinator} (waiting up to {spec.initialization_timeout} s)",
              flush=True)
    parent = int(os.environ[WORKER])

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(128 + signal.SIGKILL)

    threading.Thread(target=watch, name="fbackprop-supervisor-watch", daemon=True).start()
