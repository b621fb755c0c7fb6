"""The run directory of a training run: its files and their names, written atomically; a new
run's creation, a resume's checks, the lock; the config and a token-sequence run's vocabulary.
What an epoch adds lives beside it: :mod:`.metrics` (one line per epoch, the plot) and
:mod:`.checkpoints` (verified orbax steps).

Layout of ``DIR``::

    config.json     the resolved training configuration, with a "history" of resumes
    vocab.json      token-sequence runs only: the vocabulary (token i's text) and window length
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

import errno
import fcntl  # POSIX file locks: the run lock
import json
import os
import pathlib
import shutil
import time

from ..files import atomic_write, fsync_dir
from ..plotting import PLOT

__all__ = ["CONFIG", "VOCAB", "METRICS", "PLOT", "CHECKPOINTS", "QUARANTINE", "LOCK", "CHECKSUM",
           "MAY_CHANGE", "RunLocked", "check_resume_settings", "check_out", "check_layout",
           "create", "read_config", "open_for_resume", "lock", "write_vocab", "read_vocab",
           "check_vocab", "atomic_write", "write_json", "fsync_dir"]

CONFIG, METRICS, CHECKPOINTS = "config.json", "metrics.jsonl", "checkpoints"
QUARANTINE, LOCK, CHECKSUM = "quarantine", ".lock", "fbackprop_checksum.json"
VOCAB = "vocab.json"  # a token-sequence run's vocabulary and window length
_RUN_FILES = (CONFIG, METRICS, PLOT, CHECKPOINTS, QUARANTINE, VOCAB)


class RunLocked(ValueError):
    """Another live process holds the run directory's lock."""


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


_DIRECTORIES = (CHECKPOINTS, QUARANTINE)  # the other entries of a run are files


def check_layout(out, *, resume: bool):
    """Check that the run directory's entries are what the trainer will read and write, before
    anything is: a file where a directory belongs (or the reverse), an unreadable file or a
    directory it cannot write is one error naming the entry, never a traceback later.

    Args:
      out: the run directory (may not exist yet).
      resume: check every entry a resume reads and writes (else only the lock file, which a new
        run takes before it replaces anything).

    Raises:
      ValueError: an entry of the wrong kind, unreadable or not writable; nothing is changed.
    """
    out = pathlib.Path(out).absolute()
    names = (_RUN_FILES + (LOCK,)) if resume else (LOCK,)
    for name in names:
        path = out / name
        if not (path.exists() or path.is_symlink()):
            continue
        want_dir = name in _DIRECTORIES
        if path.is_dir() != want_dir:
            raise ValueError(f"{path} must be a {'directory' if want_dir else 'file'}, but it is "
                             f"{'a directory' if path.is_dir() else 'not one'}: it was replaced "
                             f"by something the trainer did not write. Move it away (or restore "
                             f"it), then run again. Nothing was changed.")
        mode = (os.R_OK | os.W_OK | os.X_OK) if want_dir else os.R_OK
        if resume and not os.access(path, mode):
            raise ValueError(f"{path} is not {'writable' if want_dir else 'readable'} by this "
                             f"user, and the run needs it. Fix its permissions (chmod), then "
                             f"resume. Nothing was changed.")
    if resume and out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"{out} is not writable by this user, and a resume writes its metrics "
                         f"and checkpoints there. Fix its permissions, then resume.")


def _run_files(out: pathlib.Path) -> list:
    return [name for name in _RUN_FILES if (out / name).exists()]


