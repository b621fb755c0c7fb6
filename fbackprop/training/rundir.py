"""The run directory of a training run: its config, metrics, plot and checkpoints.

Layout of ``DIR``::

    config.json     the resolved training configuration, with a "history" of resumes
    metrics.jsonl   one JSON object per epoch: epoch, loss, train/test accuracy, test loss, seconds
    plot.png        loss and accuracy against epochs
    checkpoints/    orbax-checkpoint steps, one per saved epoch (0 = the initial parameters);
                    each step holds ``fbackprop_checksum.json``, the sha256 of its arrays
    quarantine/     steps that failed verification, moved aside on resume (never deleted)
    .lock           the lock file: one process at a time writes the run

Checkpoints use orbax-checkpoint's ``CheckpointManager``. orbax writes a step into a temporary
directory and renames it into place when it is complete; the checksum file is written after
that, so a step is *verified* only when it is complete and its arrays hash to what was saved. A
process killed at any moment leaves verified steps and at most one unverified step, which is
skipped (and moved aside) on resume. Restoring tries the verified steps newest first.

Small files (config, plot, rewritten metrics) are written to a temporary file, fsynced and
renamed; each metrics line is appended with one write and fsynced. Reading the metrics is
strict: a line that is not JSON is an error naming the file and the line, except for a torn last
line (a process killed mid-write), which is dropped on resume. Non-finite metrics are written as
``null``.

Nothing here overwrites what it did not create: :func:`create` refuses a directory holding a
run or any file of the names above unless asked to replace a run (``force``), and
:func:`open_for_resume` checks everything before it writes anything.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import pathlib
import shutil
import tempfile
import time

import jax
import numpy as np

__all__ = ["CONFIG", "METRICS", "PLOT", "CHECKPOINTS", "QUARANTINE", "LOCK", "CHECKSUM",
           "RunLocked", "Restored", "Checkpoints", "check_out", "create", "read_config",
           "open_for_resume", "lock", "append_metrics", "read_metrics", "rewrite_metrics",
           "write_plot", "checkpoint_manager", "save", "restore", "restore_latest",
           "saved_epochs", "checksum", "verify", "move_aside", "MAY_CHANGE"]

CONFIG, METRICS, PLOT, CHECKPOINTS = "config.json", "metrics.jsonl", "plot.png", "checkpoints"
QUARANTINE, LOCK, CHECKSUM = "quarantine", ".lock", "fbackprop_checksum.json"
_RUN_FILES = (CONFIG, METRICS, PLOT, CHECKPOINTS, QUARANTINE)


class RunLocked(ValueError):
    """Another live process holds the run directory's lock."""


# --- small files ----------------------------------------------------------------------------

def _fsync_dir(path: pathlib.Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: pathlib.Path, write):
    """Write through ``write(file_object)`` into a temporary file beside ``path``, fsync it and
    rename it over ``path``: readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run files are readable like any other
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _write_json(path: pathlib.Path, obj):
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


# --- the directory --------------------------------------------------------------------------

def check_out(out) -> pathlib.Path:
    """Check the ``out`` argument before anything is computed or written.

    Args:
      out: a directory path (``str`` or ``os.PathLike``); created later if missing.

    Returns:
      The absolute path.

    Raises:
      TypeError: ``out`` is not a path.
      ValueError: ``out`` is empty, is a file, lies under a file, or cannot be written.
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a directory path (str or pathlib.Path), received "
                        f"{type(out).__name__}: {out!r}.")
    if str(out).strip() == "" or os.fspath(out) == "":
        raise ValueError("out must name a directory, received an empty path ''. Pass e.g. "
                         "--out runs/my-run (use --out . to mean the current directory).")
    path = pathlib.Path(out).absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"out must be a directory, received {path}, which is a file. Pass a "
                         f"directory (it is created if missing).")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"out must be a directory path, received {path}, which lies under the "
                         f"file {existing}. Choose a path that is not inside a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"out must be a writable directory, received {path}: {existing} is not "
                         f"writable by this user. Choose a directory you can write, or fix its "
                         f"permissions.")
    return path


def _run_files(out: pathlib.Path) -> list:
    return [name for name in _RUN_FILES if (out / name).exists()]


