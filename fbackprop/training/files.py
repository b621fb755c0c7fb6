"""Small files written so that a reader never sees half of one: write to a temporary file
beside the target, fsync, rename over it, fsync the directory. The names of a run directory's
files live here too, shared by the run directory, its metrics and its checkpoints."""
from __future__ import annotations

import json
import os
import pathlib
import tempfile

__all__ = ["CONFIG", "METRICS", "PLOT", "CHECKPOINTS", "QUARANTINE", "LOCK", "CHECKSUM", "VOCAB",
           "atomic_write", "write_json", "fsync_dir"]

CONFIG, METRICS, PLOT, CHECKPOINTS = "config.json", "metrics.jsonl", "plot.png", "checkpoints"
QUARANTINE, LOCK, CHECKSUM = "quarantine", ".lock", "fbackprop_checksum.json"
VOCAB = "vocab.json"  # a token-sequence run's vocabulary and window length


def fsync_dir(path: pathlib.Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: pathlib.Path, write):
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
    fsync_dir(path.parent)


def write_json(path: pathlib.Path, obj):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


# --- the directory --------------------------------------------------------------------------
