"""Files written so that a reader (or a process killed mid-write) never sees a part of one.

Nothing here imports JAX: the plot process (:mod:`fbackprop.plotting`) writes with it too.
"""
from __future__ import annotations

import os
import pathlib
import tempfile

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: pathlib.Path):
    """Flush a directory's entries (a file created or renamed in it) to disk.

    Args:
      path: the directory.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: pathlib.Path, write):
    """Write through ``write(file_object)`` into a temporary file beside ``path``, fsync it and
    rename it over ``path``: readers see the old file or the new one, never a part.

    Args:
      path: the file to write.
      write: a function of a binary file object that writes the contents.
    """
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