def create(out, config: dict, *, force: bool = False) -> pathlib.Path:
    """Start a new run in ``out`` (created if needed) and save ``config``.

    The caller holds the directory's :func:`lock`.

    Args:
      out: the run directory.
      config: the resolved settings (JSON-ready).
      force: replace a run saved there: its config, metrics, plot, checkpoints and quarantine
        are deleted first (other files are left alone).

    Returns:
      The absolute path of the run directory.

    Raises:
      ValueError: ``out`` is a file, or (without ``force``) already holds a run or a file named
        like one of the run's; nothing is changed then.
    """
    out = check_out(out)
    present = _run_files(out) if out.is_dir() else []
    if present and not force:
        raise ValueError(f"out {out} already holds a training run or files named like its "
                         f"own ({', '.join(present)}); a new run would overwrite them. Pass --resume to continue the run saved there, --force "
                         f"(force=True) to replace it, or choose a new directory. Nothing was "
                         f"changed.")
    out.mkdir(parents=True, exist_ok=True)
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    _write_json(out / CONFIG, config)
    (out / METRICS).touch()
    _fsync_dir(out)
    return out


def read_config(out) -> dict:
    """The config saved in the run directory ``out``.

    Args:
      out: the run directory.

    Returns:
      The saved config, a dict (with its ``"history"`` of resumes, when any).

    Raises:
      ValueError: ``config.json`` is missing, is not JSON, or is not a JSON object.
    """
    out = pathlib.Path(out).absolute()
    path = out / CONFIG
    if not path.exists():
        other = _run_files(out) if out.is_dir() else []
        held = (f" It holds {', '.join(other)} but no {CONFIG}, so its settings are unknown; "
                f"pass --force (force=True) without --resume to replace it."
                if other else " Pass the --out directory of an earlier run, or drop --resume "
                              "to start a new one.")
        raise ValueError(f"--resume: {out} holds no run ({CONFIG} is missing).{held}")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--resume: {path} must hold a JSON object, but it is not valid JSON "
                         f"({err}). Restore the file, or pass --force (force=True) without "
                         f"--resume to replace the run.") from None
    if not isinstance(saved, dict):
        raise ValueError(f"--resume: {path} must hold a JSON object of settings, received a "
                         f"JSON {type(saved).__name__}. Restore the file, or pass --force "
                         f"(force=True) without --resume to replace the run.")
    return saved


def _differences(saved: dict, config: dict, ignore) -> list:
    keys = sorted((set(saved) | set(config)) - set(ignore) - {"history"})
    return [f"{k}: saved {saved.get(k)!r}, now {config.get(k)!r}"
            for k in keys if saved.get(k) != config.get(k)]


MAY_CHANGE = ("lr", "epochs", "checkpoint_every")


