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

from .rundir import (
    CHECKPOINTS,
    CHECKSUM,
    CONFIG,
    MAY_CHANGE,
    QUARANTINE,
    VOCAB,
    fsync_dir,
    write_json,
)
from .sharding import host_value, spans_processes

__all__ = ["Restored", "Checkpoints", "checkpoint_manager", "restore", "restore_latest",
           "checksum", "verify", "move_aside", "run_stamp", "CheckpointWarning",
           "CheckpointError", "RunChanged"]


class CheckpointWarning(UserWarning):
    """A resume or :func:`~fbackprop.load_run` skipped damaged or incomplete checkpoints, or
    found none and started over."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (a read-only or full file system): training stops,
    since every later epoch would be lost on a crash."""


class RunChanged(ValueError):
    """A checkpoint whose checksum file is intact records other settings, or arrays of other
    shapes, than the run's ``config.json`` and ``vocab.json`` describe: the files were edited
    after it was saved, so the run is refused and the checkpoint never moved aside."""


def run_stamp(config: dict, vocab=None) -> dict:
    """What each checkpoint step records of its run, to tell an edited ``config.json`` or
    ``vocab.json`` from a damaged step: the settings a resume may not change and the sha256
    of the vocabulary.

    Args:
      config: the run's settings (``TrainConfig.as_dict()`` or a saved ``config.json``).
      vocab: ``{"vocab": token texts, "seq_len": int}`` (:func:`.rundir.read_vocab`), or
        ``None`` for a run without a vocabulary.

    Returns:
      ``{"settings": {...}, "vocab_sha256": str | None}``, JSON-ready.
    """
    settings = {k: v for k, v in json.loads(json.dumps(config)).items()
                if k not in MAY_CHANGE + ("history", "device")}
    digest = None
    if vocab is not None:
        text = json.dumps({"vocab": list(vocab["vocab"]), "seq_len": int(vocab["seq_len"])})
        digest = hashlib.sha256(text.encode()).hexdigest()
    return {"settings": settings, "vocab_sha256": digest}


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
    malformed = _malformed(expected)
    if malformed:
        return malformed
    leaves = jax.tree.leaves(state)
    if len(leaves) != len(expected["leaves"]):
        return (f"it holds {len(expected['leaves'])} arrays, the run expects {len(leaves)}")
    for leaf, e in zip(leaves, expected["leaves"]):
        a = np.ascontiguousarray(host_value(leaf).astype(e["dtype"]))
        if list(a.shape) != e["shape"] or hashlib.sha256(a.tobytes()).hexdigest() != e["sha256"]:
            return f"checksum mismatch in {e['path'] or 'the state'} (the data is damaged)"
    return None


def _malformed(expected):
    """Why a checksum file's contents cannot be used (``None``: well formed)."""
    leaves = expected.get("leaves") if isinstance(expected, dict) else None
    if not isinstance(leaves, list):
        return f"{CHECKSUM} is damaged: \"leaves\" is not a list"
    for i, e in enumerate(leaves):
        ok = (isinstance(e, dict) and isinstance(e.get("sha256"), str)
              and isinstance(e.get("dtype"), str) and isinstance(e.get("path"), str)
              and isinstance(e.get("shape"), list)
              and all(isinstance(n, int) for n in e["shape"]))
        if not ok:
            return (f"{CHECKSUM} is damaged: leaf {i} lacks a path, dtype, shape or sha256 of "
                    f"the right type")
        try:
            np.dtype(e["dtype"])
        except TypeError:
            return f"{CHECKSUM} is damaged: leaf {i} has the unknown dtype {e['dtype']!r}"
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


def _import_orbax():
    try:
        import orbax.checkpoint  # noqa: F401
    except ImportError:
        pass  # the first save imports it again and raises


