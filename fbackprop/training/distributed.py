"""Training across several processes (hosts): one data mesh over every device of every process.

One process runs per host (or per group of local devices). :func:`initialize` joins the
processes through ``jax.distributed.initialize``; on CPU the collectives go through gloo. After
that every process sees the same global device list, and :func:`placement` builds a 1-D
``"batch"`` mesh over it:

* each global batch is split along its rows across all devices of all processes (the batch
  sharding), so each device computes the hand-written gradient of its rows only;
* each process brings only its rows of each batch (:class:`.batches.Feed`, built with
  ``jax.make_array_from_process_local_data``); the test set, parameters and optimizer state are
  replicated;
* the step's new parameters are constrained to be replicated, so XLA inserts the all-reduce
  (the mean of the per-device gradients) inside the compiled epoch. The reduction is a
  collective derived from the shardings, never autodiff: the backward rules stay hand-written.

Every process runs the same compiled epoch on the same replicated values, so every process holds
the same parameters. The run directory must be on a file system all processes share. Process 0
alone takes its lock and writes its config, metrics, plot and checksum files, and quarantines
damaged checkpoints; the others wait for its verdict (:func:`on_primary`). All processes save
the checkpoints together (orbax coordinates them) and restore the same verified epoch
(:func:`agree`). A process that dies stops the others with a :class:`DistributedError`.

With one process every function here falls back to the single-process behaviour and runs no
collective.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..inputs import require_positive_int
from . import rundir

__all__ = ["Distributed", "AUTO", "DistributedError", "check_spec", "initialize", "is_primary",
           "placement",
           "require_same", "on_primary", "lock", "agree", "reporting_lost_peers"]

AUTO = "auto"
_REQUESTED = {}  # what this process was told (--num-processes), for require_same


class Distributed(NamedTuple):
    """How this process joins a multi-process run.

    Attributes:
      coordinator: ``"HOST:PORT"`` of process 0's coordination service (every process passes
        the same address; process 0 listens on it).
      num_processes: how many processes take part.
      process_id: this process's index in ``[0, num_processes)``.
      heartbeat_timeout: seconds without a heartbeat after which a process counts as dead and
        the others are stopped with an error.
      initialization_timeout: seconds to wait for all processes to join (the command line's
        ``--connect-timeout``); a process still alone then stops.
    """

    coordinator: str
    num_processes: int
    process_id: int
    heartbeat_timeout: int = 30
    initialization_timeout: int = 60


class DistributedError(RuntimeError):
    """The processes of a multi-process run lost each other (one died or became unreachable)."""


def check_spec(distributed) -> Distributed | str | None:
    """``distributed`` as a checked :class:`Distributed`, :data:`AUTO`, or ``None``; nothing
    joins yet.

    Args:
      distributed: as for :func:`initialize`.

    Returns:
      The checked :class:`Distributed` (a dict becomes one), :data:`AUTO` or ``None``.

    Raises:
      ValueError: a field is out of range, missing or unknown.
      TypeError: ``distributed`` is of another type.
    """
    if distributed is None or distributed == AUTO:
        return distributed
    if isinstance(distributed, dict):
        unknown = set(distributed) - set(Distributed._fields)
        if unknown:
            raise ValueError(f"distributed: expected the keys {', '.join(Distributed._fields)}, "
                             f"received unknown {', '.join(sorted(unknown))}.")
        try:
            distributed = Distributed(**distributed)
        except TypeError as err:
            raise ValueError(f"distributed: {err}; pass coordinator, num_processes and "
                             f"process_id.") from None
    if not isinstance(distributed, Distributed):
        raise TypeError(f"distributed must be None, 'auto', a dict or a fbackprop.training."
                        f"distributed.Distributed, received {type(distributed).__name__}.")
    d = distributed
    match = isinstance(d.coordinator, str) and re.fullmatch(r"\[?[\w.:-]+\]?:(\d{1,5})",
                                                            d.coordinator)
    if not match or not 1 <= int(match.group(1)) <= 65535:
        raise ValueError(f"coordinator: expected HOST:PORT with a port from 1 to 65535, such as "
                         f"10.0.0.1:1234 (process 0's address, the same for every process), "
                         f"received {d.coordinator!r}.")
    n = require_positive_int(d.num_processes, "num_processes", fix="E.g. --num-processes 2.")
    if not isinstance(d.process_id, int) or isinstance(d.process_id, bool) \
            or not 0 <= d.process_id < n:
        raise ValueError(f"process_id: expected an integer in [0, {n - 1}] (one per process, "
                         f"0 on the coordinator's host), received {d.process_id!r}. Give each "
                         f"of the {n} processes a different --process-id from 0 to {n - 1}.")
    require_positive_int(d.heartbeat_timeout, "heartbeat_timeout", fix="E.g. 30 (seconds).")
    require_positive_int(d.initialization_timeout, "initialization_timeout",
                         fix="E.g. 60 (seconds, --connect-timeout 60).")
    return d


def initialize(distributed) -> bool:
    """Join the multi-process run described by ``distributed``.

    Args:
      distributed: ``None`` (a single process, unless ``jax.distributed`` was already
        initialized), :data:`AUTO` (``jax.distributed.initialize()`` detects the cluster itself:
        SLURM, Open MPI, Cloud TPU), or a :class:`Distributed` / dict of its fields.

    Returns:
      Whether this process is one of several.

    Raises:
      ValueError: a bad setting, no cluster found with :data:`AUTO`, or JAX already started its
        devices in this process (the processes must join before any JAX computation).
      TypeError: ``distributed`` is of another type.
    """
    d = check_spec(distributed)
    if jax.distributed.is_initialized() or d is None:
        return jax.process_count() > 1
    if d != AUTO:  # compared across processes by require_same: JAX counts process 0's only
        _REQUESTED["num_processes"] = d.num_processes
    # CPU collectives across processes need an implementation; gloo ships with jaxlib. It only
    # affects the CPU backend, and must be set before the backends start.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if d == AUTO:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(d.coordinator, d.num_processes, d.process_id,
                                       initialization_timeout=d.initialization_timeout,
                                       heartbeat_timeout_seconds=d.heartbeat_timeout)
    except RuntimeError as err:
        if "before" in str(err):
            raise ValueError(f"distributed: JAX already started its devices in this process, so "
                             f"it can no longer join other processes ({err}). Pass distributed= "
                             f"to the first fbackprop.train call of the process, before any "
                             f"other JAX computation.") from None
        raise
    except ValueError as err:
        if d == AUTO:
            raise ValueError(f"--distributed auto: JAX found no cluster environment it knows "
                             f"(SLURM, Open MPI, Cloud TPU): {err}. Pass --coordinator HOST:PORT "
                             f"--num-processes N --process-id I instead.") from None
        raise
    return jax.process_count() > 1


def is_primary() -> bool:
    """Whether this process writes the run directory (process 0, or the only process)."""
    return jax.process_index() == 0


def placement(batch_size: int):
    """The mesh of a multi-process run: a 1-D ``"batch"`` mesh over every device of every
    process.

    Args:
      batch_size: the global batch size, split over all devices.

    Returns:
      ``(n, batch_sharding, replicated, place)``: the total device count, the sharding that
      splits rows, the replicated sharding, and ``place``, which turns a host value (the same
      on every process) into a replicated global array.

    Raises:
      ValueError: the global batch size is not a multiple of the total device count.
    """
    devices = jax.devices()
    n = len(devices)
    if batch_size % n:
        raise ValueError(
            f"the global batch of {batch_size} examples must split evenly across the {n} devices "
            f"of the {jax.process_count()} processes; received batch_size {batch_size}, not a "
            f"multiple of {n}. Use --batch-size {max(n, batch_size // n * n)} or another "
            f"multiple of {n} (online mode, a batch of 1, cannot be split).")
    mesh = Mesh(np.array(devices), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(value):
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, replicated, lambda index: host[index])

    return n, NamedSharding(mesh, PartitionSpec("batch")), replicated, place


def require_same(settings: dict):
    """Check that every process was given the same settings: processes with different batch
    sizes, models or epochs would compile different programs whose collectives never match, and
    wait for each other forever; processes with different run directories would wait forever in
    the checkpoints' barrier. The process count each process was given is compared too (JAX
    counts the processes process 0 was told of, and would silently train with those). With one
    process, nothing is checked.

    Args:
      settings: this process's settings (JSON-ready), its run directory included.

    Returns:
      Nothing.

    Raises:
      ValueError: another process's settings differ from process 0's, naming the settings that
        differ; raised on every process.
    """
    if jax.process_count() == 1:
        return
    settings = {**settings, "num_processes": _REQUESTED.get("num_processes",
                                                             jax.process_count())}
    names = sorted(settings)
    texts = [json.dumps(settings[k], sort_keys=True, default=str) for k in names]
    mine = np.stack([np.frombuffer(hashlib.sha256(f"{k}={t}".encode()).digest()[:8], np.int32)
                     for k, t in zip(names, texts)])
    digests = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, len(names), 2)
    differ = (digests != digests[:1]).any(axis=2)  # (process, setting)
    if differ.any():
        processes = [i for i in range(len(digests)) if differ[i].any()]
        keys = [names[k] for k in range(len(names)) if differ[:, k].any()]
        values = ", ".join(f"{names[k]}={texts[k]}" for k in range(len(names))
                           if names[k] in keys)
        raise ValueError(
            f"the processes were given different settings: those of process "
            f"{', '.join(map(str, processes))} differ from process 0's in {', '.join(keys)}; "
            f"expected the same on every process. This is process {jax.process_index()}, with "
            f"{values}. Start every process with the same options (the same --out, one "
            f"directory every process shares, and the same --num-processes); only --process-id "
            f"differs.")


def on_primary(fn, what: str):
    """Run ``fn()`` on process 0 only and tell every process whether it succeeded.

    The others wait for process 0 (the broadcast is a barrier), so nothing they do afterwards
    races with what ``fn`` wrote. With one process, this is ``fn()``.

    Args:
      fn: a function of no arguments, e.g. one that writes the run directory.
      what: what ``fn`` does, for the other processes' error, e.g. ``"create the run
        directory"``.

    Returns:
      ``fn()``'s value on process 0, ``None`` elsewhere.

    Raises:
      Exception: on process 0, whatever ``fn`` raised.
      ValueError: on the other processes, when ``fn`` raised on process 0.
    """
    if jax.process_count() == 1:
        return fn()
    result, error = None, None
    if is_primary():
        try:
            result = fn()
        except Exception as err:  # re-raised below, after telling the others
            error = err
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
        raise error
    if not ok:
        raise ValueError(f"process 0 could not {what}; its error message says why and how to "
                         f"fix it. Nothing was changed by this process.")
    return result


@contextlib.contextmanager
def lock(out):
    """Hold the run directory's lock (:func:`.rundir.lock`) on process 0 only, the one process
    that writes the directory; every process goes on only once process 0 holds it.

    Args:
      out: the run directory.

    Yields:
      Nothing; the lock is released on exit.

    Raises:
      ValueError: (on process 0 :class:`.rundir.RunLocked`) another live process holds the lock.
    """
    held = on_primary(lambda: rundir.lock(out), f"lock {out}")
    try:
        yield
    finally:
        if held is not None:
            held.release()


def agree(epoch, reason):
    """One step of :func:`.rundir.restore_latest` taken by all processes together: a checkpoint
    counts as verified only when every process verified it, so all restore the same epoch.

    Every process calls it once per step it tries, newest first, and once with ``epoch=None``
    when it ran out of steps; a process that lists other steps (``out`` is not one shared
    directory) is found at the first step that differs. With one process, ``reason`` is
    returned as it is.

    Args:
      epoch: the step this process just tried, or ``None`` when it has none left.
      reason: ``None`` when this process verified the step, else why not.

    Returns:
      ``None`` when every process verified the step, else this process's reason, or the
      process that could not verify it.

    Raises:
      ValueError: the processes tried different steps.
    """
    if jax.process_count() == 1:
        return reason
    mine = np.array([-1 if epoch is None else epoch, reason is None], np.int32)
    tried, verified = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 2).T
    if np.any(tried != tried[0]):
        listed = ", ".join(f"process {i}: {'none left' if e < 0 else f'epoch {e}'}"
                           for i, e in enumerate(tried))
        raise ValueError(f"the processes see different checkpoints in the run directory "
                         f"({listed}); expected the same. --out must be one directory on a "
                         f"file system every process shares.")
    if reason is None and not verified.all():
        return f"process {int(np.argmin(verified))} could not verify it"
    return reason


@contextlib.contextmanager
def reporting_lost_peers(out, keep=()):
    """Within this block, in a multi-process run, a collective or barrier that fails because
    another process is gone raises a :class:`DistributedError` that says so (JAX's own error
    names a socket or a barrier, not the dead process).

    Args:
      out: the run directory (named in the message as where to resume from), or ``None``.
      keep: exception types that pass through unchanged (the run's own errors).

    Yields:
      Nothing.

    Raises:
      DistributedError: a collective failed in a run of several processes.
    """
    try:
        yield
    except (RuntimeError, TimeoutError, ValueError) as err:  # JaxRuntimeError: a RuntimeError
        # a collective that failed in the runtime also surfaced, once in the tests, as a
        # ValueError carrying XLA's status code ("UNKNOWN: Gloo AllGather failed: …"); the
        # run's own ValueErrors never start with one
        if (isinstance(err, (DistributedError, *keep)) or not jax.distributed.is_initialized()
                or jax.process_count() == 1
                or isinstance(err, ValueError) and not _XLA_STATUS.match(str(err))):
            raise
        raise _peer_lost(err, out) from err


_XLA_STATUS = re.compile(r"(UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|ABORTED|CANCELLED"
                         r"|FAILED_PRECONDITION): ")


def _peer_lost(err: BaseException, out) -> DistributedError:
    """The error for a collective or barrier that failed because another process is gone."""
    where = (f" The last complete checkpoint is in {out}; restart all "
             f"{jax.process_count()} processes with --resume to continue from it."
             if out is not None else "")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return DistributedError(
        f"process {jax.process_index()} of {jax.process_count()} lost the other processes: "
        f"{first}. Another process probably died (see its log) or the network between them "
        f"failed.{where}")