def open_for_resume(out, config: dict, *, start: int = 0,
                    may_change=MAY_CHANGE) -> pathlib.Path:
    """Check that ``out`` holds a run with the same ``config`` (keys in ``may_change`` excepted)
    and record the new config, with a ``"history"`` entry for the changed keys.

    The caller holds the directory's :func:`lock`. A run without any checkpoint (killed before
    its first one) is resumed from scratch by the caller.

    Args:
      out: the run directory.
      config: the resolved settings of the resumed run.
      start: the epoch the run resumes from (recorded in the history).
      may_change: the settings a resume may change.

    Returns:
      The absolute path of the run directory.

    Raises:
      ValueError: the config is missing or unreadable, the settings differ, or ``start`` lies
        past ``config["epochs"]``; nothing is written then.
    """
    out = pathlib.Path(out).absolute()
    saved = read_config(out)
    new = json.loads(json.dumps(config))
    diff = _differences(saved, new, may_change)
    if diff:
        raise ValueError(f"--resume: the configuration differs from the one saved in "
                         f"{out / CONFIG}:\n  " + "\n  ".join(diff) +
                         f"\nA resume may change only {', '.join(may_change)}. Resume with the "
                         f"saved settings (leave them out on the command line), or start a new "
                         f"run in another directory. Nothing was changed.")
    if start > config["epochs"]:
        raise ValueError(f"--resume: the last checkpoint is at epoch {start}, past epochs="
                         f"{config['epochs']}; pass --epochs {start} or more.")
    changed = {k: [saved.get(k), new[k]] for k in may_change if saved.get(k) != new.get(k)}
    history = list(saved.get("history", []))
    if changed:
        history.append({"at_epoch": start, "changed": changed,
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    record = dict(new, history=history) if history else new
    if record != saved:
        _write_json(out / CONFIG, record)
    return out


class _Lock:
    """A held lock on a run directory (see :func:`lock`)."""

    def __init__(self, fd, path):
        self.fd, self.path = fd, path

    def release(self):
        """Release the lock (idempotent)."""
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock(out) -> _Lock:
    """Take the run directory's lock: ``fcntl.flock`` on ``out/.lock``, held until released or
    until the process dies (the kernel releases it then), so a killed run never blocks a resume.

    Args:
      out: the run directory (created if missing).

    Returns:
      The held lock; release it with ``.release()`` or use it as a context manager.

    Raises:
      RunLocked: (a ``ValueError``) another live process holds the lock; the message names its
        pid.
    """
    import fcntl

    out = pathlib.Path(out).absolute()
    path = out / LOCK
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ValueError(f"out must be a directory this process can create and write, received "
                         f"{out}: {err.strerror}. Choose another --out.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        try:
            pid = path.read_text().strip() or "unknown"
        except OSError:
            pid = "unknown"
        raise RunLocked(f"{out} is in use by another training process (pid {pid}): two "
                        f"processes must not write one run. Wait for it to finish (or stop "
                        f"it), then retry; or choose another --out.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return _Lock(fd, path)


# --- metrics --------------------------------------------------------------------------------

def _json_row(row: dict) -> str:
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in row.items()}
    return json.dumps(clean, allow_nan=False)


def append_metrics(out: pathlib.Path, row: dict):
    """Append one epoch's metrics as a JSON line (one write, then fsync).

    Args:
      out: the run directory.
      row: the epoch's metrics; non-finite floats are written as ``null``.
    """
    line = (_json_row(row) + "\n").encode()
    fd = os.open(pathlib.Path(out) / METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_metrics(out, *, upto_epoch=None) -> list:
    """The metrics rows saved in ``out``, read strictly.

    Args:
      out: the run directory.
      upto_epoch: keep only the rows of epochs ≤ this (``None``: all); with it, the rows kept
        must be exactly epochs 1 … ``upto_epoch``.

    Returns:
      One dict per epoch, oldest first. A torn last line (no newline at the end, not JSON: a
      process killed mid-write) is left out.

    Raises:
      ValueError: the file is missing (while ``upto_epoch`` > 0), a line other than a torn last
        one is not a JSON object with an ``epoch``, or epochs are missing; the message names the
        file and the line.
    """
    path = pathlib.Path(out).absolute() / METRICS
    if not path.exists():
        if upto_epoch:
            raise ValueError(f"--resume: {path} is missing, but the checkpoint to resume is at "
                             f"epoch {upto_epoch}, so the metrics of epochs 1 … {upto_epoch} are "
                             f"lost. Restore the file, or pass --force (force=True) without "
                             f"--resume to start the run over.")
        return []
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    torn_last = lines[-1] != ""  # no newline at the end: the last write was cut off
    rows = []
    for n, line in enumerate(lines[:-1] if not torn_last else lines, start=1):
        if n == len(lines) and torn_last:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line: dropped on resume
        else:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not a JSON line ({err.msg}): {line[:80]!r}. "
                                 f"The file was changed by something other than the trainer; "
                                 f"repair or delete that line, or start the run over with "
                                 f"--force.") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise ValueError(f"{path}, line {n}: expected a JSON object with an integer "
                             f"\"epoch\", received {line[:80]!r}. Repair or delete that line, or "
                             f"start the run over with --force.")
        if upto_epoch is None or row["epoch"] <= upto_epoch:
            rows.append(row)
    if upto_epoch is not None and [r["epoch"] for r in rows] != list(range(1, upto_epoch + 1)):
        raise ValueError(f"--resume: {path} must hold one line for each of epochs 1 … "
                         f"{upto_epoch} (the checkpoint to resume), received epochs "
                         f"{[r['epoch'] for r in rows]}. Restore the file, or start the run over "
                         f"with --force.")
    return rows


def rewrite_metrics(out: pathlib.Path, rows: list):
    """Replace the metrics file by ``rows``, atomically.

    Args:
      out: the run directory.
      rows: one dict per epoch.
    """
    _atomic_write(pathlib.Path(out) / METRICS,
                  lambda f: f.write("".join(_json_row(r) + "\n" for r in rows).encode()))


def write_plot(out: pathlib.Path, history: list, title: str = ""):
    """Plot training loss, test loss and the accuracies against epochs into ``plot.png``.

    Args:
      out: the run directory.
      history: the metrics rows (``None`` values are drawn as gaps).
      title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    def col(name):
        return [math.nan if r.get(name) is None else r[name] for r in history]

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, col("loss"), label="training loss (during the epoch)")
    ax_loss.plot(epochs, col("test_loss"), label="test loss")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_loss.legend()
    if any(r.get("test_accuracy") is not None for r in history):
        ax_acc.plot(epochs, col("train_accuracy"), label="train accuracy")
        ax_acc.plot(epochs, col("test_accuracy"), label="test accuracy")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01))
        ax_acc.legend()
    else:
        ax_acc.text(0.5, 0.5, "regression: no accuracy", ha="center", va="center")
        ax_acc.set_axis_off()
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(title)
    _atomic_write(pathlib.Path(out) / PLOT, lambda f: fig.savefig(f, format="png", dpi=100))


# --- checkpoints ----------------------------------------------------------------------------

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
        a = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
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
        a = np.ascontiguousarray(np.asarray(jax.device_get(leaf)).astype(e["dtype"]))
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


def saved_epochs(out) -> list:
    """The epochs with a complete (listed by orbax) checkpoint in ``out``, oldest first; whether
    each one verifies is checked by :func:`restore_latest`. Read-only.

    Args:
      out: the run directory.

    Returns:
      A sorted list of ints.
    """
    path = pathlib.Path(out).absolute() / CHECKPOINTS
    if not path.is_dir():
        return []
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True,
                                                                                create=False))
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def _write_checksum(out, epoch: int, digest: dict):
    step = _step_dir(out, epoch)
    if step.is_dir():  # orbax may already have removed an old step (max_to_keep)
        _write_json(step / CHECKSUM, digest)


class Checkpoints:
    """The checkpoints of a run being trained: orbax saves plus the checksum of each step.

    With ``asynchronous`` saves, :meth:`save` returns once orbax has copied the arrays to host
    memory; the step's checksum file is written after orbax finalizes it (at the next save or at
    :meth:`finish`), so a step is never verified before it is complete.

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
        digest = checksum(state)
        self.manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
        self._pending = (epoch, digest)

    def finish(self):
        """Wait for the save in flight, then write its checksum."""
        self.manager.wait_until_finished()
        if self._pending is not None:
            epoch, digest = self._pending
            self._pending = None
            _write_checksum(self.out, epoch, digest)

    def close(self):
        """Finish the save in flight and close the manager."""
        try:
            self.finish()
        finally:
            self.manager.close()


def save(manager, epoch: int, state: dict):
    """Save ``state`` as the verified checkpoint of ``epoch``; returns when it is complete.

    Args:
      manager: a manager from :func:`checkpoint_manager`.
      epoch: the step number.
      state: a pytree of arrays.
    """
    import orbax.checkpoint as ocp

    digest = checksum(state)
    manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()
    _write_checksum(pathlib.Path(manager.directory).parent, epoch, digest)


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
      quarantined: where the skipped steps were moved (empty without ``quarantine``).
    """

    epoch: object
    state: object
    skipped: list
    quarantined: list

    def message(self) -> str:
        """A one-paragraph account: which step was used and why the others were skipped."""
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
        return None, f"orbax cannot read it ({type(err).__name__}: {str(err)[:200]})"
    reason = verify(state, expected)
    return (None, reason) if reason else (state, None)


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
    _fsync_dir(out / CHECKPOINTS)
    _fsync_dir(place)
    return moved


def restore_latest(out, like: dict, *, quarantine: bool = False) -> Restored:
    """Restore the newest verified checkpoint of the run in ``out``.

    Steps are tried newest first; a step is skipped when its checksum file is missing or
    unreadable, orbax fails to read it (any exception), or its arrays do not hash to the saved
    checksum.

    Args:
      out: the run directory (or, for compatibility, an orbax manager on its checkpoints).
      like: a pytree of arrays shaped like the saved state.
      quarantine: move the skipped steps aside at once (see :func:`move_aside`).

    Returns:
      A :class:`Restored`; its ``epoch`` is ``None`` when no step could be used.
    """
    import orbax.checkpoint as ocp

    if not isinstance(out, (str, os.PathLike)):
        out = pathlib.Path(out.directory).parent
    out = pathlib.Path(out).absolute()
    skipped, found = [], (None, None)
    if (out / CHECKPOINTS).is_dir():
        manager = ocp.CheckpointManager(out / CHECKPOINTS,
                                        options=ocp.CheckpointManagerOptions(create=False))
        try:
            for epoch in sorted(manager.all_steps(), reverse=True):
                state, reason = _try_step(manager, out, epoch, like)
                if reason is None:
                    found = (epoch, state)
                    break
                skipped.append((epoch, reason))
        finally:
            manager.close()
    moved = move_aside(out, [e for e, _ in skipped]) if quarantine else []
    return Restored(found[0], found[1], skipped, moved)