class Checkpoints:
    """The checkpoints of a run being trained: orbax saves plus the checksum of each step.

    With ``asynchronous`` saves, :meth:`save` returns once orbax has copied the arrays to host
    memory; the step's checksum file is written after orbax finalizes it (at the next save or at
    :meth:`finish`), so a step is never verified before it is complete.

    Several processes: every process calls :meth:`save` (orbax coordinates them, and its wait
    returns only once the step is complete on all of them); process 0 alone writes the checksum
    files. It alone hashes the state too, unless the state is split across processes
    (``shard_params``): then every process takes part in gathering each leaf to hash it.

    A save that fails (orbax's background thread could not write) raises
    :class:`CheckpointError` at the next :meth:`save` or at :meth:`finish`, naming the path.

    Args:
      out: the run directory.
      asynchronous: use orbax's asynchronous checkpointing.
      max_to_keep: how many steps orbax keeps.
      stamp: :func:`run_stamp` of the run, recorded in each step's checksum file (``None``:
        none).
      last_epoch: the epoch of the newest checkpoint already on disk (a resumed run's), or
        ``None``.

    Attributes:
      last_epoch: the epoch of the newest checkpoint: the last save started here, else the one
        given.
    """

    def __init__(self, out, *, asynchronous: bool = True, max_to_keep: int = 3, stamp=None,
                 last_epoch=None):
        self.out = pathlib.Path(out).absolute()
        self._options = {"max_to_keep": max_to_keep, "asynchronous": asynchronous}
        self._manager, self._pending, self.stamp, self.failed = None, None, stamp, None
        self.last_epoch = last_epoch

    def prefetch(self):
        """Start importing orbax on a daemon thread, if no manager exists yet: the epochs run
        in XLA with the GIL released, so the import overlaps them instead of delaying the
        first save (a short run's only one, at its end)."""
        if self._manager is None and "orbax.checkpoint" not in sys.modules:
            threading.Thread(target=_import_orbax, name="fbackprop-import-orbax",
                             daemon=True).start()

    @property
    def manager(self):
        """The orbax ``CheckpointManager``, made at the first use: a short run saves once, at
        its end, and until then neither orbax's import nor its manager delays the epochs."""
        if self._manager is None:
            self._manager = checkpoint_manager(self.out, **self._options)
        return self._manager

    def save(self, epoch: int, state: dict):
        """Start saving ``state`` as the checkpoint of ``epoch`` (after finishing the previous
        save and writing its checksum).

        Args:
          epoch: the step number.
          state: a pytree of arrays.

        Raises:
          CheckpointError: this save or the one before could not be written.
        """
        import orbax.checkpoint as ocp

        self.finish()
        # A state split across processes is gathered leaf by leaf by every process; otherwise
        # process 0 alone hashes it.
        digest = (checksum(state) if jax.process_index() == 0 or spans_processes(state)
                  else None)
        if jax.process_index() != 0:
            digest = None
        if digest is not None and self.stamp is not None:
            digest["run"] = self.stamp
        self._pending = (epoch, digest)
        self._guard(epoch, lambda: self.manager.save(epoch, args=ocp.args.StandardSave(state),
                                                     force=True))
        self.last_epoch = epoch

    def _guard(self, epoch, action):
        """Run an orbax call; an ``OSError`` (here or from its background thread) becomes
        :class:`CheckpointError`, and later calls raise it again at once."""
        if self.failed is not None:
            raise self.failed
        try:
            action()
        except OSError as err:
            where = getattr(err, "filename", None) or self.out / CHECKPOINTS
            self._pending = None
            self.failed = CheckpointError(
                f"the checkpoint of epoch {epoch} could not be written to {where} "
                f"({err.strerror or err}). Make {self.out / CHECKPOINTS} writable (or free "
                f"space), then resume: fbackprop train --out {self.out} --resume")
            raise self.failed from None

    def finish(self):
        """Wait for the save in flight, then write its checksum.

        Raises:
          CheckpointError: the save in flight could not be written.
        """
        if self._manager is None:
            return  # nothing was saved
        epoch = self._pending[0] if self._pending is not None else None
        self._guard(epoch, self.manager.wait_until_finished)
        if self._pending is not None:
            epoch, digest = self._pending
            self._pending = None
            if digest is not None:
                self._guard(epoch, lambda: _write_checksum(self.out, epoch, digest))

    def close(self):
        """Finish the save in flight and close the manager.

        Raises:
          CheckpointError: the save in flight could not be written.
        """
        try:
            if self.failed is None:
                self.finish()
        finally:
            if self._manager is not None:
                self._manager.close()


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


_GONE = "the step was removed while it was read (orbax rotated it out)"


def _read_expected(path):
    """``(checksum, None)`` from a step's checksum file, or ``(None, reason)``."""
    if not path.exists():
        return None, f"no {CHECKSUM} (the save did not finish)"
    try:
        expected = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        return None, f"unreadable {CHECKSUM} ({type(err).__name__}: {err})"
    return (None, _malformed(expected)) if _malformed(expected) else (expected, None)