def create(out, config: dict, *, force: bool = False) -> pathlib.Path:
    """Start a new run in ``out`` (created if needed) and save ``config``.

    The caller holds the directory's :func:`lock`.

    Args:
      out: the run directory.
      config: the resolved settings (JSON-ready).
      force: replace a run saved there: its config, vocabulary, metrics, plot, checkpoints and
        quarantine are deleted first (other files are left alone).

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
                         f"own ({', '.join(present)}); a new run would overwrite them. Pass "
                         f"--resume to continue the run saved there, --force "
                         f"(force=True) to replace it, or choose a new directory. Nothing was "
                         f"changed.")
    out.mkdir(parents=True, exist_ok=True)
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    write_json(out / CONFIG, config)
    (out / METRICS).touch()
    fsync_dir(out)
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
    except OSError as err:
        raise ValueError(f"--resume: {path} cannot be read ({err.strerror or err}). Fix its "
                         f"permissions, or restore it.") from None
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


# shard_params only places the same values elsewhere (orbax restores into either placement).
MAY_CHANGE = ("lr", "epochs", "checkpoint_every", "shard_params", "recompute")


def check_resume_settings(out, config: dict, saved: dict, *, may_change=MAY_CHANGE) -> dict:
    """Refuse a resume whose settings differ from the saved run's (keys in ``may_change``
    excepted), before any checkpoint is read: a changed setting is named as such, not reported
    as a checkpoint that disagrees with its run.

    Args:
      out: the run directory (for the message).
      config: the resolved settings of the resumed run.
      saved: the run's ``config.json``.
      may_change: the settings a resume may change.

    Returns:
      ``config`` as JSON values.

    Raises:
      ValueError: the settings differ; the message names each one.
    """
    new = json.loads(json.dumps(config))
    diff = _differences(saved, new, may_change)
    if diff:
        raise ValueError(f"--resume: the configuration differs from the one saved in "
                         f"{pathlib.Path(out) / CONFIG}:\n  " + "\n  ".join(diff) +
                         f"\nA resume may change only {', '.join(may_change)}. Resume with the "
                         f"saved settings (leave them out on the command line), or start a new "
                         f"run in another directory. Nothing was changed.")
    return new


def open_for_resume(out, config: dict, saved: dict, *, start: int = 0,
                    may_change=MAY_CHANGE) -> pathlib.Path:
    """Check that the run ``saved`` in ``out`` has the same ``config`` (keys in ``may_change``
    excepted) and has epochs left to train, and record the new config, with a ``"history"``
    entry for the changed keys.

    The caller holds the directory's :func:`lock`. A run without any checkpoint (killed before
    its first one) is resumed from scratch by the caller.

    Args:
      out: the run directory.
      config: the resolved settings of the resumed run.
      saved: the run's ``config.json`` as :func:`read_config` read it.
      start: the epoch the run resumes from (recorded in the history).
      may_change: the settings a resume may change.

    Returns:
      The absolute path of the run directory.

    Raises:
      ValueError: the settings differ, or the run is already at (or past) ``config["epochs"]``;
        nothing is written then.
    """
    out = pathlib.Path(out).absolute()
    new = check_resume_settings(out, config, saved, may_change=may_change)
    if start == config["epochs"]:
        raise ValueError(f"--resume: the run in {out} is already at epoch {start} of {start}: "
                         f"pass --epochs M > {start} (epochs=M) to continue. Nothing was "
                         f"changed.")
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
        write_json(out / CONFIG, record)
    return out


class _Lock:
    """A held lock on a run directory (see :func:`lock`)."""

    def __init__(self, fd, path):
        self.fd, self.path = fd, path

    def release(self):
        """Release the lock (idempotent)."""
        if self.fd is not None:
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


def write_json(path: pathlib.Path, obj):
    """Write ``obj`` as indented JSON to ``path`` with :func:`atomic_write`.

    Args:
      path: the file to write.
      obj: a JSON-ready value.
    """
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def write_vocab(out, ds):
    """Save a token-sequence data set's vocabulary in ``out`` (``vocab.json``: ``vocab``, the
    text of each token id, ``seq_len``, the window length T, and ``data``, the data set's name),
    so that a trained model can decode and sample without its corpus. Nothing is written for
    other tasks.

    Args:
      out: the run directory.
      ds: the :class:`~fbackprop.data.Dataset` trained on.
    """
    if ds.vocab is None:
        return
    write_json(pathlib.Path(out) / VOCAB, {"vocab": list(ds.vocab),
                                             "seq_len": int(ds.x_train.shape[1]),
                                             "data": ds.name})


def read_vocab(out):
    """The vocabulary saved in the run directory ``out``.

    Args:
      out: the run directory.

    Returns:
      ``{"vocab": tuple of str, "seq_len": int, "data": str}``, or ``None`` when the run has
      no vocabulary (it did not train on token sequences).

    Raises:
      ValueError: ``vocab.json`` is not JSON or lacks its fields.
    """
    path = pathlib.Path(out).absolute() / VOCAB
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        vocab, seq_len = saved["vocab"], saved["seq_len"]
        ok = (isinstance(vocab, list) and len(vocab) >= 2 and all(isinstance(t, str) for t in vocab)
              and isinstance(seq_len, int) and seq_len >= 1)
    except (ValueError, KeyError, TypeError, OSError):  # ValueError: not JSON, not UTF-8
        ok = False
    if not ok:
        raise ValueError(f"{path} is damaged: expected a JSON object with \"vocab\" (a list of at "
                         f"least two strings) and \"seq_len\" (an int ≥ 1). It is written at the "
                         f"start of a run; start the run again with --force.")
    return {"vocab": tuple(vocab), "seq_len": seq_len, "data": saved.get("data")}


def check_vocab(saved, ds, out):
    """On resume: the data set must have the vocabulary and window length the run was trained
    with (a corpus edited since would change what every token id means).

    Args:
      saved: the run's vocabulary as :func:`read_vocab` read it (``None``: it has none).
      ds: the data set the resumed run loaded.
      out: the run directory (named in the message).

    Raises:
      ValueError: the vocabulary or the window length differs, or a token-sequence run lost its
        ``vocab.json``.
    """
    if ds.vocab is None and saved is None:
        return
    if saved is None:
        raise ValueError(f"--resume: {pathlib.Path(out) / VOCAB} is missing, so the vocabulary "
                         f"this run was trained with is unknown. Start the run again with "
                         f"--force.")
    now = {"vocab": tuple(ds.vocab or ()), "seq_len": int(ds.x_train.shape[1])}
    if (now["vocab"], now["seq_len"]) != (saved["vocab"], saved["seq_len"]):
        raise ValueError(f"--resume: the data {ds.name!r} now has {len(now['vocab'])} tokens and "
                         f"windows of {now['seq_len']}, but the run was trained with "
                         f"{len(saved['vocab'])} tokens and windows of {saved['seq_len']} (saved "
                         f"in {pathlib.Path(out) / VOCAB}); the corpus changed. Restore it, or "
                         f"start a new run.")
