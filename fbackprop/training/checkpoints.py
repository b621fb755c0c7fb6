"""A run's checkpoints: orbax steps, each verified by a sha256 checksum of its arrays, restored
newest first over the verified steps, with damaged steps moved aside (never deleted)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import threading
import time
import traceback

import jax
import numpy as np

from .rundir import CHECKPOINTS, CHECKSUM, QUARANTINE, fsync_dir, write_json
from .sharding import host_value, spans_processes

__all__ = ["Restored", "Checkpoints", "checkpoint_manager", "restore", "restore_latest",
           "checksum", "verify", "move_aside"]


def checksum(state) -> dict:
    """The checksum of a pytree of arrays: per leaf (in tree order) its path, dtype, shape and
    the sha256 of its host bytes (C order), and the sha256 over all of them.

    Args:
      state: a pytree of arrays (JAX or NumPy) or numbers.

    Returns:
      A JSON-ready dict ``{"sha256": ..., "leaves": [{"path", "dtype", "shape", "sha256"}]}``.
    """
    leaves = []
    total = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        a = np.ascontiguousarray(host_value(leaf))
        digest = hashlib.sha256(a.tobytes()).hexdigest()
        total.update(digest.encode())
        leaves.append({"path": jax.tree_util.keystr(path), "dtype": str(a.dtype),
                       "shape": list(a.shape), "sha256": digest})
    return {"sha256": total.hexdigest(), "leaves": leaves}


def verify(state, expected: dict):
    """Compare ``state`` with a saved :func:`checksum`.

    Args:
      state: the restored pytree.
      expected: the checksum saved with the step.

    Returns:
      ``None`` when they agree, else a reason naming the first leaf that differs.
    """
    leaves = jax.tree.leaves(state)
    if len(leaves) != len(expected["leaves"]):
        return (f"it holds {len(expected['leaves'])} arrays, the run expects {len(leaves)}")
    for leaf, e in zip(leaves, expected["leaves"]):
        a = np.ascontiguousarray(host_value(leaf).astype(e["dtype"]))
        if list(a.shape) != e["shape"] or hashlib.sha256(a.tobytes()).hexdigest() != e["sha256"]:
            return f"checksum mismatch in {e['path'] or 'the state'} (the data is damaged)"
    return None


def _step_dir(out: pathlib.Path, epoch: int) -> pathlib.Path:
    return pathlib.Path(out).absolute() / CHECKPOINTS / str(epoch)


def checkpoint_manager(out, *, max_to_keep: int = 3, asynchronous: bool = False):
    """An orbax ``CheckpointManager`` on ``out/checkpoints``.

    Args:
      out: the run directory.
      max_to_keep: how many steps to keep (the newest).
      asynchronous: orbax's asynchronous saves (``save`` returns while the arrays are written).

    Returns:
      The manager; close it with ``.close()``.
    """
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=asynchronous,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(pathlib.Path(out).absolute() / CHECKPOINTS, options=options)


def _write_checksum(out, epoch: int, digest: dict):
    step = _step_dir(out, epoch)
    if step.is_dir():  # orbax may already have removed an old step (max_to_keep)
        write_json(step / CHECKSUM, digest)


class Checkpoints:
    """The checkpoints of a run being trained: orbax saves plus the checksum of each step.

    With ``asynchronous`` saves, :meth:`save` returns once orbax has copied the arrays to host
    memory; the step's checksum file is written after orbax finalizes it (at the next save or at
    :meth:`finish`), so a step is never verified before it is complete.

    Several processes: every process calls :meth:`save` (orbax coordinates them, and its wait
    returns only once the step is complete on all of them); process 0 alone writes the checksum
    files. It alone hashes the state too, unless the state is split across processes
    (``shard_params``): then every process takes part in gathering each leaf to hash it.

    Args:
      out: the run directory.
      asynchronous: use orbax's asynchronous checkpointing.
      max_to_keep: how many steps orbax keeps.
    """

    def __init__(self, out, *, asynchronous: bool = True, max_to_keep: int = 3):
        self.out = pathlib.Path(out).absolute()
        self.manager = checkpoint_manager(self.out, max_to_keep=max_to_keep,
                                          asynchronous=asynchronous)
        self._pending = None

    def save(self, epoch: int, state: dict):
        """Start saving ``state`` as the checkpoint of ``epoch`` (after finishing the previous
        save and writing its checksum).

        Args:
          epoch: the step number.
          state: a pytree of arrays.
        """
        import orbax.checkpoint as ocp

        self.finish()
        # A state split across processes is gathered leaf by leaf by every process; otherwise
        # process 0 alone hashes it.
        digest = (checksum(state) if jax.process_index() == 0 or spans_processes(state)
                  else None)
        if jax.process_index() != 0:
            digest = None
        self.manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
        self._pending = (epoch, digest)

    def finish(self):
        """Wait for the save in flight, then write its checksum."""
        self.manager.wait_until_finished()
        if self._pending is not None:
            epoch, digest = self._pending
            self._pending = None
            if digest is not None:
                _write_checksum(self.out, epoch, digest)

    def close(self):
        """Finish the save in flight and close the manager."""
        try:
            self.finish()
        finally:
            self.manager.close()


def restore(manager, epoch: int, like: dict) -> dict:
    """The checkpoint of ``epoch``, unverified, restored with the structure, shapes, dtypes and
    shardings of ``like``.

    Args:
      manager: an orbax ``CheckpointManager``.
      epoch: the step.
      like: a pytree of arrays shaped like the saved state.

    Returns:
      The restored pytree.
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return manager.restore(epoch, args=ocp.args.StandardRestore(abstract))