def _changed(out, epoch, expected, like, stamp):
    """Raise :class:`RunChanged` when a step's well-formed checksum file disagrees with the run
    settings (``stamp``) or with the structure, shapes and dtypes of ``like``."""
    diffs = []
    recorded = expected.get("run")
    if stamp is not None and isinstance(recorded, dict):
        was, now = recorded.get("settings") or {}, stamp["settings"]
        diffs += [f"{k}: the checkpoint has {was.get(k)!r}, {CONFIG} {now.get(k)!r}"
                  for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        if recorded.get("vocab_sha256") != stamp["vocab_sha256"]:
            diffs.append(f"the vocabulary or window length in {VOCAB}")
    leaves = jax.tree_util.tree_flatten_with_path(like)[0]
    if not diffs and len(leaves) != len(expected["leaves"]):
        diffs.append(f"it holds {len(expected['leaves'])} arrays, the settings build "
                     f"{len(leaves)} (model, hidden, optimizer or data changed)")
    for (path, leaf), e in zip(leaves, expected["leaves"]) if not diffs else ():
        shape = list(np.shape(leaf)) or [1]  # checksum() hashes a scalar as shape (1,)
        dtype = str(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)
        if (e["shape"], e["dtype"]) != (shape, dtype):
            diffs.append(f"{jax.tree_util.keystr(path)}: the checkpoint has {e['dtype']}"
                         f"{tuple(e['shape'])}, the settings build {dtype}{tuple(shape)}")
    if diffs:
        raise RunChanged(
            f"{pathlib.Path(out) / CHECKPOINTS / str(epoch)}: its checksum file is intact, but "
            f"the step disagrees with the run's {CONFIG} and {VOCAB}: " + "; ".join(diffs[:3])
            + (f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else "") + f". They were edited "
            f"after it was saved (a resume may change only {', '.join(MAY_CHANGE)}): restore "
            f"them, or start a new run. Nothing was moved or changed.")


def _try_step(manager, out, epoch, like, stamp=None):
    """``(state, None)`` for a verified step, else ``(None, reason)``; ``reason`` is
    :data:`_GONE` when the step vanished while it was read.

    Raises:
      RunChanged: the step's checksum file disagrees with the run's settings.
    """
    step = _step_dir(out, epoch)
    expected, reason = _read_expected(step / CHECKSUM)
    if reason is None:
        _changed(out, epoch, expected, like, stamp)
        try:
            state = restore(manager, epoch, like)
        except Exception as err:  # orbax raises anything from a damaged step, even bare Exception
            _drop_closed_loop_reports()
            state, reason = None, f"orbax cannot read it ({type(err).__name__}: {str(err)[:200]})"
        else:
            reason = verify(state, expected)
    if reason is not None and not step.exists():
        return None, _GONE
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


def restore_latest(out, like: dict, *, agree=None, stamp=None) -> Restored:
    """Restore the newest verified checkpoint of the run in ``out``.

    Steps are tried newest first; a step is skipped when its checksum file is missing,
    unreadable or malformed, orbax fails to read it (any exception), or its arrays do not hash
    to the saved checksum. A step removed while it is read (a run rotating out its oldest
    steps) is left out, and the steps are listed again (three tries). Nothing is moved or
    written: the caller moves the skipped steps aside (:func:`move_aside`) once it holds the
    directory's lock.

    Args:
      out: the run directory.
      like: a pytree of arrays shaped like the saved state.
      agree: ``agree(epoch, reason) -> reason``, called after each step is tried (``reason``
        ``None``: verified) and with ``(None, None)`` when none could be used; it returns the
        verdict every process shares (:func:`fbackprop.training.distributed.agree`), so that
        the processes of a multi-process run restore the same epoch. ``None``: this process
        decides alone.
      stamp: the run's :func:`run_stamp`, compared with the one each step recorded (``None``:
        only the structure of ``like`` is compared).

    Returns:
      A :class:`Restored`; its ``epoch`` is ``None`` when no step could be used.

    Raises:
      RunChanged: a step's checksum file is intact but records other settings, or arrays of
        other shapes, than ``stamp`` and ``like``: the run's config was edited.
      ValueError: ``out/checkpoints`` exists but is not a directory.
    """
    out = pathlib.Path(out).absolute()
    if (out / CHECKPOINTS).exists() and not (out / CHECKPOINTS).is_dir():
        raise ValueError(f"{out / CHECKPOINTS} is not a directory, so the run's checkpoints "
                         f"cannot be read. Move it away (the run then restarts from epoch 0), "
                         f"or restore the directory.")
    for _ in range(3):
        skipped, found, vanished = _newest_verified(out, like, agree, stamp)
        if found[0] is not None or not vanished or agree is not None:
            break
    if found[0] is None and agree is not None:
        agree(None, None)  # every process ran out of steps at the same time
    return Restored(found[0], found[1], skipped, [])


def _newest_verified(out, like, agree, stamp):
    """One pass of :func:`restore_latest`: ``(skipped, (epoch, state), vanished)``."""
    import orbax.checkpoint as ocp

    skipped, found, vanished = [], (None, None), False
    if not (out / CHECKPOINTS).is_dir():
        return skipped, found, vanished
    manager = ocp.CheckpointManager(out / CHECKPOINTS,
                                    options=ocp.CheckpointManagerOptions(create=False))
    try:
        for epoch in sorted(manager.all_steps(), reverse=True):
            state, reason = _try_step(manager, out, epoch, like, stamp)
            if reason is _GONE and agree is None:
                vanished = True
                continue
            if agree is not None:
                reason = agree(epoch, reason)
            if reason is None:
                found = (epoch, state)
                break
            skipped.append((epoch, reason))
    finally:
        manager.close()
    return skipped, found, vanished