@dataclasses.dataclass
class Restored:
    """What :func:`restore_latest` found.

    Attributes:
      epoch: the epoch restored, or ``None`` when no step could be used.
      state: the restored state (``None`` with ``epoch``).
      skipped: ``(epoch, reason)`` of each step not used, newest first.
      quarantined: where the skipped steps were moved (filled in by the caller that moved them).
    """

    epoch: object
    state: object
    skipped: list
    quarantined: list

    def message(self) -> str:
        """Which step was used and why the others were skipped.

        Returns:
          One paragraph, e.g. ``"resumed from the checkpoint of epoch 3; skipped epoch 4:
          checksum mismatch in ['params'][0]['W'] (the data is damaged). The skipped steps were
          moved to DIR/quarantine."``
        """
        used = (f"resumed from the checkpoint of epoch {self.epoch}" if self.epoch is not None
                else "no checkpoint could be used, so the run starts from scratch")
        if not self.skipped:
            return used + "."
        why = "; ".join(f"epoch {e}: {r}" for e, r in self.skipped)
        moved = (f" The skipped steps were moved to {self.quarantined[0].parent}."
                 if self.quarantined else "")
        return f"{used}; skipped {why}.{moved}"


def _try_step(manager, out, epoch, like):
    """``(state, None)`` for a verified step, else ``(None, reason)``."""
    path = _step_dir(out, epoch) / CHECKSUM
    if not path.exists():
        return None, f"no {CHECKSUM} (the save did not finish)"
    try:
        expected = json.loads(path.read_text())
        expected["leaves"]  # noqa: B018  (a KeyError here means a damaged checksum file)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"unreadable {CHECKSUM} ({type(err).__name__}: {err})"
    try:
        state = restore(manager, epoch, like)
    except Exception as err:  # orbax raises anything from a damaged step, even bare Exception
        _drop_closed_loop_reports()
        return None, f"orbax cannot read it ({type(err).__name__}: {str(err)[:200]})"
    reason = verify(state, expected)
    return (None, reason) if reason else (state, None)


def _closed_loop_report(unraisable) -> bool:
    """Whether an unraisable exception is a tensorstore read calling into a closed event loop:
    ``RuntimeError('Event loop is closed')`` from ``call_soon_threadsafe``, raised in a thread
    Python did not start (tensorstore's)."""
    return (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"
            and threading.current_thread() is not threading.main_thread()
            and any(frame.f_code.co_name == "call_soon_threadsafe"
                    for frame, _ in traceback.walk_tb(unraisable.exc_traceback)))


def _drop_closed_loop_reports():
    """After orbax failed to read a step: drop the reports its abandoned reads will make.

    orbax runs a step's reads in an event loop of its own and closes it as soon as one read
    fails; the reads still in flight finish later in tensorstore's threads and call into the
    closed loop, and Python prints each ``RuntimeError: Event loop is closed`` as an unraisable
    exception. Their results are not wanted (the step is skipped and named), so this wraps
    ``sys.unraisablehook`` once per process to drop those reports, and only those; every other
    report goes to the hook that was in place.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_reports", False):
        return

    def hook(unraisable):
        if not _closed_loop_report(unraisable):
            previous(unraisable)

    hook.drops_closed_loop_reports = True
    sys.unraisablehook = hook


def move_aside(out, epochs) -> list:
    """Move the checkpoint steps ``epochs`` into ``out/quarantine/`` (renamed, never deleted), so
    that training can save those epochs again. Only with the directory's :func:`lock` held.

    Args:
      out: the run directory.
      epochs: the steps to move.

    Returns:
      The new paths of the steps.
    """
    out = pathlib.Path(out).absolute()
    moved = []
    if not epochs:
        return moved
    place = out / QUARANTINE
    place.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for epoch in epochs:
        target, i = place / f"epoch-{epoch}-{stamp}", 1
        while target.exists():
            i += 1
            target = place / f"epoch-{epoch}-{stamp}-{i}"
        os.replace(_step_dir(out, epoch), target)
        moved.append(target)
    fsync_dir(out / CHECKPOINTS)
    fsync_dir(place)
    return moved


def restore_latest(out, like: dict, *, agree=None) -> Restored:
    """Restore the newest verified checkpoint of the run in ``out``.

    Steps are tried newest first; a step is skipped when its checksum file is missing or
    unreadable, orbax fails to read it (any exception), or its arrays do not hash to the saved
    checksum. Nothing is moved or written: the caller moves the skipped steps aside
    (:func:`move_aside`) once it holds the directory's lock.

    Args:
      out: the run directory.
      like: a pytree of arrays shaped like the saved state.
      agree: ``agree(epoch, reason) -> reason``, called after each step is tried (``reason``
        ``None``: verified) and with ``(None, None)`` when none could be used; it returns the
        verdict every process shares (:func:`fbackprop.training.distributed.agree`), so that
        the processes of a multi-process run restore the same epoch. ``None``: this process
        decides alone.

    Returns:
      A :class:`Restored`; its ``epoch`` is ``None`` when no step could be used.
    """
    import orbax.checkpoint as ocp

    out = pathlib.Path(out).absolute()
    skipped, found = [], (None, None)
    if (out / CHECKPOINTS).is_dir():
        manager = ocp.CheckpointManager(out / CHECKPOINTS,
                                        options=ocp.CheckpointManagerOptions(create=False))
        try:
            for epoch in sorted(manager.all_steps(), reverse=True):
                state, reason = _try_step(manager, out, epoch, like)
                if agree is not None:
                    reason = agree(epoch, reason)
                if reason is None:
                    found = (epoch, state)
                    break
                skipped.append((epoch, reason))
        finally:
            manager.close()
    if found[0] is None and agree is not None:
        agree(None, None)  # every process ran out of steps at the same time
    return Restored(found[0], found[1], skipped, [])
